"""Verify a weights file before anything loads it, and decide which directories may hold one.

Why: ``torch.jit.load`` runs code stored in the file (a scripted ``__setstate__`` can create or
overwrite any file the user may write), and a file planted in a directory other users can write
(clean-fid downloads to ``/tmp``) is a file from a stranger. So:

* every file nat-gan knows by name is hashed (sha256, streamed) **before** a loader sees it and compared
  with the official digest in :mod:`natgan.metrics.weight_files`; a different file is refused with one
  line naming the file, the expected and the actual digest;
* a TorchScript file is read into memory once, hashed, and loaded from those very bytes (nobody can swap
  the file between the check and the load); another TorchScript file is loaded only when the user names
  it with ``--trust-torchscript FILE`` / ``$NATGAN_TRUST_TORCHSCRIPT`` (an option that names the risk);
* a state dict with another digest (a fine-tuned VGG, a test fixture) is loaded only when named in
  ``$NATGAN_UNOFFICIAL_WEIGHTS`` (it still loads with ``weights_only=True``; its numbers are not the
  published protocol's), and the digest goes into the metric protocol either way;
* the places nat-gan searches on its own (cache, clean-fid's and torch.hub's download folders) count only
  when neither the folder nor the file is writable by anyone but the user (:func:`private_location`).
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from natgan.errors import NatGanError
from natgan.fsutil import same_file
from natgan.metrics.weight_files import WeightsFile

TRUST_TORCHSCRIPT_ENV = "NATGAN_TRUST_TORCHSCRIPT"
UNOFFICIAL_ENV = "NATGAN_UNOFFICIAL_WEIGHTS"
# The official TorchScript Inception is 95.6 MB; anything far larger is not a network worth reading into memory.
MAX_TORCHSCRIPT_BYTES = 1 << 30
_CHUNK = 1 << 22

_DIGESTS: dict[tuple, str] = {}


def _stat_key(path: Path) -> tuple:
    st = path.stat()
    return (str(path.resolve()), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def sha256_file(path: str | Path) -> str:
    """Full sha256 (hex) of a file, streamed; memoised per (inode, size, mtime) in this process."""
    path = Path(path)
    key = _stat_key(path)
    if key not in _DIGESTS:
        digest = hashlib.sha256()
        with open(path, "rb") as fh:
            while chunk := fh.read(_CHUNK):
                digest.update(chunk)
        _DIGESTS[key] = digest.hexdigest()
    return _DIGESTS[key]


@dataclass(frozen=True)
class VerifiedWeights:
    """A weights file that passed :func:`verify`: its digest and, for TorchScript, the bytes that were hashed."""

    path: Path
    sha256: str
    official: bool
    data: bytes | None = None

    def stream(self) -> io.BytesIO:
        if self.data is None:
            raise ValueError("only TorchScript files are kept in memory")
        return io.BytesIO(self.data)

    def describe(self) -> str:
        """What the metric protocol records about the file."""
        return f"weights sha256 {self.sha256} ({'official' if self.official else 'NOT the official file'})"


def _named(path: Path, values: list[str | Path]) -> bool:
    return any(value and same_file(path, Path(value).expanduser()) for value in values)


def _env_paths(name: str) -> list[str]:
    return [p for p in os.environ.get(name, "").split(os.pathsep) if p.strip()]


def trust_torchscript_file(path: str | Path) -> Callable[[], None]:
    """Accept ``path`` as a TorchScript network to run (what ``--trust-torchscript`` does: the option adds
    to the environment variable, so every loader sees it); returns the function that undoes it."""
    previous = os.environ.get(TRUST_TORCHSCRIPT_ENV)
    os.environ[TRUST_TORCHSCRIPT_ENV] = os.pathsep.join([*_env_paths(TRUST_TORCHSCRIPT_ENV),
                                                         str(Path(path).expanduser())])

    def undo() -> None:
        if previous is None:
            os.environ.pop(TRUST_TORCHSCRIPT_ENV, None)
        else:
            os.environ[TRUST_TORCHSCRIPT_ENV] = previous

    return undo


def _read_bounded(path: Path, limit: int) -> bytes:
    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        if size > limit:
            raise NatGanError(f"{path}: {size} bytes, far larger than any TorchScript network nat-gan loads; refused")
        return fh.read(limit + 1)


def verify(spec: WeightsFile, path: str | Path, *, trust_torchscript: str | Path | None = None) -> VerifiedWeights:
    """Hash ``path`` and refuse it (one line) unless it is the official ``spec`` file or the user named it.

    ``trust_torchscript``: the ``--trust-torchscript`` value (``$NATGAN_TRUST_TORCHSCRIPT`` is read too).
    Nothing but ``open``/``read`` touches the file here.
    """
    path = Path(path)
    try:
        if not path.is_file():
            raise NatGanError(f"{path}: not a regular file, not the weights {spec.filename}")
        if spec.kind == "torchscript":
            data = _read_bounded(path, MAX_TORCHSCRIPT_BYTES)
            digest, kept = hashlib.sha256(data).hexdigest(), data
        else:
            digest, kept = sha256_file(path), None
    except OSError as exc:
        raise NatGanError(f"{path}: cannot read the weights {spec.filename} ({exc.strerror or exc})") from None
    if digest == spec.sha256:
        return VerifiedWeights(path, digest, True, kept)
    if spec.kind == "torchscript":
        if _named(path, [trust_torchscript or "", *_env_paths(TRUST_TORCHSCRIPT_ENV)]):
            return VerifiedWeights(path, digest, False, kept)
        raise NatGanError(
            f"{path}: refused before loading: sha256 {digest} is not the official {spec.filename}'s "
            f"{spec.sha256}, and TorchScript runs code when loaded (download {spec.url}; to run this file anyway, "
            f"name it with --trust-torchscript or {TRUST_TORCHSCRIPT_ENV})")
    if _named(path, _env_paths(UNOFFICIAL_ENV)):
        return VerifiedWeights(path, digest, False, None)
    raise NatGanError(
        f"{path}: refused: sha256 {digest} is not the official {spec.filename}'s {spec.sha256}, so its numbers "
        f"would not be the published protocol's (download {spec.url}; to use this file anyway, name it in "
        f"{UNOFFICIAL_ENV})")


def writable_by_others(path: str | Path) -> bool:
    """True if ``path`` (file or folder) is owned by someone other than the user (or root), or is
    group/other-writable: then someone else can put a file there, or change this one."""
    try:
        st = os.stat(path)
    except OSError:
        return False
    return st.st_uid not in (os.getuid(), 0) or bool(st.st_mode & (stat.S_IWGRP | stat.S_IWOTH))


def private_location(path: str | Path) -> bool:
    """A file nat-gan may pick up on its own: it and its folder are writable only by the user (or root)."""
    path = Path(path)
    return not writable_by_others(path.parent) and not writable_by_others(path)
