"""StyleNAT: the style-based transformer generator with Hydra neighborhood attention (Walton et al.).

Hydra-NA splits a block's heads into contiguous partitions, each attending over its own (dilated)
neighbourhood: dense local kernels and sparse global ones side by side, each partition with its own
relative position bias table and its own softmax. The 4x4 level uses full self-attention with a 7x7
relative bias instead. Everything else (mapping, AdaIN blocks, upsampling, ToRGB skips, wavelet D) is the
shared skeleton in :mod:`natgan.models.transformer_gan`.

Dilation patterns from the paper are available by name: ``two_partition`` (the official FFHQ runs:
[1] at 8x8, [1, res/8] above) and ``progressive`` ([1, 2, 4, ..., res/8], Appendix A); explicit
per-level lists are accepted too. ``head_layout = "split"`` rebuilds the legacy two-halves module
(``rpb0``/``rpb1``) that trained the released checkpoints, so they can keep their exact key names.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, NamedTuple, Optional

import torch
from torch import nn

from natgan.config import option
from natgan.errors import ConfigError
from natgan.models.transformer_gan import TransformerGANConfig, build_pair, level_resolutions, trunc_normal_init_
from natgan.models.registry import register_model

DilationPattern = Literal["two_partition", "progressive"]


class Partition(NamedTuple):
    kernel: int
    dilation: int
    heads: int


def _broadcast(kernels: list[int], dilations: list[int], where: str) -> tuple[list[int], list[int]]:
    """Official rule: a single kernel (or dilation) is repeated to match the other list."""
    if len(kernels) == 1 and len(dilations) > 1:
        kernels = kernels * len(dilations)
    if len(dilations) == 1 and len(kernels) > 1:
        dilations = dilations * len(kernels)
    if len(kernels) != len(dilations) or not kernels:
        raise ConfigError(f"{where}: {len(kernels)} kernels and {len(dilations)} dilations; give one of each "
                          f"per partition (a single value is repeated)")
    return kernels, dilations


def hydra_partitions(heads: int, kernels: list[int], dilations: list[int],
                     where: str = "hydra attention") -> list[Partition]:
    """Split ``heads`` into contiguous partitions in config order; the last ones absorb the remainder.

    16 heads over 3 partitions -> 5, 5, 6 (official rule). A partition left without heads is an error
    (raise ``min_heads`` or use fewer partitions).
    """
    kernels, dilations = _broadcast(list(kernels), list(dilations), where)
    parts = len(kernels)
    base, extra = divmod(heads, parts)
    if base == 0:
        raise ConfigError(f"{where}: {parts} partitions need at least {parts} heads, but the level has "
                          f"{heads} (raise model.min_heads or use fewer kernels/dilations)")
    sizes = [base] * (parts - extra) + [base + 1] * extra
    return [Partition(k, d, h) for k, d, h in zip(kernels, dilations, sizes)]


def split_head_partitions(heads: int, kernels: list[int], dilations: list[int],
                          where: str = "split-head attention") -> list[Partition]:
    """Legacy layout: exactly two halves (a single kernel/dilation is used for both)."""
    kernels, dilations = _broadcast(list(kernels), list(dilations), where)
    if len(kernels) == 1:
        kernels, dilations = kernels * 2, dilations * 2
    if len(kernels) != 2:
        raise ConfigError(f"{where}: head_layout 'split' has exactly two halves, got {len(kernels)} partitions")
    if heads % 2:
        raise ConfigError(f"{where}: head_layout 'split' needs an even number of heads, got {heads}")
    return [Partition(k, d, heads // 2) for k, d in zip(kernels, dilations)]


def pattern_dilations(pattern: str, resolution: int, kernel: int) -> list[int]:
    """The paper's dilation patterns for one level (capped so that kernel * dilation <= resolution)."""
    top = min(resolution // 8, resolution // kernel)
    if pattern == "two_partition":
        return [1, top] if top > 1 else [1]
    if pattern == "progressive":
        out, d = [], 1
        while d <= max(top, 1):
            out.append(d)
            d *= 2
        return out
    raise ConfigError(f"key 'model.dilation_pattern': unknown pattern {pattern!r} (two_partition | progressive)")


# --------------------------------------------------------------------------------------------- config

@dataclass
class StyleNATConfig(TransformerGANConfig):
    """StyleNAT generator + wavelet discriminator. Defaults: the official FFHQ-256 model (48.92 M)."""

    kernel_size: int = option(7, min=3, help="NA kernel for every level >= 8x8 unless `kernels` is given")
    kernels: Optional[list[list[int]]] = option(None, min=3, help="per level 4..resolution: kernel per partition "
                                                                  "(the 4x4 entry is ignored: full attention)")
    dilations: Optional[list[list[int]]] = option(None, min=1, help="per level 4..resolution: dilation per partition")
    dilation_pattern: Optional[DilationPattern] = option(None, help="two_partition (default, official FFHQ) | "
                                                                    "progressive; exclusive with `dilations`")
    head_layout: Literal["hydra", "split"] = option("hydra", help="split = legacy rpb0/rpb1 halves of the "
                                                                 "released checkpoints")

    def validate(self) -> None:
        super().validate()
        levels = len(level_resolutions(self.resolution))
        if self.dilations is not None and self.dilation_pattern is not None:
            raise ConfigError("key 'model.dilation_pattern': give either `dilations` or `dilation_pattern`, not both")
        for key in ("kernels", "dilations"):
            value = getattr(self, key)
            if value is not None and len(value) != levels:
                raise ConfigError(f"key 'model.{key}': expected {levels} entries (one list per level "
                                  f"{', '.join(map(str, level_resolutions(self.resolution)))}), got {len(value)}")
        kernels = [[self.kernel_size]] if self.kernels is None else self.kernels
        for entry in kernels:
            for k in entry:
                if k % 2 == 0:
                    raise ConfigError(f"key 'model.{'kernel_size' if self.kernels is None else 'kernels'}': "
                                      f"neighborhood kernels must be odd, got {k}")
        for level, res in enumerate(level_resolutions(self.resolution)):
            if level == 0:
                continue  # 4x4: full self-attention
            heads = self.level_heads(self.level_channels()[level])
            for p in self.partitions(level, heads):
                if p.kernel * p.dilation > res:
                    key = "dilations" if p.dilation > 1 else "kernels" if self.kernels is not None else "kernel_size"
                    raise ConfigError(f"key 'model.{key}': level {res}x{res}: kernel {p.kernel} x dilation "
                                      f"{p.dilation} = {p.kernel * p.dilation} exceeds the level size {res} "
                                      f"(neighborhood attention needs kernel * dilation <= size)")

    def level_kernels(self, level: int) -> list[int]:
        return list(self.kernels[level]) if self.kernels is not None else [self.kernel_size]

    def level_dilations(self, level: int) -> list[int]:
        if self.dilations is not None:
            return list(self.dilations[level])
        res = level_resolutions(self.resolution)[level]
        kernels = self.level_kernels(level)
        if len(set(kernels)) > 1:
            raise ConfigError(f"key 'model.dilation_pattern': level {res}x{res} has several kernels {kernels}; "
                              f"a named pattern needs one kernel per level (give explicit `dilations`)")
        return pattern_dilations(self.dilation_pattern or "two_partition", res, kernels[0])

    def partitions(self, level: int, heads: int) -> list[Partition]:
        res = level_resolutions(self.resolution)[level]
        where = f"key 'model.dilations': level {res}x{res}"
        split = split_head_partitions if self.head_layout == "split" else hydra_partitions
        return split(heads, self.level_kernels(level), self.level_dilations(level), where)


# --------------------------------------------------------------------------------------------- attention

class HydraNeighborhoodAttention(nn.Module):
    """Neighborhood attention whose contiguous head partitions use their own kernel, dilation and RPB.

    ``x [B, H, W, C] -> [B, H, W, C]``. q is scaled before the dot product and the bias is added
    unscaled, as in the official module. ``layout="split"`` stores the two tables as ``rpb0``/``rpb1``
    (legacy checkpoints) instead of the list ``rpb.{p}``.
    """

    def __init__(self, dim: int, partitions: list[Partition], qkv_bias: bool = True,
                 qk_scale: float | None = None, layout: str = "hydra"):
        super().__init__()
        self.heads = sum(p.heads for p in partitions)
        self.head_dim = dim // self.heads
        self.scale = qk_scale or self.head_dim ** -0.5
        self.partitions = list(partitions)
        self.layout = layout
        tables = [nn.Parameter(torch.zeros(p.heads, 2 * p.kernel - 1, 2 * p.kernel - 1)) for p in partitions]
        for t in tables:
            trunc_normal_init_(t)
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        if layout == "split":
            self.rpb0, self.rpb1 = tables
        else:
            self.rpb = nn.ParameterList(tables)
        self.proj = nn.Linear(dim, dim)
        self.backend: str | None = None   # None = natgan.ops chooses; "torch" | "natten" | "flex" to force
        self.capture = False
        self.captured: dict | None = None

    def tables(self) -> list[torch.Tensor]:
        return [self.rpb0, self.rpb1] if self.layout == "split" else list(self.rpb)

    def labels(self) -> list[str]:
        return [f"k{p.kernel} d{p.dilation}" for p in self.partitions for _ in range(p.heads)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from natgan.ops import neighborhood_attention

        b, h, w, c = x.shape
        q, k, v = self.qkv(x).view(b, h, w, 3, self.heads, self.head_dim).unbind(3)   # [B, H, W, heads, hd]
        q = q * self.scale
        if self.capture:
            self.captured = {"q": q.detach().permute(0, 3, 1, 2, 4), "k": k.detach().permute(0, 3, 1, 2, 4),
                             "labels": self.labels()}
        outs, start = [], 0
        for p, table in zip(self.partitions, self.tables()):
            heads = slice(start, start + p.heads)
            start += p.heads
            outs.append(neighborhood_attention(q[..., heads, :], k[..., heads, :], v[..., heads, :],
                                               p.kernel, p.dilation, rpb=table.to(q.dtype), scale=1.0,
                                               backend=self.backend))
        out = outs[0] if len(outs) == 1 else torch.cat(outs, dim=3)
        return self.proj(out.reshape(b, h, w, c))

    def extra_repr(self) -> str:
        parts = ", ".join(f"k{p.kernel}d{p.dilation}x{p.heads}" for p in self.partitions)
        return f"heads={self.heads}, partitions=[{parts}], layout={self.layout}"


def relative_index_key_minus_query(size: int) -> torch.Tensor:
    """``[N, N]`` flat index into a ``(2s-1) x (2s-1)`` table of (key - query + s - 1) per axis."""
    coords = torch.stack(torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")).flatten(1)
    rel = coords[:, None, :] - coords[:, :, None] + size - 1            # [2, query, key]: key - query
    return rel[0] * (2 * size - 1) + rel[1]


class MultiHeadSelfAttentionRPB(nn.Module):
    """Full self-attention with a relative position bias (the 4x4 level; official ``MHSARPB``)."""

    def __init__(self, dim: int, heads: int, size: int = 4, qkv_bias: bool = True, qk_scale: float | None = None):
        super().__init__()
        self.heads, self.size = heads, size
        self.head_dim = dim // heads
        self.scale = qk_scale or self.head_dim ** -0.5
        self.rpb = nn.Parameter(torch.zeros(heads, 2 * size - 1, 2 * size - 1))
        trunc_normal_init_(self.rpb)
        self.register_buffer("relative_position_index", relative_index_key_minus_query(size))
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.capture = False
        self.captured: dict | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, c = x.shape
        if (h, w) != (self.size, self.size):
            raise ValueError(f"MultiHeadSelfAttentionRPB built for {self.size}x{self.size}, got {h}x{w}")
        n = h * w
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)  # [B, heads, N, hd]
        q = q * self.scale
        if self.capture:
            self.captured = {"q": q.detach().view(b, self.heads, h, w, -1),
                             "k": k.detach().view(b, self.heads, h, w, -1), "labels": ["full"] * self.heads}
        bias = self.rpb.flatten(1)[:, self.relative_position_index.view(-1)].view(self.heads, n, n)
        attn = (q @ k.transpose(-2, -1) + bias).softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, h, w, c))


def set_na_backend(model: nn.Module, backend: str | None) -> None:
    """Force every Hydra attention module of ``model`` onto one NA backend (None = automatic)."""
    for m in model.modules():
        if isinstance(m, HydraNeighborhoodAttention):
            m.backend = backend


# --------------------------------------------------------------------------------------------- registry

def nat_attention(cfg: StyleNATConfig):
    def factory(level: int, resolution: int, dim: int, heads: int) -> nn.Module:
        if level == 0:
            return MultiHeadSelfAttentionRPB(dim, heads, resolution, cfg.qkv_bias, cfg.qk_scale)
        return HydraNeighborhoodAttention(dim, cfg.partitions(level, heads), cfg.qkv_bias, cfg.qk_scale,
                                          layout=cfg.head_layout)
    return factory


@register_model("stylenat", config=StyleNATConfig, paper_params_g=48.92, paper_img_per_s=32.56,
                description="StyleNAT: Hydra neighborhood attention generator + wavelet D (Walton et al. 2022)")
def build_stylenat(cfg: StyleNATConfig) -> tuple[nn.Module, nn.Module]:
    return build_pair(cfg, nat_attention(cfg))
