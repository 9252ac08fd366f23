"""Neighborhood attention through ``natten.na2d`` (natten >= 0.21): no RPB, forward-only on CPU.

natten 0.20 dropped relative positional bias, so this backend only serves RPB-free attention. Without
libnatten (e.g. a CPU-only install) natten runs its eager Flex backend, which materialises the full
N x N score matrix and has no backward on CPU; with libnatten on a GPU it has fused kernels.
"""

from __future__ import annotations

import importlib.util

import torch

from natgan.ops.na_indices import Pair


def natten_available() -> bool:
    """True when the ``natten`` package can be imported (importing it is deferred until first use)."""
    return importlib.util.find_spec("natten") is not None


def check_natten_supports(q: torch.Tensor, rpb: torch.Tensor | None, needs_grad: bool) -> None:
    """Refuse up front what natten cannot do, instead of failing deep inside it (or at backward)."""
    if not natten_available():
        raise RuntimeError("neighborhood attention backend 'natten' requested but natten is not installed")
    if rpb is not None:
        raise ValueError(
            "neighborhood attention backend 'natten' has no relative positional bias (removed in natten "
            "0.20); pass rpb=None or use backend='torch' or 'flex'"
        )
    if needs_grad and q.device.type == "cpu":
        raise RuntimeError(
            "neighborhood attention backend 'natten' has no backward on CPU; run it under "
            "torch.no_grad() or use backend='torch'"
        )


def na2d_natten(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kernel: Pair, dilation: Pair, scale: float
) -> torch.Tensor:
    """``natten.na2d`` on ``[B, H, W, heads, D]`` tensors (its own layout); arguments already checked."""
    import natten

    return natten.na2d(q, k, v, kernel_size=kernel, dilation=dilation, scale=scale)
