"""Attention maps of one generated image: the StyleNAT paper's mean-query technique (Appendix D).

Local attention (neighbourhood, windows) has no single "attention map" to read off, so the paper
looks at queries and keys instead: per block and head, the query averaged over the whole feature map,
``q̄_h``, dotted with the key of every position, ``map_h(y, x) = q̄_h · k_h(y, x) / 2`` — before RPB and
softmax and without any window restriction (the official analysis divides by 2 as well). Because the
capture contract hands over q and k in spatial layout, the same code serves Hydra-NA heads of any
kernel/dilation, un-windowed Swin heads and HiT's regional/dilated heads. Image -> latent
cross-attention (GANformer, HiT) already is a map per latent: its probabilities are kept as they are.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

import torch
from torch import nn

from natgan.errors import ConfigError, NatGanError
from natgan.viz.capture import capturing

DEFAULT_SEED = 42
MIN_LEVEL = 16  # the paper and the official code show levels from 16x16 up


@dataclass
class BlockAttention:
    """The maps of one attention call: one block at one level."""

    name: str                 # module path inside the generator
    level: int                # feature-map height (the level's resolution)
    width: int
    block: int                # index among the attention calls at this level, in forward order
    kind: str                 # "self" (mean-query maps) | "cross" (image -> latent assignments)
    heads: list[int]          # head indices kept (after --heads selection)
    labels: list[str]         # one per kept head, e.g. "k7 d2", "shifted window", "regional"
    maps: torch.Tensor        # self: [heads, H, W]; cross: [heads, H, W, n_latents] (probabilities)

    @property
    def n_latents(self) -> int | None:
        return self.maps.shape[-1] if self.kind == "cross" else None


@dataclass
class AttentionMaps:
    """What :func:`attention_maps` returns: the image and its maps, ordered by level then block."""

    image: torch.Tensor                   # [3, R, R] uint8
    z: torch.Tensor                       # [1, z_dim] latent used
    seed: int | None
    blocks: list[BlockAttention] = field(default_factory=list)
    model: str = ""

    @property
    def levels(self) -> list[int]:
        return sorted({b.level for b in self.blocks})

    def at(self, level: int) -> list[BlockAttention]:
        return [b for b in self.blocks if b.level == level]


def mean_query_map(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """``q̄ · k / 2`` per head: ``[B, heads, H, W, hd]`` twice -> ``[B, heads, H, W]`` (float32)."""
    q_mean = q.float().mean(dim=(2, 3))
    return torch.einsum("bhd,bhyxd->bhyx", q_mean, k.float()) / 2


def pixel_query_map(q: torch.Tensor, k: torch.Tensor, where: tuple[float, float]) -> torch.Tensor:
    """``q(y, x) · k / 2`` per head for the query at image fraction ``where = (fy, fx)`` in [0, 1): the
    pixel's affinity to every key, before RPB, softmax and any neighbourhood/window restriction."""
    h, w = q.shape[2], q.shape[3]
    y, x = min(int(where[0] * h), h - 1), min(int(where[1] * w), w - 1)
    return torch.einsum("bhd,bhyxd->bhyx", q[:, :, y, x].float(), k.float()) / 2


def _reducer(query: tuple[float, float] | None):
    def reduce(kind: str, captured: dict) -> torch.Tensor:
        if kind == "self":
            if query is not None:
                return pixel_query_map(captured["q"], captured["k"], query).cpu()
            return mean_query_map(captured["q"], captured["k"]).cpu()
        return captured["attn"].float().cpu()
    return reduce


def latent_for(G: nn.Module, latent: torch.Tensor | int) -> tuple[torch.Tensor, int | None]:
    """A ``[1, z_dim]`` latent: given, or drawn from the CPU RNG with ``seed`` (same z on any device)."""
    if isinstance(latent, int) and not isinstance(latent, bool):
        if latent < 0:
            raise ConfigError(f"seed must be >= 0, got {latent}")
        gen = torch.Generator().manual_seed(latent)
        return torch.randn(1, G.z_dim, generator=gen), latent
    if not isinstance(latent, torch.Tensor):
        raise ConfigError(f"expected a seed (int) or a latent tensor, got {type(latent).__name__}")
    z = latent.unsqueeze(0) if latent.dim() == 1 else latent
    if z.shape[0] != 1:
        raise ConfigError(f"attention maps are drawn for one image; got a latent batch of {z.shape[0]}")
    return z, None


def _as_set(values: Iterable[int] | None) -> set[int] | None:
    return None if values is None else {int(v) for v in values}


def attention_maps(G: nn.Module, latent: torch.Tensor | int = DEFAULT_SEED, *,
                   levels: Iterable[int] | str | None = None, blocks: Iterable[int] | None = None,
                   heads: Iterable[int] | None = None, model: str = "", w: torch.Tensor | None = None,
                   query: tuple[float, float] | None = None) -> AttentionMaps:
    """Generate one image and the attention maps of its blocks.

    ``latent``: a seed (z drawn on the CPU RNG, like the official analysis; default 42) or a z tensor.
    ``w``: synthesise this ``[1, ...]`` latent instead of ``G(z)`` (the studio's blended, mixed, edited or
    projected latents); ``query``: self-attention maps of the query at image fraction ``(fy, fx)`` instead of
    the mean query (:func:`pixel_query_map`).
    ``levels``: resolutions to keep (default: every level from 16x16 up; ``"all"`` includes 4 and 8);
    ``blocks``: block indices within a level (forward order); ``heads``: head indices.
    A selection that matches nothing raises :class:`ConfigError` listing what exists.
    """
    z, seed = latent_for(G, latent)
    param = next(G.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    was_training = G.training
    G.eval()
    try:
        with torch.no_grad(), capturing(G, _reducer(query)) as records:
            image = G(z.to(device)) if w is None else G.synthesis(w.to(device))
    finally:
        G.train(was_training)
    from natgan.models.normalization import to_uint8

    image_u8 = to_uint8(image[:1].detach().cpu(), G.normalization)[0]

    all_blocks: list[BlockAttention] = []
    per_level: dict[int, int] = {}
    for rec in records:
        h, w = rec.value.shape[2], rec.value.shape[3]
        index = per_level.get(h, 0)
        per_level[h] = index + 1
        n_heads = rec.value.shape[1]
        all_blocks.append(BlockAttention(rec.name, h, w, index, rec.kind, list(range(n_heads)), rec.labels,
                                         rec.value[0]))
    return AttentionMaps(image_u8, z.cpu(), seed, select(all_blocks, levels, blocks, heads), model)


def select(all_blocks: list[BlockAttention], levels: Iterable[int] | str | None, blocks: Iterable[int] | None,
           heads: Iterable[int] | None) -> list[BlockAttention]:
    """Filter by level / block / head, with an error naming what exists when a request matches nothing."""
    if not all_blocks:
        raise NatGanError("the generator ran but no attention module was called")
    present = sorted({b.level for b in all_blocks})
    if levels == "all":
        level_set = set(present)
    elif isinstance(levels, str):
        raise ConfigError(f"levels: expected resolutions or 'all', got {levels!r}")
    elif levels is None:
        level_set = {lv for lv in present if lv >= MIN_LEVEL} or set(present)
    else:
        level_set = _as_set(levels)
        missing = sorted(level_set - set(present))
        if missing:
            raise ConfigError(f"--levels: level {missing[0]} has no attention; levels with attention: "
                              f"{', '.join(map(str, present))}")
    block_set, head_set = _as_set(blocks), _as_set(heads)
    chosen = [b for b in all_blocks if b.level in level_set]
    if block_set is not None:
        have = sorted({b.block for b in chosen})
        missing = sorted(block_set - set(have))
        if missing:
            raise ConfigError(f"--blocks: block {missing[0]} does not exist at the chosen levels; blocks: "
                              f"{', '.join(map(str, have))}")
        chosen = [b for b in chosen if b.block in block_set]
    if head_set is not None:
        most = max(b.maps.shape[0] for b in chosen)
        bad = sorted(h for h in head_set if h < 0 or h >= most)
        if bad:
            raise ConfigError(f"--heads: head {bad[0]} does not exist; the chosen blocks have at most {most} "
                              f"heads (0..{most - 1})")
        kept = []
        for b in chosen:
            idx = [h for h in b.heads if h in head_set]
            if idx:
                kept.append(BlockAttention(b.name, b.level, b.width, b.block, b.kind, idx,
                                           [b.labels[h] for h in idx], b.maps[idx]))
        chosen = kept
    return chosen
