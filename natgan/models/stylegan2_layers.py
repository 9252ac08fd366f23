"""StyleGAN2 pieces shared by the `stylegan2` and `ganformer` models.

Modulated convolution (style-scaled input channels, optional weight demodulation), per-pixel noise
injection, the modulated ToRGB with FIR-upsampled skip, and the StyleGAN2 discriminator (residual, or
stylegan2-ada-pytorch's ``orig`` / ``skip`` blocks).
Parameter names and shapes follow rosinality's stylegan2-pytorch (``conv.weight`` is ``[1, out, in,
k, k]``, ``conv.modulation``, ``noise.weight``, ``activate.bias``) so its checkpoints could be imported
key-for-key; the arithmetic is Karras et al. 2020 (Analyzing and Improving the Image Quality of StyleGAN).
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from natgan.errors import ConfigError
from natgan.models.conditioning import D_MAPPING_LAYERS, DirectProjection, ProjectionHead, project_logits
from natgan.models.layers import (Blur, ConvLayer, Downsample, EqualLinear, ResBlock, Upsample,
                                  minibatch_stddev)

NOISE_MODES = ("random", "const", "none")


def channels_for(resolution: int, multiplier: int, channel_max: int = 512) -> int:
    """Feature width at ``resolution``: ``min(channel_max, 16384 * multiplier / resolution)``.

    The StyleGAN2-ADA rule (``channel_base = 16384 * multiplier``, capped at ``channel_max``) that GANformer's
    official code uses; with ``multiplier=2`` this is config-f (512 up to 64x64, 256 at 128, 128 at 256).
    ``channel_max`` below 512 builds narrow test models.
    """
    return max(1, min(channel_max, 16384 * multiplier // resolution))


def width_table(channels: Sequence[int] | None, resolution: int, rule: Callable[[int], int]) -> Callable[[int], int]:
    """``res -> width``: the explicit per-level list ``channels`` (4x4 first) when given, else ``rule``.

    Why a list and not only ``channel_base``/``channel_max``: the official constructors accept any pair (and
    GANformer's ``fmaps``), and G and D may be built from different pairs, so the one form that expresses every
    table they can produce is the widths themselves, as read from a checkpoint's weight shapes.
    """
    if channels is None:
        return rule
    table = {4 * 2 ** i: int(c) for i, c in enumerate(channels)}
    return lambda res: table[res]


def check_width_list(key: str, channels: Sequence[int] | None, resolution: int) -> None:
    """One width per level 4, 8, ..., ``resolution`` (or none at all)."""
    levels = int(math.log2(resolution)) - 1
    if channels is not None and len(channels) != levels:
        names = ", ".join(str(4 * 2 ** i) for i in range(levels))
        raise ConfigError(f"key 'model.{key}': expected {levels} widths (one per level {names}), "
                          f"got {len(channels)}")


def rosinality_channels(resolution: int, multiplier: int, channel_max: int | None = None) -> int:
    """Feature width at ``resolution`` by rosinality's table (StyleGAN2 here follows its layer names).

    512 up to 32x32, then ``16384 * multiplier / resolution`` with no cap: ``multiplier=4`` gives 1024
    channels at 64x64, where :func:`channels_for` would stop at 512. For multipliers 1 and 2 both tables
    agree. ``channel_max`` (none by default) caps the widths to build narrow test models.
    """
    width = 512 if resolution <= 32 else 16384 * multiplier // resolution
    return max(1, width if channel_max is None else min(channel_max, width))


class ModulatedConv2d(nn.Module):
    """Conv whose input channels are scaled per sample by ``affine(w)`` (styles), then optionally demodulated.

    Computed as modulate-activations -> shared-weight conv -> scale outputs by the demodulation
    coefficients, which equals the per-sample-weight (grouped) form exactly but lets cuDNN use one
    weight for the whole batch. ``upsample=True`` is a stride-2 transposed conv followed by the FIR blur.
    """

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, style_dim: int, demodulate: bool = True,
                 upsample: bool = False, blur_kernel: Sequence[float] = (1, 3, 3, 1)):
        super().__init__()
        self.in_ch, self.out_ch, self.kernel_size = in_ch, out_ch, kernel_size
        self.weight = nn.Parameter(torch.randn(1, out_ch, in_ch, kernel_size, kernel_size))
        self.scale = 1 / math.sqrt(in_ch * kernel_size ** 2)
        self.modulation = EqualLinear(style_dim, in_ch, bias_init=1.0)
        self.demodulate, self.upsample = demodulate, upsample
        if upsample:
            factor = 2
            p = (len(blur_kernel) - factor) - (kernel_size - 1)
            self.blur = Blur(blur_kernel, pad=((p + 1) // 2 + factor - 1, p // 2 + 1), upsample_factor=factor)

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        styles = self.modulation(style)                                   # [B, in]
        weight = self.weight[0] * self.scale                              # [out, in, k, k]
        x = x * styles.view(b, -1, 1, 1).to(x.dtype)
        if self.upsample:
            x = F.conv_transpose2d(x, weight.transpose(0, 1).to(x.dtype), stride=2)
            x = self.blur(x)
        else:
            x = F.conv2d(x, weight.to(x.dtype), padding=self.kernel_size // 2)
        if self.demodulate:
            # sum_{i,kh,kw} (w[o,i,kh,kw] * s[i])^2 = s^2 @ (sum_k w^2)^T, without materialising [B,out,in,k,k];
            # the sum over the k*k taps as a matrix-vector product: a reduction over two short trailing axes
            # is 4x slower on CPU and dominated batch-1 generation there
            taps = weight.square().flatten(2) @ weight.new_ones(self.kernel_size ** 2)  # [out, in]
            demod = torch.rsqrt(styles.square() @ taps.t() + 1e-8)  # [B, out]
            x = x * demod.view(b, -1, 1, 1).to(x.dtype)
        return x

    def extra_repr(self) -> str:
        return (f"{self.in_ch}, {self.out_ch}, kernel_size={self.kernel_size}, demodulate={self.demodulate}, "
                f"upsample={self.upsample}")


class NoiseInjection(nn.Module):
    """Add ``strength * noise`` (one scalar strength, learned, initialised to 0; noise is ``[B, 1, H, W]``)."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor, noise: torch.Tensor | None) -> torch.Tensor:
        if noise is None:
            return x
        return x + self.weight * noise.to(x.dtype)


def make_noise(batch: int, size: int, mode: str, const: torch.Tensor) -> torch.Tensor | None:
    """The ``[B, 1, size, size]`` noise of one layer: fresh, its stored buffer (``const``), or none."""
    if mode == "random":
        return torch.randn(batch, 1, size, size, device=const.device, dtype=const.dtype)
    if mode == "const":
        return const
    if mode == "none":
        return None
    raise ValueError(f"noise_mode must be one of {NOISE_MODES}, got {mode!r}")


class ToRGB(nn.Module):
    """1x1 modulated conv without demodulation + bias; adds the FIR-upsampled RGB of the previous level.

    ``clamp`` bounds this level's own RGB (conv + bias) before the sum, as the official ``ToRGBLayer``'s
    ``conv_clamp``.
    """

    def __init__(self, in_ch: int, style_dim: int, upsample: bool = True,
                 blur_kernel: Sequence[float] = (1, 3, 3, 1), out_ch: int = 3, clamp: float | None = None):
        super().__init__()
        if upsample:
            self.upsample = Upsample(blur_kernel)
        self.conv = ModulatedConv2d(in_ch, out_ch, 1, style_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1, out_ch, 1, 1))
        self.clamp = clamp

    def forward(self, x: torch.Tensor, style: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        out = self.conv(x, style) + self.bias
        if self.clamp is not None:
            out = out.clamp(-self.clamp, self.clamp)
        if skip is not None:
            out = out + self.upsample(skip)
        return out


D_ARCHITECTURES = ("resnet", "orig", "skip")


class DownBlock(nn.Module):
    """A non-residual StyleGAN2 discriminator level (stylegan2-ada-pytorch's ``orig`` and ``skip`` blocks).

    3x3 conv, then 3x3 conv with x2 FIR down-sampling, both with bias + leaky ReLU, and no 1x1 residual
    path (so no 1/sqrt(2) gain either). ``from_rgb``: the ``skip`` block first adds its own 1x1 fromRGB of the
    image down-sampled to its resolution. Sub-module names follow :class:`~natgan.models.layers.ResBlock`
    (``conv1``, ``conv2``), with ``from_rgb`` registered first so that Freeze-D's official layer count sees
    the official order (fromrgb, conv0, conv1).
    """

    def __init__(self, in_ch: int, out_ch: int, blur_kernel: Sequence[float] = (1, 3, 3, 1),
                 from_rgb: bool = False, clamp: float | None = None):
        super().__init__()
        self.from_rgb = ConvLayer(3, in_ch, 1, clamp=clamp) if from_rgb else None
        self.conv1 = ConvLayer(in_ch, in_ch, 3, clamp=clamp)
        self.conv2 = ConvLayer(in_ch, out_ch, 3, downsample=True, blur_kernel=blur_kernel, clamp=clamp)

    def forward(self, x: torch.Tensor, image: torch.Tensor | None = None) -> torch.Tensor:
        if self.from_rgb is not None:
            x = x + self.from_rgb(image)
        return self.conv2(self.conv1(x))


class StyleGAN2Discriminator(nn.Module):
    """StyleGAN2 discriminator, used by StyleGAN2 and GANformer; by default the config-e/f residual D.

    fromRGB 1x1 -> one block per resolution down to 4x4 -> minibatch stddev (group 4, 1 feature) ->
    3x3 conv -> FC -> FC(1). Names follow rosinality (``convs``, ``final_conv``, ``final_linear``).
    ``architecture`` picks the blocks as stylegan2-ada-pytorch's ``Discriminator(architecture=...)`` does:
    ``"resnet"`` (:class:`ResBlock`, config-e/f), ``"orig"`` (:class:`DownBlock`, plain conv pairs; its
    ``--cfg=cifar``), ``"skip"`` (DownBlocks that each add a fromRGB of the down-sampled image, plus one at
    4x4 before the minibatch-stddev head). ``mbstd_channels`` is the official ``mbstd_num_channels`` (0 = no
    minibatch-stddev head). ``conv_clamp`` bounds the conv activations as the official ``conv_clamp`` (every
    fromRGB and conv except the residual skip conv and the 4x4 fromRGB of ``skip``, which the official leaves
    unclamped; none = no clamp).
    Class-conditional (``num_classes > 0``): the last FC emits ``cmap_dim`` = the 4x4 width and
    stylegan2-ada's projection head makes the logit (``projection = "mapping"``; ``label_mapping`` = its
    label mapping's depth and lr multiplier), or it emits one feature
    per class and the label picks one (``"direct"``, GANformer's official epilogue).
    """

    def __init__(self, resolution: int, widths: Callable[[int], int],
                 blur_kernel: Sequence[float] = (1, 3, 3, 1), mbstd_group: int = 4, num_classes: int = 0,
                 projection: str = "mapping", architecture: str = "resnet", mbstd_channels: int = 1,
                 conv_clamp: float | None = None, label_mapping: tuple[int, float] = (D_MAPPING_LAYERS, 0.01)):
        """``widths(res)`` is the feature width at ``res`` (the generator's table, so G and D mirror)."""
        super().__init__()
        if architecture not in D_ARCHITECTURES:
            raise ValueError(f"architecture must be one of {D_ARCHITECTURES}, got {architecture!r}")
        log_res = int(math.log2(resolution))
        ch = {i: widths(2 ** i) for i in range(2, log_res + 1)}
        clamp = conv_clamp
        blocks: list[nn.Module] = [ConvLayer(3, ch[log_res], 1, clamp=clamp)]
        for i in range(log_res, 2, -1):
            if architecture == "resnet":
                blocks.append(ResBlock(ch[i], ch[i - 1], blur_kernel, clamp=clamp))
            else:                               # the top level's fromRGB is convs.0, as in every architecture
                blocks.append(DownBlock(ch[i], ch[i - 1], blur_kernel, from_rgb=architecture == "skip" and i < log_res,
                                        clamp=clamp))
        self.convs = nn.Sequential(*blocks)
        self.architecture = architecture
        self.mbstd_group = mbstd_group if mbstd_channels else None
        self.mbstd_channels = mbstd_channels
        self.final_conv = ConvLayer(ch[2] + mbstd_channels, ch[2], 3, clamp=clamp)
        out_dim = 1 if not num_classes else ch[2] if projection == "mapping" else num_classes
        self.final_linear = nn.Sequential(EqualLinear(ch[2] * 16, ch[2], activation="fused_lrelu"),
                                          EqualLinear(ch[2], out_dim))
        self.resolution = resolution
        self.num_classes = num_classes
        if not num_classes:
            self.projection = None
        elif projection == "mapping":
            self.projection = ProjectionHead(num_classes, ch[2], *label_mapping)
        elif projection == "direct":
            self.projection = DirectProjection(num_classes)
        else:
            raise ValueError(f"projection must be 'mapping' or 'direct', got {projection!r}")
        if architecture == "skip":              # built last: the residual D's parameters and draws stay as they were
            self.image_down = Downsample(blur_kernel)
            self.final_from_rgb = ConvLayer(3, ch[2], 1)

    def features(self, image: torch.Tensor) -> torch.Tensor:
        """The 4x4 feature map the minibatch-stddev head reads."""
        if self.architecture != "skip":
            return self.convs(image)
        x, img = self.convs[0](image), image
        for j, block in enumerate(self.convs[1:]):
            if j:                               # each level below the top sees the image at its own size
                img = self.image_down(img)
            x = block(x, img)
        return x + self.final_from_rgb(self.image_down(img))

    def forward(self, image: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        x = self.features(image)
        if self.mbstd_channels:
            x = minibatch_stddev(x, group=self.mbstd_group, features=self.mbstd_channels)
        x = self.final_conv(x)
        return project_logits(self.projection, self.final_linear(x.flatten(1)), c)


class ConstantInput(nn.Module):
    """The learned 4x4 constant the synthesis network starts from."""

    def __init__(self, channels: int, size: int = 4):
        super().__init__()
        self.input = nn.Parameter(torch.randn(1, channels, size, size))

    def forward(self, batch: int) -> torch.Tensor:
        return self.input.expand(batch, -1, -1, -1)


__all__ = ["ConstantInput", "D_ARCHITECTURES", "DownBlock", "ModulatedConv2d", "NOISE_MODES", "NoiseInjection",
           "StyleGAN2Discriminator", "ToRGB", "channels_for", "check_width_list", "make_noise", "rosinality_channels",
           "width_table"]


def check_synthesis_config(resolution: int, blur_kernel: list[int]) -> None:
    """Checks shared by every StyleGAN2-style synthesis config (StyleGAN2, GANformer)."""
    if resolution & (resolution - 1):
        raise ConfigError(f"key 'model.resolution': expected a power of two >= 8, got {resolution}")
    if len(blur_kernel) < 2 or sum(blur_kernel) <= 0:
        raise ConfigError(f"key 'model.blur_kernel': expected >= 2 taps with a positive sum, got {blur_kernel}")
