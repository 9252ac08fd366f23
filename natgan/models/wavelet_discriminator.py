"""SWAGAN-style wavelet discriminator (the one StyleSwin and StyleNAT train with).

The image is taken apart with a Haar wavelet transform (4 sub-bands x RGB = 12 channels at half
resolution). At every scale the running wavelet image is inverse-transformed, blurred down x2 and
transformed again, and a 1x1 "FromRGB" conv of it is added to the features, so the network keeps a
direct view of the high-frequency bands where transformer generators make their artefacts. The
residual-free conv trunk, minibatch-stddev head and spectral norm (``sn=True``) follow the official
code; module names match the official state dict (``dwt``, ``from_rgbs``, ``convs``, ``final_conv``,
``final_linear``). As in the official code, a D that has never run in training mode gives logits of 1e14-1e31
in eval mode (spectral norm's unsettled vectors): see :mod:`natgan.models.spectral_norm`.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from natgan.models.conditioning import ProjectionHead, project_logits
from natgan.models.layers import ConvLayer, Downsample, EqualLinear, FusedLeakyReLU, minibatch_stddev, upfirdn2d

# Official D widths per resolution (entries >= 64 scale with the channel multiplier).
_BASE_CHANNELS = {4: 512, 8: 512, 16: 512, 32: 512, 64: 256, 128: 128, 256: 64, 512: 32, 1024: 16}


def default_d_channels(resolution: int, channel_multiplier: int) -> list[int]:
    """Official D widths for resolutions 4, 8, ..., ``resolution``."""
    out, r = [], 4
    while r <= resolution:
        out.append(_BASE_CHANNELS[r] * (channel_multiplier if r >= 64 else 1))
        r *= 2
    return out


def _haar_filters() -> dict[str, torch.Tensor]:
    low = torch.tensor([[1.0, 1.0]]) / math.sqrt(2)
    high = torch.tensor([[-1.0, 1.0]]) / math.sqrt(2)
    return {"ll": low.T * low, "lh": high.T * low, "hl": low.T * high, "hh": high.T * high}


class HaarTransform(nn.Module):
    """RGB ``[B, 3, H, W]`` -> sub-bands ``[B, 12, H/2, W/2]`` ordered (LL, LH, HL, HH)."""

    def __init__(self):
        super().__init__()
        for name, f in _haar_filters().items():
            self.register_buffer(name, f)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([upfirdn2d(x, getattr(self, n), down=2) for n in ("ll", "lh", "hl", "hh")], dim=1)


class InverseHaarTransform(nn.Module):
    """Sub-bands ``[B, 12, H, W]`` -> RGB ``[B, 3, 2H, 2W]`` (exact inverse of :class:`HaarTransform`)."""

    def __init__(self):
        super().__init__()
        for name, f in _haar_filters().items():
            self.register_buffer(name, -f if name in ("lh", "hl") else f)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bands = x.chunk(4, dim=1)
        return sum(upfirdn2d(band, getattr(self, n), up=2, pad=(1, 0))
                   for band, n in zip(bands, ("ll", "lh", "hl", "hh")))


class FromRGB(nn.Module):
    """Optionally halve the running wavelet image (IWT -> blur-down -> DWT), then 1x1 conv into features."""

    def __init__(self, out_ch: int, downsample: bool, blur_kernel: Sequence[float], sn: bool):
        super().__init__()
        self.downsample_input = downsample
        if downsample:
            self.iwt = InverseHaarTransform()
            self.downsample = Downsample(blur_kernel)
            self.dwt = HaarTransform()
        self.conv = ConvLayer(12, out_ch, 1, sn=sn)

    def forward(self, wavelets: torch.Tensor, features: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        if self.downsample_input:
            wavelets = self.dwt(self.downsample(self.iwt(wavelets)))
        out = self.conv(wavelets)
        return wavelets, out if features is None else out + features


class ConvBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, blur_kernel: Sequence[float], sn: bool):
        super().__init__()
        self.conv1 = ConvLayer(in_ch, in_ch, 3, sn=sn)
        self.conv2 = ConvLayer(in_ch, out_ch, 3, downsample=True, blur_kernel=blur_kernel, sn=sn)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.conv1(x))


class WaveletDiscriminator(nn.Module):
    """``D(image [B, 3, R, R], c=None) -> [B, 1]`` logits. ``channels`` lists widths for resolutions 4..R;
    ``num_classes > 0`` adds stylegan2-ada's projection head (:mod:`natgan.models.conditioning`)."""

    def __init__(self, resolution: int, channel_multiplier: int = 2, channels: Sequence[int] | None = None,
                 sn: bool = True, blur_kernel: Sequence[float] = (1, 3, 3, 1), num_classes: int = 0):
        super().__init__()
        widths = list(channels) if channels is not None else default_d_channels(resolution, channel_multiplier)
        ch = {4 * 2 ** i: c for i, c in enumerate(widths)}
        log_size = int(math.log2(resolution)) - 1
        self.dwt = HaarTransform()
        self.mbstd_group = 4  # the official StyleSwin/StyleNAT head: group 4, one feature
        self.from_rgbs = nn.ModuleList()
        self.convs = nn.ModuleList()
        in_ch = ch[resolution]
        for i in range(log_size, 2, -1):
            out_ch = ch[2 ** (i - 1)]
            self.from_rgbs.append(FromRGB(in_ch, downsample=i != log_size, blur_kernel=blur_kernel, sn=sn))
            self.convs.append(ConvBlock(in_ch, out_ch, blur_kernel, sn))
            in_ch = out_ch
        self.from_rgbs.append(FromRGB(ch[4], downsample=True, blur_kernel=blur_kernel, sn=sn))
        self.final_conv = ConvLayer(ch[4] + 1, ch[4], 3, sn=sn)
        out_dim = ch[4] if num_classes else 1  # conditional: cmap_dim features (official cmap_dim = width at 4x4)
        if sn:
            self.final_linear = nn.Sequential(
                nn.utils.spectral_norm(nn.Linear(ch[4] * 16, ch[4])), FusedLeakyReLU(ch[4]),
                nn.utils.spectral_norm(nn.Linear(ch[4], out_dim)))
        else:
            self.final_linear = nn.Sequential(EqualLinear(ch[4] * 16, ch[4], activation="fused_lrelu"),
                                              EqualLinear(ch[4], out_dim))
        self.num_classes = num_classes
        self.projection = ProjectionHead(num_classes, ch[4]) if num_classes else None

    def forward(self, image: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        wavelets = self.dwt(image)
        features = None
        for from_rgb, conv in zip(self.from_rgbs, self.convs):
            wavelets, features = from_rgb(wavelets, features)
            features = conv(features)
        _, features = self.from_rgbs[-1](wavelets, features)
        features = self.final_conv(minibatch_stddev(features, group=self.mbstd_group))
        return project_logits(self.projection, self.final_linear(features.flatten(1)), c)
