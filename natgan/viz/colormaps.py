"""A few perceptual colour maps as anchor tables, so the viewer needs no matplotlib.

Each map is a list of evenly spaced sRGB anchors (the published colours of matplotlib's viridis /
magma / inferno at ninths, and the coolwarm diverging end points); values in between are linearly
interpolated into a 256-entry lookup table, which is visually indistinguishable at map sizes.
"""

from __future__ import annotations

import colorsys

import torch

_ANCHORS: dict[str, list[str]] = {
    "gray": ["#000000", "#ffffff"],
    "viridis": ["#440154", "#472d7b", "#3b528b", "#2c728e", "#21918c", "#28ae80", "#5ec962", "#addc30",
                "#fde725"],
    "magma": ["#000004", "#1c1044", "#4f127b", "#812581", "#b5367a", "#e55964", "#fb8761", "#fec287",
              "#fcfdbf"],
    "inferno": ["#000004", "#1f0c48", "#550f6d", "#88226a", "#ba3655", "#e35933", "#f98c0a", "#f9c932",
                "#fcffa4"],
    "coolwarm": ["#3b4cc0", "#7b9ff9", "#c0d4f5", "#dddddd", "#f2cbb7", "#ee8468", "#b40426"],
}

COLORMAPS = tuple(_ANCHORS)


def _rgb(hex_colour: str) -> tuple[int, int, int]:
    return int(hex_colour[1:3], 16), int(hex_colour[3:5], 16), int(hex_colour[5:7], 16)


def lookup_table(name: str) -> torch.Tensor:
    """``[256, 3]`` uint8 table for colour map ``name``."""
    if name not in _ANCHORS:
        from natgan.errors import ConfigError

        raise ConfigError(f"--cmap: unknown colour map '{name}'; choose one of {', '.join(COLORMAPS)}")
    anchors = torch.tensor([_rgb(c) for c in _ANCHORS[name]], dtype=torch.float32)
    pos = torch.linspace(0, len(anchors) - 1, 256)
    lo = pos.floor().long().clamp(max=len(anchors) - 2)
    frac = (pos - lo).unsqueeze(1)
    table = anchors[lo] * (1 - frac) + anchors[lo + 1] * frac
    return table.round().clamp(0, 255).to(torch.uint8)


def apply(values: torch.Tensor, name: str) -> torch.Tensor:
    """Values in [0, 1] of shape ``[H, W]`` -> ``[H, W, 3]`` uint8 colours."""
    index = (values.clamp(0, 1) * 255).round().long()
    return lookup_table(name)[index]


def palette(n: int) -> torch.Tensor:
    """``n`` distinct colours evenly spaced in hue (HLS, l=0.6, s=0.65), ``[n, 3]`` floats in [0, 1].

    The same kind of palette GANformer's visualiser uses for its latent-to-region assignment maps.
    """
    return torch.tensor([colorsys.hls_to_rgb(i / max(n, 1), 0.6, 0.65) for i in range(n)], dtype=torch.float32)
