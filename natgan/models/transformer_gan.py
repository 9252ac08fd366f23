"""The style-based transformer generator shared by StyleNAT and StyleSwin (official skeleton).

Both official generators are the same network except for the attention inside each block, so this
module builds everything else and takes an *attention factory*:

* mapping network ``style`` (PixelNorm + ``n_mlp`` equalised linear layers, lr multiplier ``lr_mlp``);
  its single ``w`` is broadcast to ``n_latent = 2 * levels`` rows, row ``2L + b`` styles block ``b`` of
  level ``L``;
* a learned 4x4 constant ``input.input``;
* per level (4x4 up to the output size) two pre-norm blocks ``x += attn(AdaIN(x, w))``,
  ``x += mlp(AdaIN(x, w))``, then (except at the last level) bilinear x2 upsampling, LayerNorm,
  a bias-free linear to the next width and ``alpha *`` a fixed 2-D sinusoidal position encoding;
* plain 1x1 ToRGB convolutions (no modulation) with an extra bias, whose outputs are summed through
  FIR-upsampled skips; the final resolution has two ToRGBs. Images come out ImageNet-normalised.

Module and parameter names, registration order and initialisation follow the official code, so an
official state dict loads (almost) name for name and Adam states keep their parameter order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from natgan.config import option
from natgan.errors import ConfigError
from natgan.models.checkpointing import checkpointed
from natgan.models.conditioning import LabelEmbedding, conditional_mapping
from natgan.models.layers import EqualLinear, Upsample, mapping_network
from natgan.models.truncation import truncate

# Official generator widths for levels 4, 8, ..., 1024 (entries 4.. scale with channel_multiplier).
_BASE_CHANNELS = (512, 512, 512, 512, 256, 128, 64, 32, 16)
_FIXED_LEVELS = 4  # the first four levels are 512 wide whatever the multiplier


def default_channels(resolution: int, channel_multiplier: int) -> list[int]:
    """Official generator widths, one per level from 4x4 up to ``resolution``."""
    levels = num_levels(resolution)
    return [c if i < _FIXED_LEVELS else c * channel_multiplier for i, c in enumerate(_BASE_CHANNELS[:levels])]


def num_levels(resolution: int) -> int:
    return int(math.log2(resolution)) - 1


def level_resolutions(resolution: int) -> list[int]:
    return [4 * 2 ** i for i in range(num_levels(resolution))]


def heads_for(channels: int, min_heads: int) -> int:
    """Official rule: one head per 32 channels, at least ``min_heads``."""
    return max(channels // 32, min_heads)


@dataclass
class TransformerGANConfig:
    """Hyper-parameters shared by StyleNAT and StyleSwin (generator skeleton + wavelet discriminator)."""

    resolution: int = option(256, min=16, max=1024, help="output side (power of two; the wavelet D needs >= 16)")
    style_dim: int = option(512, min=1, help="z and w size")
    n_mlp: int = option(8, min=1, help="mapping-network layers")
    lr_mlp: float = option(0.01, min=0.0, help="mapping-network learning-rate multiplier")
    channel_multiplier: int = option(2, min=1, help="G width multiplier for levels >= 64x64")
    channels: Optional[list[int]] = option(None, min=1, help="explicit G width per level 4..resolution "
                                                             "(overrides channel_multiplier)")
    min_heads: int = option(4, min=1, help="heads per level = max(width // 32, min_heads)")
    mlp_ratio: float = option(4.0, min=0.0, help="MLP hidden width / block width")
    qkv_bias: bool = option(True)
    qk_scale: Optional[float] = option(None, min=0.0, help="attention scale (default head_dim ** -0.5)")
    d_channel_multiplier: int = option(2, min=1, help="discriminator width multiplier")
    d_channels: Optional[list[int]] = option(None, min=1, help="explicit D width per resolution 4..resolution (as "
                                                               "in the official D, the resolution/2 entry is unused)")
    d_sn: bool = option(True, help="spectral norm in the discriminator (official runs: on)")
    num_classes: int = option(0, min=0, help="class-conditional with this many classes (0 = unconditional)")

    def validate(self) -> None:
        r = self.resolution
        if r & (r - 1):
            raise ConfigError(f"key 'model.resolution': expected a power of two, got {r}")
        levels = num_levels(r)
        for key in ("channels", "d_channels"):
            value = getattr(self, key)
            if value is not None and len(value) != levels:
                raise ConfigError(f"key 'model.{key}': expected {levels} entries (one per level "
                                  f"{', '.join(map(str, level_resolutions(r)))}), got {len(value)}")
        for res, c in zip(level_resolutions(r), self.level_channels()):
            heads = self.level_heads(c)
            if c % heads:
                raise ConfigError(f"key 'model.channels': width {c} at {res}x{res} is not divisible by "
                                  f"its {heads} heads (max({c} // 32, min_heads={self.min_heads}))")
            if c < 8 or c % 2:
                raise ConfigError(f"key 'model.channels': width {c} at {res}x{res} must be even and >= 8 "
                                  f"(the sinusoidal position encoding needs it)")
            if int(c * self.mlp_ratio) < 1:
                raise ConfigError(f"key 'model.mlp_ratio': MLP width at {res}x{res} would be 0")

    def level_channels(self) -> list[int]:
        return list(self.channels) if self.channels is not None else default_channels(
            self.resolution, self.channel_multiplier)

    def level_heads(self, channels: int) -> int:
        return heads_for(channels, self.min_heads)


class AttentionFactory(Protocol):
    """``factory(level, resolution, dim, heads) -> module`` mapping ``[B, H, W, C] -> [B, H, W, C]``."""

    def __call__(self, level: int, resolution: int, dim: int, heads: int) -> nn.Module: ...


# ------------------------------------------------------------------------------------------ blocks

class AdaptiveInstanceNorm(nn.Module):
    """Instance norm over the tokens of each channel, then ``gamma * x + beta`` from the block's w."""

    def __init__(self, dim: int, style_dim: int):
        super().__init__()
        self.norm = nn.InstanceNorm1d(dim)
        self.style = EqualLinear(style_dim, dim * 2)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.style(w).unsqueeze(1).chunk(2, dim=2)      # [B, 1, C] each
        normed = self.norm(x.transpose(1, 2)).transpose(1, 2)         # x: [B, L, C]
        return gamma * normed + beta


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class StyleTransformerBlock(nn.Module):
    """Pre-norm transformer block with AdaIN in place of both LayerNorms (same w for both)."""

    def __init__(self, dim: int, resolution: int, attn: nn.Module, style_dim: int, mlp_ratio: float):
        super().__init__()
        self.resolution = resolution
        self.norm1 = AdaptiveInstanceNorm(dim, style_dim)
        self.attn = attn
        self.norm2 = AdaptiveInstanceNorm(dim, style_dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        r = self.resolution
        x = x + self.attn(self.norm1(x, w).view(b, r, r, c)).reshape(b, n, c)
        return x + self.mlp(self.norm2(x, w))


def sinusoidal_encoding(length: int, dim: int) -> torch.Tensor:
    """1-D sinusoidal encoding ``[length, dim]`` of positions 1..length: [sin(p*f) | cos(p*f)].

    Built in float32 with the same operations as the official (fairseq-derived) module, so the table is
    bit-identical to theirs; like the official code, callers cast it to the working dtype afterwards.
    """
    half = dim // 2
    scale = math.log(10000) / (half - 1)
    freqs = torch.exp(torch.arange(half, dtype=torch.float32) * -scale)
    angles = torch.arange(length + 1, dtype=torch.float32).unsqueeze(1) * freqs.unsqueeze(0)
    table = torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)
    if dim % 2:
        table = torch.cat([table, torch.zeros(length + 1, 1)], dim=1)
    return table[1:]                                      # row 0 is the padding position


class BilinearUpsample(nn.Module):
    """x2 bilinear upsampling of the tokens, LayerNorm, bias-free projection to the next width, + alpha*SPE.

    The 2-D position encoding has ``out_dim`` channels: the first half encodes x (varies along the
    width), the second half y. It is added as two broadcast halves instead of a materialised
    ``[H, W, C]`` grid (the same numbers, without a 128 MB buffer at 1024x1024).
    """

    def __init__(self, resolution: int, dim: int, out_dim: int):
        super().__init__()
        self.resolution, self.out_dim = resolution, out_dim
        self.alpha = nn.Parameter(torch.zeros(1))
        self.norm = nn.LayerNorm(dim)
        self.reduction = nn.Linear(dim, out_dim, bias=False)
        encoding = sinusoidal_encoding(2 * resolution, out_dim // 2)
        self.register_buffer("pos_x", encoding[None, None], persistent=False)        # [1, 1, W, C/2]
        self.register_buffer("pos_y", encoding[None, :, None], persistent=False)     # [1, H, 1, C/2]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, c = x.shape
        r = self.resolution
        x = x.transpose(1, 2).reshape(b, c, r, r)
        x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        x = x.permute(0, 2, 3, 1).reshape(b, 4 * r * r, c)
        x = self.reduction(self.norm(x)).view(b, 2 * r, 2 * r, self.out_dim)
        half = self.pos_x.shape[-1]
        x = torch.cat([x[..., :half] + self.pos_x * self.alpha,
                       x[..., half:] + self.pos_y * self.alpha], dim=-1)
        return x.view(b, 4 * r * r, self.out_dim)


class ToRGB(nn.Module):
    """Unmodulated 1x1 conv to RGB + extra bias; adds the (FIR-upsampled) running skip image."""

    def __init__(self, dim: int, upsample: bool):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))
        self.upsample = Upsample((1, 3, 3, 1)) if upsample else None
        self.conv = nn.Conv2d(dim, 3, 1)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None) -> torch.Tensor:
        out = self.conv(x) + self.bias
        if skip is not None:
            if self.upsample is not None:
                skip = self.upsample(skip)
            out = out + skip
        return out


class ConstantInput(nn.Module):
    def __init__(self, channels: int, size: int = 4):
        super().__init__()
        self.input = nn.Parameter(torch.randn(1, channels, size, size))

    def forward(self, batch: int) -> torch.Tensor:
        return self.input.repeat(batch, 1, 1, 1)


class StyleLevel(nn.Module):
    """Two blocks at one resolution, then (except at the last level) the upsampling to the next."""

    def __init__(self, blocks: list[nn.Module], upsample: nn.Module | None):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.upsample = upsample
        self.activation_checkpointing = False

    def forward(self, x: torch.Tensor, w0: torch.Tensor, w1: torch.Tensor) -> torch.Tensor:
        for block, w in zip(self.blocks, (w0, w1)):
            if self.activation_checkpointing:
                x = checkpointed(block, block, x, w)
            else:
                x = block(x, w)
        return self.upsample(x) if self.upsample is not None else x


# ------------------------------------------------------------------------------------------ generator

class TransformerGenerator(nn.Module):
    """StyleNAT/StyleSwin generator; ``attention`` builds each block's token mixer."""

    normalization = "imagenet"

    def __init__(self, cfg: TransformerGANConfig, attention: AttentionFactory):
        super().__init__()
        self.resolution = cfg.resolution
        self.z_dim = self.w_dim = cfg.style_dim
        channels = cfg.level_channels()
        resolutions = level_resolutions(cfg.resolution)
        self.n_latent = 2 * len(resolutions)
        self.num_classes = cfg.num_classes
        embed_dim = cfg.style_dim if cfg.num_classes else 0      # official embed_features = w_dim

        self.style = mapping_network(cfg.style_dim + embed_dim, cfg.style_dim, cfg.n_mlp, lr_mul=cfg.lr_mlp)
        self.input = ConstantInput(channels[0])
        self.layers = nn.ModuleList()
        for i, (res, dim) in enumerate(zip(resolutions, channels)):
            heads = cfg.level_heads(dim)
            blocks = [StyleTransformerBlock(dim, res, attention(i, res, dim, heads), cfg.style_dim, cfg.mlp_ratio)
                      for _ in range(2)]
            last = i == len(resolutions) - 1
            self.layers.append(StyleLevel(blocks, None if last else BilinearUpsample(res, dim, channels[i + 1])))
        self.to_rgbs = nn.ModuleList(
            ToRGB(channels[i + 1] if i + 1 < len(channels) else channels[i], upsample=i + 1 < len(channels))
            for i in range(len(channels)))
        self.apply(_init_weights)
        # built last, so an unconditional model draws its initial weights exactly as before
        self.label_embed = LabelEmbedding(cfg.num_classes, embed_dim) if cfg.num_classes else None

    # ---------------------------------------------------------------- contract
    def mapping(self, z: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        """z ``[B, z_dim]`` (+ labels c) -> w ``[B, n_latent, w_dim]`` (the same w in every row)."""
        return conditional_mapping(self.style, self.label_embed, z, c).unsqueeze(1).repeat(1, self.n_latent, 1)

    def synthesis(self, w: torch.Tensor) -> torch.Tensor:
        """w ``[B, n_latent, w_dim]`` (or ``[B, w_dim]``) -> image ``[B, 3, R, R]``, ImageNet-normalised."""
        if w.dim() == 2:
            w = w.unsqueeze(1).expand(-1, self.n_latent, -1)
        b = w.shape[0]
        x = self.input(b)
        x = x.flatten(2).transpose(1, 2)                       # [B, 16, C] tokens, row-major
        skip = None
        for i, (level, to_rgb) in enumerate(zip(self.layers, self.to_rgbs)):
            x = level(x, w[:, 2 * i], w[:, 2 * i + 1])
            side = int(math.isqrt(x.shape[1]))
            skip = to_rgb(x.transpose(1, 2).reshape(b, x.shape[2], side, side), skip)
        return skip

    def forward(self, z: torch.Tensor, c: torch.Tensor | None = None, psi: float = 1.0,
                w_avg: torch.Tensor | None = None) -> torch.Tensor:
        return self.synthesis(truncate(self.mapping(z, c), psi, w_avg))

    # ---------------------------------------------------------------- training knobs
    @property
    def activation_checkpointing(self) -> bool:
        return all(level.activation_checkpointing for level in self.layers)

    @activation_checkpointing.setter
    def activation_checkpointing(self, enabled: bool) -> None:
        """Recompute each block in backward instead of storing its activations (the trainer sets this)."""
        for level in self.layers:
            level.activation_checkpointing = bool(enabled)

    def set_activation_checkpointing(self, enabled: bool) -> None:
        """The trainer's hook (see :mod:`natgan.models.checkpointing`): one block at a time."""
        self.activation_checkpointing = enabled


def trunc_normal_init_(tensor: torch.Tensor, std: float = 0.02) -> torch.Tensor:
    """The official ``trunc_normal_(std=0.02)`` (timm; absolute bounds +-2). The bounds sit at 100 sigma,
    beyond anything a normal sampler returns, so a plain normal draw has the same distribution at a
    fraction of the cost (inverse-CDF sampling of 49 M weights takes seconds on a small CPU)."""
    with torch.no_grad():
        return tensor.normal_(0.0, std)


def _init_weights(m: nn.Module) -> None:
    """Official initialisation: Linear trunc-normal(0.02)/0, LayerNorm 1/0, Conv2d xavier(gain 0.02)/0."""
    if isinstance(m, nn.Linear):
        trunc_normal_init_(m.weight)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)
    elif isinstance(m, nn.Conv2d):
        nn.init.xavier_normal_(m.weight, gain=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)


def build_pair(cfg: TransformerGANConfig, attention: Callable[..., nn.Module]) -> tuple[nn.Module, nn.Module]:
    """Generator with the given attention + the shared SWAGAN-style wavelet discriminator."""
    from natgan.models.wavelet_discriminator import WaveletDiscriminator

    generator = TransformerGenerator(cfg, attention)
    discriminator = WaveletDiscriminator(cfg.resolution, channel_multiplier=cfg.d_channel_multiplier,
                                         channels=cfg.d_channels, sn=cfg.d_sn, num_classes=cfg.num_classes)
    return generator, discriminator
