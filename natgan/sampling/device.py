"""Device choice and a batch size that suits it (sampling and FID share these)."""

from __future__ import annotations

import torch

from natgan.errors import ConfigError


def resolve_device(name: str | torch.device | None = "auto", *, option: str = "--device") -> torch.device:
    """``auto`` -> the current CUDA device when there is one, else CPU; unusable devices are clear errors."""
    if isinstance(name, torch.device):
        return name
    text = (name or "auto").strip().lower()
    if text == "auto":
        return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    try:
        device = torch.device(text)
    except RuntimeError:
        raise ConfigError(f"{option} '{name}': not a device (expected auto, cpu, cuda or cuda:N)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"{option} '{name}': CUDA is not available on this machine (use --device cpu)")
        index = torch.cuda.current_device() if device.index is None else device.index
        if index >= torch.cuda.device_count():
            raise ConfigError(f"{option} '{name}': this machine has {torch.cuda.device_count()} CUDA device(s)")
        return torch.device("cuda", index)
    if device.type not in ("cpu", "mps"):
        raise ConfigError(f"{option} '{name}': unsupported device type '{device.type}' (use cpu or cuda)")
    return device


def auto_batch_size(device: torch.device, resolution: int) -> int:
    """A generation/feature batch that fills the device without waste; CUDA OOM backs off from it.

    CPU: small batches keep the pipeline's two stages interleaved. CUDA: 128 images at 256 px on an
    80 GB card, scaled with memory and inversely with pixel count, within [4, 256].
    """
    if device.type != "cuda":
        return 8 if resolution <= 256 else 4
    total_gib = torch.cuda.get_device_properties(device).total_memory / 2**30
    size = 128 * (total_gib / 80) * (256 / max(resolution, 1)) ** 2
    return int(max(4, min(256, size)))
