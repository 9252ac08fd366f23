"""Evaluation metrics with stated protocols: FID, KID, precision/recall, density/coverage, IS.

* :mod:`natgan.metrics.registry` — one entry per metric (its features, what it needs, its function);
  :func:`evaluate_generator` / :func:`evaluate_datasets` compute any selection of them, embedding every
  image once per feature extractor;
* :func:`fid_for_generator` / :func:`fid_for_datasets` — the FID (and KID) shortcuts;
* :class:`FeatureExtractor` / :func:`build_inception` / :func:`natgan.metrics.vgg.build_vgg16` — networks,
  offline-capable through :mod:`natgan.metrics.weights`;
* reference statistics cached under :func:`cache_dir` (``$NATGAN_CACHE_DIR``, ``$XDG_CACHE_HOME/nat-gan``,
  ``~/.cache/nat-gan``).

Names are imported lazily, so ``natgan.metrics.registry`` (used to validate recipes) stays cheap to import.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "StatsCache": "cache", "StatsKey": "cache", "cache_dir": "cache",
    "PROTOCOLS": "extractors", "FeatureExtractor": "extractors", "build_inception": "extractors",
    "record_in_checkpoint": "record",
    "evaluate_datasets": "runner", "evaluate_generator": "runner", "fid_for_datasets": "runner",
    "fid_for_generator": "runner",
    "Statistics": "stats", "frechet_distance": "stats", "kernel_inception_distance": "stats", "statistics": "stats",
    "MODES": "weights", "resolve_weights": "weights",
    "METRICS": "registry", "parse_metrics": "registry",
}

__all__ = list(sorted(_EXPORTS))


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f"natgan.metrics.{_EXPORTS[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'natgan.metrics' has no attribute {name!r}")
