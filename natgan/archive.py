"""Zip containers (torch checkpoints, ``.npz``) checked before anything is decompressed or allocated.

Why: ``torch.load`` and ``np.load`` trust the sizes a zip declares. An 8 MB file can declare an 8 GiB
entry (deflate reaches ~1000:1), and the reader allocates it; and neither verifies CRC-32s, so a flipped
byte inside a tensor loads as silently different weights. :func:`check_zip` reads only the central
directory first and refuses a container whose declared sizes are out of bounds, then verifies every
entry's CRC-32 by streaming it (bounded memory), so the real loader only ever sees a sound container.

Files in torch's legacy (pre-1.6, non-zip) format have no CRCs, but the same kind of bomb: a 400-byte file
can declare an 8 GiB storage, which ``torch.load`` allocates while unpickling. :func:`check_torch_file`
reads such a file's pickles with a scanner that imports nothing and only adds up the declared storage
sizes, and refuses more tensor bytes than the file holds.

The bound: torch and ``np.savez`` store entries uncompressed (declared size = stored size), and weights
or latents barely compress, so the sizes an honest file declares add up to about its own size.
A container may declare at most ``MAX_EXPANSION`` times its size, or ``SMALL_FILE_ALLOWANCE`` bytes
(tiny files of zeros compress well and cannot hurt), and a stored entry must declare exactly what it stores.
"""

from __future__ import annotations

import io
import pickle
import zipfile
from pathlib import Path
from typing import IO, Any

from natgan.errors import CheckpointError

MAX_EXPANSION = 4
SMALL_FILE_ALLOWANCE = 64 << 20
_CHUNK = 1 << 20


class ArchiveError(CheckpointError):
    """A zip container that must not be handed to a loader (one line, naming the entry at fault)."""


def _size_of(source: IO[bytes]) -> int:
    source.seek(0, io.SEEK_END)
    size = source.tell()
    source.seek(0)
    return size


def check_zip(source: str | Path | bytes | bytearray, what: str | None = None) -> bool:
    """Refuse (``ArchiveError``) a zip whose declared sizes exceed the bound or whose entries fail their
    CRC-32; return False (and check nothing) when ``source`` is not a zip at all.

    ``source``: a path or the bytes of a nested file; ``what`` names it in messages (default: the path).
    """
    what = what or str(source)
    fh: IO[bytes] = io.BytesIO(bytes(source)) if isinstance(source, (bytes, bytearray)) else open(source, "rb")
    with fh:
        if not zipfile.is_zipfile(fh):
            return False
        size = _size_of(fh)
        try:
            with zipfile.ZipFile(fh) as zf:
                infos = zf.infolist()
                _check_declared_sizes(infos, size, what)
                for info in infos:
                    _check_crc(zf, info, what)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError, NotImplementedError,
                RuntimeError) as exc:
            raise ArchiveError(f"{what}: corrupt zip container ({type(exc).__name__}: "
                               f"{(str(exc).splitlines() or [''])[0]})") from None
    return True


def _check_declared_sizes(infos: list[zipfile.ZipInfo], size: int, what: str) -> None:
    total = 0
    for info in infos:
        if info.compress_type == zipfile.ZIP_STORED and info.file_size != info.compress_size:
            raise ArchiveError(f"{what}: entry '{info.filename}' declares {info.file_size:,} bytes but stores "
                               f"{info.compress_size:,}; refused before reading it")
        total += info.file_size
    limit = max(SMALL_FILE_ALLOWANCE, MAX_EXPANSION * size)
    if total > limit:
        biggest = max(infos, key=lambda i: i.file_size)
        raise ArchiveError(f"{what}: declares {total:,} bytes uncompressed in a {size:,}-byte file (entry "
                           f"'{biggest.filename}': {biggest.file_size:,} bytes); more than {MAX_EXPANSION}x its size "
                           f"is refused before anything is decompressed (a zip bomb)")


def _check_crc(zf: zipfile.ZipFile, info: zipfile.ZipInfo, what: str) -> None:
    """Stream the entry; zipfile compares the CRC-32 at its end (and stops at the declared size)."""
    try:
        with zf.open(info) as entry:
            while entry.read(_CHUNK):
                pass
    except zipfile.BadZipFile as exc:
        if "CRC" in str(exc):
            raise ArchiveError(f"{what}: corrupt: entry '{info.filename}' fails its CRC check (the file was "
                               f"damaged after it was written)") from None
        raise


# ------------------------------------------------------------------------------- legacy torch format

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # torch.serialization.MAGIC_NUMBER, the first pickle of a legacy file
_ELEMENT_BYTES = {"ComplexDouble": 16, "ComplexFloat": 8, "Double": 8, "Long": 8, "Float": 4, "Int": 4,
                  "BFloat16": 2, "Half": 2, "Short": 2, "Char": 1, "Byte": 1, "Bool": 1}
_SLACK = 1 << 16


class _Stub:
    """Stands for every global a legacy pickle names: called, built, filled - and nothing is imported."""

    qualname = ""

    def __new__(cls, *args: Any, **kwargs: Any) -> "_Stub":
        return object.__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        pass

    def __setitem__(self, key: Any, value: Any) -> None:
        pass

    def append(self, value: Any) -> None:
        pass

    def extend(self, values: Any) -> None:
        pass


class _SizeScanner(pickle.Unpickler):
    """Unpickles with stubs only, recording ``('storage', type, key, location, numel)`` persistent ids."""

    def __init__(self, fh: IO[bytes]):
        super().__init__(fh)
        self.storage_bytes: dict[str, int] = {}
        self._classes: dict[str, type] = {}

    def find_class(self, module: str, name: str) -> type:
        qualname = f"{module}.{name}"
        if qualname not in self._classes:
            self._classes[qualname] = type(name, (_Stub,), {"qualname": qualname})
        return self._classes[qualname]

    def persistent_load(self, pid: Any) -> Any:
        if isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage" and isinstance(pid[4], int):
            kind = getattr(pid[1], "qualname", "")
            element = next((b for k, b in _ELEMENT_BYTES.items() if kind.endswith(f".{k}Storage")), 1)
            self.storage_bytes[str(pid[2])] = max(0, pid[4]) * element
        return _Stub()


def check_torch_file(source: str | Path | bytes | bytearray, what: str | None = None) -> None:
    """The checks a torch file needs before ``torch.load``: :func:`check_zip` for the zip format, the
    declared-storage bound for the legacy format; anything else (a plain pickle) is left to its loader."""
    what = what or str(source)
    if check_zip(source, what):
        return
    fh: IO[bytes] = io.BytesIO(bytes(source)) if isinstance(source, (bytes, bytearray)) else open(source, "rb")
    with fh:
        size = _size_of(fh)
        scanner = _SizeScanner(fh)
        try:
            if scanner.load() != _LEGACY_MAGIC:
                return  # not a legacy torch file
            scanner.load()  # protocol version
            scanner.load()  # system info
            scanner.load()  # the object; its storages' data follows
        except Exception:  # noqa: BLE001 - not scannable: torch's own (weights_only) loader will refuse it
            return
    declared = sum(scanner.storage_bytes.values())
    if declared > size + _SLACK:
        raise ArchiveError(f"{what}: declares {declared:,} bytes of tensor data in a {size:,}-byte file (legacy "
                           f"torch format); refused before torch.load allocates it")
