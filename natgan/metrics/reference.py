"""Reference statistics of a dataset (cached) or of a clean-fid published set, with their identity.

A reference is a dataset path (nat-gan/official LMDB, image folder, zip; opened through
:func:`natgan.data.open_dataset`) or a published name (``cleanfid:ffhq:256:trainval70k``). Dataset
statistics are cached under the user cache, keyed by content hash, size, mode, extractor and count;
changing the data changes the content hash and so misses the cache. :func:`subset_statistics` is that policy
for any set of a source's images (intra-FID's per-class references use it too).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from natgan.data.progress import ProgressBar
from natgan.errors import DataError
from natgan.metrics import published
from natgan.metrics.cache import StatsCache, StatsKey, worth_caching
from natgan.metrics.pipeline import dataset_features
from natgan.metrics.stats import Statistics, statistics

SUBSET_SEED = 0


@dataclass
class Reference:
    stats: Statistics
    identity: dict
    cached: bool
    seconds: float


def default_workers() -> int:
    """Decoder processes for dataset images: none on tiny machines, up to 8 elsewhere (then capped by
    :func:`natgan.devices.loader_workers` beside the compute threads)."""
    from natgan.devices import usable_cores

    cpus = usable_cores()
    return 0 if cpus <= 2 else min(8, cpus // 2)


def open_source(path: str | Path, resolution: int | None):
    from natgan.data import open_dataset

    if not Path(path).expanduser().exists():
        raise DataError(f"{path}: dataset not found")
    return open_dataset(path, resolution=resolution)


def matched_resolutions(a: str | Path, b: str | Path) -> tuple[int, int | None]:
    """The size each side of a dataset-vs-dataset FID is read at: its own (native) size, so the score does
    not depend on argument order, except that an LMDB storing the other side's size serves that size (the
    same images, without resampling). ``b`` may be a published name (None: not a dataset)."""
    def sizes(src) -> list[int]:
        return list(getattr(src, "sizes", [src.resolution]))

    src_a = open_source(a, None)
    try:
        native_a, stored_a = int(src_a.resolution), sizes(src_a)
    finally:
        src_a.close()
    if not Path(b).expanduser().exists():
        return native_a, native_a
    src_b = open_source(b, None)
    try:
        native_b, stored_b = int(src_b.resolution), sizes(src_b)
    finally:
        src_b.close()
    if native_a != native_b:
        if native_a in stored_b:
            return native_a, native_a
        if native_b in stored_a:
            return native_b, native_b
    return native_a, native_b


def subset_indices(length: int, count: int | None, seed: int = SUBSET_SEED) -> tuple[np.ndarray, str]:
    """All images, or a fixed random subset of ``count`` (sorted, so reads stay sequential)."""
    if count is None or count == length:
        return np.arange(length), "all"
    if count > length:
        raise DataError(f"asked for {count:,} reference images but the dataset has {length:,}")
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(length, size=count, replace=False)), f"random-{seed}"


@dataclass
class SubsetStatistics:
    stats: Statistics
    cached: bool              # read from the cache
    stats_file: Path | None   # the cache entry read or written (None: not cached)


def subset_statistics(src, indices: np.ndarray, subset: str, extractor, *, kid: bool = False,
                      covariance: bool = True, batch_size: int = 64, workers: int | None = None,
                      use_cache: bool = True, store: bool | Callable[[Statistics], bool] = True,
                      progress: bool = False, label: str = "reference") -> SubsetStatistics:
    """Statistics of the images ``indices`` of an open source, from the cache when an entry has the same key.

    The one cache policy of every reference (whole datasets, fixed random subsets, intra-FID's classes): the
    key is the source's content hash and size, the extractor's mode, name and weights digest, the image count and
    ``subset`` (which images: ``"all"``, ``"random-<seed>"``, a class of a labelling); an extractor without a
    name is never cached. Computed statistics are stored when ``store`` (a bool, or a function of the statistics
    that decides, e.g. on their size) and the set has at least :data:`~natgan.metrics.cache.MIN_CACHED_IMAGES`
    images."""
    name = getattr(extractor, "name", None)
    key = StatsKey(content_hash=src.content_hash, resolution=int(src.resolution), mode=extractor.mode,
                   extractor=name or "", count=len(indices), subset=subset,
                   weights=getattr(extractor, "weights_id", ""))
    cache = StatsCache() if (use_cache and name) else None
    hit = cache.load(key, need_feats=kid, need_sigma=covariance) if cache else None
    if hit is not None:
        stats = Statistics(mu=hit.mu, sigma=hit.sigma, count=len(indices), feats=hit.feats)
        return SubsetStatistics(stats, cached=True, stats_file=hit.path)
    with ProgressBar(len(indices), f"{label} features", enabled=progress) as bar:
        feats = dataset_features(src, indices, extractor, batch_size=batch_size,
                                 workers=default_workers() if workers is None else workers, advance=bar.advance)
    stats = statistics(feats, keep_feats=kid, side=f"{label} {src.path}", covariance=covariance)
    saved = None
    if cache and worth_caching(len(indices)) and (store(stats) if callable(store) else store):
        saved = cache.save(key, stats.mu, stats.sigma, feats if kid else None)
    return SubsetStatistics(stats, cached=False, stats_file=saved)


def dataset_reference(path: str | Path, extractor, *, resolution: int | None = None, num: int | None = None,
                      kid: bool = False, batch_size: int = 64, workers: int | None = None, use_cache: bool = True,
                      progress: bool = True, label: str = "reference", covariance: bool = True,
                      store: bool = True) -> Reference:
    """Statistics of ``num`` images (default: all) of the dataset at ``path``, from the cache when possible.

    ``covariance=False``: no metric needs it (the entry then holds mean and features only). ``store=False``:
    read the cache but write nothing (the compared side of a dataset-vs-dataset run, which is not reused);
    sets under :data:`~natgan.metrics.cache.MIN_CACHED_IMAGES` are never stored either."""
    start = time.perf_counter()
    src = open_source(path, resolution)
    try:
        indices, subset = subset_indices(len(src), num)
        identity = {"kind": "dataset", "path": str(path), "description": src.description,
                    "content_hash": src.content_hash, "resolution": int(src.resolution), "length": len(src),
                    "count": len(indices), "subset": subset}
        if getattr(src, "mixed_sizes", None):
            identity["mixed_sizes"] = list(src.mixed_sizes)
        found = subset_statistics(src, indices, subset, extractor, kid=kid, covariance=covariance,
                                  batch_size=batch_size, workers=workers, use_cache=use_cache, store=store,
                                  progress=progress, label=label)
        if found.stats_file is not None:
            identity["stats_file"] = str(found.stats_file)
        return Reference(found.stats, identity, cached=found.cached, seconds=time.perf_counter() - start)
    finally:
        src.close()


def published_reference(reference: str, mode: str, *, kid: bool = False) -> Reference:
    start = time.perf_counter()
    stats, identity = published.load(published.parse(reference), mode, kid=kid)
    return Reference(stats, identity, cached=True, seconds=time.perf_counter() - start)


def load_reference(reference: str | Path, extractor, *, resolution: int | None = None, num: int | None = None,
                   kid: bool = False, batch_size: int = 64, workers: int | None = None, use_cache: bool = True,
                   progress: bool = True, covariance: bool = True) -> Reference:
    """Dispatch on the reference kind (published name or dataset path)."""
    if published.is_published(str(reference)):
        if num is not None:
            raise DataError(f"reference '{reference}': published statistics have a fixed image count; drop --num-ref")
        return published_reference(str(reference), extractor.mode, kid=kid)
    return dataset_reference(reference, extractor, resolution=resolution, num=num, kid=kid, batch_size=batch_size,
                             workers=workers, use_cache=use_cache, progress=progress, covariance=covariance)
