"""The user cache directory and the reference-statistics cache kept in it.

Reference statistics (mean and covariance of the reference set's features) dominate the cost of a
first FID run, so they are computed once per (dataset content hash, image size, mode, extractor, hash of
the extractor's weights file, image count) and reused. They live in a per-user directory, never inside
site-packages (which may be read-only and is wiped by reinstalls), as clean-fid's custom statistics do:

``$NATGAN_CACHE_DIR``, else ``$XDG_CACHE_HOME/nat-gan``, else ``~/.cache/nat-gan``.

Entries are written atomically and carry their own key; a corrupt or mismatching file is ignored and
recomputed rather than trusted.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from natgan.errors import ConfigError, NatGanError
from natgan.fsutil import atomic_write


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
    sigma: np.ndarray
    feats: np.ndarray | None  # all reference features, kept only when KID was asked for
    path: Path


class StatsCache:
    """Reference statistics on disk under ``<cache>/fid-stats/``."""

    def __init__(self, root: Path | None = None):
        self.root = (root or cache_dir()) / "fid-stats"

    def path(self, key: StatsKey) -> Path:
        return self.root / key.filename()

    def load(self, key: StatsKey, *, need_feats: bool = False) -> CachedStats | None:
        """The entry for ``key``, or None when absent, unreadable, for another key, or lacking features."""
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as data:
                meta = json.loads(str(data["meta"]))
                if meta != key.as_dict():
                    return None
                feats = data["feats"] if "feats" in data.files else None
                if need_feats and feats is None:
                    return None
                return CachedStats(mu=data["mu"], sigma=data["sigma"], feats=feats, path=path)
        except (OSError, ValueError, KeyError, json.JSONDecodeError, EOFError):
            return None

    def save(self, key: StatsKey, mu: np.ndarray, sigma: np.ndarray, feats: np.ndarray | None = None) -> Path:
        arrays = {"mu": mu, "sigma": sigma, "meta": np.array(json.dumps(key.as_dict(), sort_keys=True))}
        if feats is not None:
            arrays["feats"] = feats
        try:
            return atomic_write(self.path(key), lambda fh: np.savez(fh, **arrays))
        except OSError as exc:  # the numbers are computed and valid; only their reuse is lost
            raise NatGanError(f"{self.root}: cannot store reference statistics ({exc.strerror or exc}); point "
                              f"$NATGAN_CACHE_DIR at a writable directory or pass --no-cache") from None
