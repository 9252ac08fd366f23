"""Images from stored latents and edit strips along a direction (``nat-gan sample --w / --direction``)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from natgan.errors import ConfigError, NatGanError
from natgan.latent.sefa import Direction, edit_latents
from natgan.latent.space import n_rows, w_row_dim
from natgan.models.contract import has_mapping_network
from natgan.latent.store import StoredLatents
from natgan.models.contract import using_noise
from natgan.sampling.generate import ImageGenerator, eval_mode, truncate
from natgan.sampling.seeds import latents_for_seeds


def parse_strengths(text: str, steps: int, *, option: str = "--strength") -> list[float]:
    """``"-5,5"`` and ``steps`` 7 -> seven evenly spaced strengths from -5 to 5."""
    from natgan.sampling.export import MAX_GRID_CELLS
    from natgan.validators import parse_number

    parts = [p.strip() for p in text.split(",")]
    if len(parts) != 2:
        raise ConfigError(f"{option} '{text}': expected two numbers MIN,MAX, e.g. -5,5")
    lo, hi = (parse_number(p, option, lo=-MAX_STRENGTH, hi=MAX_STRENGTH) for p in parts)
    if not 2 <= steps <= MAX_GRID_CELLS:
        raise ConfigError(f"--steps {steps}: an edit strip needs at least 2 steps and at most {MAX_GRID_CELLS}")
    return torch.linspace(lo, hi, steps).tolist()


MAX_STRENGTH = 1000.0  # directions are unit vectors and w rows have norms of ~10-100: beyond this is noise


def images_from_stored(G: nn.Module, stored: StoredLatents, *, path: str | Path = "<latents>", batch_size: int = 8,
                       noise_mode: str | None = "const") -> torch.Tensor:
    """uint8 images of stored latents; optimised noise maps in the file are used one latent at a time (they
    are the const-mode noise, so ``noise_mode`` "none" or "random" sets them aside)."""
    with eval_mode(G, noise_mode):
        gen = ImageGenerator(G, batch_size=batch_size)
        with torch.inference_mode():
            w = stored.to(gen.device).synthesis_input(G, path)
        if not stored.noise:
            return gen.images_from_w(w).cpu()
        out = []
        for i in range(len(w)):
            with using_noise(G, {k: v[i:i + 1] for k, v in stored.noise.items()}):
                out.append(gen.images_from_w(w[i:i + 1]).cpu())
        return torch.cat(out)


def base_latents(G: nn.Module, seeds: Sequence[int], *, psi: float = 1.0,
                 w_avg: torch.Tensor | None = None) -> torch.Tensor:
    """w of seeds (truncated when psi != 1), on the model's device."""
    device = next(iter(G.parameters())).device
    with torch.inference_mode():
        w = G.mapping(latents_for_seeds(seeds, G.z_dim).to(device))
        return truncate(w, psi, w_avg) if psi != 1.0 else w


def direction_strip(G: nn.Module, w: torch.Tensor, direction: Direction, strengths: Sequence[float], *,
                    batch_size: int = 8, noise_mode: str | None = "const", spec: str = "--direction") -> torch.Tensor:
    """uint8 ``[len(w) * len(strengths), 3, R, R]``: each latent (a row) moved by each strength (columns)."""
    if direction.vector.numel() != w_row_dim(G):
        raise NatGanError(f"{spec}: direction of width {direction.vector.numel()} does not fit this model "
                          f"(w rows have {w_row_dim(G)} values)")
    space = "w" if has_mapping_network(G) else "z"
    if direction.space != space:
        raise NatGanError(f"{spec}: a direction in {direction.space} space; this model's edits are in {space} "
                          f"space (the file was written for another model)")
    rows = n_rows(G) or 1
    outside = [i for i in direction.layers if i >= rows]
    if outside or not direction.layers:
        raise NatGanError(f"{spec}: the file's layers {direction.layers} do not fit this model "
                          f"(w rows 0-{rows - 1})")
    with eval_mode(G, noise_mode):
        gen = ImageGenerator(G, batch_size=batch_size)
        return gen.images_from_w(edit_latents(w, direction, strengths)).cpu()
