"""FID and KID with stated protocols, through clean-fid's own resizers, networks and distances.

* :func:`fid_for_generator` — a generator vs a dataset or published statistics (the trainer's periodic FID);
* :func:`fid_for_datasets` — folder/zip/LMDB vs folder/zip/LMDB (or published statistics);
* :class:`FeatureExtractor` / :func:`build_inception` — the mode's resize + network, offline-capable;
* reference statistics cached under :func:`cache_dir` (``$NATGAN_CACHE_DIR``, ``$XDG_CACHE_HOME/nat-gan``,
  ``~/.cache/nat-gan``).
"""

from natgan.metrics.cache import StatsCache, StatsKey, cache_dir
from natgan.metrics.extractors import PROTOCOLS, FeatureExtractor, build_inception
from natgan.metrics.record import record_in_checkpoint
from natgan.metrics.runner import fid_for_datasets, fid_for_generator
from natgan.metrics.stats import Statistics, frechet_distance, kernel_inception_distance, statistics
from natgan.metrics.weights import MODES, resolve_weights

__all__ = [
    "MODES", "PROTOCOLS", "FeatureExtractor", "Statistics", "StatsCache", "StatsKey", "build_inception",
    "cache_dir", "fid_for_datasets", "fid_for_generator", "frechet_distance", "kernel_inception_distance",
    "record_in_checkpoint", "resolve_weights", "statistics",
]
