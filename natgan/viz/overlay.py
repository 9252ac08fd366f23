"""One head's attention map laid over the generated image (the studio's attention panel).

Self-attention maps (mean-query or one pixel's query, :mod:`natgan.viz.maps`) are stretched to [0, 1]
for that head, coloured and blended over the image; the map's cells are enlarged to the image size
without smoothing, so each cell stays visible as what it is: one position of the feature map.
Image -> latent cross-attention shows where the latent that the chosen pixel attends to most is attended
(without a pixel: each position coloured by its most-attended latent, as GANformer's figures).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from natgan.errors import ConfigError
from natgan.viz import colormaps
from natgan.viz.maps import BlockAttention
from natgan.viz.render import normalise

MARK = np.array([0, 255, 255], dtype=np.uint8)  # the chosen query cell


def _cell(level_hw: tuple[int, int], where: tuple[float, float]) -> tuple[int, int]:
    h, w = level_hw
    return min(int(where[0] * h), h - 1), min(int(where[1] * w), w - 1)


def _enlarge(colours: torch.Tensor, size: int) -> np.ndarray:
    """``[h, w, 3]`` uint8 -> ``[size, size, 3]`` by nearest neighbour."""
    chw = colours.permute(2, 0, 1).unsqueeze(0).float()
    return F.interpolate(chw, size=(size, size), mode="nearest")[0].permute(1, 2, 0).round().byte().numpy()


def head_colours(block: BlockAttention, head: int, *, cmap: str = "inferno",
                 where: tuple[float, float] | None = None) -> tuple[torch.Tensor, str]:
    """``([h, w, 3] uint8 colours of head ``head`` of ``block``, a caption)``."""
    if not 0 <= head < len(block.heads):
        raise ConfigError(f"head {head}: this block has heads 0-{len(block.heads) - 1}")
    label = block.labels[head]
    if block.kind == "self":
        values = normalise(block.maps[head:head + 1].float(), "head")[0]
        what = "query at the marked pixel" if where is not None else "mean query (StyleNAT paper, App. D)"
        return colormaps.apply(values, cmap), f"{what}; head {block.heads[head]} {label}".strip()
    probs = block.maps[head].float()  # [h, w, n_latents]
    if where is None:
        pal = (colormaps.palette(probs.shape[-1]) * 255).round().to(torch.uint8)
        return pal[probs.argmax(dim=-1)], f"most-attended latent per position; head {block.heads[head]}"
    y, x = _cell(tuple(probs.shape[:2]), where)
    latent = int(probs[y, x].argmax())
    values = probs[..., latent] / probs[..., latent].max().clamp_min(1e-12)
    return colormaps.apply(values, cmap), f"attention to latent {latent} (the marked pixel's strongest)"


def overlay(image: np.ndarray, block: BlockAttention, head: int, *, cmap: str = "inferno", alpha: float = 0.6,
            where: tuple[float, float] | None = None) -> tuple[np.ndarray, str]:
    """HWC uint8 ``image`` with the head's map blended over it (``alpha`` of the map), and a caption."""
    colours, caption = head_colours(block, head, cmap=cmap, where=where)
    if where is not None:
        y, x = _cell(tuple(colours.shape[:2]), where)
        colours = colours.clone()
        colours[y, x] = torch.from_numpy(MARK)
    size = image.shape[0]
    layer = _enlarge(colours, size).astype(np.float32)
    mixed = (1 - alpha) * image.astype(np.float32) + alpha * layer
    return np.clip(mixed + 0.5, 0, 255).astype(np.uint8), f"{block.level}x{block.width} block {block.block}: " + \
        caption
