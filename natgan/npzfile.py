"""Reading ``.npz`` files from users (latents, directions) with every declared size checked first.

Why: an ``.npy`` member starts with a header declaring dtype and shape, and ``np.load`` allocates that
shape before reading a byte of data; a 500-byte file declaring ``1e12 x 64`` floats is a MemoryError
(or the OOM killer), and a member of ``object`` dtype would need pickle. Here each member's header is
read on its own, its declared size compared with the bytes the member really holds and with the memory
budget, and only then is the array loaded (``allow_pickle=False``).
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from natgan.archive import check_zip
from natgan.errors import NatGanError
from natgan.limits import check_fits


def _declared(zf: zipfile.ZipFile, info: zipfile.ZipInfo, where: str) -> tuple[np.dtype, tuple[int, ...]]:
    with zf.open(info) as fh:
        try:
            version = np.lib.format.read_magic(fh)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(fh)
            else:
                shape, _, dtype = np.lib.format.read_array_header_2_0(fh)
        except (ValueError, OSError, EOFError, SyntaxError) as exc:
            raise NatGanError(f"{where}: member '{info.filename}' is not a numpy array "
                              f"({(str(exc).splitlines() or ['bad header'])[0]})") from None
    if dtype.hasobject:
        raise NatGanError(f"{where}: member '{info.filename}' holds Python objects (needs pickle); refused")
    return dtype, tuple(shape)


def read_npz(path: str | Path, what: str) -> dict[str, np.ndarray]:
    """Every array of ``path`` (an ``.npz`` of plain numeric/string arrays), sizes checked before loading.

    ``what`` names the file's role in messages ("latent file", "--direction"). Raises :class:`NatGanError`.
    """
    path = Path(path)
    where = f"{path}"
    if not path.is_file():
        raise NatGanError(f"{where}: {what} not found")
    try:
        check_zip(path, f"{path}: {what}")  # declared sizes bounded and CRCs verified (natgan.archive)
        with zipfile.ZipFile(path) as zf:
            total = 0
            for info in zf.infolist():
                if not info.filename.endswith(".npy"):
                    continue
                dtype, shape = _declared(zf, info, where)
                declared = int(np.prod(shape, dtype=object)) * dtype.itemsize
                if declared > info.file_size:
                    raise NatGanError(f"{where}: member '{info.filename}' declares shape {list(shape)} "
                                      f"({declared:,} bytes) but holds only {info.file_size:,} bytes")
                total += declared
            check_fits(total, f"{where} ({what})")
        with np.load(path, allow_pickle=False) as data:
            return {name: np.asarray(data[name]) for name in data.files}
    except NatGanError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, NotImplementedError) as exc:
        raise NatGanError(f"{where}: not a readable .npz {what} ({(str(exc).splitlines() or [''])[0]})") from None
