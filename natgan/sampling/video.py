"""Videos of 8-bit frames: H.264 MP4 through imageio-ffmpeg's bundled ffmpeg binary, or an animated GIF.

imageio-ffmpeg ships a static ffmpeg in its wheel, so MP4 needs no system package. Frames are streamed
to the encoder (a 1000-step projection video never sits in memory) into a temporary file that is
renamed into place when the encoder finishes.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

import numpy as np

from natgan.errors import ConfigError, NatGanError
from natgan.fsutil import check_may_write, refuse_unsafe_target
from natgan.sampling.export import save_gif, scaled

VIDEO_FORMATS = ("gif", "mp4")
MP4_QUALITY = 8  # imageio-ffmpeg's 0-10 scale (libx264 CRF ~ 18: visually lossless for GAN samples)


def parse_video_formats(text: str, *, option: str = "--video") -> list[str]:
    """``"mp4"`` / ``"gif,mp4"`` -> the formats to write (no repeats, no empty items, lowercase names)."""
    from natgan.validators import parse_list

    def known(name: str) -> str:
        if name not in VIDEO_FORMATS:
            raise ConfigError(f"{option} '{text}': '{name}' is not a format; expected {' and/or '.join(VIDEO_FORMATS)} "
                              f"(lowercase, comma-separated)")
        return name

    return parse_list(text, option, known)


class Mp4Writer:
    """``add(frame)`` HWC uint8 frames of one size, then ``close()``; H.264, yuv420p (plays everywhere)."""

    def __init__(self, path: str | Path, *, fps: float = 30.0, quality: int = MP4_QUALITY):
        import imageio_ffmpeg

        self.path = refuse_unsafe_target(path)  # the fsutil path policy: a regular file or a new one
        check_may_write(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.path.with_name(f".{self.path.stem}.tmp-{os.getpid()}{self.path.suffix}")
        self.fps, self.quality = float(fps), quality
        self._ffmpeg = imageio_ffmpeg
        self._gen = None
        self._size: tuple[int, int] | None = None
        self.frames = 0

    def add(self, frame: np.ndarray) -> None:
        frame = np.ascontiguousarray(scaled(frame))
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            raise ValueError(f"expected an HWC uint8 RGB frame, got {frame.dtype} {frame.shape}")
        h, w = frame.shape[:2]
        if self._gen is None:
            self._size = (w, h)
            # macro_block_size=2: libx264/yuv420p needs even sides; odd ones are padded, never resized.
            self._gen = self._ffmpeg.write_frames(str(self.tmp), (w, h), fps=self.fps, codec="libx264",
                                                  pix_fmt_out="yuv420p", quality=self.quality,
                                                  macro_block_size=2, output_params=["-movflags", "+faststart"])
            self._gen.send(None)
        elif (w, h) != self._size:
            raise ValueError(f"frame size changed from {self._size} to {(w, h)}")
        self._gen.send(frame)
        self.frames += 1

    def close(self) -> Path:
        if self._gen is None:
            raise NatGanError(f"{self.path}: no frames to encode")
        try:
            self._gen.close()
            os.replace(self.tmp, self.path)
        finally:
            self._gen = None
            if self.tmp.exists():
                self.tmp.unlink()
        return self.path

    def abort(self) -> None:
        if self._gen is not None:
            try:
                self._gen.close()
            except Exception:  # noqa: BLE001 - already failing; the temp file is removed below
                pass
            self._gen = None
        if self.tmp.exists():
            self.tmp.unlink()


def save_mp4(path: str | Path, frames: Iterable[np.ndarray], *, fps: float = 30.0) -> Path:
    writer = Mp4Writer(path, fps=fps)
    try:
        for frame in frames:
            writer.add(frame)
        return writer.close()
    except BaseException:
        writer.abort()
        raise


def save_video(path_stem: str | Path, frames: Iterable[np.ndarray], formats: Iterable[str], *,
               fps: float) -> list[Path]:
    """Write ``frames`` (any iterable, consumed once) as ``<stem>.gif`` and/or ``<stem>.mp4``.

    MP4 frames stream to the encoder as they arrive; a GIF is assembled in memory by Pillow, so callers
    check :func:`check_gif_fits` before rendering a long one."""
    stem = Path(path_stem)
    formats = list(formats)
    mp4 = Mp4Writer(stem.with_name(f"{stem.name}.mp4"), fps=fps) if "mp4" in formats else None
    kept: list[np.ndarray] | None = [] if "gif" in formats else None
    try:
        for frame in frames:
            if mp4 is not None:
                mp4.add(frame)
            if kept is not None:
                kept.append(frame)
        written = {}
        if kept is not None:
            written["gif"] = save_gif(stem.with_name(f"{stem.name}.gif"), kept, fps=fps)
        if mp4 is not None:
            written["mp4"] = mp4.close()
    except BaseException:
        if mp4 is not None:
            mp4.abort()
        raise
    return [written[f] for f in formats]


def check_gif_fits(frames: int, height: int, width: int) -> None:
    """A GIF of ``frames`` HWC frames is held whole by Pillow (about three copies of the raw frames): refuse
    one that cannot fit in memory before rendering anything, and point to MP4, which streams."""
    from natgan.limits import check_fits

    check_fits(3.0 * frames * height * width * 3, f"a GIF of {frames:,} frames of {width}x{height} "
                                                   f"(use --video mp4, which streams)", error=ConfigError)


def read_mp4(path: str | Path) -> tuple[list[np.ndarray], float]:
    """Decode an MP4 back to HWC uint8 frames and its frame rate (tests and round trips)."""
    import imageio_ffmpeg

    reader = imageio_ffmpeg.read_frames(str(path))
    meta = reader.__next__()
    w, h = meta["size"]
    frames = [np.frombuffer(buf, dtype=np.uint8).reshape(h, w, 3) for buf in reader]
    return frames, float(meta["fps"])
