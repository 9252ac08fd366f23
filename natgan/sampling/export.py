"""Writing 8-bit samples: PNG files, one zip, one npz, a grid PNG and an animated GIF.

Nothing half-written is left looking valid: each PNG, and the zip/npz/GIF as a whole, is written to
a temporary name and renamed into place once complete. The npz is streamed batch by batch, so
exporting 50k images at 1024 px needs no more memory than one batch.
"""

from __future__ import annotations

import contextlib
import contextvars
import io
import zipfile
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
import torch
from PIL import Image

from natgan.errors import ConfigError, NatGanError
from natgan.fsutil import AtomicFile, atomic_write_bytes, make_output_dir

FORMATS = ("png", "zip", "npz")


def to_hwc(images: torch.Tensor | np.ndarray) -> np.ndarray:
    """uint8 ``[B, 3, H, W]`` (tensor, any device) -> numpy ``[B, H, W, 3]``."""
    if isinstance(images, torch.Tensor):
        images = images.detach().to("cpu").numpy()
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected uint8 [B, 3, H, W] images, got {images.dtype} {tuple(images.shape)}")
    return np.ascontiguousarray(images.transpose(0, 2, 3, 1))


MAX_SCALE = 16
_SCALE: "contextvars.ContextVar[int]" = contextvars.ContextVar("natgan_image_scale", default=1)


@contextlib.contextmanager
def image_scale(factor: int) -> Iterator[None]:
    """Within the block, every PNG (files, zip members), GIF and MP4 frame is written ``factor`` times larger by
    nearest-neighbour repetition (``sample``/``visualize --scale``): each pixel becomes an exact square, so a
    32-px sample is viewable and still the same image. Arrays (``.npz``) are data and keep their size."""
    if not isinstance(factor, int) or not 1 <= factor <= MAX_SCALE:
        raise ConfigError(f"--scale {factor!r}: expected an integer from 1 to {MAX_SCALE}")
    token = _SCALE.set(factor)
    try:
        yield
    finally:
        _SCALE.reset(token)


def scaled_by() -> int:
    """The current :func:`image_scale` factor."""
    return _SCALE.get()


def scaled(hwc: np.ndarray) -> np.ndarray:
    """``hwc`` enlarged by the current :func:`image_scale` (itself when 1)."""
    factor = _SCALE.get()
    return hwc if factor == 1 else np.repeat(np.repeat(hwc, factor, axis=0), factor, axis=1)


def _png_bytes(hwc: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(scaled(hwc)).save(buf, format="PNG")
    return buf.getvalue()


class SampleWriter:
    """Collects named images and writes them in one of :data:`FORMATS`; ``close()`` returns the paths."""

    def __init__(self, fmt: str, outdir: Path, *, stem: str = "samples", count: int | None = None):
        if fmt not in FORMATS:
            raise ConfigError(f"--format '{fmt}': expected one of {', '.join(FORMATS)}")
        self.fmt, self.outdir, self.stem, self.count = fmt, Path(outdir), stem, count
        make_output_dir(self.outdir)
        self.written: list[Path] = []
        self._names: list[str] = []
        self._zip: zipfile.ZipFile | None = None
        self._npy = None
        self._shape: tuple[int, ...] | None = None
        self._done = 0
        if fmt in ("zip", "npz"):
            self.path = self.outdir / f"{stem}.{fmt}"
            self._target = AtomicFile(self.path, "w+b")  # zipfile seeks back to patch local headers
            mode = zipfile.ZIP_STORED  # PNGs are already compressed; npy of pixels barely compresses
            self._zip = zipfile.ZipFile(self._target.fh, "w", compression=mode, allowZip64=True)
            if fmt == "npz" and count is None:
                raise ValueError("the npz writer streams its array and needs the image count up front")

    def add(self, names: Sequence[str], images: torch.Tensor | np.ndarray) -> None:
        hwc = to_hwc(images)
        if len(names) != len(hwc):
            raise ValueError(f"{len(names)} names for {len(hwc)} images")
        if self.fmt == "png":
            for name, img in zip(names, hwc):
                path = self.outdir / f"{name}.png"
                atomic_write_bytes(path, _png_bytes(img))
                self.written.append(path)
        elif self.fmt == "zip":
            for name, img in zip(names, hwc):
                self._zip.writestr(f"{name}.png", _png_bytes(img))
        else:
            self._add_npz(hwc)
        self._names.extend(names)

    def _add_npz(self, hwc: np.ndarray) -> None:
        if self._npy is None:
            self._shape = (self.count, *hwc.shape[1:])
            self._npy = self._zip.open("images.npy", "w", force_zip64=True)
            header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.uint8)), "fortran_order": False,
                      "shape": self._shape}
            np.lib.format.write_array_header_2_0(self._npy, header)
        if hwc.shape[1:] != self._shape[1:]:
            raise ValueError(f"image shape changed from {self._shape[1:]} to {hwc.shape[1:]}")
        if self._done + len(hwc) > self.count:
            raise ValueError(f"more than the announced {self.count} images")
        self._npy.write(hwc.tobytes())
        self._done += len(hwc)

    def close(self) -> list[Path]:
        """Finish the archive (renaming it into place) and return everything written."""
        if self._zip is None:
            return self.written
        try:
            if self.fmt == "npz":
                if self._npy is None or self._done != self.count:
                    raise NatGanError(f"{self.path}: wrote {self._done} of {self.count} images; not finished")
                self._npy.close()
                with self._zip.open("names.npy", "w") as fh:
                    np.lib.format.write_array(fh, np.array(self._names))
                seeds = [int(n[4:]) if n.startswith("seed") and n[4:].isdigit() else -1 for n in self._names]
                with self._zip.open("seeds.npy", "w") as fh:
                    np.lib.format.write_array(fh, np.array(seeds, dtype=np.int64))
            self._zip.close()
            self._target.commit()
        finally:
            self.abort()
        self.written.append(self.path)
        return self.written

    def abort(self) -> None:
        """Drop an unfinished archive (no-op once closed)."""
        if self._npy is not None:
            try:
                self._npy.close()
            except (ValueError, OSError):
                pass
        if self._zip is not None:
            try:
                self._zip.close()
            except (ValueError, OSError):
                pass
        if self._zip is not None:
            self._target.abort()


def seed_name(seed: int) -> str:
    """File stem of a seed's image (StyleGAN naming: ``seed0042``)."""
    return f"seed{seed:04d}"


MAX_GRID_CELLS = 4096  # a 64x64 grid of 256px images is already a 16384x16384 PNG


def parse_grid(text: str) -> tuple[int, int]:
    """``"8x4"`` -> (columns, rows) = (8, 4); bounded, so a typo cannot ask for billions of images."""
    parts = text.lower().replace(" ", "").split("x")
    if len(parts) != 2 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise ConfigError(f"--grid '{text}': expected COLSxROWS, e.g. 8x8")
    if int(parts[0]) * int(parts[1]) > MAX_GRID_CELLS:
        raise ConfigError(f"--grid '{text}': {int(parts[0]) * int(parts[1]):,} images; at most {MAX_GRID_CELLS} "
                          f"fit in one grid (use --seeds for more images)")
    return int(parts[0]), int(parts[1])


def grid_image(images: torch.Tensor | np.ndarray, cols: int, rows: int) -> np.ndarray:
    """Tile ``cols * rows`` images row-major into one ``[rows*H, cols*W, 3]`` uint8 array (no padding)."""
    hwc = to_hwc(images)
    if len(hwc) != cols * rows:
        raise ValueError(f"a {cols}x{rows} grid needs {cols * rows} images, got {len(hwc)}")
    _, h, w, c = hwc.shape
    return hwc.reshape(rows, cols, h, w, c).transpose(0, 2, 1, 3, 4).reshape(rows * h, cols * w, c)


def save_bytes(path: Path, data: bytes) -> Path:
    """Write ``data`` atomically (temp name, then rename), creating the parent directory."""
    make_output_dir(path.parent)
    atomic_write_bytes(path, data)
    return path


def save_png(path: Path, hwc: np.ndarray) -> Path:
    return save_bytes(path, _png_bytes(hwc))


def save_gif(path: Path, frames: Iterable[np.ndarray], *, fps: float = 20.0) -> Path:
    """Looping animated GIF from HWC uint8 frames (Pillow quantises each frame to 256 colours)."""
    pil = [Image.fromarray(scaled(f)) for f in frames]
    if not pil:
        raise ValueError("no frames")
    buf = io.BytesIO()
    pil[0].save(buf, format="GIF", save_all=True, append_images=pil[1:], duration=max(1, round(1000 / fps)),
                loop=0)
    return save_bytes(path, buf.getvalue())
