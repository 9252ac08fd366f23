"""``TrainingDataset``: the torch Dataset the trainer feeds from (decode, optional flip, normalise).

The dataset is validated once in the constructor (size present, build complete) and its file handles
are closed again before any DataLoader worker forks; each worker then opens its own LMDB/zip handle
on first access (handles are keyed by process id), which is the fork-safe pattern LMDB requires.
Normalisation follows the model (``G.normalization``): ImageNet mean/std for StyleNAT/StyleSwin,
[-1, 1] ("symmetric") for the others, via :mod:`natgan.models.normalization`.
"""

from __future__ import annotations

import os

import torch
from torch.utils.data import Dataset

from natgan.data.reader import ImageSource, open_dataset
from natgan.errors import ConfigError, DataError
from natgan.models.normalization import from_unit


def _affine(normalization: str) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 -> model space as one multiply-add: ``x * scale + shift`` == ``from_unit(x / 255)``."""
    try:
        shift = from_unit(torch.zeros(1, 3, 1, 1, dtype=torch.float64), normalization)
        one = from_unit(torch.ones(1, 3, 1, 1, dtype=torch.float64), normalization)
    except ValueError as exc:
        raise ConfigError(f"normalization {normalization!r}: expected 'imagenet' or 'symmetric'") from exc
    scale = (one - shift) / 255.0
    return scale.view(3, 1, 1).float(), shift.view(3, 1, 1).float()


class TrainingDataset(Dataset):
    """``dataset[i]`` -> float32 ``[3, R, R]`` in the model's space.

    No augmentation here: the trainer flips batches with :func:`natgan.augment.bcr.flip` on its own
    generator, which a checkpoint saves, so ``--resume`` stays bit-exact whatever the worker count.
    """

    def __init__(self, path: str | os.PathLike, resolution: int, normalization: str = "imagenet",
                 with_labels: bool = False):
        self.scale, self.shift = _affine(normalization)
        self.path, self.normalization = str(path), normalization
        self.source: ImageSource = open_dataset(path, resolution)
        self.source.close()  # validated; workers open their own handles lazily after fork
        if len(self.source) == 0:
            raise DataError(f"{path}: dataset is empty")
        self.resolution = self.source.resolution
        self.content_hash = self.source.content_hash
        self.description = self.source.description
        self.labels, self.class_names = self.source.labels, self.source.class_names
        if with_labels and self.labels is None:
            raise DataError(f"{path}: has no class labels, but the model is class-conditional (build the dataset "
                            f"with labels: `nat-gan prepare folder SRC --labels folders|FILE.json|FILE.csv`, or "
                            f"train with model.num_classes = 0)")
        self.with_labels = with_labels

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> torch.Tensor | tuple[torch.Tensor, int]:
        """The image (and, ``with_labels``, its class index)."""
        image = torch.from_numpy(self.source[index]).permute(2, 0, 1)  # HWC uint8 -> CHW view
        out = image.to(torch.float32, memory_format=torch.contiguous_format)
        out = out.mul_(self.scale).add_(self.shift)
        return (out, int(self.labels[index])) if self.with_labels else out

    def __repr__(self) -> str:
        return f"TrainingDataset({self.description}, normalization={self.normalization!r})"
