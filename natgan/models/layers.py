"""Building blocks shared by the StyleGAN family (StyleNAT, StyleSwin, StyleGAN2, GANformer).

Parameter names and runtime scaling follow the conventions of the official StyleGAN2-derived code
(equalised learning rate: weights stored unscaled, multiplied at run time), because official
StyleNAT/StyleSwin checkpoints must load into these modules name-for-name.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

SQRT2 = math.sqrt(2.0)


def fused_leaky_relu(x: torch.Tensor, bias: torch.Tensor | None = None, slope: float = 0.2,
                     gain: float = SQRT2) -> torch.Tensor:
    """leaky_relu(x + bias) * gain, bias broadcast over channel dim 1 (the CUDA op's CPU-equivalent path)."""
    if bias is not None:
        x = x + bias.view(1, -1, *([1] * (x.ndim - 2)))
    return F.leaky_relu(x, slope) * gain


class FusedLeakyReLU(nn.Module):
    """Leaky ReLU with its own per-channel bias (the bias of the preceding bias-free layer).

    ``clamp``: limit the output to ±clamp after the gain, as stylegan2-ada-pytorch's ``conv_clamp`` does in
    ``bias_act`` (none = no clamp, no extra operation).
    """

    def __init__(self, channels: int, slope: float = 0.2, gain: float = SQRT2, clamp: float | None = None):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))
        self.slope, self.gain, self.clamp = slope, gain, clamp

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = fused_leaky_relu(x, self.bias, self.slope, self.gain)
        return out if self.clamp is None else out.clamp(-self.clamp, self.clamp)


class ScaledLeakyReLU(nn.Module):
    def __init__(self, slope: float = 0.2):
        super().__init__()
        self.slope = slope

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(x, self.slope) * SQRT2


class PixelNorm(nn.Module):
    """Normalise each latent to unit RMS (first layer of every mapping network)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(dim=1, keepdim=True) + 1e-8)


class EqualLinear(nn.Module):
    """Linear layer with equalised learning rate: stored ``randn/lr_mul``, used ``* lr_mul/sqrt(in)``."""

    def __init__(self, in_dim: int, out_dim: int, bias: bool = True, bias_init: float = 0.0,
                 lr_mul: float = 1.0, activation: str | None = None):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim) / lr_mul)
        self.bias = nn.Parameter(torch.full((out_dim,), float(bias_init))) if bias else None
        self.scale = lr_mul / math.sqrt(in_dim)
        self.lr_mul = lr_mul
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = self.bias * self.lr_mul if self.bias is not None else None
        if self.activation:
            return fused_leaky_relu(F.linear(x, self.weight * self.scale), bias)
        return F.linear(x, self.weight * self.scale, bias)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[1]}, {self.weight.shape[0]}, lr_mul={self.lr_mul}, activation={self.activation}"


def mapping_network(z_dim: int, w_dim: int, n_mlp: int, lr_mul: float = 0.01) -> nn.Sequential:
    """PixelNorm + ``n_mlp`` EqualLinear/lrelu layers (official keys ``style.1 … style.n_mlp``)."""
    layers: list[nn.Module] = [PixelNorm()]
    for i in range(n_mlp):
        layers.append(EqualLinear(z_dim if i == 0 else w_dim, w_dim, lr_mul=lr_mul, activation="fused_lrelu"))
    return nn.Sequential(*layers)


class EqualConv2d(nn.Module):
    """Conv2d with equalised learning rate."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, stride: int = 1, padding: int = 0,
                 bias: bool = True):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_ch, in_ch, kernel_size, kernel_size))
        self.scale = 1 / math.sqrt(in_ch * kernel_size ** 2)
        self.stride, self.padding = stride, padding
        self.bias = nn.Parameter(torch.zeros(out_ch)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.scale, self.bias, stride=self.stride, padding=self.padding)


# --------------------------------------------------------------------------------------------- FIR

def make_kernel(taps: Sequence[float]) -> torch.Tensor:
    """Separable FIR taps -> normalised 2-D kernel (sums to 1)."""
    k = torch.tensor(taps, dtype=torch.float32)
    if k.ndim == 1:
        k = k[None, :] * k[:, None]
    return k / k.sum()


def upfirdn2d(x: torch.Tensor, kernel: torch.Tensor, up: int = 1, down: int = 1,
              pad: tuple[int, int] = (0, 0)) -> torch.Tensor:
    """Zero-insert by ``up``, pad (negative = crop) both axes by ``pad``, FIR-filter (true convolution,
    i.e. flipped kernel) per channel, keep every ``down``-th sample. Same maths as the reference op."""
    b, c, h, w = x.shape
    if up > 1:
        spread = x.new_zeros(b, c, h * up, w * up)
        spread[:, :, ::up, ::up] = x
        x = spread
    p0, p1 = pad
    x = F.pad(x, [max(p0, 0), max(p1, 0), max(p0, 0), max(p1, 0)])
    if p0 < 0 or p1 < 0:
        x = x[:, :, max(-p0, 0): x.shape[2] - max(-p1, 0), max(-p0, 0): x.shape[3] - max(-p1, 0)]
    weight = torch.flip(kernel, [0, 1]).to(x.dtype)[None, None].expand(c, 1, *kernel.shape)
    x = F.conv2d(x, weight, groups=c)
    return x[:, :, ::down, ::down] if down > 1 else x


class Blur(nn.Module):
    def __init__(self, taps: Sequence[float], pad: tuple[int, int], upsample_factor: int = 1):
        super().__init__()
        self.register_buffer("kernel", make_kernel(taps) * upsample_factor ** 2)
        self.pad = pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return upfirdn2d(x, self.kernel, pad=self.pad)


class Upsample(nn.Module):
    """x2 FIR upsampling (the ToRGB skip path)."""

    def __init__(self, taps: Sequence[float] = (1, 3, 3, 1), factor: int = 2):
        super().__init__()
        self.factor = factor
        self.register_buffer("kernel", make_kernel(taps) * factor ** 2)
        p = self.kernel.shape[0] - factor
        self.pad = ((p + 1) // 2 + factor - 1, p // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return upfirdn2d(x, self.kernel, up=self.factor, pad=self.pad)


class Downsample(nn.Module):
    def __init__(self, taps: Sequence[float] = (1, 3, 3, 1), factor: int = 2):
        super().__init__()
        self.factor = factor
        self.register_buffer("kernel", make_kernel(taps))
        p = self.kernel.shape[0] - factor
        self.pad = ((p + 1) // 2, p // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return upfirdn2d(x, self.kernel, down=self.factor, pad=self.pad)


class ConvLayer(nn.Sequential):
    """[blur] -> conv -> [leaky ReLU]; ``sn=True`` swaps the equalised conv for a spectral-norm conv
    (the StyleNAT/StyleSwin discriminator). Indices match the official state-dict keys."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, downsample: bool = False,
                 blur_kernel: Sequence[float] = (1, 3, 3, 1), bias: bool = True, activate: bool = True,
                 sn: bool = False, clamp: float | None = None):
        layers: list[nn.Module] = []
        if downsample:
            p = (len(blur_kernel) - 2) + (kernel_size - 1)
            layers.append(Blur(blur_kernel, pad=((p + 1) // 2, p // 2)))
            stride, padding = 2, 0
        else:
            stride, padding = 1, kernel_size // 2
        if sn:
            layers.append(nn.utils.spectral_norm(
                nn.Conv2d(in_ch, out_ch, kernel_size, stride=stride, padding=padding, bias=bias and not activate)))
        else:
            layers.append(EqualConv2d(in_ch, out_ch, kernel_size, stride=stride, padding=padding,
                                      bias=bias and not activate))
        if activate:
            layers.append(FusedLeakyReLU(out_ch, clamp=clamp) if bias else ScaledLeakyReLU(0.2))
        super().__init__(*layers)


class ResBlock(nn.Module):
    """StyleGAN2 residual discriminator block: two 3x3 convs (second downsamples) + 1x1 skip, / sqrt(2).

    ``clamp`` bounds the two convs' activations (official ``conv_clamp``; its ``clamp * sqrt(1/2)`` after the
    ``sqrt(1/2)`` gain is this clamp before the division), never the skip conv's, as in the official block.
    """

    def __init__(self, in_ch: int, out_ch: int, blur_kernel: Sequence[float] = (1, 3, 3, 1), sn: bool = False,
                 clamp: float | None = None):
        super().__init__()
        self.conv1 = ConvLayer(in_ch, in_ch, 3, sn=sn, clamp=clamp)
        self.conv2 = ConvLayer(in_ch, out_ch, 3, downsample=True, blur_kernel=blur_kernel, sn=sn, clamp=clamp)
        self.skip = ConvLayer(in_ch, out_ch, 1, downsample=True, blur_kernel=blur_kernel, activate=False,
                              bias=False, sn=sn)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.conv2(self.conv1(x)) + self.skip(x)) / SQRT2


def minibatch_stddev(x: torch.Tensor, group: int = 4, features: int = 1) -> torch.Tensor:
    """Append the across-group feature std as extra channel(s) (StyleGAN2 discriminator head).

    The group is ``min(group, batch)``, as in the official code; a batch it does not divide is refused
    rather than silently falling back to groups of one (whose std is a constant channel).
    """
    b, c, h, w = x.shape
    g = mbstd_group_size(b, group)
    y = x.view(g, -1, features, c // features, h, w)
    y = torch.sqrt(y.var(0, unbiased=False) + 1e-8)
    y = y.mean(dim=[2, 3, 4], keepdim=True).squeeze(2)
    y = y.repeat(g, 1, h, w)
    return torch.cat([x, y], dim=1)


def mbstd_group_size(batch: int, group: int) -> int:
    """``min(group, batch)``, the whole batch for ``group = 0`` (the official ``mbstd_group_size = None``);
    raises ValueError when that does not divide ``batch``."""
    g = min(batch, group) if group else batch
    if batch % g:
        raise ValueError(f"minibatch-stddev group {g} does not divide the batch {batch}")
    return g
