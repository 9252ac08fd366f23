"""The user cache directory and the reference-statistics cache kept in it.

Reference statistics (mean and covariance of the reference set's features) dominate the cost of a
first FID run, so they are computed once per (dataset content hash, image size, mode, extractor, hash of
the extractor's weights file, image count) and reused. They live in a per-user directory, never inside
site-packages (which may be read-only and is wiped by reinstalls), as clean-fid's custom statistics do:

``$NATGAN_CACHE_DIR``, else ``$XDG_CACHE_HOME/nat-gan``, else ``~/.cache/nat-gan``.

Entries are written atomically and carry their own key; a corrupt or mismatching file is ignored and
recomputed rather than trusted.

What is stored (the policy; callers decide per side, :mod:`natgan.metrics.reference`): only references, never
the generated/compared side of a run (it is not reused); only sets of at least :data:`MIN_CACHED_IMAGES`
images (a small folder is re-embedded in seconds, its entry would cost ~33 MB all the same); the covariance only
when a metric uses it (FID on Inception; precision/recall on VGG16 need the features, not a 4096² matrix). The
directory is capped (:func:`max_cache_bytes`, least recently used entries go first) and ``nat-gan cache list``
/ ``nat-gan cache clear`` show and empty it.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from natgan.errors import ConfigError, NatGanError
from natgan.archive import ArchiveError, check_zip
from natgan.fsutil import atomic_write

MIN_CACHED_IMAGES = 1000         # smaller reference sets are recomputed each time, not stored
DEFAULT_MAX_MB = 2048            # cap of <cache>/fid-stats (NATGAN_CACHE_MAX_MB)
MAX_MB_ENV = "NATGAN_CACHE_MAX_MB"


def max_cache_bytes() -> int:
    """The statistics cache's cap: ``$NATGAN_CACHE_MAX_MB`` (0 = store nothing), else 2 GiB."""
    raw = os.environ.get(MAX_MB_ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_MB * 2**20
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not (0 <= value < 2**40):
        raise ConfigError(f"${MAX_MB_ENV}={raw!r}: expected a size in MB >= 0 (0 = do not cache)")
    return int(value * 2**20)


def worth_caching(count: int) -> bool:
    """Whether statistics of ``count`` images are worth an entry (see the module docstring)."""
    return count >= MIN_CACHED_IMAGES


def cache_dir() -> Path:
    """Root of nat-gan's user cache (not created here)."""
    explicit = os.environ.get("NATGAN_CACHE_DIR")
    if explicit:
        path = Path(explicit).expanduser()
        if path.exists() and not path.is_dir():
            raise ConfigError(f"$NATGAN_CACHE_DIR={explicit}: not a directory; point it at a writable directory "
                              f"(or unset it)")
        if path.resolve().parts[1:2] in (("proc",), ("sys",), ("dev",)):
            raise ConfigError(f"$NATGAN_CACHE_DIR={explicit}: a kernel file system, not a place for a cache; "
                              f"point it at a writable directory (or unset it)")
        return path
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg:
        return Path(xdg).expanduser() / "nat-gan"
    return Path.home() / ".cache" / "nat-gan"


@dataclass(frozen=True)
class StatsKey:
    """Everything the reference statistics depend on; two runs with equal keys share one entry."""

    content_hash: str
    resolution: int
    mode: str
    extractor: str
    count: int
    subset: str  # "all" or "random-<seed>": which images when count < dataset length
    weights: str = ""  # content hash of the extractor's weights file ("" for networks built in code)

    def as_dict(self) -> dict[str, Any]:
        return {"content_hash": self.content_hash, "resolution": self.resolution, "mode": self.mode,
                "extractor": self.extractor, "weights": self.weights, "count": self.count, "subset": self.subset}

    def filename(self) -> str:
        digest = hashlib.sha256(json.dumps(self.as_dict(), sort_keys=True).encode()).hexdigest()[:20]
        extractor = "".join(c if c.isalnum() or c in "-_." else "_" for c in self.extractor)[:40]
        return f"{self.mode}-{extractor}-{self.resolution}px-n{self.count}-{digest}.npz"


@dataclass
class CachedStats:
    mu: np.ndarray
    sigma: np.ndarray | None  # None: stored without covariance (no metric of that run used it)
    feats: np.ndarray | None  # all reference features, kept only when KID/pr/dc asked for them
    path: Path


@dataclass
class CacheEntry:
    """One file of the statistics cache, for ``nat-gan cache list``."""

    path: Path
    bytes: int
    last_used: float
    key: dict | None  # None: not a readable entry (it is still counted, and cleared)


class StatsCache:
    """Reference statistics on disk under ``<cache>/fid-stats/``."""

    def __init__(self, root: Path | None = None):
        self.root = (root or cache_dir()) / "fid-stats"

    def path(self, key: StatsKey) -> Path:
        return self.root / key.filename()

    def load(self, key: StatsKey, *, need_feats: bool = False, need_sigma: bool = True) -> CachedStats | None:
        """The entry for ``key``, or None when absent, unreadable, for another key, or lacking what is needed.
        A hit refreshes the file's time, which the cap's least-recently-used order reads."""
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            check_zip(path)  # a damaged or inflated entry is recomputed, never decompressed
            with np.load(path, allow_pickle=False) as data:
                meta = json.loads(str(data["meta"]))
                if meta != key.as_dict():
                    return None
                feats = data["feats"] if "feats" in data.files else None
                sigma = data["sigma"] if "sigma" in data.files else None
                if (need_feats and feats is None) or (need_sigma and sigma is None):
                    return None
                hit = CachedStats(mu=data["mu"], sigma=sigma, feats=feats, path=path)
        except (OSError, ValueError, KeyError, json.JSONDecodeError, EOFError, ArchiveError):
            return None
        try:
            os.utime(path)
        except OSError:
            pass
        return hit

    def save(self, key: StatsKey, mu: np.ndarray, sigma: np.ndarray | None,
             feats: np.ndarray | None = None) -> Path | None:
        """Store an entry (atomically), then keep the directory under :func:`max_cache_bytes` by removing the
        least recently used entries. Returns the path, or None when the entry alone exceeds the cap."""
        arrays = {"mu": mu, "meta": np.array(json.dumps(key.as_dict(), sort_keys=True))}
        if sigma is not None:
            arrays["sigma"] = sigma
        if feats is not None:
            arrays["feats"] = feats
        cap = max_cache_bytes()
        size = sum(a.nbytes for a in arrays.values())
        if size > cap:
            return None
        try:
            path = atomic_write(self.path(key), lambda fh: np.savez(fh, **arrays))
        except OSError as exc:  # the numbers are computed and valid; only their reuse is lost
            raise NatGanError(f"{self.root}: cannot store reference statistics ({exc.strerror or exc}); point "
                              f"$NATGAN_CACHE_DIR at a writable directory or pass --no-cache") from None
        self.prune(cap, keep=path)
        return path

    def entries(self) -> list[CacheEntry]:
        """Every ``.npz`` in the cache, newest use first."""
        if not self.root.is_dir():
            return []
        found = []
        for path in self.root.glob("*.npz"):
            try:
                st = path.stat()
            except OSError:
                continue
            found.append(CacheEntry(path, st.st_size, st.st_mtime, _read_key(path)))
        return sorted(found, key=lambda e: e.last_used, reverse=True)

    def total_bytes(self) -> int:
        return sum(e.bytes for e in self.entries())

    def prune(self, max_bytes: int, keep: Path | None = None) -> list[Path]:
        """Remove least recently used entries until the total is at most ``max_bytes``."""
        removed, entries = [], self.entries()
        total = sum(e.bytes for e in entries)
        for entry in reversed(entries):
            if total <= max_bytes:
                break
            if keep is not None and entry.path == keep:
                continue
            try:
                entry.path.unlink()
            except OSError:
                continue
            total -= entry.bytes
            removed.append(entry.path)
        return removed


def _read_key(path: Path) -> dict | None:
    """The key stored in an entry (only the small ``meta`` array is read)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
    except (OSError, ValueError, KeyError, json.JSONDecodeError, EOFError):
        return None
    return meta if isinstance(meta, dict) else None


# The folders of the user cache: what `nat-gan cache list` reports and `nat-gan cache clear` may empty.
SECTIONS = {
    "fid-stats": "reference statistics (recomputed on the next run that needs them)",
    "cleanfid-stats": "published clean-fid statistics (downloaded again when needed)",
    "weights": "metric network weights (Inception, VGG16, LPIPS; downloaded again when needed)",
}


def section_files(name: str, root: Path | None = None) -> list[Path]:
    """Regular files directly in one section of the cache (symlinks and folders are left alone)."""
    folder = (root or cache_dir()) / name
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.is_symlink())


def cache_report(root: Path | None = None) -> dict[str, Any]:
    """``{"root", "max_bytes", "sections": [{"name", "what", "files", "bytes"}], "stats": [entry...]}``."""
    root = root or cache_dir()
    sections = []
    for name, what in SECTIONS.items():
        files = section_files(name, root)
        sections.append({"name": name, "what": what, "files": len(files),
                         "bytes": sum(_size(p) for p in files)})
    stats = [{"file": e.path.name, "bytes": e.bytes,
              "last_used": time.strftime("%Y-%m-%d %H:%M", time.localtime(e.last_used)), **(e.key or {})}
             for e in StatsCache(root).entries()]
    return {"root": str(root), "max_bytes": max_cache_bytes(), "sections": sections, "stats": stats}


def clear_cache(sections: list[str], *, older_than_days: float | None = None,
                root: Path | None = None) -> dict[str, Any]:
    """Remove the files of ``sections`` (those unused for ``older_than_days``, or all); returns what went."""
    unknown = [s for s in sections if s not in SECTIONS]
    if unknown:
        raise ConfigError(f"cache section '{unknown[0]}': expected one of {', '.join(SECTIONS)}")
    root = root or cache_dir()
    cutoff = None if older_than_days is None else time.time() - older_than_days * 86400
    removed = {"files": 0, "bytes": 0}
    for name in sections:
        for path in section_files(name, root):
            try:
                st = path.stat()
                if cutoff is not None and st.st_mtime > cutoff:
                    continue
                path.unlink()
            except OSError:
                continue
            removed["files"] += 1
            removed["bytes"] += st.st_size
    return {"root": str(root), "sections": sections, **removed}


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0
