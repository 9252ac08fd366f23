"""Finding the weights files of the metric networks, offline-first, by name.

clean-fid and torchvision download their networks at run time (the TorchScript Inception to a hard-coded
``/tmp``, the pytorch-fid and torchvision weights through ``torch.hub``), which fails on clusters without
internet. Every network is one entry of :data:`WEIGHTS` (name -> file name + download URL + official
sha256, kept in :mod:`natgan.metrics.weight_files`), and :func:`locate` looks, in order:

1. for the Inception files only: ``--inception PATH`` (the ``inception`` argument), else
   ``$NATGAN_INCEPTION``: a file, or a directory holding the file under its usual name;
2. the weights directory: ``--weights DIR`` (the ``weights_dir`` argument), else ``$NATGAN_WEIGHTS``,
   holding files under their usual names (one directory serves every metric);
3. ``<cache>/weights/<file>`` (see :func:`natgan.metrics.cache.cache_dir`);
4. where the upstream tool itself keeps it (``/tmp`` for clean-fid's TorchScript file, else the
   ``torch.hub`` checkpoint directory that pytorch-fid and torchvision use);
5. a download into ``<cache>/weights/`` (skipped when ``$NATGAN_OFFLINE`` is set).

Steps 3 and 4 are places nat-gan searches on its own, so a file there counts only when neither it nor its
folder is writable by anyone else (:func:`natgan.metrics.weight_trust.private_location`): a file planted in
the shared ``/tmp`` is never picked up. Whatever is found, a loader verifies its sha256 first
(:func:`natgan.metrics.weight_trust.verify`).

When all of that fails the error names the file, its download URL and the places it may go. A network
another module needs (e.g. LPIPS's VGG16) is one more :data:`WEIGHTS` entry and a :func:`locate` call.
"""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from pathlib import Path

from natgan.errors import ConfigError, NatGanError
from natgan.fsutil import atomic_write
from natgan.metrics.cache import cache_dir
from natgan.metrics.weight_files import (  # noqa: F401 - the table's names are part of this module's API
    PYTORCH_FID,
    TORCHSCRIPT,
    VGG16,
    WEIGHTS,
    WeightsFile,
)
from natgan.metrics.weight_trust import private_location, sha256_file

MODES = ("clean", "legacy_pytorch", "legacy_tensorflow")
DOWNLOAD_TIMEOUT_S = 60


# What needs each file, in the order ``nat-gan doctor --weights`` and the README table list them:
# (what needs it, the WEIGHTS names it loads).
USES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("fid, kid, is (--mode legacy_pytorch, the default)", ("inception-pytorch-fid",)),
    ("fid, kid, is (--mode clean, legacy_tensorflow)", ("inception-torchscript",)),
    ("pr, dc (--pr-features vgg16, the default)", ("vgg16",)),
    ("ppl, project (LPIPS)", ("vgg16", "lpips-vgg")),
)


def needed_by(name: str) -> str:
    """What needs the file :data:`WEIGHTS` calls ``name`` (from :data:`USES`), for messages."""
    return "; ".join(needs for needs, names in USES if name in names) or name


def weights_for_mode(mode: str) -> WeightsFile:
    if mode not in MODES:
        raise ConfigError(f"--mode '{mode}': expected one of {', '.join(MODES)}")
    return PYTORCH_FID if mode == "legacy_pytorch" else TORCHSCRIPT


def _offline() -> bool:
    return os.environ.get("NATGAN_OFFLINE", "").strip().lower() not in ("", "0", "false", "no")


def download(url: str, target: Path, *, sha256: str | None = None) -> Path:
    """Fetch ``url`` to ``target`` atomically, refusing bytes whose sha256 is not ``sha256`` (tests replace
    this to simulate a machine without network)."""
    import hashlib

    digest = hashlib.sha256()

    def write(fh):
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:
            while chunk := response.read(1 << 20):
                digest.update(chunk)
                fh.write(chunk)
        if sha256 and digest.hexdigest() != sha256:
            raise OSError(f"checksum mismatch (sha256 {digest.hexdigest()}, expected {sha256})")

    return atomic_write(target, write)


class MissingWeights(NatGanError):
    """A weights file found nowhere and not downloaded: the one-line message plus its parts."""

    def __init__(self, message: str, spec: "WeightsFile", purpose: str, reason: str):
        super().__init__(message)
        self.spec, self.purpose, self.reason = spec, purpose, reason


def missing_message(purpose: str, spec: WeightsFile, reason: str, *, inception: bool = False) -> str:
    also = f"pass --inception /path/to/{spec.filename} or set NATGAN_INCEPTION to that file (or its directory), " \
        if inception else ""
    return (f"no {spec.label} weights for {purpose}: {spec.filename} is not available ({reason}); download "
            f"{spec.url} and put it in the weights directory (--weights DIR or NATGAN_WEIGHTS=DIR), {also}"
            f"or save it as {spec.cache_location()}")


def weights_digest(path: str | Path) -> str:
    """sha256 (first 16 hex digits) of a weights file (streamed, memoised per inode/size/mtime).

    Why: cached reference statistics depend on the extractor's weights, not on its name; keying them by
    this digest means swapping the file behind ``--inception`` recomputes them instead of reusing stale ones.
    """
    return sha256_file(path)[:16]


def _explicit_file(explicit: str | Path, source: str, spec: WeightsFile, purpose: str) -> Path:
    path = Path(explicit).expanduser()
    if path.is_dir():
        if (path / spec.filename).is_file():
            return path / spec.filename
        raise NatGanError(f"{source} {path}: the directory has no {spec.filename}, which {purpose} needs "
                          f"(download it from {spec.url})")
    if path.is_file():
        if path.stat().st_size == 0:
            raise NatGanError(f"{source} {path}: empty file, not the weights {spec.filename} "
                              f"(download it from {spec.url})")
        return path
    raise NatGanError(f"{source} {path}: file not found ({purpose} needs {spec.filename} from {spec.url})")


def weights_directory(weights_dir: str | Path | None = None) -> tuple[Path, str] | None:
    """The weights directory and where it came from (``--weights`` wins over ``$NATGAN_WEIGHTS``)."""
    explicit, source = (weights_dir, "--weights") if weights_dir else (os.environ.get("NATGAN_WEIGHTS"),
                                                                        "NATGAN_WEIGHTS")
    if not explicit:
        return None
    path = Path(explicit).expanduser()
    if not path.is_dir():
        raise NatGanError(f"{source} {path}: not a directory (it should hold weights files such as "
                          f"{', '.join(w.filename for w in WEIGHTS.values())})")
    return path, source


def find(name: str, *, weights_dir: str | Path | None = None, purpose: str | None = None,
         explicit: tuple[str | Path, str] | None = None) -> Path | None:
    """Steps 1-4 of the search (never downloads): the file :data:`WEIGHTS` calls ``name``, or None.

    An explicit path (``--inception``, ``--weights``) that does not hold the file is an error, not None.
    """
    if name not in WEIGHTS:
        raise ConfigError(f"unknown weights '{name}': expected one of {', '.join(WEIGHTS)}")
    spec = WEIGHTS[name]
    if explicit and explicit[0]:
        return _explicit_file(explicit[0], explicit[1], spec, purpose or name)
    directory = weights_directory(weights_dir)
    if directory:  # the user's own choice: taken as it is (the digest check still guards what is loaded)
        candidate = directory[0] / spec.filename
        if candidate.is_file() and candidate.stat().st_size > 0:
            return candidate
    for candidate in (spec.cache_location(), spec.tool_location()):
        # Places nat-gan searches on its own count only when nobody else can write there (never /tmp).
        if candidate.is_file() and candidate.stat().st_size > 0 and private_location(candidate):
            return candidate
    return None


def _ignored_copies(spec: WeightsFile) -> list[Path]:
    """Files under the usual name that :func:`find` skipped because someone else could have put them there."""
    return [p for p in (spec.cache_location(), spec.tool_location())
            if p.is_file() and p.stat().st_size > 0 and not private_location(p)]


def locate(name: str, *, weights_dir: str | Path | None = None, purpose: str | None = None,
           explicit: tuple[str | Path, str] | None = None) -> Path:
    """Path of the weights file :data:`WEIGHTS` calls ``name`` (search order: the module docstring).

    ``explicit`` = (path, option name) for a network-specific override such as ``--inception``;
    ``purpose`` names what needs the file in error messages.
    """
    found = find(name, weights_dir=weights_dir, purpose=purpose, explicit=explicit)
    if found is not None:
        return found
    spec = WEIGHTS[name]
    purpose = purpose or name
    inception = name.startswith("inception")
    directory = weights_directory(weights_dir)
    searched = f"not in {directory[0]}; " if directory else ""
    searched += "".join(f"{p} ignored: others can write there; " for p in _ignored_copies(spec))
    if _offline():
        reason = f"{searched}NATGAN_OFFLINE is set, so nothing is downloaded"
        raise MissingWeights(missing_message(purpose, spec, reason, inception=inception), spec, purpose, reason)
    target = spec.cache_location()
    try:
        download(spec.url, target, sha256=spec.sha256)
    except (urllib.error.URLError, OSError, TimeoutError, ValueError) as exc:
        cause = getattr(exc, "reason", None) or exc
        reason = f"{searched}download failed: {str(cause).splitlines()[0]}"
        raise MissingWeights(missing_message(purpose, spec, reason, inception=inception), spec, purpose,
                             reason) from None
    return target


def locate_all(names: list[str], *, weights_dir: str | Path | None = None, purpose: str) -> dict[str, Path]:
    """:func:`locate` for several files a network needs together; every missing one is named at once."""
    paths = locate_each([dict(name=name, weights_dir=weights_dir, purpose=purpose) for name in names])
    return dict(zip(names, paths))


def locate_each(queries: list[dict]) -> list[Path]:
    """:func:`locate` (``**query``) for every query, in order. Why all first: a run that needs several
    networks (``fid --metrics fid,pr,ppl``) names every missing file in one error, not one per attempt.

    One missing file: its own one-line message. Several: a first line that counts them, then one line per
    file (name, what needs it, URL, why it is not there)."""
    found, missing = [], []
    for query in queries:
        try:
            found.append(locate(**query))
        except NatGanError as exc:  # MissingWeights, or an explicit path that does not hold the file
            missing.append(exc)
    if missing:
        raise missing_error(missing)
    return found


def missing_error(missing: list[NatGanError]) -> NatGanError:
    """One error for several missing files, on one line like every nat-gan error: the file's own message when
    there is one, else a count followed by each file (name, what needs it, URL, why it is not there)."""
    if len(missing) == 1:
        return missing[0]
    items = [f"{exc.spec.filename} ({exc.spec.label}, for {exc.purpose}): {exc.spec.url} [{exc.reason}]"
             if isinstance(exc, MissingWeights) else str(exc) for exc in missing]
    return NatGanError(f"{len(missing)} weights files are missing (download each and put it in the weights "
                       f"directory, --weights DIR or NATGAN_WEIGHTS=DIR, or in {cache_dir() / 'weights'}): "
                       + "; ".join(items))


def inception_query(mode: str, inception: str | Path | None, weights_dir: str | Path | None) -> dict:
    """The :func:`locate` arguments for the Inception file of clean-fid ``mode``."""
    spec = weights_for_mode(mode)
    explicit = (inception, "--inception") if inception else (os.environ.get("NATGAN_INCEPTION"), "NATGAN_INCEPTION")
    name = "inception-pytorch-fid" if spec is PYTORCH_FID else "inception-torchscript"
    return dict(name=name, weights_dir=weights_dir, purpose=f"--mode {mode}", explicit=explicit)


def resolve_weights(mode: str, inception: str | Path | None = None, weights_dir: str | Path | None = None) -> Path:
    """Path of the Inception weights file for clean-fid ``mode`` (``--inception``/``$NATGAN_INCEPTION`` first)."""
    return locate(**inception_query(mode, inception, weights_dir))


def find_weights(mode: str, inception: str | Path | None = None, weights_dir: str | Path | None = None) -> Path | None:
    """:func:`resolve_weights` without the download step (``nat-gan doctor``): None when the file is nowhere yet."""
    return find(**inception_query(mode, inception, weights_dir))

