"""Datasets: ``nat-gan prepare`` (LMDB building and checking) and the readers training/metrics use.

Public API (stable names other modules code against):

* :func:`open_dataset` (path, resolution=None) -> :class:`ImageSource` — read-only, any layout
* :class:`TrainingDataset` (path, resolution, normalization, flip) — torch Dataset for the trainer
* :func:`prepare_dataset`, :func:`prepare_digits`, :func:`check_dataset` — what the CLI commands call
* :data:`GUIDES` — where FFHQ / LSUN Church come from and the layout ``prepare`` expects

Names are imported lazily so ``nat-gan prepare`` never pays for importing torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "open_dataset": "natgan.data.reader",
    "ImageSource": "natgan.data.reader",
    "LmdbImageSource": "natgan.data.reader",
    "FileImageSource": "natgan.data.reader",
    "TrainingDataset": "natgan.data.training",
    "prepare_dataset": "natgan.data.prepare",
    "parse_sizes": "natgan.data.prepare",
    "prepare_digits": "natgan.data.digits",
    "check_dataset": "natgan.data.check",
    "GUIDES": "natgan.data.catalog",
}

__all__ = sorted(_EXPORTS)  # noqa: PLE0605 (a list, built from the lazy-export table)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'natgan.data' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
