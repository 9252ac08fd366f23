"""Feature extractors: a clean-fid mode's resizing in front of a feature network.

A :class:`FeatureExtractor` maps uint8 ``[B, 3, H, W]`` images to float32 ``[B, D]`` features exactly
as clean-fid does for that mode (its resizers, its networks), only batched and on the device:

* ``clean``: clean-fid's PIL bicubic float resize to 299 (per image, on a CPU thread pool), then the
  NVIDIA TorchScript TF-Inception without its internal resize;
* ``legacy_pytorch`` (pytorch-fid, the StyleNAT/StyleSwin protocol): bilinear ``F.interpolate`` to 299
  (``align_corners=False``, clipped to [0, 255]) on the device for the whole batch, which is what
  clean-fid does image by image, then pytorch-fid's FID-Inception on ``x / 255``;
* ``legacy_tensorflow``: the TorchScript TF-Inception resizing internally (TTUR/NVIDIA numbers).

Tests and notebooks can wrap any small network in a :class:`FeatureExtractor` (a ``name`` makes its
reference statistics cacheable), or pass a bare callable taking uint8 images.
"""

from __future__ import annotations

import contextlib
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from cleanfid import inception_pytorch
from cleanfid.inception_torchscript import InceptionV3W
from cleanfid.resize import build_resizer
from torch import nn

from natgan.devices import usable_cores
from natgan.errors import ConfigError, NatGanError
from natgan.metrics.weight_trust import VerifiedWeights, verify
from natgan.metrics.weights import MODES, PYTORCH_FID, TORCHSCRIPT, resolve_weights

INCEPTION_SIZE = (299, 299)

PROTOCOLS = {
    "clean": "clean-fid 'clean': PIL bicubic float resize to 299x299, NVIDIA TorchScript TF-Inception-v3 "
             "(inception-2015-12-05.pt), pool3 2048-d",
    "legacy_pytorch": "clean-fid 'legacy_pytorch' = pytorch-fid (StyleNAT/StyleSwin papers): torch bilinear resize "
                      "to 299x299 (align_corners=False), FID-Inception-v3 (pt_inception-2015-12-05), pool3 2048-d",
    "legacy_tensorflow": "clean-fid 'legacy_tensorflow' = TTUR/NVIDIA: TorchScript TF-Inception-v3 with its "
                         "internal resize, pool3 2048-d",
}

_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def _resize_pool() -> ThreadPoolExecutor:
    """Shared threads for clean mode's per-image PIL resizes (Pillow releases the GIL while resampling)."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(max_workers=max(1, min(32, usable_cores())),
                                       thread_name_prefix="natgan-resize")
        return _POOL


class FeatureExtractor:
    """uint8 ``[B, 3, H, W]`` images -> float32 numpy ``[B, D]`` features under a clean-fid ``mode``.

    ``network`` receives float32 images in [0, 255] on ``device`` (299x299 except in
    ``legacy_tensorflow`` mode) and returns ``[B, D]`` features; ``name`` identifies it in cache keys
    (None: reference statistics are not cached). ``logits_weight`` (``[classes, D]``): the classifier
    that turns features into the unbiased logits the Inception Score reads (None: no IS).
    """

    def __init__(self, network: Callable[[torch.Tensor], torch.Tensor], *, mode: str, name: str | None = None,
                 device: str | torch.device = "cpu", logits_weight: np.ndarray | None = None):
        if mode not in MODES:
            raise ConfigError(f"--mode '{mode}': expected one of {', '.join(MODES)}")
        self.network = network
        self.mode = mode
        self.name = name
        self.weights_id = ""  # content hash of the weights file (see build_inception); part of cache keys
        self.protocol: str | None = None  # set for the real Inception networks (see PROTOCOLS)
        self.device = torch.device(device)
        self.logits_weight = logits_weight
        self._pil_resize = build_resizer("clean") if mode == "clean" else None

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """The mode's resize: uint8 images (any device) -> float32 network input on ``self.device``."""
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected uint8 [B, 3, H, W] images, got {images.dtype} {tuple(images.shape)}")
        if self.mode == "clean":
            hwc = images.cpu().numpy().transpose(0, 2, 3, 1)
            resized = list(_resize_pool().map(self._pil_resize, hwc)) if len(hwc) > 1 else [self._pil_resize(hwc[0])]
            batch = torch.from_numpy(np.stack(resized).transpose(0, 3, 1, 2).copy())
            return batch.to(self.device, non_blocking=True)
        x = images.to(self.device, non_blocking=True).float()
        if self.mode == "legacy_pytorch":
            x = F.interpolate(x, size=INCEPTION_SIZE, mode="bilinear", align_corners=False).clamp_(0, 255)
        return x

    def embed(self, x: torch.Tensor) -> np.ndarray:
        with torch.inference_mode():
            feats = self.network(x)
        feats = feats.reshape(len(x), -1)
        return feats.float().cpu().numpy()

    def __call__(self, images: torch.Tensor) -> np.ndarray:
        return self.embed(self.prepare(images))

    def describe(self) -> str:
        return self.name or getattr(self.network, "__name__", type(self.network).__name__)


class CallableExtractor:
    """A bare ``fn(uint8 images) -> features`` used as it is (no resizing, no caching unless it has a name)."""

    def __init__(self, fn: Callable[[torch.Tensor], Any], mode: str):
        self.fn = fn
        self.mode = mode
        self.name = getattr(fn, "name", None)
        self.weights_id = str(getattr(fn, "weights_id", ""))  # the caller's identity of its weights, if any
        self.protocol = None
        self.device = torch.device("cpu")
        self.logits_weight = getattr(fn, "logits_weight", None)

    def __call__(self, images: torch.Tensor) -> np.ndarray:
        with torch.inference_mode():
            feats = self.fn(images)
        if isinstance(feats, torch.Tensor):
            feats = feats.detach().float().cpu().numpy()
        return np.asarray(feats, dtype=np.float32).reshape(len(images), -1)

    def describe(self) -> str:
        return self.name or getattr(self.fn, "__name__", type(self.fn).__name__)


def as_extractor(extractor: Any, mode: str) -> FeatureExtractor | CallableExtractor:
    if isinstance(extractor, (FeatureExtractor, CallableExtractor)):
        return extractor
    if callable(extractor):
        return CallableExtractor(extractor, mode)
    raise TypeError(f"extractor must be a FeatureExtractor or a callable, got {type(extractor).__name__}")


# ----------------------------------------------------------------------------------------- Inception


class TorchScriptInception(InceptionV3W):
    """clean-fid's TorchScript TF-Inception wrapper (its forward), loaded from a file that passed
    :func:`natgan.metrics.weight_trust.verify` (the bytes that were hashed, so nothing is swapped in between;
    ``torch.jit.load`` runs code from the file, so only the official file or one the user trusts gets here)."""

    def __init__(self, weights: VerifiedWeights, *, resize_inside: bool):
        nn.Module.__init__(self)
        path = weights.path
        try:
            with warnings.catch_warnings():  # torch.jit.load is deprecated in torch 2.x but still the only way
                warnings.simplefilter("ignore", FutureWarning)
                self.base = torch.jit.load(weights.stream(), map_location="cpu").eval()
            self.layers = self.base.layers
        except (RuntimeError, ValueError, AttributeError) as exc:
            raise NatGanError(f"{path}: not the TorchScript Inception {TORCHSCRIPT.filename} that clean/"
                              f"legacy_tensorflow modes need ({str(exc).splitlines()[0][:120]})") from None
        self.resize_inside = resize_inside

    def classifier_weight(self) -> np.ndarray | None:
        """The 1008-class softmax layer's weight (``output``), for the Inception Score's unbiased logits."""
        output = getattr(self.base, "output", None) if hasattr(self.base, "output") else None
        return None if output is None else output.weight.detach().float().cpu().numpy()


_LOADER_LOCK = threading.Lock()


@contextlib.contextmanager
def _pytorch_fid_weights_from(path: Path, loaded: dict):
    """Make clean-fid's pytorch-fid Inception read its state dict from ``path`` (kept in ``loaded``)."""

    def load(url: str, **_: Any) -> dict:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            loaded.update(state)
            return state
        except Exception as exc:  # torch raises several types for a wrong file
            raise NatGanError(f"{path}: not the pytorch-fid Inception weights {PYTORCH_FID.filename} that "
                              f"legacy_pytorch mode needs ({str(exc).splitlines()[0][:120]})") from None

    with _LOADER_LOCK:
        original = inception_pytorch.load_state_dict_from_url
        inception_pytorch.load_state_dict_from_url = load
        try:
            yield
        finally:
            inception_pytorch.load_state_dict_from_url = original


class PytorchFidInception(nn.Module):
    """clean-fid's pytorch-fid InceptionV3 (pool3 block), fed ``x / 255`` as clean-fid's extractor does."""

    def __init__(self, path: str | Path):
        super().__init__()
        state: dict = {}
        with _pytorch_fid_weights_from(Path(path), state):
            try:
                with warnings.catch_warnings():  # clean-fid passes torchvision's deprecated `pretrained=False`
                    warnings.simplefilter("ignore", UserWarning)
                    self.model = inception_pytorch.InceptionV3(output_blocks=[3], resize_input=False)
            except RuntimeError as exc:  # load_state_dict key/shape mismatch
                raise NatGanError(f"{path}: not the pytorch-fid Inception weights {PYTORCH_FID.filename} "
                                  f"({str(exc).splitlines()[0][:120]})") from None
        # pytorch-fid keeps only the pool3 blocks; the 1008-class layer stays here for the Inception Score.
        fc = state.get("fc.weight")
        self.register_buffer("fc_weight", None if fc is None else fc.float().clone(), persistent=False)

    def classifier_weight(self) -> np.ndarray | None:
        return None if self.fc_weight is None else self.fc_weight.cpu().numpy()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x / 255)[0].squeeze(-1).squeeze(-1)


def inception_name(mode: str) -> str:
    return "pytorch-fid-inception-2015-12-05" if mode == "legacy_pytorch" else "tf-inception-2015-12-05"


def build_inception(mode: str, *, device: str | torch.device = "cpu", inception: str | Path | None = None,
                    weights_dir: str | Path | None = None,
                    trust_torchscript: str | Path | None = None) -> FeatureExtractor:
    """The Inception extractor of ``mode``, weights found by :func:`natgan.metrics.weights.resolve_weights`
    and verified (sha256) before anything loads them; ``trust_torchscript`` names a non-official TorchScript
    file the user accepts to run (``--trust-torchscript``)."""
    path = resolve_weights(mode, inception, weights_dir)
    if mode == "legacy_pytorch":
        checked = verify(PYTORCH_FID, path)
        network: nn.Module = PytorchFidInception(path)
    else:
        checked = verify(TORCHSCRIPT, path, trust_torchscript=trust_torchscript)
        network = TorchScriptInception(checked, resize_inside=(mode == "legacy_tensorflow"))
    network = network.to(device).eval()
    extractor = FeatureExtractor(network, mode=mode, name=inception_name(mode), device=device,
                                 logits_weight=network.classifier_weight())
    extractor.weights_id = checked.sha256[:16]  # another file under the same name must not reuse statistics
    extractor.protocol = f"{PROTOCOLS[mode]}; {checked.describe()}"
    return extractor
