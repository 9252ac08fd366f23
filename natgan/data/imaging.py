"""Decode, square-resize and encode single images exactly as the official LMDB builder does.

The official StyleSwin/StyleNAT LMDBs were written by resizing the *shorter* side to ``size`` (longer
side ``int(size * long / short)``, torchvision's rule) and centre-cropping with torchvision's
``round((h - size) / 2)`` offsets. We reproduce that rule pixel for pixel (same Pillow calls, so the
same bytes as the official builder run with the same Pillow; PNGs are decoded by libspng when
available, which gives Pillow's pixels faster, see :mod:`natgan.data.fastpng`). Pillow 13 runs the
vertical pass first when the height loses more than twice as many pixels as the width, so very tall
portraits (aspect above about 2:1) come out slightly different under Pillow < 13. Resampling only the
crop window with Pillow's ``box=`` would be cheaper for non-square inputs but is *not* identical: Pillow
then may run its two 8-bit passes in the other order. Images are never squashed.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, UnidentifiedImageError

from natgan.data import fastpng

FILTERS: dict[str, int] = {
    "lanczos": Image.Resampling.LANCZOS,   # official default (rosinality prepare_data.py, StyleSwin FFHQ-256)
    "box": Image.Resampling.BOX,           # NVIDIA's original FFHQ downsampling; moves FID by about a point
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,  # rosinality's --resample bilinear
}
ENCODINGS = ("jpeg", "png")
JPEG_QUALITY = 100        # as the official LMDBs (PIL defaults otherwise: 4:2:0 chroma subsampling)
PNG_COMPRESS_LEVEL = 6    # zlib default: lossless either way, this only trades file size for encode time


IMAGE_BLOCK_CACHE = 8  # freed Pillow image blocks a worker keeps for reuse (each at most 16 MiB)


def cache_image_memory(blocks: int = IMAGE_BLOCK_CACHE) -> None:
    """Let Pillow reuse freed image memory instead of returning it to the OS (its ``PILLOW_BLOCKS_MAX``).

    Why: a worker decodes and resizes same-sized images over and over; with Pillow's default of no
    cache, every 1024x1024 image costs fresh pages, and the page faults measured ~4 ms of a ~35 ms
    FFHQ image. Meant for worker processes; it retains at most ``blocks`` blocks per process.
    """
    core = Image.core
    if hasattr(core, "set_blocks_max") and core.get_blocks_max() < blocks:
        core.set_blocks_max(blocks)


class BadImage(Exception):
    """An input that does not decode to an image (truncated, corrupt, not an image at all)."""


def check_filter(name: str) -> int:
    try:
        return FILTERS[name]
    except KeyError:
        raise ValueError(f"unknown resize filter {name!r} (expected one of {', '.join(FILTERS)})") from None


MAX_IMAGE_BYTES = 1 << 30      # an image file larger than this is refused before it is read
MAX_PIXELS = 178_956_970       # Pillow's decompression-bomb limit, applied to every decoder (libspng too)
MAX_ASPECT = 64                # longer : shorter side; a 1x2,000,000 image cannot become a square sample


def check_dimensions(width: int, height: int) -> None:
    """Refuse what no square crop can use and what would take gigabytes to decode or resize: the shorter-side
    resize of a 1 x 2,000,000 image to 256 px is 256 x 512,000,000 pixels."""
    if width < 1 or height < 1:
        raise BadImage(f"{width}x{height} pixels")
    if width * height > MAX_PIXELS:
        raise BadImage(f"{width}x{height} is {width * height:,} pixels, more than {MAX_PIXELS:,} "
                       f"(a decompression bomb?)")
    if max(width, height) > MAX_ASPECT * min(width, height):
        raise BadImage(f"{width}x{height}: an aspect ratio beyond {MAX_ASPECT}:1 has no sensible square crop")


def read_image_file(path) -> bytes:
    """The bytes of an image file, refused before reading when the file is absurdly large (OSError passes)."""
    from pathlib import Path

    size = Path(path).stat().st_size
    if size > MAX_IMAGE_BYTES:
        raise BadImage(f"{size:,} bytes, more than the {MAX_IMAGE_BYTES:,} an image file may have")
    with open(path, "rb") as fh:
        return fh.read()


def _declared_size(data: bytes) -> tuple[int, int] | None:
    try:
        with Image.open(io.BytesIO(data)) as img:  # lazy: parses the header only
            return img.size
    except Exception:  # noqa: BLE001 - not an image: the decoder below says why
        return None


def decode_rgb(data: bytes) -> Image.Image:
    """Fully decode ``data`` to an RGB image; raise :class:`BadImage` with the decoder's reason (and before
    decoding, for dimensions that :func:`check_dimensions` refuses)."""
    declared = _declared_size(data)
    if declared is not None:
        check_dimensions(*declared)
    fast = fastpng.decode_png_rgb(data)
    if fast is not None:
        return Image.fromarray(fast)
    try:
        img = Image.open(io.BytesIO(data))
        img.load()  # Image.open is lazy: truncation only shows up when the pixels are read
    except UnidentifiedImageError:
        raise BadImage("not a recognised image file") from None
    except Exception as exc:  # noqa: BLE001 - corrupt files make Pillow's plugins raise almost anything
        raise BadImage(str(exc) or type(exc).__name__) from None
    return to_rgb(img)


_SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N")


def to_rgb(img: Image.Image) -> Image.Image:
    """8-bit RGB from any mode Pillow decodes, with high-bit-depth greys *scaled*, not clipped.

    Why: Pillow opens a 16-bit grey PNG as mode ``I;16`` and ``convert("RGB")`` clips its 0..65535
    values at 255, so nearly every pixel turns white. A 16-bit RGB PNG Pillow itself reduces to its
    high byte; greys get the same rule (``v >> 8``) so both layouts agree. 32-bit integer and float
    images have no agreed 8-bit scale and are refused rather than guessed.
    """
    if img.mode == "RGB":
        return img
    if img.mode in _SIXTEEN_BIT or (img.mode == "I" and img.format == "PNG"):
        grey = (np.asarray(img, dtype=np.uint32) >> 8).astype(np.uint8)
        return Image.fromarray(np.repeat(grey[:, :, None], 3, axis=2))
    if img.mode in ("I", "F"):
        raise BadImage(f"{'32-bit integer' if img.mode == 'I' else 'floating-point'} pixels have no defined "
                       f"8-bit scale; convert the image to 8 or 16 bits per channel")
    return img.convert("RGB")


def decode_array(data: bytes) -> np.ndarray:
    """Encoded bytes -> writable uint8 ``[H, W, 3]`` (the training hot path: no checks beyond the decoder's)."""
    fast = fastpng.decode_png_rgb(data)
    if fast is not None:
        return fast
    return np.array(to_rgb(Image.open(io.BytesIO(data))))


def resized_shape(width: int, height: int, size: int) -> tuple[int, int]:
    """torchvision's shorter-side rule: shorter side -> ``size``, longer -> ``int(size * long / short)``."""
    if width <= height:
        return size, int(size * height / width)
    return int(size * width / height), size


def center_crop_offsets(width: int, height: int, size: int) -> tuple[int, int]:
    """torchvision's centre-crop offsets (left, top): ``int(round((dim - size) / 2))`` with Python's round."""
    return int(round((width - size) / 2.0)), int(round((height - size) / 2.0))


def resize_square(img: Image.Image, size: int, resample: int) -> Image.Image:
    """Shorter side to ``size``, centre crop to ``size`` x ``size`` (never squashes)."""
    if img.size == (size, size):
        return img
    new_w, new_h = resized_shape(img.width, img.height, size)
    if (new_w, new_h) != img.size:
        img = img.resize((new_w, new_h), resample=resample)
    if (new_w, new_h) == (size, size):
        return img
    left, top = center_crop_offsets(new_w, new_h, size)
    return img.crop((left, top, left + size, top + size))


def encode(img: Image.Image, encoding: str, quality: int = JPEG_QUALITY) -> bytes:
    buf = io.BytesIO()
    if encoding == "jpeg":
        img.save(buf, format="JPEG", quality=quality)
    elif encoding == "png":
        img.save(buf, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    else:
        raise ValueError(f"unknown encoding {encoding!r} (expected one of {', '.join(ENCODINGS)})")
    return buf.getvalue()
