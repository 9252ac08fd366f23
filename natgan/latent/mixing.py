"""Style mixing figures (Karras et al. 2019, Fig. 3; stylegan2-ada-pytorch's ``style_mixing.py``).

Cell (row r, column c) is the image of row seed r's w with the chosen layers' rows replaced by column
seed c's w. The figure has the column seeds' own images along the top, the row seeds' down the left,
and an empty (black) corner. Only models with several latents (``G.n_latent``) can mix styles.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import nn

from natgan.errors import ConfigError
from natgan.latent.space import n_rows
from natgan.sampling.export import to_hwc
from natgan.sampling.generate import ImageGenerator, eval_mode, truncate
from natgan.sampling.seeds import latents_for_seeds


def mix(w_rows: torch.Tensor, w_cols: torch.Tensor, layers: Sequence[int]) -> torch.Tensor:
    """``[R*C, n_latent, w_dim]``: row-major cells, each ``w_rows[r]`` with ``layers`` taken from ``w_cols[c]``."""
    r, c = len(w_rows), len(w_cols)
    cells = w_rows.unsqueeze(1).repeat(1, c, 1, 1)                       # [R, C, n, d]
    index = torch.as_tensor(list(layers), dtype=torch.long, device=w_rows.device)
    cells[:, :, index] = w_cols[:, index].unsqueeze(0).expand(r, -1, -1, -1)
    return cells.reshape(r * c, *w_rows.shape[1:])


def style_mixing_images(G: nn.Module, row_seeds: Sequence[int], col_seeds: Sequence[int], layers: Sequence[int], *,
                        psi: float = 1.0, w_avg: torch.Tensor | None = None, batch_size: int = 8,
                        noise_mode: str | None = "const") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """uint8 ``(row images [R], column images [C], mixed cells [R*C] row-major)``."""
    if not n_rows(G):
        raise ConfigError("style mixing needs a model with one latent per layer (n_latent); this model has "
                          "a single latent for the whole network")
    if not layers:
        raise ConfigError("--layers: choose at least one layer to take from the --with seeds")
    with eval_mode(G, noise_mode):
        gen = ImageGenerator(G, batch_size=batch_size, psi=psi, w_avg=w_avg)
        with torch.inference_mode():
            w = G.mapping(latents_for_seeds([*row_seeds, *col_seeds], G.z_dim).to(gen.device))
            if psi != 1.0:
                w = truncate(w, psi, gen.w_avg)
        w_rows, w_cols = w[:len(row_seeds)], w[len(row_seeds):]
        cells = mix(w_rows, w_cols, layers)
        return (gen.images_from_w(w_rows).cpu(), gen.images_from_w(w_cols).cpu(),
                gen.images_from_w(cells).cpu())


def style_mixing_figure(row_images: torch.Tensor, col_images: torch.Tensor, cells: torch.Tensor) -> np.ndarray:
    """HWC uint8 figure of ``(R + 1) x (C + 1)`` tiles: black corner, column images on top, row images left."""
    rows, cols = to_hwc(row_images), to_hwc(col_images)
    body = to_hwc(cells)
    _, h, w, _ = rows.shape
    figure = np.zeros(((len(rows) + 1) * h, (len(cols) + 1) * w, 3), dtype=np.uint8)
    for c, img in enumerate(cols):
        figure[:h, (c + 1) * w:(c + 2) * w] = img
    for r, img in enumerate(rows):
        figure[(r + 1) * h:(r + 2) * h, :w] = img
        for c in range(len(cols)):
            figure[(r + 1) * h:(r + 2) * h, (c + 1) * w:(c + 2) * w] = body[r * len(cols) + c]
    return figure
