"""Images from stored latents and edit strips along a direction (``nat-gan sample --w / --direction``)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from natgan.errors import ConfigError, NatGanError
from natgan.latent.sefa import Direction, edit_latents
from natgan.latent.space import w_row_dim
from natgan.latent.store import StoredLatents
from natgan.models.contract import using_noise
from natgan.sampling.generate import ImageGenerator, eval_mode, truncate
from natgan.sampling.seeds import latents_for_seeds


def parse_strengths(text: str, steps: int, *, option: str = "--strength") -> list[float]:
    """``"-5,5"`` and ``steps`` 7 -> seven evenly spaced strengths from -5 to 5."""
    parts = [p.strip() for p in text.split(",")]
    try:
        lo, hi = (float(p) for p in parts)
    except ValueError:
        raise ConfigError(f"{option} '{text}': expected two numbers MIN,MAX, e.g. -5,5") from None
    if steps < 2:
        raise ConfigError(f"--steps {steps}: an edit strip needs at least 2 steps")
    return torch.linspace(lo, hi, steps).tolist()


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
    with eval_mode(G, noise_mode):
        gen = ImageGenerator(G, batch_size=batch_size)
        return gen.images_from_w(edit_latents(w, direction, strengths)).cpu()
