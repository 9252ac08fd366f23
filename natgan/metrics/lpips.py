"""LPIPS-VGG perceptual distance (Zhang et al. 2018), for projection and perceptual path length.

The network is torchvision's VGG16 trunk up to ``relu5_3``; the five ``relu*`` activations
(``relu1_2``, ``relu2_2``, ``relu3_3``, ``relu4_3``, ``relu5_3``) are unit-normalised over channels,
their squared differences weighted per channel by LPIPS's learned non-negative linear layers (v0.1),
averaged over space and summed over layers. Inputs go through LPIPS's fixed scaling layer first.

Weights are read from local files only (clusters are often offline):

* ``vgg16-397923af.pth`` — torchvision's ImageNet VGG16 (:data:`VGG16_URL`);
* ``vgg.pth`` — the LPIPS v0.1 linear layers (:data:`LPIPS_VGG_URL`),

found by :func:`natgan.metrics.weights.locate_all` (``--weights DIR``, ``$NATGAN_WEIGHTS``,
the cache, torch.hub's checkpoints; see that module for the search order). ``random_init=True`` builds
the same network with seeded random weights, so tests run without any download; its distances are not LPIPS numbers.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from natgan.errors import NatGanError
from natgan.metrics.weight_files import (  # noqa: F401 - re-exported: the names callers know
    LPIPS_VGG,
    LPIPS_VGG_FILE,
    LPIPS_VGG_URL,
    VGG16,
    VGG16_FILE,
    VGG16_URL,
)
from natgan.metrics.weight_trust import verify

# End (exclusive) of each slice of torchvision's vgg16().features: relu1_2, relu2_2, relu3_3, relu4_3, relu5_3.
_SLICE_ENDS = (4, 9, 16, 23, 30)
CHANNELS = (64, 128, 256, 512, 512)
# LPIPS's ScalingLayer: inputs in [-1, 1] are shifted and scaled to the statistics VGG was trained on.
_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)
_EPS = 1e-10


def _unit_normalise(features: torch.Tensor) -> torch.Tensor:
    return features / (features.square().sum(dim=1, keepdim=True).sqrt() + _EPS)


class LPIPS(nn.Module):
    """``lpips(x, y) -> [B]`` for RGB images in [0, 1] (any size VGG accepts, >= 16 px).

    :meth:`features` exposes the normalised activations so a fixed target's features are computed once
    (the projector's inner loop).
    """

    def __init__(self, trunk: nn.Sequential, linear_weights: list[torch.Tensor], *, pretrained: bool,
                 weights_id: str = ""):
        super().__init__()
        if len(linear_weights) != len(CHANNELS):
            raise ValueError(f"expected {len(CHANNELS)} linear layers, got {len(linear_weights)}")
        starts = (0,) + _SLICE_ENDS[:-1]
        self.slices = nn.ModuleList(nn.Sequential(*trunk[a:b]) for a, b in zip(starts, _SLICE_ENDS))
        for i, w in enumerate(linear_weights):
            self.register_buffer(f"lin{i}", w.reshape(1, -1, 1, 1).float().clone())
        self.register_buffer("shift", torch.tensor(_SHIFT).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(_SCALE).view(1, 3, 1, 1))
        self.pretrained = pretrained
        self.weights_id = weights_id  # which files made it (sha256 prefixes), recorded with every PPL
        self.requires_grad_(False)
        self.eval()

    def features(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Unit-normalised VGG activations of RGB images in [0, 1], one tensor per LPIPS layer."""
        x = (images * 2 - 1 - self.shift) / self.scale
        out = []
        for block in self.slices:
            x = block(x)
            out.append(_unit_normalise(x))
        return out

    def distance_from_features(self, a: list[torch.Tensor], b: list[torch.Tensor]) -> torch.Tensor:
        """LPIPS between two feature lists (from :meth:`features`); broadcasts over the batch."""
        total = None
        for i, (fa, fb) in enumerate(zip(a, b)):
            layer = ((fa - fb).square() * getattr(self, f"lin{i}")).sum(dim=1).mean(dim=(1, 2))
            total = layer if total is None else total + layer
        return total

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.distance_from_features(self.features(x), self.features(y))


def _vgg16_trunk(state: dict | None) -> nn.Sequential:
    """torchvision's ``vgg16().features`` (built without the 120 M-parameter classifier, which LPIPS never
    uses); ``state`` is torchvision's full state dict, of which the ``features.*`` entries are loaded."""
    from torchvision.models.vgg import cfgs, make_layers

    features = make_layers(cfgs["D"], batch_norm=False)
    if state is not None:
        prefix = "features."
        features.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})
    return features[:_SLICE_ENDS[-1]]


def _load_state(path: Path, what: str) -> dict:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the same user error
        raise NatGanError(f"{path}: cannot read the {what} ({type(exc).__name__}: {str(exc).splitlines()[0]})") \
            from None
    if not isinstance(state, dict):
        raise NatGanError(f"{path}: not a state dict (expected the {what})")
    return state


def _linear_weights(state: dict, path: Path) -> list[torch.Tensor]:
    """The five ``lin{i}.model.1.weight`` tensors of LPIPS's vgg.pth, checked against VGG's widths."""
    weights = []
    for i, channels in enumerate(CHANNELS):
        key = f"lin{i}.model.1.weight"
        if key not in state:
            raise NatGanError(f"{path}: no '{key}' (expected LPIPS v0.1 vgg.pth from {LPIPS_VGG_URL})")
        w = state[key]
        if w.numel() != channels:
            raise NatGanError(f"{path}: '{key}' has {w.numel()} weights, expected {channels}")
        weights.append(w)
    return weights


def load_lpips(weights: str | Path | None = None, *, random_init: bool = False, seed: int = 0,
               device: torch.device | str = "cpu") -> LPIPS:
    """LPIPS-VGG with the pretrained files (see the module docstring), or seeded random weights."""
    if random_init:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            trunk = _vgg16_trunk(None)
            lins = [torch.rand(c) / c for c in CHANNELS]  # non-negative like the learned weights
        return LPIPS(trunk, lins, pretrained=False, weights_id=f"random-init-seed{seed}").to(device)
    from natgan.metrics.weights import locate_all

    paths = locate_all(["vgg16", "lpips-vgg"], weights_dir=weights, purpose="LPIPS")
    vgg_path, lin_path = paths["vgg16"], paths["lpips-vgg"]
    checked = [verify(VGG16, vgg_path), verify(LPIPS_VGG, lin_path)]  # digests before any loader runs
    trunk_state = _load_state(vgg_path, "torchvision VGG16 weights")
    try:
        trunk = _vgg16_trunk(trunk_state)
    except RuntimeError as exc:
        raise NatGanError(f"{vgg_path}: not torchvision's VGG16 state dict ({str(exc).splitlines()[0]})") from None
    lins = _linear_weights(_load_state(lin_path, "LPIPS linear layers"), lin_path)
    official = all(c.official for c in checked)
    return LPIPS(trunk, lins, pretrained=True,
                 weights_id=f"vgg16 {checked[0].sha256[:16]}, lin {checked[1].sha256[:16]}"
                            f"{'' if official else ' (NOT the official files)'}").to(device)


def resize_for_lpips(images: torch.Tensor, size: int = 256) -> torch.Tensor:
    """Area-downsample images larger than ``size`` (the projector's and PPL's 256-px VGG input)."""
    if images.shape[-1] > size:
        return F.adaptive_avg_pool2d(images, (size, size))
    return images
