"""Pictures of :class:`~natgan.viz.maps.AttentionMaps`: labelled grids a user can look at.

Written files (all PNG, each written to a temporary name and renamed, so an interrupted run never
leaves a truncated image under a final name):

* ``sample.png`` — the generated image;
* ``{H}x{W}_block{j}.png`` — one grid per block, one tile per head, labelled with the head's
  partition (``h3 k7 d2``, ``h5 shifted window``, ``h0 regional`` …), laid out like the official code
  (``√heads`` per row, rounded up);
* ``{H}x{W}_overview.png`` — one sheet per level: the sample, then one row per block with every head.

Self-attention maps are signed dot products; ``norm`` chooses how they become grey levels:
``head`` (default) stretches each head to [0, 1], ``block`` shares one range per block, ``official``
clamps the raw ``q̄·k/2`` values to [0, 1] exactly as the StyleNAT analysis script saves them.
Cross-attention (probabilities over latents) is drawn as GANformer does: ``soft`` colours each
position by the palette colours of its latents weighted by their probabilities, ``hard`` by its
most-attended latent; ``latents`` draws one tile per (head, latent).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from natgan.errors import ConfigError
from natgan.fsutil import atomic_write, make_output_dir
from natgan.sampling.export import scaled, scaled_by
from natgan.viz import colormaps
from natgan.viz.maps import AttentionMaps, BlockAttention

NORMS = ("head", "block", "official")
CROSS_MODES = ("soft", "hard", "latents")
_BG = (255, 255, 255)
_FG = (20, 20, 20)
_PAD = 4


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: fixed-size bitmap font
        return ImageFont.load_default()


def normalise(maps: torch.Tensor, norm: str) -> torch.Tensor:
    """``[heads, H, W]`` raw maps -> values in [0, 1] for display."""
    if norm == "official":
        return maps.clamp(0, 1)
    if norm == "head":
        lo = maps.amin(dim=(1, 2), keepdim=True)
        hi = maps.amax(dim=(1, 2), keepdim=True)
    elif norm == "block":
        lo, hi = maps.min(), maps.max()
    else:
        raise ConfigError(f"--norm: expected one of {', '.join(NORMS)}, got '{norm}'")
    return (maps - lo) / (hi - lo).clamp_min(1e-12)


def _cross_tiles(block: BlockAttention, mode: str, cmap: str) -> tuple[list[np.ndarray], list[str]]:
    probs = block.maps  # [heads, H, W, L]
    colours = colormaps.palette(probs.shape[-1])
    tiles, labels = [], []
    for i, head in enumerate(block.heads):
        p = probs[i]
        base = f"h{head} {block.labels[i]}".strip()
        if mode == "soft":
            tiles.append(_u8(torch.einsum("yxl,lc->yxc", p, colours)))
            labels.append(base)
        elif mode == "hard":
            tiles.append(_u8(colours[p.argmax(dim=-1)]))
            labels.append(base)
        else:
            for latent in range(p.shape[-1]):
                m = p[..., latent]
                tiles.append(colormaps.apply(m / m.max().clamp_min(1e-12), cmap).numpy())
                labels.append(f"h{head} z{latent}")
    return tiles, labels


def _u8(rgb01: torch.Tensor) -> np.ndarray:
    return (rgb01.clamp(0, 1) * 255).round().to(torch.uint8).numpy()


def block_tiles(block: BlockAttention, *, cmap: str = "gray", norm: str = "head",
                cross: str = "soft") -> tuple[list[np.ndarray], list[str]]:
    """One ``[H, W, 3]`` uint8 tile and one label per head (per head and latent with ``cross='latents'``)."""
    if block.kind == "cross":
        if cross not in CROSS_MODES:
            raise ConfigError(f"--cross: expected one of {', '.join(CROSS_MODES)}, got '{cross}'")
        return _cross_tiles(block, cross, cmap)
    values = normalise(block.maps, norm)
    tiles = [colormaps.apply(v, cmap).numpy() for v in values]
    labels = [f"h{h} {lab}".strip() for h, lab in zip(block.heads, block.labels)]
    return tiles, labels


def grid_columns(n: int) -> int:
    """Tiles per row as in the official script: √n when n is a square, else ⌊√n⌋ + 1."""
    root = math.isqrt(n)
    return root if root * root == n else root + 1


def _scaled(tile: np.ndarray, size: int) -> Image.Image:
    img = Image.fromarray(tile)
    if img.width == size:
        return img
    # Nearest keeps map cells crisp when enlarging; BOX averages honestly when shrinking.
    resample = Image.NEAREST if size > img.width else Image.BOX
    return img.resize((size, round(size * img.height / img.width)), resample)


def _text_height(font: ImageFont.ImageFont, text: str = "Hg") -> int:
    box = font.getbbox(text)
    return box[3] - box[1]


def grid(tiles: list[np.ndarray], labels: list[str], *, title: str, tile_size: int,
         columns: int | None = None) -> Image.Image:
    """Tiles in rows under a title, each with its label above it."""
    cols = columns or grid_columns(len(tiles))
    rows = math.ceil(len(tiles) / cols)
    font = _label_font(labels, tile_size)
    title_font = _font(16)
    label_h = _text_height(font) + 2 * _PAD
    title_h = _text_height(title_font) + 3 * _PAD
    scaled = [_scaled(t, tile_size) for t in tiles]
    tile_h = max(s.height for s in scaled)
    width = max(cols * (tile_size + _PAD) + _PAD, int(title_font.getlength(title)) + 2 * _PAD)
    height = title_h + rows * (label_h + tile_h + _PAD) + _PAD
    sheet = Image.new("RGB", (width, height), _BG)
    draw = ImageDraw.Draw(sheet)
    draw.text((_PAD, _PAD), title, fill=_FG, font=title_font)
    for i, (img, label) in enumerate(zip(scaled, labels)):
        r, c = divmod(i, cols)
        x = _PAD + c * (tile_size + _PAD)
        y = title_h + r * (label_h + tile_h + _PAD)
        draw.text((x, y + _PAD // 2), _fit(label, font, tile_size), fill=_FG, font=font)
        sheet.paste(img, (x, y + label_h))
    return sheet


def _label_font(labels: list[str], width: int) -> ImageFont.ImageFont:
    """The largest font (16 px down to 8 px) in which every label fits the tile width."""
    size = max(8, min(16, width // 8))
    font = _font(size)
    while size > 8 and labels and max(font.getlength(t) for t in labels) > width:
        size -= 1
        font = _font(size)
    return font


def _fit(text: str, font: ImageFont.ImageFont, width: int) -> str:
    while text and font.getlength(text) > width:
        text = text[:-1]
    return text


def overview(result: AttentionMaps, level: int, *, cmap: str, norm: str, cross: str, tile_size: int = 96,
             title: str = "") -> Image.Image:
    """One sheet per level: the sample on the left, one row of head tiles per block on the right."""
    rows = []
    for block in result.at(level):
        tiles, labels = block_tiles(block, cmap=cmap, norm=norm, cross="soft" if cross == "latents" else cross)
        rows.append(grid(tiles, labels, title=_block_title(block), tile_size=tile_size, columns=len(tiles)))
    sample_side = max(tile_size * 2, min(256, result.image.shape[-1]))
    sample = Image.fromarray(result.image.permute(1, 2, 0).numpy()).resize((sample_side, sample_side),
                                                                           Image.LANCZOS)
    title_font = _font(18)
    title_h = _text_height(title_font) + 3 * _PAD
    width = sample_side + 3 * _PAD + max(r.width for r in rows)
    height = title_h + max(sample_side + _PAD, sum(r.height for r in rows)) + _PAD
    sheet = Image.new("RGB", (max(width, int(title_font.getlength(title)) + 2 * _PAD), height), _BG)
    draw = ImageDraw.Draw(sheet)
    draw.text((_PAD, _PAD), title, fill=_FG, font=title_font)
    sheet.paste(sample, (_PAD, title_h))
    y = title_h
    for r in rows:
        sheet.paste(r, (sample_side + 2 * _PAD, y))
        y += r.height
    return sheet


def _block_title(block: BlockAttention) -> str:
    what = "cross-attention to latents" if block.kind == "cross" else "mean query · keys"
    return f"block {block.block} · {what} · {block.name}"


def _save(image: Image.Image, path: Path) -> Path:
    """Write a sheet as PNG, enlarged by the command's ``--scale`` (nearest neighbour)."""
    big = Image.fromarray(scaled(np.asarray(image))) if scaled_by() != 1 else image
    return atomic_write(path, lambda fh: big.save(fh, format="PNG"))


def render(result: AttentionMaps, outdir: str | Path, *, cmap: str = "gray", norm: str = "head",
           cross: str = "soft", min_tile: int = 128, overview_tile: int = 96) -> list[Path]:
    """Write the sample, one grid per block and one overview per level; return the paths written."""
    colormaps.lookup_table(cmap)  # validate before writing anything
    if norm not in NORMS:
        raise ConfigError(f"--norm: expected one of {', '.join(NORMS)}, got '{norm}'")
    if cross not in CROSS_MODES:
        raise ConfigError(f"--cross: expected one of {', '.join(CROSS_MODES)}, got '{cross}'")
    outdir = Path(outdir)
    if outdir.exists() and not outdir.is_dir():
        raise ConfigError(f"--outdir {outdir}: exists and is not a directory")
    make_output_dir(outdir)
    tag = " · ".join(s for s in (result.model, f"seed {result.seed}" if result.seed is not None else "") if s)
    written = [_save(Image.fromarray(result.image.permute(1, 2, 0).numpy()), outdir / "sample.png")]
    for block in result.blocks:
        tiles, labels = block_tiles(block, cmap=cmap, norm=norm, cross=cross)
        size = block.width * max(1, math.ceil(min_tile / block.width))
        title = f"{tag + ' · ' if tag else ''}{block.level}x{block.width} · {_block_title(block)}"
        image = grid(tiles, labels, title=title, tile_size=size)
        written.append(_save(image, outdir / f"{block.level}x{block.width}_block{block.block}.png"))
    for level in result.levels:
        width = result.at(level)[0].width
        title = f"{tag + ' · ' if tag else ''}level {level}x{width}"
        image = overview(result, level, cmap=cmap, norm=norm, cross=cross, tile_size=overview_tile, title=title)
        written.append(_save(image, outdir / f"{level}x{width}_overview.png"))
    return written
