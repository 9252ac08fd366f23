"""bCR augmentations (balanced consistency regularisation), as the official StyleSwin/StyleNAT code uses.

Per sample, in this order: horizontal flip (p=0.5), translation by up to 1/8 of the side with zero fill,
brightness + U(-1/2, 1/2), saturation x U(0, 2) around the per-pixel channel mean, contrast
x U(1/2, 3/2) around the image mean, and a cutout of a half-side square. They act on images in the
model's own (normalised) space and are differentiable w.r.t. the images, since bCR on fakes backprops.
Random parameters come from an explicit CPU generator so training is resumable bit-for-bit.
"""

from __future__ import annotations

import torch


def _uniform(n: int, gen: torch.Generator, device: torch.device, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """U(0, 1) per image, drawn in the images' dtype as the official ops draw (float64 images get float64
    draws; half-precision images keep float32 draws, cast by the caller)."""
    draw = dtype if dtype in (torch.float32, torch.float64) else torch.float32
    return torch.rand(n, 1, 1, 1, generator=gen, dtype=draw).to(device)


def _randint(low: int, high: int, n: int, gen: torch.Generator) -> torch.Tensor:
    return torch.randint(low, high, (n,), generator=gen)


def flip(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    mask = (torch.rand(x.shape[0], generator=gen) < 0.5).to(x.device).view(-1, 1, 1, 1)
    return torch.where(mask, x.flip(3), x)


def translate(x: torch.Tensor, gen: torch.Generator, ratio: float = 0.125) -> torch.Tensor:
    """Shift each image by integer (-dy, -dx), (dy, dx) drawn in [-s, s], s = round(ratio * side); vacated
    pixels are 0. Output pixel (y, x) reads input (y + dy, x + dx), as the official ``rand_translation``
    (DiffAugment, StyleSwin's CR_DiffAug) reads its padded image, so the same draw moves the same way."""
    b, _, h, w = x.shape
    sy, sx = int(h * ratio + 0.5), int(w * ratio + 0.5)
    dy = _randint(-sy, sy + 1, b, gen).to(x.device).view(b, 1, 1)
    dx = _randint(-sx, sx + 1, b, gen).to(x.device).view(b, 1, 1)
    ys = torch.arange(h, device=x.device).view(1, h, 1) + dy
    xs = torch.arange(w, device=x.device).view(1, 1, w) + dx
    valid = ((ys >= 0) & (ys < h) & (xs >= 0) & (xs < w)).unsqueeze(1)
    flat = (ys.clamp(0, h - 1) * w + xs.clamp(0, w - 1)).view(b, 1, h * w).expand(-1, x.shape[1], -1)
    out = x.flatten(2).gather(2, flat).view_as(x)
    return out * valid


def brightness(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    return x + (_uniform(x.shape[0], gen, x.device, x.dtype) - 0.5).to(x.dtype)


def saturation(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    mean = x.mean(dim=1, keepdim=True)
    return (x - mean) * (_uniform(x.shape[0], gen, x.device, x.dtype) * 2).to(x.dtype) + mean


def contrast(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    mean = x.mean(dim=[1, 2, 3], keepdim=True)
    return (x - mean) * (_uniform(x.shape[0], gen, x.device, x.dtype) + 0.5).to(x.dtype) + mean


def cutout(x: torch.Tensor, gen: torch.Generator, ratio: float = 0.5) -> torch.Tensor:
    """Zero a square of side round(ratio * side) centred at a uniformly drawn position (clipped at borders)."""
    b, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    cy = _randint(0, h + (1 - ch % 2), b, gen).to(x.device).view(b, 1, 1)
    cx = _randint(0, w + (1 - cw % 2), b, gen).to(x.device).view(b, 1, 1)
    ys = torch.arange(h, device=x.device).view(1, h, 1)
    xs = torch.arange(w, device=x.device).view(1, 1, w)
    inside = (ys >= cy - ch // 2) & (ys < cy - ch // 2 + ch) & (xs >= cx - cw // 2) & (xs < cx - cw // 2 + cw)
    return x * (~inside).unsqueeze(1).to(x.dtype)


def bcr_augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """All four bCR augmentation groups in the official order (flip, translation, colour, cutout)."""
    x = flip(x, gen)
    x = translate(x, gen)
    x = contrast(saturation(brightness(x, gen), gen), gen)
    return cutout(x, gen)
