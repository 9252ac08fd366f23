"""VGG16 fc2 features for precision/recall and density/coverage (Kynkäänniemi et al. 2019; Naeem et al. 2020).

stylegan2-ada-pytorch embeds images with NVlabs' ``vgg16.pt``, a TorchScript port of the Keras VGG16
(``fc2`` output after ReLU, 4096-d). TorchScript runs code when loaded, so nat-gan does not accept that
file; it uses torchvision's VGG16 architecture with torchvision's ImageNet weights
(``vgg16-397923af.pth``, a plain state dict loaded with ``weights_only=True``) and reads the same layer,
``fc2`` after ReLU, as torch-fidelity's VGG16 extractor does. Images are resized to 224x224 (bilinear,
``align_corners=False``) and normalised with ImageNet mean/std. The weights differ from Keras', so absolute
numbers are close to, not identical with, stylegan2-ada's; compare runs made with the same extractor.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from natgan.errors import NatGanError
from natgan.metrics.weight_trust import verify
from natgan.metrics.weights import VGG16, locate

SIZE = (224, 224)
NAME = "torchvision-vgg16-fc2-relu"
PROTOCOL = ("torchvision VGG16 (ImageNet, vgg16-397923af.pth), fc2 after ReLU, 4096-d; bilinear resize to 224x224, "
            "ImageNet mean/std")
_MEAN = (0.485, 0.456, 0.406)
_STD = (0.229, 0.224, 0.225)


class VGG16Features(nn.Module):
    """float images in [0, 255], any size -> ``[B, 4096]`` fc2 (after ReLU) features."""

    def __init__(self, state_dict: dict | None = None):
        super().__init__()
        from torchvision.models import vgg16

        net = vgg16(weights=None)
        if state_dict is not None:
            net.load_state_dict(state_dict)
        self.features, self.avgpool = net.features, net.avgpool
        self.fc = net.classifier[:5]   # fc1, ReLU, dropout (off in eval), fc2, ReLU
        self.register_buffer("mean", torch.tensor(_MEAN).view(1, 3, 1, 1) * 255, persistent=False)
        self.register_buffer("std", torch.tensor(_STD).view(1, 3, 1, 1) * 255, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != SIZE:
            x = F.interpolate(x, size=SIZE, mode="bilinear", align_corners=False)
        x = (x - self.mean) / self.std
        return self.fc(torch.flatten(self.avgpool(self.features(x)), 1))


class ImageExtractor:
    """uint8 ``[B, 3, H, W]`` -> float32 numpy features through a network that resizes for itself.

    The counterpart of :class:`natgan.metrics.extractors.FeatureExtractor` for networks outside clean-fid's
    modes; ``mode`` (here the network's name) keys its cached reference features.
    """

    def __init__(self, network: nn.Module, *, name: str, protocol: str, device: str | torch.device = "cpu",
                 weights_id: str = ""):
        self.network = network
        self.name = self.mode = name
        self.protocol = protocol
        self.device = torch.device(device)
        self.logits_weight = None
        self.weights_id = weights_id  # sha256 prefix of the weights file: part of cache keys and of every result

    def __call__(self, images: torch.Tensor) -> np.ndarray:
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected uint8 [B, 3, H, W] images, got {images.dtype} {tuple(images.shape)}")
        with torch.inference_mode():
            feats = self.network(images.to(self.device, non_blocking=True).float())
        return feats.reshape(len(images), -1).float().cpu().numpy()

    def describe(self) -> str:
        return self.name


def load_vgg16_state(path: str | Path) -> dict:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for a wrong file
        raise NatGanError(f"{path}: not torchvision's VGG16 state dict {VGG16.filename} (TorchScript files such as "
                          f"NVlabs' vgg16.pt are not accepted) ({str(exc).splitlines()[0][:120]})") from None
    if not isinstance(state, dict) or "classifier.3.weight" not in state:
        raise NatGanError(f"{path}: not torchvision's VGG16 state dict {VGG16.filename} (download {VGG16.url})")
    return state


def build_vgg16(*, device: str | torch.device = "cpu", weights_dir: str | Path | None = None,
                random_weights: bool = False) -> ImageExtractor:
    """The VGG16 fc2 extractor; weights from the weights directory (``random_weights``: timing/tests only)."""
    if random_weights:
        network, name, protocol = VGG16Features(), f"{NAME}-random", f"RANDOM-WEIGHT {PROTOCOL} (timing/tests only)"
        weights_id = "random-init"
    else:
        path = locate("vgg16", weights_dir=weights_dir, purpose="precision/recall and density/coverage (VGG16)")
        checked = verify(VGG16, path)  # the digest before torch.load sees the file
        state = load_vgg16_state(path)
        # Another file under the same name (a --weights elsewhere, a replaced download) must not reuse features.
        weights_id = checked.sha256[:16]
        try:
            network = VGG16Features(state)
        except RuntimeError as exc:
            raise NatGanError(f"not torchvision's VGG16 weights ({str(exc).splitlines()[0][:120]})") from None
        name, protocol = NAME, f"{PROTOCOL}; {checked.describe()}"
    return ImageExtractor(network.to(device).eval(), name=name, protocol=protocol, device=device,
                          weights_id=weights_id)
