"""Intra-FID: the FID of each class, generated images of that class against the real images of that class.

The conditional-GAN measure of Miyato & Koyama (2018, cGANs with projection discriminator), which the
plain FID misses: a generator that draws beautiful images of the wrong class scores well on FID but not
here. Class ``k`` gets ``per_class`` generated images (seeds ``seed .. seed + per_class - 1``, all with label
``k``) and every real image labelled ``k`` in the reference dataset; the result is the mean over classes and
each class's FID. Real features are computed here (no cache: a class is a subset of the cached dataset).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from natgan.errors import DataError
from natgan.metrics.pipeline import dataset_features, generator_features
from natgan.metrics.stats import frechet_distance, statistics
from natgan.sampling.classes import fixed_class
from natgan.sampling.generate import ImageGenerator


def intra_fid(G: Any, source: Any, extractor: Any, *, per_class: int, seed: int = 0, batch_size: int = 64,
              psi: float = 1.0, w_avg: Any = None, class_names: list[str] | None = None) -> dict:
    """``{"intra_fid": mean, "per_class": {name: fid}, "real_per_class": {name: count}}`` for a conditional ``G``
    against a labelled image ``source`` (:func:`natgan.data.open_dataset` at ``G``'s resolution).

    ``psi != 1`` truncates toward ``w_avg`` when given (the checkpoint's stored centre, the one the plain FID images
    use), else toward each class's own mean w (:func:`natgan.sampling.truncation_centre`)."""
    labels = np.asarray(source.labels)
    names = class_names or [str(i) for i in range(G.num_classes)]
    seeds = range(seed, seed + per_class)
    per, counts = {}, {}
    for k, name in enumerate(names):
        idx = np.flatnonzero(labels == k)
        if len(idx) < 2:
            raise DataError(f"{source.path}: class {name!r} has {len(idx)} real image(s); intra-FID needs at least "
                            f"2 per class")
        real = statistics(dataset_features(source, idx.tolist(), extractor, batch_size=batch_size))
        gen = ImageGenerator(G, batch_size=batch_size, psi=psi, w_avg=w_avg, labels=fixed_class(k))
        fake = statistics(generator_features(gen, seeds, extractor, overlap=False))
        per[name] = frechet_distance(fake, real)
        counts[name] = int(len(idx))
    return {"intra_fid": float(np.mean(list(per.values()))), "per_class": per, "real_per_class": counts}
