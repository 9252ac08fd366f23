"""Training preview grids, drawn from seeds so ``nat-gan sample`` reproduces them.

The grid shows the EMA generator on the per-seed latents of :mod:`natgan.sampling.seeds` (the same
latents ``nat-gan sample --seeds 0-15 --grid 4x4`` uses on a checkpoint of the run). The generator keeps
its own noise mode, so a preview consumes exactly the random numbers it always did and never changes
the course of training; models without noise inputs give the sampled images bit for bit.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from torch import nn

from natgan.sampling import cycling_classes, format_seeds, num_classes_of, seed_grid
from natgan.sampling.export import save_png

PREVIEW_SEEDS = tuple(range(16))
PREVIEW_COLS = PREVIEW_ROWS = 4


def preview_note() -> str:
    """The line the trainer logs so the seeds behind every preview are on record."""
    seeds = format_seeds(PREVIEW_SEEDS)
    return (f"preview grids: seeds {seeds} of the EMA generator "
            f"(reproduce: nat-gan sample --seeds {seeds} --grid {PREVIEW_COLS}x{PREVIEW_ROWS})")


def save_preview(G_ema: nn.Module, path: Path) -> np.ndarray:
    """Write the preview PNG to ``path`` (atomically) and return the HxWx3 grid for TensorBoard.

    A class-conditional generator draws seed ``s`` as class ``s mod num_classes`` (``sample --class``
    reproduces each image)."""
    k = num_classes_of(G_ema)
    grid = seed_grid(G_ema, PREVIEW_SEEDS, PREVIEW_COLS, PREVIEW_ROWS, noise_mode=None,
                     labels=cycling_classes(k) if k else None)
    save_png(path, grid)
    return grid
