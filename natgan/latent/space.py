"""Which latent a generator is steered by, and moving between one w row and the full ``w``.

Everything uses only the generator contract. ``G.mapping(z)`` gives ``[B, n_latent, w_dim]`` when
``n_latent`` is set (every row the same w) or ``[B, w_dim]`` otherwise. A model whose mapping returns
``z`` itself (HiT) has no mapping network: its editing space is z, and tools say so.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from natgan.errors import ConfigError
from natgan.models.contract import has_mapping_network

STATS_SEED = 0x5EED  # the same fixed latents as the truncation centre


def space_name(G: nn.Module) -> str:
    """``"w"`` for models with a mapping network, ``"z"`` for those without."""
    return "w" if has_mapping_network(G) else "z"


def n_rows(G: nn.Module) -> int | None:
    n = getattr(G, "n_latent", None)
    return int(n) if n else None


def w_row_dim(G: nn.Module) -> int:
    """Width of one w row (``G.w_dim`` where defined, else ``z_dim``, which the mapping keeps)."""
    return int(getattr(G, "w_dim", G.z_dim))


def rows(w: torch.Tensor) -> torch.Tensor:
    """One representative row ``[B, w_dim]`` of a (broadcast) ``w``."""
    return w[:, 0] if w.ndim == 3 else w


def broadcast(w_row: torch.Tensor, G: nn.Module) -> torch.Tensor:
    """``[B, w_dim]`` -> what ``G.synthesis`` takes (``[B, n_latent, w_dim]`` for multi-latent models)."""
    n = n_rows(G)
    return w_row.unsqueeze(1).expand(-1, n, -1) if n else w_row


@torch.no_grad()
def w_statistics(G: nn.Module, *, num: int = 10_000, seed: int = STATS_SEED, batch: int = 1024,
                 ) -> tuple[torch.Tensor, float]:
    """``(w_avg [1, w_dim], w_std)`` of one w row over ``num`` fixed-seed latents (the projector's start
    point and noise scale: ``w_std = sqrt(E||w - w_avg||^2)``, as stylegan2-ada-pytorch's projector)."""
    from natgan.errors import ConfigError
    from natgan.limits import check_fits

    # all latents are drawn at once (the statistics do not depend on the batch): z, then w rows in float64
    check_fits(num * (G.z_dim * 4 + w_row_dim(G) * 8 * 2), f"{num:,} latents for the w statistics "
               f"(--w-avg-samples)", error=ConfigError)
    device = next(iter(G.parameters())).device
    z = torch.randn(num, G.z_dim, generator=torch.Generator().manual_seed(seed))
    ws = torch.cat([rows(G.mapping(chunk.to(device))).double() for chunk in z.split(batch)])
    avg = ws.mean(dim=0, keepdim=True)
    std = float((ws - avg).square().sum(dim=1).mean().sqrt())
    return avg.float(), std


def parse_layers(text: str, G: nn.Module, *, option: str = "--layers") -> list[int]:
    """``"0-6"`` / ``"0,2,4-6"`` -> w row indices, checked against ``G.n_latent``."""
    from natgan.sampling.seeds import parse_seeds

    n = n_rows(G)
    if not n:
        raise ConfigError(f"{option} '{text}': this model has one latent for every layer (n_latent is None)")
    layers = parse_seeds(text, option=option)
    bad = [i for i in layers if i >= n]
    if bad:
        raise ConfigError(f"{option} '{text}': layer {bad[0]} is out of range (this model has layers 0-{n - 1})")
    return sorted(layers)


def format_layers(layers: Sequence[int]) -> str:
    from natgan.sampling.seeds import format_seeds

    return format_seeds(sorted(layers))
