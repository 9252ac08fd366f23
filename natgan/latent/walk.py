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

import functools
import math
from pathlib import Path
from typing import Callable, Iterator, Sequence

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


@functools.lru_cache(maxsize=4)  # a streamed walk asks once per chunk of frames; the answer is read-only
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
                 psi: float = 1.0, w_avg: torch.Tensor | None = None,
                 frame_range: tuple[int, int] | None = None) -> torch.Tensor:
    """``[frames, ...]`` w latents of one walk through ``seeds`` (truncated towards ``w_avg`` when psi != 1);
    only frames ``[start, stop)`` of them with ``frame_range``."""
    if space not in WALK_SPACES:
        raise ConfigError(f"--space '{space}': expected one of {', '.join(WALK_SPACES)}")
    if frames < 2:
        raise ConfigError(f"--frames {frames}: a walk needs at least 2 frames")
    device = next(iter(G.parameters())).device
    z = latents_for_seeds(seeds, G.z_dim).to(device)
    index, t = positions(len(seeds), frames, loop)
    if frame_range is not None:
        index, t = index[frame_range[0]:frame_range[1]], t[frame_range[0]:frame_range[1]]
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
    """Render ``walks`` (:func:`iter_walk_frames`) and write the frames and the videos under one name
    (:func:`walk_stem`); returns the paths, frames first. Frames stream to the frame writer and the MP4
    encoder as they are rendered; a GIF (held whole by Pillow) is checked against the memory budget first."""
    from natgan.sampling.video import check_gif_fits, save_video

    outdir = Path(outdir)
    stem = walk_stem(walks, space=space, loop=loop)
    refuse_existing(walk_outputs(outdir, stem, fmt=fmt, videos=videos))
    if "gif" in videos:
        cols, rows = grid_shape(len(walks))
        check_gif_fits(frames, rows * int(G.resolution), cols * int(G.resolution))
    writer = SampleWriter(fmt, outdir / stem if fmt == "png" else outdir, stem=stem, count=frames)

    def written_frames() -> Iterator[np.ndarray]:
        for i, frame in enumerate(iter_walk_frames(G, walks, frames, space=space, loop=loop, psi=psi, w_avg=w_avg,
                                                   batch_size=batch_size, noise_mode=noise_mode,
                                                   progress=progress)):
            writer.add([f"frame{i:04d}"], frame[None].transpose(0, 3, 1, 2))
            yield frame

    try:
        if videos:
            video_files = save_video(outdir / stem, written_frames(), videos, fps=fps)
        else:
            video_files = []
            for _ in written_frames():
                pass
        written = writer.close()
    except BaseException:
        writer.abort()
        raise
    return written + video_files


def grid_shape(n: int) -> tuple[int, int]:
    """(columns, rows) of the most square grid holding ``n`` tiles."""
    cols = math.ceil(math.sqrt(n))
    return cols, math.ceil(n / cols)


def render_walks(G: nn.Module, walks: Sequence[Sequence[int]], frames: int, *, space: str = "w", loop: bool = False,
                 psi: float = 1.0, w_avg: torch.Tensor | None = None, batch_size: int = 8,
                 noise_mode: str | None = "const", progress: Callable[[int], None] | None = None) -> list[np.ndarray]:
    """HWC uint8 video frames; several walks are tiled into a near-square grid (black tiles fill it up)."""
    return list(iter_walk_frames(G, walks, frames, space=space, loop=loop, psi=psi, w_avg=w_avg,
                                 batch_size=batch_size, noise_mode=noise_mode, progress=progress))


def iter_walk_frames(G: nn.Module, walks: Sequence[Sequence[int]], frames: int, *, space: str = "w",
                     loop: bool = False, psi: float = 1.0, w_avg: torch.Tensor | None = None, batch_size: int = 8,
                     noise_mode: str | None = "const", progress: Callable[[int], None] | None = None
                     ) -> Iterator[np.ndarray]:
    """The frames of :func:`render_walks`, ``batch_size`` frames at a time: a million-frame MP4 streams to
    the encoder instead of being built in memory first (latents are computed per chunk as well). Frames on
    a keyframe are exactly the seeds' own images."""
    cols, rows = grid_shape(len(walks))
    res = int(G.resolution)
    blank = torch.zeros(cols * rows - len(walks), 3, res, res, dtype=torch.uint8)
    on_keyframe = [keyframes(seeds, frames, loop) for seeds in walks]
    with eval_mode(G, noise_mode):
        gen = ImageGenerator(G, batch_size=batch_size, psi=psi, w_avg=w_avg)
        for start in range(0, frames, batch_size):
            stop = min(frames, start + batch_size)
            chunk = []
            for seeds, exact in zip(walks, on_keyframe):
                images = gen.images_from_w(walk_latents(G, seeds, frames, space=space, loop=loop, psi=psi,
                                                        w_avg=gen.w_avg, frame_range=(start, stop))).cpu()
                for frame in range(start, stop):
                    if frame in exact:
                        images[frame - start] = gen.images([exact[frame]])[0].cpu()
                chunk.append(images)
            if progress:
                progress((stop - start) * len(walks))
            for k in range(stop - start):
                yield grid_image(torch.cat([torch.stack([w[k] for w in chunk]), blank]), cols, rows)
