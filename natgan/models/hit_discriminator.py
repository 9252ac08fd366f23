"""HiT's discriminator: the official code's simplified StyleGAN2-style ResNet (``StyleGANDiscriminator``).

Differences from the StyleGAN2 discriminator in :mod:`natgan.models.layers`, all on purpose because
they are what HiT trained with: plain convolutions with Glorot-uniform init (no equalised learning
rate), no minibatch-stddev, the blur-pool downsample sits *between* the two 3x3 convolutions of a
residual block, and the stem is a 3x3 convolution. Widths: 512 up to 32 px, then ``16384 * m / res``
(m = channel multiplier: 2 for FFHQ/CelebA-HQ, 1 for ImageNet).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from natgan.models.conditioning import ProjectionHead, project_logits


def d_channels(res: int, multiplier: int, max_channels: int = 512) -> int:
    """Official width table: 4..32 -> 512; 64 -> 256m; 128 -> 128m; 256 -> 64m; 512 -> 32m; 1024 -> 16m."""
    return min(max_channels, 16384 * multiplier // res)


def _glorot(layer: nn.Module) -> nn.Module:
    nn.init.xavier_uniform_(layer.weight)
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)
    return layer


def conv(in_ch: int, out_ch: int, kernel: int, bias: bool = True) -> nn.Conv2d:
    """Conv with TF "SAME" padding (odd kernels, stride 1) and Keras init."""
    return _glorot(nn.Conv2d(in_ch, out_ch, kernel, padding=kernel // 2, bias=bias))


class BlurPool(nn.Module):
    """Anti-aliased x2 downsampling: binomial [1,3,3,1] filter, depthwise, stride 2, TF "SAME" padding."""

    def __init__(self, channels: int):
        super().__init__()
        taps = torch.tensor([1.0, 3.0, 3.0, 1.0])
        kernel = taps[:, None] * taps[None, :]
        self.register_buffer("kernel", (kernel / kernel.sum()).expand(channels, 1, 4, 4).clone(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # SAME with an even filter and stride 2 on an even size pads one pixel on each side.
        return F.conv2d(F.pad(x, (1, 1, 1, 1)), self.kernel.to(x.dtype), stride=2, groups=x.shape[1])


def downsample(channels: int, blur: bool) -> nn.Module:
    return BlurPool(channels) if blur else nn.AvgPool2d(2)


class DiscriminatorBlock(nn.Module):
    """main = conv3x3 -> lrelu -> down -> conv3x3 -> lrelu; skip = down -> conv1x1 (no bias); (main+skip)/sqrt2."""

    def __init__(self, in_ch: int, out_ch: int, blur: bool = True, slope: float = 0.2):
        super().__init__()
        self.conv1 = conv(in_ch, in_ch, 3)
        self.down = downsample(in_ch, blur)
        self.conv2 = conv(in_ch, out_ch, 3)
        self.skip_down = downsample(in_ch, blur)
        self.skip = conv(in_ch, out_ch, 1, bias=False)
        self.slope = slope

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.leaky_relu(self.conv1(x), self.slope)
        h = F.leaky_relu(self.conv2(self.down(h)), self.slope)
        return (h + self.skip(self.skip_down(x))) / math.sqrt(2.0)


class HiTDiscriminator(nn.Module):
    """``[B, 3, R, R]`` images in [-1, 1] (+ labels c) -> ``[B, 1]`` logits; ``num_classes > 0`` adds
    stylegan2-ada's projection head (``out`` then emits cmap_dim = the 4x4 width)."""

    def __init__(self, resolution: int, channel_multiplier: int = 2, max_channels: int = 512, blur: bool = True,
                 slope: float = 0.2, num_classes: int = 0):
        super().__init__()
        ch = [d_channels(2 ** i, channel_multiplier, max_channels) for i in range(int(math.log2(resolution)) + 1)]
        log_res = int(math.log2(resolution))
        self.resolution, self.slope = resolution, slope
        self.stem = conv(3, ch[log_res], 3)
        self.blocks = nn.Sequential(*[DiscriminatorBlock(ch[i], ch[i - 1], blur, slope)
                                      for i in range(log_res, 2, -1)])
        self.final_conv = conv(ch[2], ch[2], 3)
        self.fc = _glorot(nn.Linear(ch[2] * 16, ch[2]))
        self.out = _glorot(nn.Linear(ch[2], ch[2] if num_classes else 1))
        self.num_classes = num_classes
        self.projection = ProjectionHead(num_classes, ch[2]) if num_classes else None

    def forward(self, x: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        h = self.blocks(F.leaky_relu(self.stem(x), self.slope))
        h = F.leaky_relu(self.final_conv(h), self.slope)
        h = F.leaky_relu(self.fc(h.flatten(1)), self.slope)
        return project_logits(self.projection, self.out(h), c)
