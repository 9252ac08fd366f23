"""A batch size that suits the device (sampling and FID share it; devices are named by natgan.devices)."""

from __future__ import annotations

import torch


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
