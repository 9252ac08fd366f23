"""StyleGAN2 (Karras et al., CVPR 2020), config-f generator and residual discriminator.

The baseline of every table StyleNAT, StyleSwin and HiT report: at 256x256 with channel multiplier 2
(512 channels up to 64x64, 256 at 128, 128 at 256), an 8-layer 512-wide mapping network (lr multiplier
0.01) and style dim 512, the generator has 30.03 M parameters (StyleNAT Table 1 / StyleSwin Table 1).

Synthesis: learned 4x4 constant -> per resolution [modulated 3x3 conv (x2 up) -> noise -> bias+lrelu] x 2,
each level adding its modulated 1x1 ToRGB (no demodulation) to the FIR-upsampled RGB of the level below.
``w`` is ``[B, n_latent, 512]`` with ``n_latent = 2 log2(R) - 2``: row ``i`` styles conv ``i`` and the ToRGB
of a level reads the row after its second conv (rosinality's indexing), so style mixing swaps rows.
Images live in [-1, 1] (``normalization = "symmetric"``).

The discriminator is config-f's residual one unless ``d_architecture`` picks stylegan2-ada-pytorch's ``orig``
(its ``--cfg=cifar``) or ``skip`` blocks; ``mbstd_channels``, ``conv_clamp`` and the conditional D's label
mapping (``d_mapping_layers``, ``d_mapping_lr``) are there so that every NVlabs snapshot's settings have a
place in the config. Their defaults build the models exactly as before.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Literal, Optional, Sequence

import torch
from torch import nn

from natgan.config import option
from natgan.errors import ConfigError
from natgan.models.checkpointing import checkpointed
from natgan.models.conditioning import LabelEmbedding, conditional_mapping
from natgan.models.layers import FusedLeakyReLU, mapping_network
from natgan.models.registry import register_model
from natgan.models.stylegan2_layers import (NOISE_MODES, ConstantInput, ModulatedConv2d, NoiseInjection,
                                            StyleGAN2Discriminator, ToRGB, check_synthesis_config, check_width_list,
                                            make_noise, rosinality_channels, width_table)
from natgan.models.truncation import truncate


@dataclass
class StyleGAN2Config:
    """StyleGAN2 hyper-parameters; the defaults are config-f at 256 (30.03 M G parameters)."""

    resolution: int = option(256, min=8, help="output side (power of two)")
    style_dim: int = option(512, min=1, help="z and w size")
    n_mlp: int = option(8, min=1, help="mapping network depth")
    lr_mlp: float = option(0.01, min=0.0, help="mapping network learning-rate multiplier")
    channel_multiplier: int = option(2, min=1, help="widths 512 up to 32 px, then 16384*m/res uncapped "
                                                    "(rosinality's table); 2 = config-f")
    channel_max: Optional[int] = option(None, min=1, help="width cap (none = the reference table; set it "
                                                          "for tiny test models)")
    channels: Optional[list[int]] = option(None, min=1, help="explicit width per level 4..resolution for G and D "
                                                             "(overrides channel_multiplier/channel_max; imports "
                                                             "of NVlabs files store it)")
    d_channels: Optional[list[int]] = option(None, min=1, help="explicit D width per level 4..resolution "
                                                               "(none = the generator's)")
    blur_kernel: list[int] = option([1, 3, 3, 1], help="FIR taps for up/down-sampling")
    mbstd_group: int = option(4, min=0, help="discriminator minibatch-stddev group size (0 = the whole "
                                             "minibatch, the official mbstd_group_size = None)")
    mbstd_channels: int = option(1, min=0, help="minibatch-stddev features (official mbstd_num_channels; "
                                                "0 = no minibatch-stddev head)")
    d_architecture: Literal["resnet", "orig", "skip"] = option(
        "resnet", help="discriminator blocks as stylegan2-ada-pytorch's: resnet = config-e/f residual, orig = "
                       "plain conv pairs (its --cfg=cifar), skip = a fromRGB of the down-sampled image per level")
    num_classes: int = option(0, min=0, help="class-conditional with this many classes (0 = unconditional)")
    d_mapping_layers: int = option(8, min=0, help="conditional D: label mapping layers after the embedding "
                                                  "(stylegan2-ada-pytorch 8; its TensorFlow version 0)")
    d_mapping_lr: float = option(0.01, min=0.0, help="conditional D: the label mapping's lr multiplier "
                                                     "(stylegan2-ada-pytorch 0.01; its TensorFlow version 0.1)")
    conv_clamp: Optional[float] = option(None, min=0.0, help="clamp G and D conv activations to ±X as "
                                                             "stylegan2-ada-pytorch's conv_clamp (its configs: 256 "
                                                             "with mixed precision); none = no clamp")

    def validate(self) -> None:
        check_synthesis_config(self.resolution, self.blur_kernel)
        check_width_list("channels", self.channels, self.resolution)
        check_width_list("d_channels", self.d_channels, self.resolution)
        if not self.d_mapping_lr > 0:
            raise ConfigError(f"key 'model.d_mapping_lr': expected a multiplier > 0, got {self.d_mapping_lr}")
        if self.conv_clamp is not None and not self.conv_clamp > 0:
            raise ConfigError(f"key 'model.conv_clamp': expected a bound > 0 or none, got {self.conv_clamp}")
        d_width = stylegan2_d_widths(self)(4)
        if self.mbstd_channels and d_width % self.mbstd_channels:
            raise ConfigError(f"key 'model.mbstd_channels': {self.mbstd_channels} does not divide the "
                              f"discriminator's {d_width} channels at 4x4")


def stylegan2_widths(cfg: StyleGAN2Config):
    """``res -> width`` for G (and D unless ``d_channels``): ``channels`` when given, else rosinality's table
    (``channel_multiplier`` 4 gives 1024 at 64 px)."""
    rule = functools.partial(rosinality_channels, multiplier=cfg.channel_multiplier, channel_max=cfg.channel_max)
    return width_table(cfg.channels, cfg.resolution, rule)


def stylegan2_d_widths(cfg: StyleGAN2Config):
    """``res -> width`` for D: ``d_channels`` when given, else the generator's table."""
    return width_table(cfg.d_channels, cfg.resolution, stylegan2_widths(cfg))


class StyledConv(nn.Module):
    """Modulated 3x3 conv (optionally x2 up) -> noise -> bias + leaky ReLU."""

    def __init__(self, in_ch: int, out_ch: int, style_dim: int, upsample: bool = False,
                 blur_kernel: Sequence[float] = (1, 3, 3, 1), clamp: float | None = None):
        super().__init__()
        self.conv = ModulatedConv2d(in_ch, out_ch, 3, style_dim, upsample=upsample, blur_kernel=blur_kernel)
        self.noise = NoiseInjection()
        self.activate = FusedLeakyReLU(out_ch, clamp=clamp)

    def forward(self, x: torch.Tensor, style: torch.Tensor, noise: torch.Tensor | None) -> torch.Tensor:
        return self.activate(self.noise(self.conv(x, style), noise))


def _resolution_level(up: StyledConv, conv: StyledConv, to_rgb: nn.Module, x: torch.Tensor, skip: torch.Tensor,
                      w: torch.Tensor, const: list[torch.Tensor], mode: str) -> tuple[torch.Tensor, torch.Tensor]:
    """One resolution of the synthesis network: x2 styled conv, styled conv, ToRGB into the skip image."""
    b, res = x.shape[0], x.shape[-1] * 2
    x = up(x, w[:, 0], make_noise(b, res, mode, const[0]))
    x = conv(x, w[:, 1], make_noise(b, res, mode, const[1]))
    return x, to_rgb(x, w[:, 2], skip)


class StyleGAN2Generator(nn.Module):
    """Mapping network + synthesis network, following the registry's generator contract."""

    normalization = "symmetric"

    def __init__(self, cfg: StyleGAN2Config):
        super().__init__()
        self.resolution = cfg.resolution
        self.z_dim = self.w_dim = cfg.style_dim
        self.log_res = int(math.log2(cfg.resolution))
        self.n_latent = 2 * self.log_res - 2
        self.noise_mode = "random"
        ch = {2 ** i: stylegan2_widths(cfg)(2 ** i) for i in range(2, self.log_res + 1)}

        self.num_classes = cfg.num_classes
        embed_dim = cfg.style_dim if cfg.num_classes else 0      # official embed_features = w_dim
        self.style = mapping_network(cfg.style_dim + embed_dim, cfg.style_dim, cfg.n_mlp, cfg.lr_mlp)
        self.input = ConstantInput(ch[4])
        clamp = cfg.conv_clamp
        self.conv1 = StyledConv(ch[4], ch[4], cfg.style_dim, blur_kernel=cfg.blur_kernel, clamp=clamp)
        self.to_rgb1 = ToRGB(ch[4], cfg.style_dim, upsample=False, clamp=clamp)

        self.activation_checkpointing = False
        self.convs, self.to_rgbs = nn.ModuleList(), nn.ModuleList()
        self.noises = nn.Module()
        self.noises.register_buffer("noise_0", torch.randn(1, 1, 4, 4))
        in_ch = ch[4]
        for i in range(3, self.log_res + 1):
            res = 2 ** i
            self.convs.append(StyledConv(in_ch, ch[res], cfg.style_dim, upsample=True, blur_kernel=cfg.blur_kernel,
                                         clamp=clamp))
            self.convs.append(StyledConv(ch[res], ch[res], cfg.style_dim, blur_kernel=cfg.blur_kernel, clamp=clamp))
            self.to_rgbs.append(ToRGB(ch[res], cfg.style_dim, blur_kernel=cfg.blur_kernel, clamp=clamp))
            for j in (1, 2):
                self.noises.register_buffer(f"noise_{2 * (i - 3) + j}", torch.randn(1, 1, res, res))
            in_ch = ch[res]
        # built last, so an unconditional model draws its initial weights exactly as before
        self.label_embed = LabelEmbedding(cfg.num_classes, embed_dim) if cfg.num_classes else None

    # ------------------------------------------------------------------ contract
    def mapping(self, z: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        """``z [B, style_dim]`` (+ labels c) -> ``w [B, n_latent, style_dim]`` (one w broadcast to every layer)."""
        return conditional_mapping(self.style, self.label_embed, z, c).unsqueeze(1).repeat(1, self.n_latent, 1)

    def synthesis(self, w: torch.Tensor, noise_mode: str | None = None) -> torch.Tensor:
        """``w [B, n_latent, style_dim]`` (or ``[B, style_dim]``) -> image ``[B, 3, R, R]`` in [-1, 1]."""
        if w.ndim == 2:
            w = w.unsqueeze(1).expand(-1, self.n_latent, -1)
        if w.ndim != 3 or w.shape[1] != self.n_latent or w.shape[2] != self.w_dim:
            raise ValueError(f"w must be [B, {self.n_latent}, {self.w_dim}], got {list(w.shape)}")
        mode = noise_mode or self.noise_mode
        if mode not in NOISE_MODES:
            raise ValueError(f"noise_mode must be one of {NOISE_MODES}, got {mode!r}")
        const = [getattr(self.noises, f"noise_{i}") for i in range(2 * self.log_res - 3)]

        x = self.input(w.shape[0])
        b = w.shape[0]
        x = self.conv1(x, w[:, 0], make_noise(b, 4, mode, const[0]))
        skip = self.to_rgb1(x, w[:, 1])
        i = 1
        for up, conv, to_rgb in zip(self.convs[::2], self.convs[1::2], self.to_rgbs):
            args = (up, conv, to_rgb, x, skip, w[:, i:i + 3], const[i:i + 2], mode)
            x, skip = checkpointed(self, _resolution_level, *args) if self.activation_checkpointing \
                else _resolution_level(*args)
            i += 2
        return skip

    def set_activation_checkpointing(self, enabled: bool) -> None:
        """Recompute each resolution (two styled convs + ToRGB) in backward; noise is redrawn identically."""
        self.activation_checkpointing = bool(enabled)

    def forward(self, z: torch.Tensor, c: torch.Tensor | None = None, psi: float = 1.0,
                w_avg: torch.Tensor | None = None) -> torch.Tensor:
        return self.synthesis(truncate(self.mapping(z, c), psi, w_avg))


@register_model("stylegan2", config=StyleGAN2Config, paper_params_g=30.03, paper_img_per_s=95.79,
                description="StyleGAN2 config-f: modulated convs, noise, skip ToRGB; residual D")
def build(cfg: StyleGAN2Config) -> tuple[nn.Module, nn.Module]:
    generator = StyleGAN2Generator(cfg)
    discriminator = StyleGAN2Discriminator(cfg.resolution, stylegan2_d_widths(cfg), cfg.blur_kernel, cfg.mbstd_group,
                                           num_classes=cfg.num_classes, architecture=cfg.d_architecture,
                                           mbstd_channels=cfg.mbstd_channels, conv_clamp=cfg.conv_clamp,
                                           label_mapping=(cfg.d_mapping_layers, cfg.d_mapping_lr))
    return generator, discriminator
