"""GANformer (Hudson & Zitnick, "Generative Adversarial Transformers", ICML 2021), FFHQ-256 default.

Architecture as the official PyTorch code (dorarad/gansformer ``pytorch_version``) runs it with
``--ganformer-default --dataset ffhq``:

* latents: k = 16 local + 1 global, 32 dims each (z is their concatenation, 544 numbers);
* mapping: global and local latents through separate 8-layer / 32-wide MLPs built as 4 residual units +
  an output layer (lr multiplier 0.01); the local MLP is shared by all components and preceded, in each
  unit, by self-attention among the local latents; a learned latent position embedding is shared by the
  mapping attention and every synthesis attention;
* synthesis: StyleGAN2 "resnet" generator (4x4 constant, per level conv0 (x2 up) -> conv1 plus a 1x1
  upsampled skip, both branches scaled by sqrt(1/2)); every conv is modulated by the *global* latent and,
  at 4..128 px (official ``g_end_res=8`` is exclusive), followed by bipartite attention of the image over
  the 16 local latents (see :mod:`natgan.models.ganformer_attention`), then noise, bias, leaky ReLU; the
  256 block has no attention; the last block adds ``conv_last`` (modulated 3x3, no bias/activation/noise,
  kept from the TF code) before its single ToRGB;
* discriminator: the StyleGAN2 residual D (no attention, as in the released models).

``attention`` picks the form: ``"duplex_kmeans"`` (default) is what the official code runs and what the
released FFHQ model (FID 7.42, the number StyleNAT's table cites) was trained with; ``"duplex"`` is the
paper's §3.1.2 with latent keys updated from the image; ``"simplex"`` is §3.1.1.

Contract mapping: ``w`` rows are synthesis layers (15 at 256), each row the 17 per-component latents
concatenated (17*32 = 544), so the trainer's style mixing swaps layers for all components together,
exactly the official style mixing. Images live in [-1, 1].
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Callable, Literal, Optional

import torch
import torch.nn.functional as F
from torch import nn

from natgan.config import option
from natgan.errors import ConfigError
from natgan.models.checkpointing import checkpointed
from natgan.models.conditioning import LabelEmbedding, check_unconditional
from natgan.models.ganformer_attention import ImageLatentAttention, LatentSelfAttention
from natgan.models.layers import SQRT2, EqualConv2d, EqualLinear, FusedLeakyReLU, Upsample
from natgan.models.registry import register_model
from natgan.models.stylegan2_layers import (NOISE_MODES, ConstantInput, ModulatedConv2d, NoiseInjection,
                                            StyleGAN2Discriminator, ToRGB, channels_for, check_synthesis_config,
                                            check_width_list, make_noise, width_table)
from natgan.models.truncation import truncate

SQRT_HALF = math.sqrt(0.5)


@dataclass
class GANformerConfig:
    """GANformer hyper-parameters; defaults = official ``--ganformer-default --dataset ffhq`` at 256."""

    resolution: int = option(256, min=8, help="output side (power of two)")
    components: int = option(16, min=1, help="local latents (k-1); one global latent is always added")
    latent_dim: int = option(32, min=4, help="z/w size per component (official: 512 / 16)")
    attention: Literal["simplex", "duplex", "duplex_kmeans"] = option(
        "duplex_kmeans", help="duplex_kmeans = official code default (learned centroids); duplex = paper "
                              "§3.1.2 (keys updated from the image); simplex = paper §3.1.1")
    kmeans_iters: int = option(1, min=1, help="duplex: key updates per layer; duplex_kmeans: centroid "
                                              "iterations (official 1 = learned centroids only)")
    heads: int = option(1, min=1, help="attention heads (official default 1)")
    attention_dropout: float = option(0.12, min=0.0, max=1.0, help="split half cell / half latent dropout")
    integration: Literal["mul", "add", "both"] = option("mul", help="mul = official default, both = paper Eq. 7")
    norm: Literal["layer", "instance", "none"] = option("layer", help="feature normalisation before integration")
    latent_pos: bool = option(True, help="learned latent position embeddings (official use_pos)")
    attn_min_res: int = option(4, min=4, help="lowest resolution with attention")
    attn_max_res: int = option(128, min=4, help="highest resolution with attention (official end_res 8 is exclusive)")
    mapping_layers: int = option(8, min=1, help="mapping depth (resnet: (n+1)//2 residual units + output FC)")
    mapping_resnet: bool = option(True, help="residual mapping units (official mapping_resnet)")
    mapping_attention: bool = option(True, help="self-attention among local latents in the mapping (ltnt2ltnt)")
    lr_mlp: float = option(0.01, min=0.0, help="mapping learning-rate multiplier")
    channel_multiplier: int = option(2, min=1, help="widths min(channel_max, 16384*m/res) (official 32768/res)")
    channel_max: int = option(512, min=1, help="width cap (lower it for tiny test models)")
    channels: Optional[list[int]] = option(None, min=1, help="explicit width per level 4..resolution for G and D "
                                                             "(overrides channel_multiplier/channel_max; imports "
                                                             "of official files store it)")
    d_channels: Optional[list[int]] = option(None, min=1, help="explicit D width per level 4..resolution "
                                                               "(none = the generator's)")
    conv_last: bool = option(True, help="extra modulated 3x3 conv before the final ToRGB (official code)")
    blur_kernel: list[int] = option([1, 3, 3, 1], help="FIR taps for up/down-sampling")
    mbstd_group: int = option(4, min=0, help="discriminator minibatch-stddev group size (0 = the whole "
                                             "minibatch, the official mbstd_group_size = None)")
    num_classes: int = option(0, min=0, help="class-conditional with this many classes (0 = unconditional): the "
                                             "label embedding joins the global latent, D projects on the label")

    def validate(self) -> None:
        check_synthesis_config(self.resolution, self.blur_kernel)
        if self.num_classes and self.mapping_resnet:
            raise ConfigError("key 'model.mapping_resnet': a class-conditional GANformer needs "
                              "model.mapping_resnet = false (the label embedding widens the global mapping "
                              "input, which a residual unit cannot add to; the official code asserts the same)")
        if self.latent_dim % 4:
            raise ConfigError(f"key 'model.latent_dim': expected a multiple of 4 (2-D sinusoid), got {self.latent_dim}")
        check_width_list("channels", self.channels, self.resolution)
        check_width_list("d_channels", self.d_channels, self.resolution)
        for res in range(2, int(math.log2(self.resolution)) + 1):
            width = self.widths()(2 ** res)
            if self._has_attention(2 ** res) and width % self.heads:
                raise ConfigError(f"key 'model.heads': {self.heads} does not divide the {width} channels "
                                  f"at {2 ** res}x{2 ** res}")
        if self.mapping_attention and self.latent_dim % self.heads:
            raise ConfigError(f"key 'model.heads': {self.heads} does not divide latent_dim {self.latent_dim}")

    def widths(self) -> Callable[[int], int]:
        """``res -> width`` of G (and D unless ``d_channels``): ``channels``, else the official rule."""
        rule = functools.partial(channels_for, multiplier=self.channel_multiplier, channel_max=self.channel_max)
        return width_table(self.channels, self.resolution, rule)

    def _has_attention(self, res: int) -> bool:
        return self.attn_min_res <= res <= self.attn_max_res


# ----------------------------------------------------------------------------------------- mapping

class ResidualFC(nn.Module):
    """Two FCs (lrelu, linear) + identity, then leaky ReLU (official mapping ``ResnetLayer``)."""

    def __init__(self, dim: int, lr_mul: float):
        super().__init__()
        self.fc0 = EqualLinear(dim, dim, lr_mul=lr_mul, activation="fused_lrelu")
        self.fc1 = EqualLinear(dim, dim, lr_mul=lr_mul)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(self.fc1(self.fc0(x)) + residual, 0.2)


class LatentMLP(nn.Module):
    """Per-latent MLP (weights shared across latents), optionally with latent self-attention per unit."""

    def __init__(self, dim: int, num_layers: int, resnet: bool, lr_mul: float,
                 attention: dict | None = None, in_dim: int | None = None):
        super().__init__()
        units = (num_layers + 1) // 2 if resnet else num_layers
        self.resnet = resnet
        self.layers = nn.ModuleList(
            ResidualFC(dim, lr_mul) if resnet else EqualLinear(in_dim or dim if i == 0 else dim, dim, lr_mul=lr_mul,
                                                               activation="fused_lrelu")
            for i in range(units))
        self.attention = nn.ModuleList(LatentSelfAttention(dim, **attention) for _ in range(units)) \
            if attention is not None else None
        self.out = EqualLinear(dim, dim, lr_mul=lr_mul, activation="fused_lrelu")

    def forward(self, x: torch.Tensor, pos: torch.Tensor | None = None) -> torch.Tensor:
        """``x [B, m, d]``; the FCs see ``[B*m, d]`` (their fused bias/activation expects 2-D input)."""
        b, m, d = x.shape
        x = x.reshape(b * m, d)
        for i, layer in enumerate(self.layers):
            residual = x
            if self.attention is not None:
                x = self.attention[i](x.view(b, m, d), pos).reshape(b * m, d)
            x = layer(x, residual) if self.resnet else layer(x)
        x = self.out(x)
        return x.view(b, m, x.shape[-1])


def normalize_2nd_moment(x: torch.Tensor) -> torch.Tensor:
    """Unit RMS over every non-batch dim (local latents are normalised jointly, as the official code)."""
    dims = tuple(range(1, x.ndim))
    return x * torch.rsqrt(x.square().mean(dim=dims, keepdim=True) + 1e-8)


class GANformerMapping(nn.Module):
    """``z [B, k*d] -> [B, k, d]``: local latents via a shared MLP with latent attention, global via its own.

    Class-conditional: the normalised label embedding (width d, official ``embed_dim = z_dim``) is
    concatenated with the normalised global latent, whose MLP then takes 2d inputs (official code)."""

    def __init__(self, cfg: GANformerConfig):
        super().__init__()
        self.k, self.d = cfg.components + 1, cfg.latent_dim
        embed_dim = cfg.latent_dim if cfg.num_classes else 0
        self.global_mlp = LatentMLP(cfg.latent_dim, cfg.mapping_layers, cfg.mapping_resnet, cfg.lr_mlp,
                                    in_dim=cfg.latent_dim + embed_dim)
        attention = dict(heads=cfg.heads, dropout=cfg.attention_dropout, use_pos=cfg.latent_pos) \
            if cfg.mapping_attention else None
        self.local_mlp = LatentMLP(cfg.latent_dim, cfg.mapping_layers, cfg.mapping_resnet, cfg.lr_mlp, attention)
        # built last, so an unconditional model draws its initial weights exactly as before
        self.label_embed = LabelEmbedding(cfg.num_classes, embed_dim) if cfg.num_classes else None

    def forward(self, z: torch.Tensor, pos: torch.Tensor | None, c: torch.Tensor | None = None) -> torch.Tensor:
        z = z.view(z.shape[0], self.k, self.d)
        local, glob = normalize_2nd_moment(z[:, :-1]), normalize_2nd_moment(z[:, -1:])
        if self.label_embed is None:
            check_unconditional(c)
        else:
            glob = torch.cat([glob, self.label_embed(c).to(glob.dtype).unsqueeze(1)], dim=2)
        return torch.cat([self.local_mlp(local, pos), self.global_mlp(glob)], dim=1)


# --------------------------------------------------------------------------------------- synthesis

class GANformerLayer(nn.Module):
    """Modulated conv (style = global latent) -> [attention over local latents] -> noise -> bias+lrelu."""

    def __init__(self, in_ch: int, out_ch: int, cfg: GANformerConfig, resolution: int, upsample: bool = False,
                 gain: float = 1.0, attention: bool = False, plain: bool = False):
        super().__init__()
        self.conv = ModulatedConv2d(in_ch, out_ch, 3, cfg.latent_dim, upsample=upsample, blur_kernel=cfg.blur_kernel)
        self.attention = ImageLatentAttention(
            out_ch, cfg.latent_dim, cfg.components, resolution, mode=cfg.attention, heads=cfg.heads,
            dropout=cfg.attention_dropout, integration=cfg.integration, norm=cfg.norm, use_pos=cfg.latent_pos,
            kmeans_iters=cfg.kmeans_iters) if attention else None
        self.plain = plain  # conv_last: no noise, no bias, no activation
        if not plain:
            self.noise = NoiseInjection()
            self.register_buffer("noise_const", torch.randn(1, 1, resolution, resolution))
            self.activate = FusedLeakyReLU(out_ch, gain=SQRT2 * gain)

    def forward(self, x: torch.Tensor, w: torch.Tensor, pos: torch.Tensor | None, noise_mode: str) -> torch.Tensor:
        x = self.conv(x, w[:, -1])
        if self.attention is not None:
            x = self.attention(x, w[:, :-1], pos)
        if self.plain:
            return x
        x = self.noise(x, make_noise(x.shape[0], x.shape[-1], noise_mode, self.noise_const))
        return self.activate(x)


class GANformerBlock(nn.Module):
    """One resolution of the resnet synthesis network; ``num_ws`` rows of w are read (and the last block's
    ToRGB reads one more)."""

    def __init__(self, in_ch: int, out_ch: int, resolution: int, cfg: GANformerConfig, is_last: bool):
        super().__init__()
        attn = cfg._has_attention(resolution)
        self.stem = in_ch == 0
        if self.stem:
            self.const = ConstantInput(out_ch, resolution)
        else:
            self.conv0 = GANformerLayer(in_ch, out_ch, cfg, resolution, upsample=True, attention=attn)
            self.skip = EqualConv2d(in_ch, out_ch, 1, bias=False)
            self.skip_up = Upsample(cfg.blur_kernel)
        self.conv1 = GANformerLayer(out_ch, out_ch, cfg, resolution, gain=1.0 if self.stem else SQRT_HALF,
                                    attention=attn)
        self.num_ws = 1 if self.stem else 2
        self.conv_last = None
        self.torgb = None
        if is_last:
            if cfg.conv_last:
                self.conv_last = GANformerLayer(out_ch, out_ch, cfg, resolution, plain=True)
                self.num_ws += 1
            self.torgb = ToRGB(out_ch, cfg.latent_dim, upsample=False)

    def forward(self, x: torch.Tensor | None, ws: torch.Tensor, pos: torch.Tensor | None, noise_mode: str,
                batch: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``ws [B, rows, k, d]`` -> (features, rgb or None)."""
        if self.stem:
            x = self.conv1(self.const(batch), ws[:, 0], pos, noise_mode)
        else:
            skip = self.skip_up(self.skip(x)) * SQRT_HALF  # 1x1 and FIR upsampling commute: conv at low res
            x = self.conv0(x, ws[:, 0], pos, noise_mode)
            x = self.conv1(x, ws[:, 1], pos, noise_mode) + skip
        if self.torgb is None:
            return x, None
        i = self.num_ws - 1
        if self.conv_last is not None:
            x = self.conv_last(x, ws[:, i], pos, noise_mode)
        return x, self.torgb(x, ws[:, i + 1, -1])


class GANformerGenerator(nn.Module):
    """Mapping + resnet synthesis with bipartite attention; follows the registry's generator contract."""

    normalization = "symmetric"

    def __init__(self, cfg: GANformerConfig):
        super().__init__()
        self.cfg = cfg
        self.resolution = cfg.resolution
        self.k, self.d = cfg.components + 1, cfg.latent_dim
        self.z_dim = self.w_dim = self.k * self.d
        self.num_classes = cfg.num_classes
        self.noise_mode = "random"
        self.latent_pos = nn.Parameter(torch.rand(cfg.components, cfg.latent_dim))
        self.mapping_network = GANformerMapping(cfg)
        log_res = int(math.log2(cfg.resolution))
        self.blocks = nn.ModuleList()
        in_ch = 0
        for i in range(2, log_res + 1):
            out_ch = cfg.widths()(2 ** i)
            self.blocks.append(GANformerBlock(in_ch, out_ch, 2 ** i, cfg, is_last=i == log_res))
            in_ch = out_ch
        self.n_latent = sum(b.num_ws for b in self.blocks) + 1  # + the final ToRGB
        self.activation_checkpointing = False

    def set_activation_checkpointing(self, enabled: bool) -> None:
        """Recompute each resolution block in backward; noise is redrawn identically."""
        self.activation_checkpointing = bool(enabled)

    @property
    def _pos(self) -> torch.Tensor | None:
        return self.latent_pos if self.cfg.latent_pos else None

    # ------------------------------------------------------------------ contract
    def mapping(self, z: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        """``z [B, k*d]`` (+ labels c) -> ``w [B, n_latent, k*d]``: the k mapped latents, broadcast to every layer."""
        w = self.mapping_network(z, self._pos, c)
        return w.reshape(w.shape[0], 1, self.w_dim).repeat(1, self.n_latent, 1)

    def synthesis(self, w: torch.Tensor, noise_mode: str | None = None) -> torch.Tensor:
        """``w [B, n_latent, k*d]`` -> image ``[B, 3, R, R]`` in [-1, 1]."""
        if w.ndim != 3 or w.shape[1] != self.n_latent or w.shape[2] != self.w_dim:
            raise ValueError(f"w must be [B, {self.n_latent}, {self.w_dim}], got {list(w.shape)}")
        mode = noise_mode or self.noise_mode
        if mode not in NOISE_MODES:
            raise ValueError(f"noise_mode must be one of {NOISE_MODES}, got {mode!r}")
        ws = w.view(w.shape[0], self.n_latent, self.k, self.d)
        x, row, rgb = None, 0, None
        for block in self.blocks:
            args = (x, ws[:, row:row + block.num_ws + (1 if block.torgb is not None else 0)], self._pos, mode,
                    w.shape[0])
            x, rgb = checkpointed(block, block, *args) if self.activation_checkpointing and x is not None \
                else block(*args)
            row += block.num_ws
        return rgb

    def forward(self, z: torch.Tensor, c: torch.Tensor | None = None, psi: float = 1.0,
                w_avg: torch.Tensor | None = None) -> torch.Tensor:
        return self.synthesis(truncate(self.mapping(z, c), psi, w_avg))

    def attention_layers(self) -> list[ImageLatentAttention]:
        """Every image<-latent attention module, coarse to fine (what ``visualize`` captures)."""
        return [m for m in self.modules() if isinstance(m, ImageLatentAttention)]


@register_model("ganformer", config=GANformerConfig, paper_params_g=None,
                description="GANformer: image<->16+1 latents bipartite attention in a StyleGAN2 resnet G "
                            "(official k-means duplex; paper simplex/duplex via model.attention)")
def build(cfg: GANformerConfig) -> tuple[nn.Module, nn.Module]:
    generator = GANformerGenerator(cfg)
    d_widths = width_table(cfg.d_channels, cfg.resolution, cfg.widths())
    discriminator = StyleGAN2Discriminator(cfg.resolution, d_widths, cfg.blur_kernel, cfg.mbstd_group,
                                           num_classes=cfg.num_classes, projection="direct")
    return generator, discriminator
