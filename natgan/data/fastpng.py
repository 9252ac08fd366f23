"""Fast lossless PNG decoding with libspng (``pyspng``), pixel-identical to Pillow.

Why: FFHQ ships as 1024x1024 PNGs, and decoding them is most of ``prepare``'s work. Pillow spends
about 29 ms per FFHQ image (zlib inflate, then a slow unfilter + RGB->RGBX unpack); libspng needs
about 18 ms for the same pixels (see docs/benchmarks.md). PNG is lossless, so both decoders must
return the same bytes; tests check that for every layout we accept here.

Only plain 8-bit greyscale / RGB, with or without alpha, takes this path: palettes, 16-bit samples,
files above Pillow's decompression-bomb limit and anything libspng rejects (truncated, corrupt) return
``None`` so the caller decodes with Pillow, which gives the same pixels, warnings and error messages
as before. Alpha is dropped and grey replicated, exactly as Pillow's ``convert("RGB")`` does; gamma,
ICC and tRNS chunks are ignored by both decoders.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np
from PIL import Image

try:  # a wheel exists for the usual platforms; elsewhere Pillow decodes PNGs (same pixels, slower)
    import pyspng
except ImportError:  # pragma: no cover - depends on the platform
    pyspng = None

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# IHDR colour type -> libspng output format (it expands grey itself); palettes go to Pillow
_FORMATS = {0: "RGB", 2: "RGB", 4: "RGBA", 6: "RGBA"}


def available() -> bool:
    return pyspng is not None


def _header(data: bytes) -> tuple[int, int, int, int] | None:
    """(width, height, bit depth, colour type) of a PNG whose chunks before the first IDAT have valid CRCs.

    Pillow verifies those checksums and refuses the file otherwise, while libspng is told to ignore
    CRC errors (so that, like Pillow, it accepts a bad IDAT checksum); checking them here keeps the
    two decoders agreeing on which files are broken.
    """
    if len(data) < 33 or not data.startswith(PNG_SIGNATURE) or data[12:16] != b"IHDR":
        return None
    pos = len(PNG_SIGNATURE)
    while pos + 12 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        if kind == b"IDAT":
            break
        end = pos + 8 + length
        if end + 4 > len(data) or zlib.crc32(data[pos + 4:end]) != struct.unpack(">I", data[end:end + 4])[0]:
            return None
        pos = end + 4
    else:
        return None
    width, height, depth, color = struct.unpack(">IIBB", data[16:26])
    return width, height, depth, color


def decode_png_rgb(data: bytes) -> np.ndarray | None:
    """``[H, W, 3]`` uint8 for an 8-bit non-palette PNG that libspng decodes; ``None`` to use Pillow."""
    if pyspng is None:
        return None
    header = _header(data)
    if header is None:
        return None
    width, height, depth, color = header
    fmt = _FORMATS.get(color)
    limit = Image.MAX_IMAGE_PIXELS
    if fmt is None or depth != 8 or (limit is not None and width * height > limit):
        return None
    try:
        arr = pyspng.load(data, format=fmt)
    except Exception:  # noqa: BLE001 - truncated/corrupt: Pillow decides and words the error
        return None
    return arr if fmt == "RGB" else np.ascontiguousarray(arr[:, :, :3])
