"""The pixel spaces models live in, and exact conversion to the 8-bit images FID and files see.

StyleNAT/StyleSwin train on ImageNet-normalised images (mean/std per channel); StyleGAN2, HiT and
GANformer on [-1, 1] ("symmetric"). Every command un-normalises through here so a sample PNG, an FID
feature batch and the LMDB the reference set came from are quantised identically.
"""

from __future__ import annotations

import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _stats(norm: str, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if norm == "imagenet":
        mean, std = IMAGENET_MEAN, IMAGENET_STD
    elif norm == "symmetric":
        mean, std = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
    else:
        raise ValueError(f"unknown normalization {norm!r} (expected 'imagenet' or 'symmetric')")
    shape = (1, 3, 1, 1)
    return (torch.tensor(mean, dtype=like.dtype, device=like.device).view(shape),
            torch.tensor(std, dtype=like.dtype, device=like.device).view(shape))


def to_unit(images: torch.Tensor, norm: str, *, clamp: bool = True) -> torch.Tensor:
    """Model space -> RGB in [0, 1] (clamped unless ``clamp=False``, which keeps gradients beyond the range
    for losses on generated images, as the projector needs)."""
    mean, std = _stats(norm, images)
    rgb = images * std + mean
    return rgb.clamp(0, 1) if clamp else rgb


def from_unit(images: torch.Tensor, norm: str) -> torch.Tensor:
    """RGB in [0, 1] -> model space."""
    mean, std = _stats(norm, images)
    return (images - mean) / std


def to_uint8(images: torch.Tensor, norm: str) -> torch.Tensor:
    """Model space -> uint8 ``[B, 3, H, W]``, rounded like ``torchvision.utils.save_image`` (x*255+0.5)."""
    return (to_unit(images.float(), norm) * 255 + 0.5).clamp(0, 255).to(torch.uint8)
