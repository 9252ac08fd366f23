"""Intra-FID: the FID of each class, generated images of that class against the real images of that class.

The conditional-GAN measure of Miyato & Koyama (2018, cGANs with projection discriminator), which the
plain FID misses: a generator that draws beautiful images of the wrong class scores well on FID but not
here. Class ``k`` gets ``per_class`` generated images (seeds ``seed .. seed + per_class - 1``, all with label
``k``) and every real image labelled ``k`` in the reference dataset; the result is the mean over classes and
each class's FID.

Each class's real statistics are cached as FID's reference statistics are
(:func:`natgan.metrics.reference.subset_statistics`: content hash, size, extractor mode, name and weights
digest, image count), the subset naming the class and a digest of its images' indices, because relabelling
a dataset keeps its images (and so its content hash) but changes the members of some classes. Classes under
:data:`~natgan.metrics.cache.MIN_CACHED_IMAGES` real images are recomputed, as small references are. When all
classes' entries together would not fit under the cache's cap, none is stored: the cap's least-recently-used
eviction would otherwise evict the first classes while storing the last ones, and every run would miss.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from natgan.errors import DataError
from natgan.metrics import cache as cache_policy
from natgan.metrics.cache import MAX_MB_ENV, max_cache_bytes, worth_caching
from natgan.metrics.pipeline import generator_features
from natgan.metrics.reference import subset_statistics
from natgan.metrics.stats import Statistics, frechet_distance, statistics
from natgan.sampling.classes import fixed_class
from natgan.sampling.generate import ImageGenerator


def class_subset(k: int, name: str, members: np.ndarray) -> str:
    """The ``subset`` of class ``k``'s cache key: the class and a digest of its images' indices, so relabelling
    misses exactly the classes whose members changed (readable in ``nat-gan cache list``)."""
    digest = hashlib.sha256(np.ascontiguousarray(members, dtype="<i8").tobytes()).hexdigest()[:16]
    return f"class {k} ({name}), images {digest}"


def _entry_bytes(stats: Statistics) -> int:
    return stats.mu.nbytes + (stats.sigma.nbytes if stats.sigma is not None else 0)


def intra_fid(G: Any, source: Any, extractor: Any, *, per_class: int, seed: int = 0, batch_size: int = 64,
              psi: float = 1.0, w_avg: Any = None, class_names: list[str] | None = None, use_cache: bool = True,
              workers: int | None = None) -> dict:
    """``{"intra_fid": mean, "per_class": {name: fid}, "real_per_class": {name: count}, "reference_cache": {...}}``
    for a conditional ``G`` against a labelled image ``source`` (:func:`natgan.data.open_dataset` at ``G``'s
    resolution). ``reference_cache`` says how many classes' real statistics came from the cache, how many
    were stored (and their size), and why the others were not.

    ``psi != 1`` truncates toward ``w_avg`` when given (the checkpoint's stored centre, the one the plain FID images
    use), else toward each class's own mean w (:func:`natgan.sampling.truncation_centre`)."""
    labels = np.asarray(source.labels)
    names = class_names or [str(i) for i in range(G.num_classes)]
    members = []
    for k, name in enumerate(names):
        idx = np.flatnonzero(labels == k)
        if len(idx) < 2:
            raise DataError(f"{source.path}: class {name!r} has {len(idx)} real image(s); intra-FID needs at least "
                            f"2 per class")
        members.append(idx)
    storable = sum(worth_caching(len(idx)) for idx in members)
    cap = max_cache_bytes()
    too_big: list[str] = []

    def fits(stats: Statistics) -> bool:
        """Store only when every storable class's entry fits under the cap together (see the module doc)."""
        total = storable * _entry_bytes(stats)
        if total > cap:
            if not too_big:
                too_big.append(f"not stored: {storable} classes x {_entry_bytes(stats) / 2**20:,.1f} MB would exceed "
                               f"the cache's cap of {cap / 2**20:,.0f} MB (${MAX_MB_ENV})")
            return False
        return True

    caching = use_cache and bool(getattr(extractor, "name", None))
    seeds = range(seed, seed + per_class)
    per, counts = {}, {}
    report = {"classes": len(names), "cached": 0, "stored": 0, "stored_mb": 0.0, "recomputed_small": 0,
              "notes": []}
    for k, (name, idx) in enumerate(zip(names, members)):
        real = subset_statistics(source, idx, class_subset(k, name, idx), extractor, batch_size=batch_size,
                                 workers=workers, use_cache=use_cache, store=fits, label=f"class {name}")
        if real.cached:
            report["cached"] += 1
        elif real.stats_file is not None:
            report["stored"] += 1
            report["stored_mb"] += real.stats_file.stat().st_size / 2**20
        elif caching and not worth_caching(len(idx)):
            report["recomputed_small"] += 1
        gen = ImageGenerator(G, batch_size=batch_size, psi=psi, w_avg=w_avg, labels=fixed_class(k))
        fake = statistics(generator_features(gen, seeds, extractor, overlap=False))
        per[name] = frechet_distance(fake, real.stats)
        counts[name] = int(len(idx))
    report["stored_mb"] = round(report["stored_mb"], 1)
    if not caching:
        report["notes"].append("cache not used (--no-cache)" if not use_cache else
                               "cache not used: the feature extractor has no name")
    if report["recomputed_small"]:
        report["notes"].append(f"{report['recomputed_small']} of {len(names)} classes have fewer than "
                               f"{cache_policy.MIN_CACHED_IMAGES:,} real images: recomputed each run, as small "
                               f"references are")
    report["notes"] += too_big
    return {"intra_fid": float(np.mean(list(per.values()))), "per_class": per, "real_per_class": counts,
            "reference_cache": report}
