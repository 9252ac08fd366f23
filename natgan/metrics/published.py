"""clean-fid's published reference statistics, usable by name: ``cleanfid:ffhq:256:trainval70k``.

The files are the ones clean-fid's ``get_reference_statistics`` fetches
(``https://www.cs.cmu.edu/~clean-fid/stats/<name>_<mode>_<split>_<res>.npz``). We look for them in
nat-gan's cache (``<cache>/cleanfid-stats/``) and in clean-fid's own ``stats/`` folder, and download into
our cache otherwise, never into site-packages. Offline, the error says which file to put where.
"""

from __future__ import annotations

import hashlib
import os
import urllib.error
from dataclasses import dataclass
from pathlib import Path

import cleanfid
import numpy as np

from natgan.archive import check_zip
from natgan.errors import ConfigError, NatGanError
from natgan.metrics import weights
from natgan.metrics.cache import cache_dir
from natgan.metrics.stats import Statistics

PREFIX = "cleanfid:"
BASE_URL = "https://www.cs.cmu.edu/~clean-fid/stats/"

# (name, resolution, split) -> reference image count, from clean-fid's README ("Supported Precomputed Datasets").
PUBLISHED: dict[tuple[str, int, str], int] = {
    ("cifar10", 32, "train"): 50_000, ("cifar10", 32, "test"): 10_000,
    ("ffhq", 256, "trainval"): 50_000, ("ffhq", 256, "trainval70k"): 70_000,
    ("ffhq", 1024, "trainval"): 50_000, ("ffhq", 1024, "trainval70k"): 70_000,
    ("lsun_church", 256, "train"): 50_000, ("lsun_church", 256, "trainfull"): 126_227,
    ("lsun_horse", 256, "train"): 50_000, ("lsun_cat", 256, "train"): 50_000,
    ("lsun_cat", 256, "trainfull"): 1_657_264,
    ("afhq_cat", 512, "train"): 5_153, ("afhq_dog", 512, "train"): 4_739, ("afhq_wild", 512, "train"): 4_738,
    ("brecahad", 512, "train"): 1_944, ("metfaces", 1024, "train"): 1_336,
    ("horse2zebra", 256, "test"): 140, ("cat2dog", 256, "test"): 500,
}
# clean-fid publishes these only for mode "clean".
CLEAN_ONLY = {("lsun_church", 256, "trainfull")}
# KID needs all reference features; clean-fid publishes them only for the small few-shot sets.
KID_PUBLISHED = {"afhq_cat", "afhq_dog", "afhq_wild", "brecahad", "metfaces"}


@dataclass(frozen=True)
class PublishedRef:
    name: str
    resolution: int
    split: str

    @property
    def spec(self) -> str:
        return f"{PREFIX}{self.name}:{self.resolution}:{self.split}"

    def filename(self, mode: str, kid: bool = False) -> str:
        return f"{self.name}_{mode}_{self.split}_{self.resolution}{'_kid' if kid else ''}.npz".lower()

    def count(self) -> int | None:
        return PUBLISHED.get((self.name, self.resolution, self.split))


def is_published(reference: str) -> bool:
    return isinstance(reference, str) and reference.lower().startswith(PREFIX)


def known_names() -> str:
    return ", ".join(f"{PREFIX}{n}:{r}:{s}" for (n, r, s) in PUBLISHED)


def parse(reference: str) -> PublishedRef:
    """``cleanfid:NAME:RES:SPLIT`` -> :class:`PublishedRef` (unknown combinations are clear errors)."""
    parts = reference[len(PREFIX):].split(":")
    if len(parts) != 3 or not parts[1].isdigit():
        raise ConfigError(f"reference '{reference}': expected cleanfid:NAME:RESOLUTION:SPLIT, "
                          f"e.g. cleanfid:ffhq:256:trainval70k")
    ref = PublishedRef(parts[0].lower(), int(parts[1]), parts[2].lower())
    if ref.count() is None:
        raise ConfigError(f"reference '{reference}': clean-fid publishes no such statistics; known: {known_names()}")
    return ref


def _locations(filename: str) -> list[Path]:
    return [cache_dir() / "cleanfid-stats" / filename, Path(os.path.dirname(cleanfid.__file__)) / "stats" / filename]


def check(ref: PublishedRef, mode: str, *, kid: bool = False) -> None:
    """Refuse combinations clean-fid does not publish, before anything is fetched."""
    if (ref.name, ref.resolution, ref.split) in CLEAN_ONLY and mode != "clean":
        raise ConfigError(f"reference '{ref.spec}': clean-fid publishes it for --mode clean only")
    if kid and ref.name not in KID_PUBLISHED:
        raise ConfigError(f"reference '{ref.spec}': clean-fid publishes no KID features for {ref.name} (only "
                          f"{', '.join(sorted(KID_PUBLISHED))}); drop --kid or use the dataset itself")


def fetch(ref: PublishedRef, mode: str, *, kid: bool = False) -> Path:
    """Local path of the statistics file, downloading it into the cache when absent."""
    check(ref, mode, kid=kid)
    filename = ref.filename(mode, kid)
    for path in _locations(filename):
        if path.is_file() and path.stat().st_size > 0:
            return path
    target = _locations(filename)[0]
    url = BASE_URL + filename
    hint = f"download {url} and save it as {target}"
    if weights._offline():
        raise NatGanError(f"clean-fid statistics {filename} are not cached and NATGAN_OFFLINE is set: {hint}")
    try:
        weights.download(url, target)
    except (urllib.error.URLError, OSError, TimeoutError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise NatGanError(f"clean-fid statistics {filename} are not cached and the download failed "
                          f"({str(reason).splitlines()[0]}): {hint}") from None
    return target


def load(ref: PublishedRef, mode: str, *, kid: bool = False) -> tuple[Statistics, dict]:
    """The published statistics (and features for KID) plus an identity record for results."""
    check(ref, mode, kid=kid)
    path = fetch(ref, mode)
    check_zip(path)  # declared sizes bounded, CRCs verified before np.load
    try:
        with np.load(path, allow_pickle=False) as data:
            mu, sigma = data["mu"], data["sigma"]
    except (OSError, ValueError, KeyError, EOFError) as exc:
        raise NatGanError(f"{path}: not a readable clean-fid statistics file ({exc}); delete it and retry") from None
    feats = None
    if kid:
        kid_path = fetch(ref, mode, kid=True)
        check_zip(kid_path)
        try:
            with np.load(kid_path, allow_pickle=False) as data:
                feats = data["feats"]
        except (OSError, ValueError, KeyError, EOFError) as exc:
            raise NatGanError(f"{kid_path}: not a readable clean-fid KID file ({exc}); delete it and retry") from None
    count = ref.count()
    identity = {"kind": "cleanfid", "spec": ref.spec, "name": ref.name, "resolution": ref.resolution,
                "split": ref.split, "count": count, "file": str(path), "content_hash": "sha256:" + _sha256(path)}
    return Statistics(mu=mu, sigma=sigma, count=count or 0, feats=feats), identity


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()
