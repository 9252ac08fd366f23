"""HiT generator layers: multi-axis blocked self-attention, latent cross-attention, MLPs, pixel shuffle.

Everything works on channels-last token maps ``[B, H, W, C]`` (the official TensorFlow layout), so the
token-wise layers (norms, linears) need no permutes and only attention re-arranges tokens.

Attention is multi-query by default (paper Appendix A.1, official default): the ``h`` query heads share
one key head and one value head. Shared keys let us fold the query heads into the query sequence and
run a single-head ``scaled_dot_product_attention`` (flash / memory-efficient kernels on GPU), which is
exact and avoids materialising repeated keys.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

NormKind = Literal["batch", "layer"]
AttentionKind = Literal["multi_query", "multi_head"]

INIT_STD = 0.02  # official generator init: truncated normal (2 sigma), zero biases


def trunc_normal_(tensor: torch.Tensor, std: float = INIT_STD) -> torch.Tensor:
    """Keras ``TruncatedNormal(stddev)``: normal samples, redrawn until inside two standard deviations.

    Redraws only the ~4.6% rejected entries (torch's own ``trunc_normal_`` redraws whole tensors, which
    makes building HiT-L on a CPU take tens of seconds).
    """
    if tensor.is_meta:
        return tensor
    with torch.no_grad():
        flat = tensor.view(-1).normal_(0.0, std)
        redo = (flat.abs() > 2 * std).nonzero().squeeze(1)
        while redo.numel():
            fresh = torch.empty(redo.numel(), dtype=flat.dtype, device=flat.device).normal_(0.0, std)
            flat.index_copy_(0, redo, fresh)
            redo = redo[fresh.abs() > 2 * std]
    return tensor


def linear(in_dim: int, out_dim: int) -> nn.Linear:
    """A generator dense layer with the official initialisation (torch's default init is skipped)."""
    layer = nn.utils.skip_init(nn.Linear, in_dim, out_dim, device=torch.get_default_device())
    trunc_normal_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


class TokenBatchNorm(nn.BatchNorm1d):
    """Keras ``BatchNormalization`` on channels-last tokens: per channel, statistics over batch and all tokens.

    Keras momentum 0.99 is torch momentum 0.01; Keras eps is 1e-3. The running statistics are buffers,
    so they are not counted as parameters (the paper's counts exclude them too).
    """

    def __init__(self, dim: int):
        super().__init__(dim, eps=1e-3, momentum=0.01)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.reshape(-1, x.shape[-1])).view(x.shape)


def make_norm(kind: NormKind, dim: int) -> nn.Module:
    """BatchNorm (the paper's choice, Table 8) or LayerNorm (the ablation, Keras eps 1e-6)."""
    if kind == "batch":
        return TokenBatchNorm(dim)
    if kind == "layer":
        return nn.LayerNorm(dim, eps=1e-6)
    raise ValueError(f"unknown norm {kind!r} (expected 'batch' or 'layer')")


class MLP(nn.Module):
    """Pre-norm residual feed-forward layer: ``x + W2 gelu(W1 norm(x))`` (exact GELU, as the official code)."""

    def __init__(self, dim: int, ratio: int = 4, norm: NormKind = "batch"):
        super().__init__()
        self.norm = make_norm(norm, dim)
        self.fc1 = linear(dim, dim * ratio)
        self.fc2 = linear(dim * ratio, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc2(F.gelu(self.fc1(self.norm(x))))


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    """Attention with fewer key/value heads than query heads (1 = multi-query, equal = multi-head).

    ``q`` is ``[N, hq, L, d]``, ``k``/``v`` are ``[N, hk, S, d]``. Query head ``j`` uses key head
    ``j // (hq / hk)``; those query heads are folded into the sequence so one kernel call does it all.
    """
    n, hq, length, d = q.shape
    hk = k.shape[1]
    if hk != hq:
        q = q.reshape(n, hk, (hq // hk) * length, d)
    out = F.scaled_dot_product_attention(q, k, v, scale=scale)
    return out.reshape(n, hq, length, d)


# Token re-arrangements for the two axes of a blocked map. A map [B, H, W, n, d] is cut into b x b blocks
# on a (H/b) x (W/b) grid; "regional" sequences are the b*b tokens of one block, "dilated" sequences are
# the grid tokens sharing one offset inside their block (stride b), as in the paper's Figure 2.

def _split(t: torch.Tensor, b: int) -> torch.Tensor:
    bsz, h, w, n, d = t.shape
    return t.view(bsz, h // b, b, w // b, b, n, d)  # [B, gh, b, gw, b, n, d]


def to_regional(t: torch.Tensor, b: int) -> torch.Tensor:
    """``[B, H, W, n, d]`` -> ``[B*gh*gw, n, b*b, d]``: one sequence per block."""
    s = _split(t, b)
    bsz, gh, _, gw, _, n, d = s.shape
    return s.permute(0, 1, 3, 5, 2, 4, 6).reshape(bsz * gh * gw, n, b * b, d)


def from_regional(t: torch.Tensor, bsz: int, h: int, w: int, b: int) -> torch.Tensor:
    n, d = t.shape[1], t.shape[3]
    t = t.view(bsz, h // b, w // b, n, b, b, d).permute(0, 1, 4, 2, 5, 3, 6)
    return t.reshape(bsz, h, w, n, d)


def to_dilated(t: torch.Tensor, b: int) -> torch.Tensor:
    """``[B, H, W, n, d]`` -> ``[B*b*b, n, gh*gw, d]``: one sequence per in-block offset, spanning all blocks."""
    s = _split(t, b)
    bsz, gh, _, gw, _, n, d = s.shape
    return s.permute(0, 2, 4, 5, 1, 3, 6).reshape(bsz * b * b, n, gh * gw, d)


def from_dilated(t: torch.Tensor, bsz: int, h: int, w: int, b: int) -> torch.Tensor:
    n, d = t.shape[1], t.shape[3]
    t = t.view(bsz, b, b, n, h // b, w // b, d).permute(0, 4, 1, 5, 2, 3, 6)
    return t.reshape(bsz, h, w, n, d)


class MultiAxisAttention(nn.Module):
    """Multi-axis blocked self-attention (paper §3.2): half the heads regional, half dilated, in one layer.

    Head order follows the official code (regional heads first; the paper's Algorithm 2 lists dilated
    first, which only matters for porting weights). Both halves share the Q/K/V/O projections.

    Visualisation: with ``capture = True`` the forward stores ``captured = {"q", "k": [B, heads, H, W, d],
    "labels", "block_size"}`` in spatial layout (multi-query keys repeated per head).
    """

    def __init__(self, dim: int, heads: int, block_size: int, attention: AttentionKind = "multi_query"):
        super().__init__()
        if heads % 2 or dim % heads:
            raise ValueError(f"multi-axis attention needs an even number of heads dividing dim, got {heads}, {dim}")
        self.heads, self.head_dim, self.block_size = heads, dim // heads, block_size
        self.kv_heads = 1 if attention == "multi_query" else heads
        self.scale = 1.0 / math.sqrt(self.head_dim)
        self.q = linear(dim, dim)
        self.k = linear(dim, self.kv_heads * self.head_dim)
        self.v = linear(dim, self.kv_heads * self.head_dim)
        self.proj = linear(dim, dim)
        self.labels = ["regional"] * (heads // 2) + ["dilated"] * (heads // 2)
        self.capture = False
        self.captured: dict | None = None

    def head_outputs(self, x: torch.Tensor) -> torch.Tensor:
        """Per-head attention outputs ``[B, H, W, heads, head_dim]`` before the output projection."""
        bsz, h, w, _ = x.shape
        b, half, d = self.block_size, self.heads // 2, self.head_dim
        q = self.q(x).view(bsz, h, w, self.heads, d)
        k = self.k(x).view(bsz, h, w, self.kv_heads, d)
        v = self.v(x).view(bsz, h, w, self.kv_heads, d)
        if self.capture:
            self.captured = {
                "q": q.detach().permute(0, 3, 1, 2, 4).contiguous(),
                "k": k.detach().permute(0, 3, 1, 2, 4).expand(-1, self.heads, -1, -1, -1).contiguous(),
                "labels": list(self.labels),
                "block_size": b,
            }
        kv_r = slice(0, 1) if self.kv_heads == 1 else slice(0, half)
        kv_d = slice(0, 1) if self.kv_heads == 1 else slice(half, self.heads)
        regional = _attend(to_regional(q[..., :half, :], b), to_regional(k[..., kv_r, :], b),
                           to_regional(v[..., kv_r, :], b), self.scale)
        dilated = _attend(to_dilated(q[..., half:, :], b), to_dilated(k[..., kv_d, :], b),
                          to_dilated(v[..., kv_d, :], b), self.scale)
        return torch.cat([from_regional(regional, bsz, h, w, b), from_dilated(dilated, bsz, h, w, b)], dim=3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.head_outputs(x).flatten(3))

    def extra_repr(self) -> str:
        return f"heads={self.heads}, head_dim={self.head_dim}, block_size={self.block_size}, kv_heads={self.kv_heads}"


class LatentCrossAttention(nn.Module):
    """Cross-attention self-modulation (paper §3.3): every image token attends to the latent embedding Z.

    Queries come from the image (dim ``C``), keys/values from the ``T`` latent tokens (dim ``C_Z``), each
    stage with its own projections. With ``capture = True`` the forward stores ``captured = {"attn":
    [B, heads, H, W, T], "labels"}`` (softmax probabilities over the latent tokens).
    """

    def __init__(self, dim: int, latent_dim: int, heads: int, attention: AttentionKind = "multi_query"):
        super().__init__()
        if dim % heads:
            raise ValueError(f"heads ({heads}) must divide dim ({dim})")
        self.heads, self.head_dim = heads, dim // heads
        self.kv_heads = 1 if attention == "multi_query" else heads
        self.scale = 1.0 / math.sqrt(self.head_dim)
        self.q = linear(dim, dim)
        self.k = linear(latent_dim, self.kv_heads * self.head_dim)
        self.v = linear(latent_dim, self.kv_heads * self.head_dim)
        self.proj = linear(dim, dim)
        self.labels = ["latent"] * heads
        self.capture = False
        self.captured: dict | None = None

    def forward(self, x: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        bsz, h, w, c = x.shape
        t = latents.shape[1]
        q = self.q(x).view(bsz, h * w, self.heads, self.head_dim).transpose(1, 2)     # [B, heads, HW, d]
        k = self.k(latents).view(bsz, t, self.kv_heads, self.head_dim).transpose(1, 2)  # [B, kv, T, d]
        v = self.v(latents).view(bsz, t, self.kv_heads, self.head_dim).transpose(1, 2)
        if self.capture:
            with torch.no_grad():
                kk = k.expand(-1, self.heads, -1, -1) if self.kv_heads == 1 else k
                probs = torch.softmax(q @ kk.transpose(-1, -2) * self.scale, dim=-1)
            self.captured = {"attn": probs.view(bsz, self.heads, h, w, t), "labels": list(self.labels)}
        out = _attend(q, k, v, self.scale)                                             # [B, heads, HW, d]
        return self.proj(out.transpose(1, 2).reshape(bsz, h, w, c))

    def extra_repr(self) -> str:
        return f"heads={self.heads}, head_dim={self.head_dim}, kv_heads={self.kv_heads}"


class AttentionBlock(nn.Module):
    """Pre-norm transformer block: ``y = x + attn(norm(x)[, Z])``; ``out = MLP(y)`` (MLP has its own norm).

    For cross-attention only the queries are normalised; Z was normalised once when it was embedded.
    """

    def __init__(self, dim: int, attention: nn.Module, mlp_ratio: int = 4, norm: NormKind = "batch"):
        super().__init__()
        self.norm = make_norm(norm, dim)
        self.attn = attention
        self.mlp = MLP(dim, mlp_ratio, norm)

    def forward(self, x: torch.Tensor, latents: torch.Tensor | None = None) -> torch.Tensor:
        h = self.norm(x)
        h = self.attn(h) if latents is None else self.attn(h, latents)
        return self.mlp(x + h)


def pixel_shuffle(x: torch.Tensor) -> torch.Tensor:
    """x2 depth-to-space on ``[B, H, W, C]`` -> ``[B, 2H, 2W, C/4]``, TensorFlow channel order (DCR)."""
    bsz, h, w, c = x.shape
    x = x.view(bsz, h, w, 2, 2, c // 4).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(bsz, 2 * h, 2 * w, c // 4)


class PixelShuffleUp(nn.Module):
    """Pixel shuffle then a linear to the next stage's width (skipped when C/4 already equals it)."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.proj = linear(in_dim // 4, out_dim) if in_dim // 4 != out_dim else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(pixel_shuffle(x))
