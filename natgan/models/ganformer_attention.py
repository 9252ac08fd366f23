"""GANformer's bipartite attention (Hudson & Zitnick, ICML 2021) between image features and k latents.

Notation of the paper: X = image features (n = H*W positions), Y = the local latents (m of them).
Each image position's query attends over the m latents (softmax over latents), the attended values
become a per-position gain (and/or bias) applied to the normalised features: Eq. 7,
``u(X, Y) = gamma(a(X, Y)) * omega(X) + beta(a(X, Y))``.

Three ways of computing the attention logits, selected by ``mode``:

* ``"simplex"`` (paper §3.1.1): ``logits = q(X) . k(Y)`` — information flows latents -> image only.
* ``"duplex"`` (paper §3.1.2): first the latents' keys are updated from the image,
  ``K := LayerNorm(K + Attention(K, X, X))`` (the additive rule u^a of Eq. 6, with the image queries as
  keys and values, so K becomes the centroid of the image region assigned to each latent, as the author
  describes in gansformer issues #10/#19), then ``logits = q(X) . K``; values stay the latents'.
  ``kmeans_iters`` repeats the key update.
* ``"duplex_kmeans"`` — what the official PyTorch code runs by default (``--kmeans``, all released
  checkpoints): the logits compare ``[q_content, q_position]`` with *learned* centroid parameters
  (``kmeans_iters=1`` never refines them from the image), so the latents' keys do not enter the
  logits at all. Extra iterations recompute the centroids as assignment-weighted means of the queries.

Image positions carry a fixed 2-D sinusoidal encoding; latents a learned embedding (shared by all layers).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from natgan.models.layers import EqualLinear

AttentionMode = Literal["simplex", "duplex", "duplex_kmeans"]
Integration = Literal["mul", "add", "both"]
Norm = Literal["layer", "instance", "none"]


def sinusoidal_grid(size: int, dim: int) -> torch.Tensor:
    """``[size*size, dim]`` row-major 2-D encoding: ``[sin x, cos x, sin y, cos y]`` blocks of ``dim/4``
    frequencies ``10000^(-4i/dim)`` over coordinates ``linspace(-1, 1, size)`` (x = column, y = row)."""
    if dim % 4:
        raise ValueError(f"positional dimension must be a multiple of 4, got {dim}")
    coord = torch.linspace(-1.0, 1.0, size).unsqueeze(-1)
    freq = torch.pow(10000.0, -4.0 * torch.arange(dim // 4, dtype=torch.float32) / dim)
    sin, cos = torch.sin(coord * freq), torch.cos(coord * freq)            # [size, dim/4]
    x_part = torch.cat([sin, cos], dim=-1).unsqueeze(0).expand(size, -1, -1)  # varies along columns
    y_part = torch.cat([sin, cos], dim=-1).unsqueeze(1).expand(-1, size, -1)  # varies along rows
    return torch.cat([x_part, y_part], dim=-1).reshape(size * size, dim)


def attention_dropout(probs: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """The official split dropout: p/2 on single cells and p/2 on whole latent columns (a latent silenced
    for every position), with inverted scaling. ``probs`` is ``[B, heads, from, to]``."""
    if not training or p <= 0:
        return probs
    b, h, _, m = probs.shape
    probs = F.dropout(probs, p / 2, True)
    return probs * F.dropout(probs.new_ones(b, h, 1, m), p / 2, True)


def split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    b, n, c = x.shape
    return x.view(b, n, heads, c // heads).transpose(1, 2)  # [B, heads, n, c/heads]


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    b, h, n, s = x.shape
    return x.transpose(1, 2).reshape(b, n, h * s)


class BipartiteAttention(nn.Module):
    """Projections and the integration rule shared by the image<-latents and latent<->latent layers."""

    def __init__(self, dim: int, from_dim: int, to_dim: int, pos_dim: int, heads: int = 1,
                 dropout: float = 0.12, integration: Integration = "mul", norm: Norm = "layer"):
        super().__init__()
        if dim % heads:
            raise ValueError(f"attention width {dim} is not divisible by {heads} heads")
        self.dim, self.heads, self.size_head = dim, heads, dim // heads
        self.dropout, self.integration, self.norm = dropout, integration, norm
        self.to_queries = EqualLinear(from_dim, dim)
        self.to_keys = EqualLinear(to_dim, dim)
        self.to_values = EqualLinear(to_dim, dim)
        self.from_pos_map = EqualLinear(pos_dim, dim)
        self.to_pos_map = EqualLinear(pos_dim, dim)
        self.modulation = EqualLinear(dim, 2 * dim if integration == "both" else dim)

    def integrate(self, x: torch.Tensor, control: torch.Tensor) -> torch.Tensor:
        """Normalise ``x`` [B, n, C] without affine (centre for add, RMS-scale for mul), then let the
        attended ``control`` set its gain (``x * (1 + gamma)``) and/or bias (``+ beta``)."""
        if self.norm != "none":
            axis = -1 if self.norm == "layer" else 1  # layer: over channels per position; instance: over positions
            if self.integration in ("add", "both"):
                x = x - x.mean(dim=axis, keepdim=True)
            if self.integration in ("mul", "both"):  # statistics in fp32 even under bf16 autocast
                x = x * torch.rsqrt(x.float().square().mean(dim=axis, keepdim=True) + 1e-8).to(x.dtype)
        control = self.modulation(control)
        if self.integration == "mul":
            return x * (1 + control)
        if self.integration == "add":
            return x + control
        gain, bias = control.chunk(2, dim=-1)  # two halves (the official code splits in chunks of 2: a bug)
        return x * (1 + gain) + bias

    def attend(self, logits: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """softmax over the 'to' elements, split dropout, weighted sum of values -> (control [B,n,C], probs)."""
        probs = torch.softmax(logits, dim=-1)
        dropped = attention_dropout(probs, self.dropout, self.training)
        return merge_heads(dropped @ values), probs


class LatentSelfAttention(BipartiteAttention):
    """The mapping network's attention among the local latents (official ``--mapping-ltnt2ltnt``):
    simplex, additive integration, no normalisation, latent positions on queries and keys."""

    def __init__(self, dim: int, heads: int = 1, dropout: float = 0.12, use_pos: bool = True):
        super().__init__(dim, dim, dim, dim, heads, dropout, integration="add", norm="none")
        self.use_pos = use_pos

    def forward(self, y: torch.Tensor, pos: torch.Tensor | None) -> torch.Tensor:
        q, k = self.to_queries(y), self.to_keys(y)
        if self.use_pos and pos is not None:
            q, k = q + self.from_pos_map(pos), k + self.to_pos_map(pos)
        q, k, v = (split_heads(t, self.heads) for t in (q, k, self.to_values(y)))
        control, _ = self.attend(q @ k.transpose(-1, -2) / math.sqrt(self.size_head), v)
        return self.integrate(y, control)


class ImageLatentAttention(BipartiteAttention):
    """Image features attend over the local latents inside a synthesis layer.

    Visualisation hook: set ``capture = True`` and the next forward stores ``captured = {"attn":
    [B, heads, H, W, m] softmax probabilities of each position over the latents, "labels": [per head]}``.
    """

    def __init__(self, channels: int, latent_dim: int, num_latents: int, resolution: int,
                 mode: AttentionMode = "duplex_kmeans", heads: int = 1, dropout: float = 0.12,
                 integration: Integration = "mul", norm: Norm = "layer", use_pos: bool = True,
                 kmeans_iters: int = 1):
        super().__init__(channels, channels, latent_dim, latent_dim, heads, dropout, integration, norm)
        self.mode, self.use_pos, self.kmeans_iters = mode, use_pos, kmeans_iters
        self.num_latents, self.resolution = num_latents, resolution
        self.register_buffer("grid_pos", sinusoidal_grid(resolution, latent_dim), persistent=False)
        if mode == "duplex":
            self.key_norm = nn.LayerNorm(channels)
        elif mode == "duplex_kmeans":
            self.att_weight = nn.Parameter(torch.ones(heads, 1, 2 * self.size_head))
            self.centroids = nn.Parameter(torch.randn(1, heads, num_latents, 2 * self.size_head))
        elif mode != "simplex":
            raise ValueError(f"attention mode must be simplex, duplex or duplex_kmeans, got {mode!r}")
        self.capture = False
        self.captured: dict | None = None

    def forward(self, x: torch.Tensor, latents: torch.Tensor, latent_pos: torch.Tensor | None) -> torch.Tensor:
        """``x [B, C, H, W]`` image features, ``latents [B, m, latent_dim]`` -> modulated ``[B, C, H, W]``."""
        b, c, h, w = x.shape
        tokens = x.flatten(2).transpose(1, 2)                                  # [B, n, C]
        q_content = self.to_queries(tokens)
        q_position = self.from_pos_map(self.grid_pos.to(tokens.dtype))        # [n, C], shared by the batch
        queries = q_content + q_position
        keys = self.to_keys(latents)
        if self.use_pos and latent_pos is not None:
            keys = keys + self.to_pos_map(latent_pos)
        q, v = split_heads(queries, self.heads), split_heads(self.to_values(latents), self.heads)
        scale = 1 / math.sqrt(self.size_head)

        if self.mode == "simplex":
            logits = q @ split_heads(keys, self.heads).transpose(-1, -2) * scale
        elif self.mode == "duplex":
            logits = q @ self.image_updated_keys(keys, q, scale).transpose(-1, -2) * scale
        else:
            logits = self.kmeans_logits(q_content, q_position, scale)

        control, probs = self.attend(logits, v)
        if self.capture:
            self.captured = {"attn": probs.detach().view(b, self.heads, h, w, self.num_latents),
                             # the renderer adds "h{i}" and the block title the resolution: keep tiles readable
                             "labels": [self.mode.replace("_", " ") for _ in range(self.heads)]}
        out = self.integrate(tokens, control)
        return out.transpose(1, 2).reshape(b, c, h, w)

    def image_updated_keys(self, keys: torch.Tensor, q: torch.Tensor, scale: float) -> torch.Tensor:
        """Paper duplex: ``K := LayerNorm(K + Attention(K, X, X))``, each latent's key moving to the
        centroid of the image queries it attends to (softmax over positions); ``kmeans_iters`` times."""
        for _ in range(self.kmeans_iters):
            k = split_heads(keys, self.heads)
            assign = torch.softmax(k @ q.transpose(-1, -2) * scale, dim=-1)    # [B, heads, m, n]
            keys = self.key_norm(keys + merge_heads(assign @ q))
        return split_heads(keys, self.heads)

    def kmeans_logits(self, q_content: torch.Tensor, q_position: torch.Tensor, scale: float) -> torch.Tensor:
        """Official default: points ``[q_content, q_position]`` (concatenated, then split into heads)
        against learned centroids;
        iterations after the first re-estimate centroids as assignment-weighted means of the points."""
        # The official layout: concatenate [content, position] over channels, then split into heads, so
        # with 2 heads head 0 sees all content channels and head 1 all position channels.
        points = split_heads(torch.cat([q_content, q_position.expand_as(q_content)], dim=-1),
                             self.heads)                                       # [B, heads, n, 2s]
        centroids = self.centroids.expand(points.shape[0], -1, -1, -1)
        logits = None
        for i in range(self.kmeans_iters):
            if i > 0:
                probs = attention_dropout(torch.softmax(logits, dim=-1), self.dropout, self.training)
                assign = probs / (probs.sum(dim=-2, keepdim=True) + 1e-8)       # normalise over positions
                centroids = assign.transpose(-1, -2) @ points                  # [B, heads, m, 2s]
            logits = (points * self.att_weight) @ centroids.transpose(-1, -2) * scale
        return logits

    def extra_repr(self) -> str:
        return f"mode={self.mode}, heads={self.heads}, latents={self.num_latents}, resolution={self.resolution}"
