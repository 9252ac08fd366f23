"""A pure-PyTorch stand-in for NATTEN 0.17's unfused ``na2d_qk`` / ``na2d_av`` (with RPB), for the official
StyleNAT code only.

Why it exists: StyleNAT's official ``models/stylenat.py`` calls ``natten.functional.na2d_qk(q, k, kernel_size,
dilation, rpb=...)`` and ``na2d_av(attn, v, kernel_size, dilation)`` and switches on ``natten.use_fused_na`` /
``use_autotuner``. NATTEN 0.20 removed those unfused ops (and they need NATTEN's compiled kernels besides), so
``benchmarks/bench_peers.py`` puts :func:`stand_in_modules` into ``sys.modules`` while it imports and runs the
official code. It is written from the NATTEN 0.17 semantics documented in
``shared/fixtures/official/README.md``, independently of nat-gan's own neighborhood-attention op (the point of
a peer comparison is two independent implementations), and deliberately plain: one gather per neighbour
offset, no fused kernel. Timings of the official StyleNAT code therefore measure the official model code
around this stand-in, not NATTEN's kernels.

Semantics (per axis, independently for rows and columns; axis length ``L``, kernel ``K``, dilation ``d``):
query ``i`` belongs to dilation group ``g = i mod d``, which holds ``n = ceil((L - g) / d)`` positions;
with ``a = i div d`` the window starts at ``s = clamp(a - K//2, 0, n - K)`` (shifted at the borders, never
truncated) and its neighbours are ``(s + t) * d + g`` for ``t = 0 .. K-1``. Neighbour ``(ti, tj)`` is logit
``ti * K + tj``. The RPB term is ``rpb[head, (key_row - query_row)/d + K-1, (key_col - query_col)/d + K-1]``.
Layout: q, k, v ``[B, heads, H, W, D]``, logits ``[B, heads, H, W, K*K]``.
"""

from __future__ import annotations

import types

import torch

STAND_IN_NOTE = "pure-PyTorch stand-in for NATTEN 0.17 na2d_qk/na2d_av (natten >= 0.20 removed them)"


def _pair(value: int | tuple[int, int] | list[int], name: str) -> tuple[int, int]:
    pair = tuple(value) if isinstance(value, (tuple, list)) else (value, value)
    if len(pair) != 2 or not all(isinstance(v, int) and v >= 1 for v in pair):
        raise ValueError(f"{name}: expected a positive int or a pair of them, got {value!r}")
    return pair


def axis_neighbours(length: int, kernel: int, dilation: int, device: torch.device | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(index, bias_index)``, both ``[length, kernel]``: the neighbour positions of every query along one
    axis, and the RPB table row of each (key minus query in dilated units, shifted by ``kernel - 1``)."""
    if kernel * dilation > length:
        raise ValueError(f"kernel {kernel} x dilation {dilation} exceeds the axis length {length}")
    i = torch.arange(length, device=device)
    group, a = i % dilation, i // dilation
    count = (length - group + dilation - 1) // dilation
    start = torch.minimum((a - kernel // 2).clamp(min=0), count - kernel)
    t = torch.arange(kernel, device=device)
    index = (start[:, None] + t[None, :]) * dilation + group[:, None]
    bias_index = start[:, None] + t[None, :] - a[:, None] + kernel - 1
    return index, bias_index


def na2d_qk(query: torch.Tensor, key: torch.Tensor, kernel_size, dilation=1, rpb: torch.Tensor | None = None
            ) -> torch.Tensor:
    """Logits ``[B, heads, H, W, K*K]`` of every query against its neighbourhood (plus ``rpb`` if given)."""
    (kh, kw), (dh, dw) = _pair(kernel_size, "kernel_size"), _pair(dilation, "dilation")
    height, width = query.shape[2], query.shape[3]
    rows, row_bias = axis_neighbours(height, kh, dh, query.device)
    cols, col_bias = axis_neighbours(width, kw, dw, query.device)
    logits = []
    for ti in range(kh):
        key_rows = key.index_select(2, rows[:, ti])
        for tj in range(kw):
            logit = (query * key_rows.index_select(3, cols[:, tj])).sum(-1)
            if rpb is not None:
                logit = logit + rpb[:, row_bias[:, ti, None], col_bias[None, :, tj]]
            logits.append(logit)
    return torch.stack(logits, dim=-1)


def na2d_av(attn: torch.Tensor, value: torch.Tensor, kernel_size, dilation=1) -> torch.Tensor:
    """``[B, heads, H, W, D]``: each query's neighbours' values weighted by ``attn`` ``[B, heads, H, W, K*K]``."""
    (kh, kw), (dh, dw) = _pair(kernel_size, "kernel_size"), _pair(dilation, "dilation")
    height, width = value.shape[2], value.shape[3]
    if attn.shape[-1] != kh * kw:
        raise ValueError(f"attn has {attn.shape[-1]} neighbours per query, kernel {kh}x{kw} needs {kh * kw}")
    rows, _ = axis_neighbours(height, kh, dh, value.device)
    cols, _ = axis_neighbours(width, kw, dw, value.device)
    out = torch.zeros_like(value)
    for ti in range(kh):
        value_rows = value.index_select(2, rows[:, ti])
        for tj in range(kw):
            out = out + attn[..., ti * kw + tj, None] * value_rows.index_select(3, cols[:, tj])
    return out


def stand_in_modules() -> dict[str, types.ModuleType]:
    """``{"natten": ..., "natten.functional": ...}`` exposing what the official StyleNAT code imports; the
    fused-NA and autotuner switches are accepted and do nothing (there is no kernel to tune)."""
    functional = types.ModuleType("natten.functional")
    functional.na2d_qk, functional.na2d_av = na2d_qk, na2d_av
    natten = types.ModuleType("natten")
    natten.__doc__ = STAND_IN_NOTE
    natten.functional = functional
    natten.use_fused_na = lambda *args, **kwargs: None
    natten.use_autotuner = lambda *args, **kwargs: None
    return {"natten": natten, "natten.functional": functional}
