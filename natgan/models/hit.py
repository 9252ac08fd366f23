"""HiT (Zhao et al., "Improved Transformer for High-Resolution GANs", NeurIPS 2021) in PyTorch.

A faithful port of google-research/hit-gan (TensorFlow), checked against the paper's parameter counts.

Generator, stage by stage (resolution 8 * 2^i, width C_i): add a learned positional table; one
cross-attention block in which every token attends to the latent embedding Z (self-modulation); then
``depth`` multi-axis blocked self-attention blocks (low-resolution stages) or residual MLP layers
(high-resolution stages, an implicit neural function of position and features); high-resolution stages
add ``Linear(norm(x))`` RGB to the nearest-upsampled image of the previous stage; pixel shuffle +
linear to the next width. Z = BN(Linear(z) reshaped to 4x4 tokens of width C_0 + positional table),
shared by all stages. The input z feeds the network directly: there is no mapping network, so
``mapping`` is the identity and truncation happens in z space. Output is not squashed (no tanh);
images live in [-1, 1] ("symmetric") and are clamped only when quantised.

Follows the official code where it and the paper differ (reference notes A.9): Z is 4x4 tokens (the
paper's Algorithm 1 says 8x8, but only 4x4 reproduces its parameter counts), GELU rather than ReLU in
the MLPs, BatchNorm pre-norm (Keras momentum 0.99, eps 1e-3), regional heads before dilated heads.

HiT-S: Table 9 as printed (widths 512/256/128/64/32/32) has 34.73 M generator parameters, not the
38.01 M the paper reports. Keeping every block and head count of Table 9's S column and using HiT-B's
widths from stage 4 on (512/256/128/128/64/64, pixel-shuffle linears 256/128/128/64/64) gives
38.0134 M. A search over non-increasing stage widths and 1-2 blocks per stage finds eight
combinations within rounding of 38.01 M; this is the only one that keeps Table 9's block counts, so
we take the table's stage-4..6 widths to be the typo. ``variant = "S"`` is that model;
``variant = "S-table9"`` builds the table as printed.

Parameter counting: :func:`natgan.models.count_params` counts parameters only. BatchNorm affine
weights/biases and positional tables are counted; BatchNorm running mean/var (and the batch counter)
are buffers and are not, exactly like the paper's numbers (HiT-B 46.2177 M, HiT-L 97.4622 M).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Optional

import torch
import torch.nn.functional as F
from torch import nn

from natgan.config import option
from natgan.errors import ConfigError
from natgan.models.checkpointing import checkpointed
from natgan.models.conditioning import LabelEmbedding, check_unconditional
from natgan.models.hit_discriminator import HiTDiscriminator
from natgan.models.hit_layers import (AttentionBlock, LatentCrossAttention, MLP, MultiAxisAttention, PixelShuffleUp,
                                      linear, make_norm, trunc_normal_)
from natgan.models.registry import register_model
from natgan.models.truncation import truncate

INITIAL_SIZE = 8  # the first stage is 8x8 (paper §4.2)

# Per-stage tables from the paper's Table 9, stage i at resolution 8 * 2^i (8 stages reach 1024).
# depth = multi-axis attention blocks in low-resolution stages, MLP layers in high-resolution stages;
# the cross-attention block every stage starts with is not included.
VARIANTS: dict[str, dict[str, tuple[int, ...]]] = {
    "S": {"widths": (512, 256, 128, 128, 64, 64), "heads": (16, 8, 4, 4, 4, 4), "depths": (2, 2, 1, 1, 1, 1)},
    "S-table9": {"widths": (512, 256, 128, 64, 32, 32), "heads": (16, 8, 4, 4, 4, 4), "depths": (2, 2, 1, 1, 1, 1)},
    "B": {"widths": (512, 512, 256, 128, 64, 64, 32, 32), "heads": (16, 8, 4, 4, 4, 4, 4, 4),
          "depths": (2, 2, 2, 2, 1, 1, 1, 1)},
    "L": {"widths": (1024, 512, 256, 128, 128, 128), "heads": (16, 8, 4, 4, 4, 4), "depths": (2, 2, 2, 2, 2, 2)},
}
# The official code has one configuration per output size; at 256 and 1024 it is Table 9's B column, at
# 128 (its ImageNet-128 command) it has its own: stage widths end at 128 and every stage has depth 2.
# ``variant = "B"`` follows the official code, so these replace the B column at their resolution.
OFFICIAL_B_BY_RESOLUTION: dict[int, dict[str, tuple[int, ...]]] = {
    128: {"widths": (512, 512, 256, 128, 128), "heads": (16, 8, 4, 4, 4), "depths": (2, 2, 2, 2, 2)},
}
PAPER_LOW_RES_STAGES = 4  # multi-axis attention up to 64 px, MLPs above (paper §3.2)
BLOCK_SIZES = (4, 4, 8, 8)  # low-resolution stages 1-4, "balanced" so b^2 ~ (H/b)^2 (paper §3.2)


@dataclass(frozen=True)
class StageSpec:
    resolution: int
    width: int
    heads: int
    depth: int
    block_size: Optional[int]  # None: high-resolution (MLP-only) stage

    @property
    def is_attention(self) -> bool:
        return self.block_size is not None


@dataclass
class HiTConfig:
    """HiT generator + discriminator. Per-stage lists override the variant's Table 9 column (one entry
    per stage from 8 px up to ``resolution``; ``block_sizes`` one per low-resolution stage)."""

    variant: Literal["S", "S-table9", "B", "L"] = option("B", help="Table 9 column (S = the 38.01 M variant)")
    resolution: int = option(256, min=8, max=4096, help="output side, a power of two")
    z_dim: int = option(512, min=1, help="input latent size (512 for FFHQ/CelebA-HQ, 256 for ImageNet)")
    widths: Optional[list[int]] = option(None, min=1, help="per-stage channel widths")
    heads: Optional[list[int]] = option(None, min=1, help="per-stage attention heads")
    depths: Optional[list[int]] = option(None, min=0, help="per-stage attention blocks / MLP layers")
    block_sizes: Optional[list[int]] = option(None, min=1, help="block side per low-resolution stage")
    low_res_stages: Optional[int] = option(None, min=0, help="stages with multi-axis self-attention (default: the "
                                           "paper's 4, or every stage but the last below 128 px)")
    latent_grid: int = option(4, min=1, help="latent embedding Z is latent_grid^2 tokens (official: 4x4)")
    mlp_ratio: int = option(4, min=1)
    norm: Literal["batch", "layer"] = option("batch", help="BatchNorm (paper) or LayerNorm (Table 8 ablation)")
    attention: Literal["multi_query", "multi_head"] = option("multi_query", help="Table 8 ablation: multi_head")
    d_channel_multiplier: int = option(2, min=1, help="discriminator width multiplier (2: FFHQ/CelebA-HQ)")
    d_max_channels: int = option(512, min=1, help="discriminator width cap (official 512)")
    d_blur: bool = option(True, help="blur-pool downsampling in D (official default) instead of average pooling")
    num_classes: int = option(0, min=0, help="class-conditional with this many classes (0 = unconditional): "
                                             "w = [z, label embedding] feeds the network, D projects on the label")

    @property
    def num_stages(self) -> int:
        return int(math.log2(self.resolution // INITIAL_SIZE)) + 1

    @property
    def n_low_res(self) -> int:
        """Stages with attention. Unset, the paper's 4, but at least the last stage stays a high-resolution
        (MLP) stage that emits RGB, so ``--resolution 32`` (3 stages) or 16 shrinks HiT instead of refusing."""
        if self.low_res_stages is not None:
            return self.low_res_stages
        return min(PAPER_LOW_RES_STAGES, self.num_stages - 1)

    def _per_stage(self, key: str) -> list[int]:
        given = getattr(self, key)
        n = self.num_stages
        if given is not None:
            if len(given) != n:
                raise ConfigError(f"key 'model.{key}': expected {n} entries (one per stage, 8 to "
                                  f"{self.resolution} px), got {len(given)}")
            return list(given)
        table = VARIANTS[self.variant][key]
        if self.variant == "B" and self.resolution in OFFICIAL_B_BY_RESOLUTION:
            table = OFFICIAL_B_BY_RESOLUTION[self.resolution][key]
        if len(table) < n:
            top = INITIAL_SIZE * 2 ** (len(table) - 1)
            raise ConfigError(f"key 'model.resolution': HiT-{self.variant} is specified up to {top} px; got "
                              f"{self.resolution} (give model.widths, model.heads and model.depths to extend it)")
        return list(table[:n])

    def stages(self) -> list[StageSpec]:
        """The resolved stage plan (validated)."""
        widths, heads, depths = self._per_stage("widths"), self._per_stage("heads"), self._per_stage("depths")
        n_low = self.n_low_res
        if self.block_sizes is not None:
            if len(self.block_sizes) != n_low:
                raise ConfigError(f"key 'model.block_sizes': expected {n_low} entries (one per low-resolution "
                                  f"stage), got {len(self.block_sizes)}")
            blocks = list(self.block_sizes)
        elif n_low <= len(BLOCK_SIZES):
            blocks = list(BLOCK_SIZES[:n_low])
        else:
            raise ConfigError(f"key 'model.block_sizes': required when model.low_res_stages > {len(BLOCK_SIZES)}")
        specs = []
        for i in range(self.num_stages):
            res = INITIAL_SIZE * 2 ** i
            if widths[i] % heads[i]:
                raise ConfigError(f"key 'model.heads': stage {i + 1} ({res} px): {heads[i]} heads do not divide "
                                  f"width {widths[i]}")
            if i < n_low:
                if heads[i] % 2:
                    raise ConfigError(f"key 'model.heads': stage {i + 1} ({res} px) has multi-axis attention, "
                                      f"whose heads split in two halves; got {heads[i]}")
                if res % blocks[i]:
                    raise ConfigError(f"key 'model.block_sizes': block {blocks[i]} does not tile stage {i + 1} "
                                      f"({res} px)")
            if i < self.num_stages - 1 and widths[i] % 4:
                raise ConfigError(f"key 'model.widths': stage {i + 1} width {widths[i]} must be divisible by 4 "
                                  f"(pixel shuffle)")
            specs.append(StageSpec(res, widths[i], heads[i], depths[i], blocks[i] if i < n_low else None))
        return specs

    def validate(self) -> None:
        if self.resolution & (self.resolution - 1):
            raise ConfigError(f"key 'model.resolution': expected a power of two, got {self.resolution}")
        if self.n_low_res >= self.num_stages:
            raise ConfigError(f"key 'model.low_res_stages': expected < {self.num_stages} (at least the last "
                              f"stage must be a high-resolution stage that emits RGB), got {self.low_res_stages}")
        self.stages()


class HiTStage(nn.Module):
    """Positional table -> cross-attention to Z -> attention blocks or MLPs -> [RGB] -> [pixel shuffle]."""

    def __init__(self, spec: StageSpec, next_width: int | None, latent_dim: int, cfg: HiTConfig):
        super().__init__()
        c, self.spec = spec.width, spec
        self.pos = nn.Parameter(trunc_normal_(torch.empty(1, spec.resolution, spec.resolution, c)))
        self.cross = AttentionBlock(c, LatentCrossAttention(c, latent_dim, spec.heads, cfg.attention),
                                    cfg.mlp_ratio, cfg.norm)
        if spec.is_attention:
            layers = [AttentionBlock(c, MultiAxisAttention(c, spec.heads, spec.block_size, cfg.attention),
                                     cfg.mlp_ratio, cfg.norm) for _ in range(spec.depth)]
        else:
            layers = [MLP(c, cfg.mlp_ratio, cfg.norm) for _ in range(spec.depth)]
        self.layers = nn.Sequential(*layers)
        self.to_rgb = None if spec.is_attention else nn.Sequential(make_norm(cfg.norm, c), linear(c, 3))
        self.up = PixelShuffleUp(c, next_width) if next_width is not None else None

    def forward(self, x: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        return self.layers(self.cross(x + self.pos, latents))


class HiTGenerator(nn.Module):
    """z ``[B, z_dim]`` -> image ``[B, 3, R, R]`` in [-1, 1] (unclamped). See the module docstring.

    Class-conditional (``num_classes > 0``): HiT has no mapping network, so the label enters where z does.
    stylegan2-ada's normalised label embedding (width z_dim) is concatenated with z, and this
    ``w = [z, embed(c)]`` feeds both places z feeds unconditionally: the initial projection to the 8x8
    tokens and the latent embedding Z every cross-attention reads. That is the closest faithful choice.
    Truncation toward the per-class mean w leaves the label half unchanged, because that half is the same
    for every z of a class."""

    normalization = "symmetric"
    n_latent = None  # no style mixing: one latent drives the whole network

    def __init__(self, cfg: HiTConfig):
        super().__init__()
        specs = cfg.stages()
        self.z_dim, self.resolution = cfg.z_dim, cfg.resolution
        self.num_classes = cfg.num_classes
        embed_dim = cfg.z_dim if cfg.num_classes else 0
        self.w_dim = cfg.z_dim + embed_dim  # the width of w = mapping(z, c): z itself, or [z, embed(c)]
        c0, tokens = specs[0].width, cfg.latent_grid ** 2
        self.c0, self.tokens = c0, tokens
        self.initial = linear(cfg.z_dim + embed_dim, INITIAL_SIZE * INITIAL_SIZE * c0)
        self.latent_embed = linear(cfg.z_dim + embed_dim, tokens * c0)
        self.latent_pos = nn.Parameter(trunc_normal_(torch.empty(1, tokens, c0)))
        self.latent_norm = make_norm(cfg.norm, c0)
        self.stages = nn.ModuleList(
            HiTStage(spec, specs[i + 1].width if i + 1 < len(specs) else None, c0, cfg)
            for i, spec in enumerate(specs))
        self.activation_checkpointing = False
        # built last, so an unconditional model draws its initial weights exactly as before
        self.label_embed = LabelEmbedding(cfg.num_classes, embed_dim) if cfg.num_classes else None

    def set_activation_checkpointing(self, enabled: bool) -> None:
        """Recompute each stage's attention/MLP layers in backward (BatchNorm statistics update once)."""
        self.activation_checkpointing = bool(enabled)

    def mapping(self, z: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        """HiT has no mapping network: w is z (conditional: ``[z, embed(c)]``, see the class docstring)."""
        if self.label_embed is None:
            check_unconditional(c)
            return z
        return torch.cat([z, self.label_embed(c).to(z.dtype)], dim=1)

    def latents(self, w: torch.Tensor) -> torch.Tensor:
        """The latent embedding Z ``[B, latent_grid^2, C_0]`` every cross-attention attends to."""
        z = self.latent_embed(w).view(-1, self.tokens, self.c0) + self.latent_pos
        return self.latent_norm(z)

    def synthesis(self, w: torch.Tensor) -> torch.Tensor:
        x = self.initial(w).view(-1, INITIAL_SIZE, INITIAL_SIZE, self.c0)
        latents = self.latents(w)
        image = None
        for stage in self.stages:
            x = checkpointed(stage, stage, x, latents) if self.activation_checkpointing else stage(x, latents)
            if stage.to_rgb is not None:
                rgb = stage.to_rgb(x).permute(0, 3, 1, 2)
                image = rgb if image is None else F.interpolate(image, scale_factor=2, mode="nearest") + rgb
            if stage.up is not None:
                x = stage.up(x)
        return image.contiguous()

    def forward(self, z: torch.Tensor, c: torch.Tensor | None = None, psi: float = 1.0,
                w_avg: torch.Tensor | None = None) -> torch.Tensor:
        return self.synthesis(truncate(self.mapping(z, c), psi, w_avg))


_ABOUT = "multi-axis blocked attention, latent cross-attention, MLP-only high-res stages (Zhao et al. 2021)"


@register_model("hit", config=HiTConfig, defaults={"variant": "B"}, paper_params_g=46.22, paper_img_per_s=52.09,
                description=f"HiT-B (alias of hit-b): {_ABOUT}")
@register_model("hit-s", config=HiTConfig, defaults={"variant": "S"}, paper_params_g=38.01, paper_img_per_s=86.64,
                description="HiT-S: Table 9 with HiT-B widths from stage 4, the paper's 38.01 M (see docs)")
@register_model("hit-b", config=HiTConfig, defaults={"variant": "B"}, paper_params_g=46.22, paper_img_per_s=52.09,
                description=f"HiT-B: {_ABOUT}")
@register_model("hit-l", config=HiTConfig, defaults={"variant": "L"}, paper_params_g=97.46, paper_img_per_s=20.67,
                description=f"HiT-L: {_ABOUT}")
@register_model("hit-b-128", config=HiTConfig, defaults={"variant": "B", "resolution": 128},
                description="HiT-B at 128x128 (official 128 config: widths to 128, depth 2 everywhere)")
@register_model("hit-b-1024", config=HiTConfig, defaults={"variant": "B", "resolution": 1024},
                description="HiT-B at 1024x1024 (official 1024 config; the paper reports no count)")
def build(cfg: HiTConfig) -> tuple[nn.Module, nn.Module]:
    return HiTGenerator(cfg), HiTDiscriminator(cfg.resolution, cfg.d_channel_multiplier, cfg.d_max_channels,
                                               cfg.d_blur, num_classes=cfg.num_classes)
