"""Zip containers (torch checkpoints, ``.npz``) checked before anything is decompressed or allocated.

Why: ``torch.load`` and ``np.load`` trust the sizes a zip declares. An 8 MB file can declare an 8 GiB
entry (deflate reaches ~1000:1), and the reader allocates it; and neither verifies CRC-32s, so a flipped
byte inside a tensor loads as silently different weights. :func:`check_zip` reads only the central
directory first and refuses a container whose declared sizes are out of bounds, then verifies every
entry's CRC-32 by streaming it (bounded memory), so the real loader only ever sees a sound container.

The bound: torch and ``np.savez`` store entries uncompressed (declared size = stored size), and weights
or latents barely compress, so the sizes an honest file declares add up to about its own size.
A container may declare at most ``MAX_EXPANSION`` times its size, or ``SMALL_FILE_ALLOWANCE`` bytes
(tiny files of zeros compress well and cannot hurt), and a stored entry must declare exactly what it stores.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import IO

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
