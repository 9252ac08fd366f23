"""Finding the Inception weights file each clean-fid mode needs, offline-first.

clean-fid downloads its networks at run time (the TorchScript file to a hard-coded ``/tmp``, the
pytorch-fid weights through ``torch.hub``), which fails on clusters without internet. We look, in order:

1. ``--inception PATH`` (the ``inception`` argument), else ``$NATGAN_INCEPTION``: a file, or a
   directory holding the file under its usual name (so one directory can serve every mode);
2. ``<cache>/weights/<file>`` (see :func:`natgan.metrics.cache.cache_dir`);
3. where clean-fid itself keeps it (``/tmp`` or the ``torch.hub`` checkpoint directory);
4. a download into ``<cache>/weights/`` (skipped when ``$NATGAN_OFFLINE`` is set).

When all of that fails the error names the file, the URL clean-fid uses and the places it may go.
"""

from __future__ import annotations

import hashlib
import os
import platform
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import torch
from cleanfid import downloads_helper, inception_pytorch

from natgan.errors import ConfigError, NatGanError
from natgan.metrics.cache import atomic_write_bytes, cache_dir

MODES = ("clean", "legacy_pytorch", "legacy_tensorflow")
DOWNLOAD_TIMEOUT_S = 60


@dataclass(frozen=True)
class WeightsFile:
    kind: str          # "torchscript" (NVIDIA's TF-Inception port) or "pytorch" (pytorch-fid state dict)
    filename: str
    url: str
    sha256_prefix: str | None = None  # torch.hub convention: the hash prefix in the file name

    def cleanfid_location(self) -> Path:
        """Where clean-fid itself would download this file."""
        if self.kind == "torchscript":
            return Path("./" if platform.system() == "Windows" else "/tmp") / self.filename
        return Path(torch.hub.get_dir()) / "checkpoints" / self.filename

    def cache_location(self) -> Path:
        return cache_dir() / "weights" / self.filename


TORCHSCRIPT = WeightsFile("torchscript", os.path.basename(downloads_helper.inception_url), downloads_helper.inception_url)
PYTORCH_FID = WeightsFile("pytorch", os.path.basename(inception_pytorch.FID_WEIGHTS_URL),
                          inception_pytorch.FID_WEIGHTS_URL, sha256_prefix="6726825d")


def weights_for_mode(mode: str) -> WeightsFile:
    if mode not in MODES:
        raise ConfigError(f"--mode '{mode}': expected one of {', '.join(MODES)}")
    return PYTORCH_FID if mode == "legacy_pytorch" else TORCHSCRIPT


def _offline() -> bool:
    return os.environ.get("NATGAN_OFFLINE", "").strip().lower() not in ("", "0", "false", "no")


def download(url: str, target: Path, *, sha256_prefix: str | None = None) -> Path:
    """Fetch ``url`` to ``target`` atomically (tests replace this to simulate a machine without network)."""
    digest = hashlib.sha256()

    def write(fh):
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:
            while chunk := response.read(1 << 20):
                digest.update(chunk)
                fh.write(chunk)
        if sha256_prefix and not digest.hexdigest().startswith(sha256_prefix):
            raise OSError(f"checksum mismatch (sha256 {digest.hexdigest()[:8]}, expected {sha256_prefix})")

    return atomic_write_bytes(target, write)


def missing_message(mode: str, spec: WeightsFile, reason: str) -> str:
    return (f"no Inception weights for --mode {mode}: {spec.filename} is not available ({reason}); download "
            f"{spec.url} and pass --inception /path/to/{spec.filename}, set NATGAN_INCEPTION to that file (or its "
            f"directory), or save it as {spec.cache_location()}")


def find_weights(mode: str, inception: str | Path | None = None) -> Path | None:
    """Steps 1-3 of the search (no download): the file for ``mode``, or None when it is nowhere yet.

    An explicit ``inception``/``$NATGAN_INCEPTION`` that does not hold the file is an error, not None.
    """
    spec = weights_for_mode(mode)
    explicit, source = (inception, "--inception") if inception else (os.environ.get("NATGAN_INCEPTION"),
                                                                      "NATGAN_INCEPTION")
    if explicit:
        path = Path(explicit).expanduser()
        if path.is_dir():
            if (path / spec.filename).is_file():
                return path / spec.filename
            raise NatGanError(f"{source} {path}: the directory has no {spec.filename}, which --mode {mode} needs "
                              f"(download it from {spec.url})")
        if path.is_file():
            return path
        raise NatGanError(f"{source} {path}: file not found (--mode {mode} needs {spec.filename} from {spec.url})")
    for candidate in (spec.cache_location(), spec.cleanfid_location()):
        if candidate.is_file() and candidate.stat().st_size > 0:
            return candidate
    return None


def resolve_weights(mode: str, inception: str | Path | None = None) -> Path:
    """Path of the weights file for ``mode`` (see the module docstring for the search order)."""
    found = find_weights(mode, inception)
    if found is not None:
        return found
    spec = weights_for_mode(mode)
    if _offline():
        raise NatGanError(missing_message(mode, spec, "NATGAN_OFFLINE is set, so nothing is downloaded"))
    target = spec.cache_location()
    try:
        download(spec.url, target, sha256_prefix=spec.sha256_prefix)
    except (urllib.error.URLError, OSError, TimeoutError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise NatGanError(missing_message(mode, spec, f"download failed: {str(reason).splitlines()[0]}")) from None
    return target

