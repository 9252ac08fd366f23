"""Issue 18: nothing a careless or hostile user does loses or silently corrupts a run, a dataset or a result.

One test (at least) per defect of the adversarial pass; each fails on the code before the fix.
"""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from natgan.data import imaging, prepare_dataset
from natgan.errors import ConfigError


def png16(arr: np.ndarray) -> bytes:
    """A 16-bit PNG (grey ``[H, W]`` or RGB ``[H, W, 3]`` uint16), written by hand: Pillow cannot write one."""
    h, w = arr.shape[:2]
    color = 0 if arr.ndim == 2 else 2
    raw = b"".join(b"\0" + row.astype(">u2").tobytes() for row in arr)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, color, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def png8(seed: int, size: int = 16) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def image_folder(root: Path, n: int = 4) -> Path:
    root.mkdir(parents=True)
    for i in range(n):
        (root / f"{i:03d}.png").write_bytes(png8(i))
    return root


def tree_bytes(path: Path) -> dict[str, bytes]:
    if path.is_file():
        return {path.name: path.read_bytes()}
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------ item 3: output is the source
def test_prepare_refuses_an_output_that_is_the_source_through_dotdot_or_symlink(tmp_path):
    built = tmp_path / "src.lmdb"
    prepare_dataset(image_folder(tmp_path / "imgs"), built, sizes=16, encoding="png", workers=0, progress=False)
    before = tree_bytes(built)
    (tmp_path / "sub").mkdir()
    (tmp_path / "alias.lmdb").symlink_to(built)
    for out in (tmp_path / "sub" / ".." / "src.lmdb", tmp_path / "alias.lmdb"):
        with pytest.raises(ConfigError, match="is the source itself"):
            prepare_dataset(built, out, sizes=8, encoding="png", workers=0, force=True, progress=False)
    assert tree_bytes(built) == before


# ------------------------------------------------------------------ item 5: 16-bit PNGs
RAMP = np.linspace(0, 65535, 32 * 32).round().astype(np.uint16).reshape(32, 32)


@pytest.mark.parametrize("layout", ["grey", "rgb"])
def test_sixteen_bit_pngs_are_scaled_not_clipped(layout):
    arr = RAMP if layout == "grey" else np.stack([RAMP, RAMP // 2, 65535 - RAMP], axis=-1)
    data = png16(arr)
    want = (arr >> 8).astype(np.uint8)
    if layout == "grey":
        want = np.repeat(want[:, :, None], 3, axis=2)
    assert np.array_equal(np.asarray(imaging.decode_rgb(data)), want)
    assert np.array_equal(imaging.decode_array(data), want)
    assert abs(np.asarray(imaging.decode_rgb(data))[..., 0].mean() - 127.5) < 1


def test_prepare_of_a_sixteen_bit_folder_keeps_the_ramp(tmp_path):
    src = tmp_path / "imgs"
    src.mkdir()
    (src / "grey.png").write_bytes(png16(RAMP))
    out = tmp_path / "o.lmdb"
    prepare_dataset(src, out, sizes=32, encoding="png", workers=0, progress=False)
    from natgan.data import open_dataset

    img = open_dataset(out, 32)[0]
    assert abs(img.mean() - 127.5) < 1 and img.min() == 0 and img.max() == 255
