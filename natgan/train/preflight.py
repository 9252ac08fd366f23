"""Checks a training run passes before anything is created on disk.

Why: a run with a missing or wrong dataset used to create its run directory (lock, log, recipe, run id,
TensorBoard folder) and build the model before failing, and ``--dry-run`` said nothing about the data at
all. The trainer opens its data through the same :func:`natgan.data.open_dataset`, so what passes here is
what training reads.
"""

from __future__ import annotations

import os
from pathlib import Path

from natgan.data.labels import check_labels
from natgan.errors import DataError
from natgan.recipe import Recipe


def check_training_data(recipe: Recipe) -> dict:
    """Open ``data.path`` at the model's resolution as the trainer will and check it holds at least one
    micro-batch. Returns ``{"path", "images", "resolution", "description"}``; DataError (one line naming the
    path) for no data, a missing/unreadable/incomplete dataset, a missing size or too few images."""
    from natgan.data import open_dataset
    from natgan.train.trainer import BatchPlan

    path = recipe.data.path
    if not path:
        raise DataError("no training data: give --data PATH or set data.path in the recipe")
    resolution = recipe.model.resolution
    try:
        source = open_dataset(path, resolution)
    except DataError as exc:
        if Path(path).expanduser().is_absolute():
            raise
        raise DataError(f"{exc} (data.path '{path}' comes from {recipe.source}; a relative path resolves against "
                        f"the current directory {os.getcwd()}: run from where the recipe expects, or pass --data "
                        f"PATH)") from None
    try:
        count, description, classes = len(source), source.description, source.class_names
    finally:
        source.close()
    check_labels(getattr(recipe.model, "num_classes", 0), classes, path)
    if count == 0:
        raise DataError(f"{path}: dataset is empty")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    plan = BatchPlan.make(recipe.train.batch, world, recipe.train.batch_per_gpu)
    if count < plan.micro:
        raise DataError(f"{path}: {count} images, fewer than one micro-batch ({plan.micro})")
    return {"path": str(path), "images": count, "resolution": resolution, "description": description,
            **({"classes": classes} if classes else {})}
