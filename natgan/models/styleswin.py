"""StyleSwin (Zhang et al. 2022): the shared style transformer skeleton with double window attention.

Each block splits its heads (and q/k/v channels) in two halves: the first attends inside
non-overlapping ``window_size`` windows, the second inside windows shifted by half a window (cyclic
roll + a -100 mask between pixels that the roll brought together), so information crosses window
borders every block. Levels up to ``full_resolution`` use one window covering the whole map. Relative
position bias tables follow Swin (query - key). Same generator skeleton and wavelet discriminator as
StyleNAT (:mod:`natgan.models.transformer_gan`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from natgan.config import option
from natgan.errors import ConfigError
from natgan.models.transformer_gan import TransformerGANConfig, build_pair, level_resolutions, trunc_normal_init_
from natgan.models.registry import register_model


@dataclass
class StyleSwinConfig(TransformerGANConfig):
    """StyleSwin generator + wavelet discriminator. Defaults: the paper's FFHQ-256 model (48.93 M)."""

    window_size: int = option(8, min=2, help="attention window side above full_resolution")
    full_resolution: int = option(8, min=4, help="levels up to this side attend over the whole map "
                                                 "(official enable_full_resolution)")

    def validate(self) -> None:
        super().validate()
        for res, c in zip(level_resolutions(self.resolution), self.level_channels()):
            heads = self.level_heads(c)
            if heads % 2:
                raise ConfigError(f"key 'model.min_heads': StyleSwin splits heads in two halves, but level "
                                  f"{res}x{res} has {heads} heads")
            window, _ = self.window_and_shift(res)
            if res % window:
                raise ConfigError(f"key 'model.window_size': level {res}x{res} is not a multiple of the "
                                  f"window size {window}")

    def window_and_shift(self, resolution: int) -> tuple[int, int]:
        window = resolution if resolution <= self.full_resolution else self.window_size
        if resolution <= window:
            return resolution, 0
        return window, window // 2


def relative_index_query_minus_key(window: int) -> torch.Tensor:
    """Swin's ``[N, N]`` flat index into a ``(2w-1)^2`` table of (query - key + w - 1) per axis."""
    coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
    rel = coords[:, :, None] - coords[:, None, :] + window - 1          # [2, query, key]
    return rel[0] * (2 * window - 1) + rel[1]


def shifted_window_masks(window: int, shift: int) -> torch.Tensor:
    """``[3, w*w, w*w]`` masks of the shifted windows that straddle the roll seam: 0 within a region, -100
    across. Index 0: windows of the last window row (not last column), 1: last column (not last row),
    2: the corner window. Every other window is mask-free, so the official ``(n_windows, w*w, w*w)``
    buffer (268 MB per block at 1024x1024) equals these three blocks placed on the seam.
    """
    inner = torch.zeros(window, dtype=torch.long)                         # window away from the seam
    seam = torch.cat([torch.ones(window - shift, dtype=torch.long), torch.full((shift,), 2)])

    def mask(rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        label = (rows[:, None] * 3 + cols[None, :]).flatten()
        return torch.zeros(label.numel(), label.numel()).masked_fill(label[None, :] != label[:, None], -100.0)

    return torch.stack([mask(seam, inner), mask(inner, seam), mask(seam, seam)])


def shifted_window_mask(resolution: int, window: int, shift: int) -> torch.Tensor:
    """The official full ``[n_windows, w*w, w*w]`` mask (rows of windows in row-major order)."""
    n = resolution // window
    seam = shifted_window_masks(window, shift)
    full = torch.zeros(n, n, window * window, window * window)
    full[-1, :-1], full[:-1, -1], full[-1, -1] = seam[0], seam[1], seam[2]
    return full.view(n * n, window * window, window * window)


def add_seam_masks(attn: torch.Tensor, masks: torch.Tensor, n: int) -> torch.Tensor:
    """Add the shifted-window masks to ``attn [B*n*n, heads, N, N]`` on the seam windows only (in place)."""
    heads, size = attn.shape[1], attn.shape[-1]
    grid = attn.view(-1, n, n, heads, size, size)
    grid[:, -1, :-1] += masks[0]
    grid[:, :-1, -1] += masks[1]
    grid[:, -1, -1] += masks[2]
    return attn


class WindowAttention(nn.Module):
    """Softmax attention inside windows for one half of the heads (q/k/v come from the block's qkv)."""

    def __init__(self, window: int, heads: int, head_dim: int, qk_scale: float | None = None):
        super().__init__()
        self.window, self.heads, self.head_dim = window, heads, head_dim
        self.scale = qk_scale or head_dim ** -0.5
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, heads))
        self.register_buffer("relative_position_index", relative_index_query_minus_key(window))
        trunc_normal_init_(self.relative_position_bias_table)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, masks: torch.Tensor | None) -> torch.Tensor:
        """q, k, v ``[B, H, W, heads*hd]`` (q already scaled) -> ``[B, H, W, heads*hd]``; ``masks`` from
        :func:`shifted_window_masks` for the shifted half."""
        b, h, w, c = q.shape
        ws, n = self.window, self.window ** 2

        def windows(t: torch.Tensor) -> torch.Tensor:   # -> [B*nW, heads, N, hd], windows row-major
            t = t.reshape(b, h // ws, ws, w // ws, ws, self.heads, self.head_dim)
            return t.permute(0, 1, 3, 5, 2, 4, 6).reshape(-1, self.heads, n, self.head_dim)

        attn = windows(q) @ windows(k).transpose(-2, -1)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)].view(n, n, -1)
        attn = attn + bias.permute(2, 0, 1).unsqueeze(0)
        if masks is not None:
            attn = add_seam_masks(attn, masks, h // ws)
        out = attn.softmax(dim=-1) @ windows(v)                                   # [B*nW, heads, N, hd]
        out = out.view(b, h // ws, w // ws, self.heads, ws, ws, self.head_dim)
        return out.permute(0, 1, 4, 2, 5, 3, 6).reshape(b, h, w, c)


class SwinDoubleAttention(nn.Module):
    """StyleSwin's token mixer: half the heads in windows, half in shifted windows, one projection."""

    def __init__(self, dim: int, heads: int, resolution: int, window: int, shift: int, qkv_bias: bool = True,
                 qk_scale: float | None = None):
        super().__init__()
        self.heads, self.window, self.shift = heads, window, shift
        head_dim = dim // heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.attn = nn.ModuleList([WindowAttention(window, heads // 2, head_dim, qk_scale) for _ in range(2)])
        # The official buffer ``attn_mask2`` is stored compactly (see shifted_window_masks); not persistent.
        self.register_buffer("seam_masks", shifted_window_masks(window, shift) if shift else None, persistent=False)
        self.capture = False
        self.captured: dict | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, c = x.shape
        q, k, v = self.qkv(x).view(b, h, w, 3, c).unbind(3)
        q = q * self.attn[0].scale
        if self.capture:
            def heads_first(t: torch.Tensor) -> torch.Tensor:
                return t.detach().view(b, h, w, self.heads, -1).permute(0, 3, 1, 2, 4)
            labels = ["window"] * (self.heads // 2) + ["shifted window" if self.shift else "window"] * (self.heads // 2)
            self.captured = {"q": heads_first(q), "k": heads_first(k), "labels": labels}
        half = c // 2
        out1 = self.attn[0](q[..., :half], k[..., :half], v[..., :half], None)
        q2, k2, v2 = q[..., half:], k[..., half:], v[..., half:]
        if self.shift:
            roll = (-self.shift, -self.shift)
            q2, k2, v2 = (torch.roll(t, roll, dims=(1, 2)) for t in (q2, k2, v2))
        out2 = self.attn[1](q2, k2, v2, self.seam_masks)
        if self.shift:
            out2 = torch.roll(out2, (self.shift, self.shift), dims=(1, 2))
        return self.proj(torch.cat([out1, out2], dim=-1))

    def extra_repr(self) -> str:
        return f"heads={self.heads} (2 x {self.heads // 2}), window={self.window}, shift={self.shift}"


def swin_attention(cfg: StyleSwinConfig):
    def factory(level: int, resolution: int, dim: int, heads: int) -> nn.Module:
        window, shift = cfg.window_and_shift(resolution)
        return SwinDoubleAttention(dim, heads, resolution, window, shift, cfg.qkv_bias, cfg.qk_scale)
    return factory


@register_model("styleswin", config=StyleSwinConfig, paper_params_g=48.93, paper_img_per_s=30.20,
                description="StyleSwin: double window attention generator + wavelet D (Zhang et al. 2022)")
def build_styleswin(cfg: StyleSwinConfig) -> tuple[nn.Module, nn.Module]:
    return build_pair(cfg, swin_attention(cfg))


register_model("styleswin-1024", config=StyleSwinConfig, paper_params_g=40.86,
               defaults={"resolution": 1024, "channel_multiplier": 1},
               description="StyleSwin at 1024x1024 (G channel multiplier 1, as the paper)")(build_styleswin)
