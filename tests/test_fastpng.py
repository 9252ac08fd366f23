"""libspng PNG decoding (natgan.data.fastpng) returns exactly Pillow's pixels, or hands the file to Pillow.

Every PNG layout is built from a real photograph (scikit-learn's china.jpg) and decoded twice: through
``imaging.decode_rgb`` (libspng where it applies) and through Pillow alone. Interlaced files and
ancillary chunks are written by a small PNG writer here, because Pillow cannot write them.
"""

from __future__ import annotations

import importlib.util
import io
import platform
import struct
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from natgan.data import fastpng, imaging

SKLEARN = Path(list(importlib.util.find_spec("sklearn").submodule_search_locations)[0])
PHOTO = SKLEARN / "datasets" / "images" / "china.jpg"
ADAM7 = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    with Image.open(PHOTO) as img:
        return np.asarray(img.convert("RGB").crop((37, 11, 37 + 203, 11 + 157)))  # odd sizes on purpose


def pillow_rgb(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img.convert("RGB"))


def pil_png(img: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", **kw)
    return buf.getvalue()


def chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def handmade_png(arr: np.ndarray, color_type: int, *, interlaced: bool = False, extra: bytes = b"") -> bytes:
    """8-bit PNG with filter 0 rows, optionally Adam7-interlaced, with ``extra`` chunks before IDAT."""
    h, w = arr.shape[:2]
    passes = ADAM7 if interlaced else [(0, 0, 1, 1)]
    raw = b""
    for x0, y0, dx, dy in passes:
        sub = arr[y0::dy, x0::dx]
        if sub.size:
            raw += b"".join(b"\x00" + row.tobytes() for row in sub)
    ihdr = struct.pack(">IIBBBBB", w, h, 8, color_type, 0, 0, int(interlaced))
    return (fastpng.PNG_SIGNATURE + chunk(b"IHDR", ihdr) + extra + chunk(b"IDAT", zlib.compress(raw, 6))
            + chunk(b"IEND", b""))


def test_pyspng_is_installed_where_it_has_wheels():
    if not (platform.machine() in ("x86_64", "AMD64") or sys.platform == "darwin"):
        pytest.skip(f"pyspng is not a dependency on {platform.machine()}; the Pillow fallback is tested below")
    assert fastpng.available(), "pyspng is a declared dependency here; the fast PNG path must be active"


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "LA"])
def test_plain_layouts_take_the_fast_path_and_match_pillow(photo, mode):
    img = Image.fromarray(photo)
    if mode in ("RGBA", "LA"):
        alpha = Image.fromarray((np.arange(photo.shape[0] * photo.shape[1]) % 251).astype(np.uint8)
                                .reshape(photo.shape[:2]))
        img = img.convert(mode[:-1])
        img.putalpha(alpha)
    else:
        img = img.convert(mode)
    data = pil_png(img)
    fast = fastpng.decode_png_rgb(data)
    assert fast is not None and fast.dtype == np.uint8 and fast.shape == photo.shape[:2] + (3,)
    np.testing.assert_array_equal(fast, pillow_rgb(data))
    np.testing.assert_array_equal(np.asarray(imaging.decode_rgb(data)), pillow_rgb(data))
    np.testing.assert_array_equal(imaging.decode_array(data), pillow_rgb(data))


@pytest.mark.parametrize("color_type", [2, 6, 0])
def test_interlaced_and_ancillary_chunks_match_pillow(photo, color_type):
    arr = {2: photo, 0: photo[:, :, 1],
           6: np.concatenate([photo, photo[:, :, :1] // 2], axis=2)}[color_type]
    gamma = chunk(b"gAMA", struct.pack(">I", 45455))
    trns = chunk(b"tRNS", b"\x00\x10\x00\x20\x00\x30" if color_type == 2 else b"\x00\x40") if color_type != 6 else b""
    for interlaced in (False, True):
        data = handmade_png(arr, color_type, interlaced=interlaced, extra=gamma + trns)
        fast = fastpng.decode_png_rgb(data)
        assert fast is not None
        np.testing.assert_array_equal(fast, pillow_rgb(data))


def test_palette_and_16_bit_files_are_left_to_pillow(photo):
    palette = pil_png(Image.fromarray(photo).convert("P", palette=Image.Palette.ADAPTIVE, colors=64))
    sixteen = pil_png(Image.fromarray((photo[:, :, 0].astype(np.uint16) * 257)).convert("I;16"))
    for data in (palette, sixteen):
        assert fastpng.decode_png_rgb(data) is None
    np.testing.assert_array_equal(np.asarray(imaging.decode_rgb(palette)), pillow_rgb(palette))
    # 16-bit grey is scaled to its high byte (Pillow's own convert("RGB") would clip it to white)
    np.testing.assert_array_equal(np.asarray(imaging.decode_rgb(sixteen)), np.repeat(photo[:, :, :1], 3, axis=2))


def test_non_png_and_broken_files_fall_back_to_pillow(photo, monkeypatch):
    buf = io.BytesIO()
    Image.fromarray(photo).save(buf, format="JPEG", quality=95)
    assert fastpng.decode_png_rgb(buf.getvalue()) is None
    assert fastpng.decode_png_rgb(b"not an image at all") is None

    data = pil_png(Image.fromarray(photo))
    truncated = data[: len(data) // 2]
    assert fastpng.decode_png_rgb(truncated) is None
    with pytest.raises(imaging.BadImage, match="truncated"):
        imaging.decode_rgb(truncated)

    # Pillow's decompression-bomb guard still applies: such files never reach libspng
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", photo.shape[0] * photo.shape[1] - 1)
    assert fastpng.decode_png_rgb(data) is None


def test_bad_header_checksum_is_refused_like_pillow(photo):
    data = bytearray(handmade_png(photo, 2, extra=chunk(b"gAMA", struct.pack(">I", 45455))))
    for name in (b"IHDR", b"gAMA"):  # Pillow checks every chunk before the image data
        broken = bytearray(data)
        start = broken.index(name)
        length = struct.unpack(">I", broken[start - 4: start])[0]
        broken[start + 4 + length] ^= 0xFF
        assert fastpng.decode_png_rgb(bytes(broken)) is None
        with pytest.raises(imaging.BadImage):
            imaging.decode_rgb(bytes(broken))


def test_bad_crc_is_tolerated_like_pillow(photo):
    data = bytearray(handmade_png(photo, 2))
    idat = data.index(b"IDAT")
    length = struct.unpack(">I", data[idat - 4: idat])[0]
    data[idat + 4 + length] ^= 0xFF  # corrupt the IDAT checksum only
    data = bytes(data)
    np.testing.assert_array_equal(np.asarray(imaging.decode_rgb(data)), photo)


def test_without_pyspng_pillow_decodes_everything(photo, monkeypatch):
    """Platforms without a pyspng wheel still work, through Pillow, with the same pixels."""
    data = pil_png(Image.fromarray(photo))
    fast = np.asarray(imaging.decode_rgb(data))
    monkeypatch.setattr(fastpng, "pyspng", None)
    assert not fastpng.available() and fastpng.decode_png_rgb(data) is None
    np.testing.assert_array_equal(np.asarray(imaging.decode_rgb(data)), fast)
    np.testing.assert_array_equal(imaging.decode_array(data), fast)
