"""Latent walks for videos: keyframe seeds joined by slerp in z or lerp in w, optionally looping, and a
grid of several walks played side by side (stylegan3's ``gen_video.py`` idea, for every model).

Frames are spread evenly over the whole walk, so ``frames`` is the video length whatever the number
of keyframes. A looping walk returns to its first keyframe and leaves that last frame out, so the
video repeats without a stutter. A frame that falls on a keyframe is that seed's own image, rendered as
``sample --seeds`` renders it, so a walk's endpoints equal the seeds' images exactly.

One naming rule for every walk (:func:`walk_stem`): ``OUTDIR/interp_<seeds>`` + ``.gif`` / ``.mp4`` for the
videos, and the frames as ``OUTDIR/interp_<seeds>/frameNNNN.png`` (or ``interp_<seeds>.zip|npz``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from natgan.errors import ConfigError
from natgan.models.interpolation import slerp
from natgan.fsutil import refuse_existing
from natgan.sampling.export import SampleWriter, grid_image
from natgan.sampling.generate import ImageGenerator, eval_mode, truncate
from natgan.sampling.seeds import latents_for_seeds, parse_seeds

WALK_SPACES = ("w", "z")


def parse_walks(text: str, *, option: str = "--interpolate") -> list[list[int]]:
    """``"3,7"`` -> [[3, 7]]; ``"1,5,9/2,4"`` -> two walks (``/`` separates walks; each needs 2+ keyframes)."""
    walks = []
    for part in text.split("/"):
        items = [p.strip() for p in part.split(",")]
        if len(items) < 2 or not all(p.isdigit() for p in items):
            raise ConfigError(f"{option} '{text}': each walk needs at least two seeds, e.g. 3,7 or 1,5,9/2,4")
        walks.append([parse_seeds(p, option=option)[0] for p in items])
    return walks


def positions(keyframes: int, frames: int, loop: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(segment index, local t) of each frame along ``keyframes`` points (closed when ``loop``)."""
    segments = keyframes if loop else keyframes - 1
    if loop:
        p = torch.arange(frames, dtype=torch.float64) * segments / frames
    else:
        p = torch.linspace(0, segments, frames, dtype=torch.float64)
    index = p.floor().long().clamp(max=segments - 1)
    return index, (p - index).float()


def walk_latents(G: nn.Module, seeds: Sequence[int], frames: int, *, space: str = "w", loop: bool = False,
                 psi: float = 1.0, w_avg: torch.Tensor | None = None) -> torch.Tensor:
    """``[frames, ...]`` w latents of one walk through ``seeds`` (truncated towards ``w_avg`` when psi != 1)."""
    if space not in WALK_SPACES:
        raise ConfigError(f"--space '{space}': expected one of {', '.join(WALK_SPACES)}")
    if frames < 2:
        raise ConfigError(f"--frames {frames}: a walk needs at least 2 frames")
    device = next(iter(G.parameters())).device
    z = latents_for_seeds(seeds, G.z_dim).to(device)
    index, t = positions(len(seeds), frames, loop)
    nxt = (index + 1) % len(seeds)
    with torch.inference_mode():
        t = t.to(device)
        if space == "z":
            w = G.mapping(slerp(z[index], z[nxt], t))
        else:
            keys = G.mapping(z)
            w = torch.lerp(keys[index], keys[nxt], t.view(-1, *([1] * (keys.ndim - 1))).to(keys.dtype))
        if psi != 1.0:
            w = truncate(w, psi, w_avg)
    return w


def keyframes(seeds: Sequence[int], frames: int, loop: bool) -> dict[int, int]:
    """``{frame index: seed}`` of the frames that fall exactly on a keyframe (and the last frame of an open
    walk, which is its last seed)."""
    index, t = positions(len(seeds), frames, loop)
    found = {i: int(seeds[int(index[i])]) for i in range(frames) if float(t[i]) == 0.0}
    if not loop:
        found[frames - 1] = int(seeds[-1])
    return found


def walk_stem(walks: Sequence[Sequence[int]], *, space: str = "w", loop: bool = False) -> str:
    """``[[3, 7]]`` -> ``interp_3_7``; ``[[1, 5, 9], [2, 4]]`` -> ``interp_1_5_9-2_4``; ``_z`` for a walk in z
    space and ``_loop`` for a looping one, so different walks never share a name."""
    stem = "interp_" + "-".join("_".join(str(s) for s in seeds) for seeds in walks)
    return stem + ("_z" if space == "z" else "") + ("_loop" if loop else "")


def walk_outputs(outdir: str | Path, stem: str, *, fmt: str, videos: Sequence[str]) -> list[Path]:
    """The files :func:`write_walk` writes (the frame folder's PNGs are covered by the folder)."""
    outdir = Path(outdir)
    frames = outdir / stem if fmt == "png" else outdir / f"{stem}.{fmt}"
    return [frames] + [outdir / f"{stem}.{v}" for v in videos]


def write_walk(G: nn.Module, walks: Sequence[Sequence[int]], frames: int, outdir: str | Path, *, fmt: str = "png",
               videos: Sequence[str] = ("gif",), fps: float = 20.0, space: str = "w", loop: bool = False,
               psi: float = 1.0, w_avg: torch.Tensor | None = None, batch_size: int = 8,
               noise_mode: str | None = "const", progress: Callable[[int], None] | None = None) -> list[Path]:
    """Render ``walks`` (:func:`render_walks`) and write the frames and the videos under one name
    (:func:`walk_stem`); returns the paths, frames first."""
    from natgan.sampling.video import save_video

    outdir = Path(outdir)
    stem = walk_stem(walks, space=space, loop=loop)
    refuse_existing(walk_outputs(outdir, stem, fmt=fmt, videos=videos))
    frames_hwc = render_walks(G, walks, frames, space=space, loop=loop, psi=psi, w_avg=w_avg,
                              batch_size=batch_size, noise_mode=noise_mode, progress=progress)
    writer = SampleWriter(fmt, outdir / stem if fmt == "png" else outdir, stem=stem, count=frames)
    try:
        writer.add([f"frame{i:04d}" for i in range(frames)], np.stack(frames_hwc).transpose(0, 3, 1, 2))
        written = writer.close()
    except BaseException:
        writer.abort()
        raise
    return written + save_video(outdir / stem, frames_hwc, videos, fps=fps)


def grid_shape(n: int) -> tuple[int, int]:
    """(columns, rows) of the most square grid holding ``n`` tiles."""
    cols = math.ceil(math.sqrt(n))
    return cols, math.ceil(n / cols)


def render_walks(G: nn.Module, walks: Sequence[Sequence[int]], frames: int, *, space: str = "w", loop: bool = False,
                 psi: float = 1.0, w_avg: torch.Tensor | None = None, batch_size: int = 8,
                 noise_mode: str | None = "const", progress: Callable[[int], None] | None = None) -> list[np.ndarray]:
    """HWC uint8 video frames; several walks are tiled into a near-square grid (black tiles fill it up)."""
    cols, rows = grid_shape(len(walks))
    with eval_mode(G, noise_mode):
        gen = ImageGenerator(G, batch_size=batch_size, psi=psi, w_avg=w_avg)
        per_walk = []
        for seeds in walks:
            images = gen.images_from_w(walk_latents(G, seeds, frames, space=space, loop=loop, psi=psi,
                                                    w_avg=gen.w_avg)).cpu()
            for frame, seed in keyframes(seeds, frames, loop).items():  # exactly the seeds' own images
                images[frame] = gen.images([seed])[0].cpu()
            per_walk.append(images)
            if progress:
                progress(frames)
    res = int(G.resolution)
    blank = torch.zeros(cols * rows - len(walks), 3, res, res, dtype=torch.uint8)
    return [grid_image(torch.cat([torch.stack([w[k] for w in per_walk]), blank]), cols, rows)
            for k in range(frames)]
