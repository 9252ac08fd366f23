"""Reproducible sampling: seed lists, per-seed CPU latents, truncation in w space, 8-bit export.

``nat-gan sample`` is a thin layer over this package, and ``natgan.metrics`` generates FID images
through the same :class:`ImageGenerator`, so an FID image is bit-identical to the sample PNG of its seed.
"""

from natgan.devices import resolve_device
from natgan.sampling.device import auto_batch_size
from natgan.sampling.export import FORMATS, SampleWriter, grid_image, parse_grid, save_gif, seed_name
from natgan.sampling.generate import (ImageGenerator, compute_w_avg, eval_mode, model_device, truncate,
                                      truncation_centre)
from natgan.sampling.classes import (cycling_classes, dataset_labels, fixed_class, num_classes_of,
                                     parse_class)
from natgan.sampling.run import (LoadedGenerator, class_grid, load_generator, seed_grid, write_class_grid,
                                 write_grid, write_samples)
from natgan.sampling.seeds import format_seeds, latent_for_seed, latents_for_seeds, parse_seeds

__all__ = [
    "FORMATS", "ImageGenerator", "LoadedGenerator", "SampleWriter", "auto_batch_size", "class_grid",
    "compute_w_avg", "cycling_classes", "dataset_labels", "eval_mode", "fixed_class", "format_seeds", "grid_image",
    "latent_for_seed", "latents_for_seeds", "load_generator", "model_device", "num_classes_of", "parse_class",
    "parse_grid", "parse_seeds", "resolve_device", "save_gif", "seed_grid", "seed_name", "truncate",
    "truncation_centre",
    "write_class_grid", "write_grid", "write_samples",
]
