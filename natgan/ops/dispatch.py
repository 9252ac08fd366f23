"""Public entry point: validate once, pick a backend, run it.

Backend choice (first that applies):
1. the ``backend`` argument;
2. the ``NATGAN_NA_BACKEND`` environment variable (``torch``, ``natten``, ``flex`` or ``auto``);
3. automatic: ``flex`` on CUDA when it can be compiled (block-sparse Triton kernels with an RPB
   gradient; the torch backend is a gather + GEMM fallback that wastes ~4x FLOPs and memory
   bandwidth), otherwise ``torch`` (CPU: eager flex materialises N x N scores and has no backward,
   natten has no RPB and no CPU backward, so the halo-GEMM torch backend is both the only complete
   option and the fastest measured one).
If the automatic flex choice fails to compile, a warning is issued once and ``torch`` is used from then on.
"""

from __future__ import annotations

import math
import os
import warnings

import torch

from natgan.errors import ConfigError
from natgan.ops.na_flex import check_flex_supports, flex_available, flex_compilable, na2d_flex
from natgan.ops.na_indices import as_pair, check_geometry
from natgan.ops.na_natten import check_natten_supports, na2d_natten, natten_available
from natgan.ops.na_torch import na2d_torch

BACKENDS = ("torch", "natten", "flex")
ENV_VAR = "NATGAN_NA_BACKEND"

_flex_failed_on: set[str] = set()


def available_backends() -> tuple[str, ...]:
    """Backends importable in this process. ``natten`` and ``flex`` are forward-only on CPU."""
    found = ["torch"]
    if natten_available():
        found.append("natten")
    if flex_available():
        found.append("flex")
    return tuple(found)


class BackendError(ConfigError, ValueError):
    """An unknown backend name (argument or environment): a configuration error, one line, exit 2."""


def _requested_backend(backend: str | None) -> str:
    """The explicit choice (argument, else environment), or ``"auto"``."""
    source = "backend argument"
    if backend is None:
        backend, source = os.environ.get(ENV_VAR, "").strip() or "auto", f"${ENV_VAR}"
    name = backend.lower()
    if name not in BACKENDS + ("auto",):
        raise BackendError(
            f"neighborhood attention: unknown backend {backend!r} ({source}); choose one of "
            f"{', '.join(BACKENDS + ('auto',))}"
        )
    return name


def flex_friendly(head_dim: int) -> bool:
    """Head sizes the automatic choice gives to flex: Triton flex tiles want powers of 2, at least 16."""
    return head_dim >= 16 and head_dim & (head_dim - 1) == 0


def _auto_backend(q: torch.Tensor) -> str:
    if flex_friendly(q.shape[-1]) and flex_compilable(q.device) and str(q.device) not in _flex_failed_on:
        return "flex"
    return "torch"


def _validate(q, k, v, rpb, kernel: tuple[int, int], dilation: tuple[int, int]) -> None:
    for name, t in (("q", q), ("k", k), ("v", v)):
        if t.dim() != 5:
            raise ValueError(
                f"neighborhood attention: {name} must be [batch, H, W, heads, head_dim], got shape {tuple(t.shape)}"
            )
    if k.shape != q.shape or v.shape[:4] != q.shape[:4]:
        raise ValueError(
            "neighborhood attention: q and k must have the same shape and v the same leading dims, got "
            f"{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}"
        )
    if len({t.device for t in (q, k, v)}) != 1 or len({t.dtype for t in (q, k, v)}) != 1:
        raise ValueError("neighborhood attention: q, k and v must share device and dtype")
    check_geometry(q.shape[1], q.shape[2], kernel, dilation)
    if rpb is not None:
        expected = (q.shape[3], 2 * kernel[0] - 1, 2 * kernel[1] - 1)
        if tuple(rpb.shape) != expected:
            raise ValueError(
                f"neighborhood attention: rpb must have shape [heads, 2k-1, 2k-1] = {list(expected)}, "
                f"got {list(rpb.shape)}"
            )
        if rpb.device != q.device:
            raise ValueError(f"neighborhood attention: rpb is on {rpb.device} but q is on {q.device}")


def neighborhood_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    kernel_size: int | tuple[int, int],
    dilation: int | tuple[int, int] = 1,
    rpb: torch.Tensor | None = None,
    scale: float | None = None,
    backend: str | None = None,
) -> torch.Tensor:
    """2-D dilated neighborhood attention with the semantics of the old NATTEN kernels (StyleNAT).

    Args:
        q, k, v: ``[batch, H, W, heads, head_dim]`` (natten's heads-last layout); v may have its own
            head_dim.
        kernel_size: odd window size >= 3, or a ``(rows, cols)`` pair.
        dilation: int or ``(rows, cols)`` pair; ``kernel * dilation`` must not exceed the map size.
        rpb: optional relative positional bias ``[heads, 2k-1, 2k-1]``, indexed by
            (key - query) in dilated steps + (k - 1), added to the logits after scaling.
        scale: multiplies q before QK; default ``head_dim ** -0.5``.
        backend: ``"torch"``, ``"natten"``, ``"flex"`` or ``"auto"``; default: ``$NATGAN_NA_BACKEND``, else
            automatic (see the module docstring).

    Returns ``[batch, H, W, heads, v_head_dim]``. Windows are shifted (not truncated) at the borders,
    per axis and inside each dilation group, so every query attends to exactly ``k*k`` keys.
    """
    kernel, dil = as_pair(kernel_size, "kernel_size"), as_pair(dilation, "dilation")
    _validate(q, k, v, rpb, kernel, dil)
    if rpb is not None and rpb.dtype != q.dtype:
        rpb = rpb.to(q.dtype)  # e.g. a float32 parameter under bf16 autocast; the cast is differentiable
    scale = q.shape[-1] ** -0.5 if scale is None else float(scale)
    if not math.isfinite(scale):
        raise ValueError(f"neighborhood attention: scale must be finite, got {scale}")
    tensors = (q, k, v) if rpb is None else (q, k, v, rpb)
    needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in tensors)

    name = _requested_backend(backend)
    if name == "natten":
        check_natten_supports(q, rpb, needs_grad)
        return na2d_natten(q, k, v, kernel, dil, scale)
    if name == "flex":
        check_flex_supports(q, needs_grad)
        return na2d_flex(q, k, v, kernel, dil, rpb, scale)
    if name == "auto" and _auto_backend(q) == "flex":
        try:
            return na2d_flex(q, k, v, kernel, dil, rpb, scale)
        except Exception as error:  # compile toolchain problems surface as many exception types
            _flex_failed_on.add(str(q.device))
            warnings.warn(
                f"neighborhood attention: flex backend failed on {q.device} ({type(error).__name__}: {error}); "
                "using the torch backend from now on",
                RuntimeWarning,
                stacklevel=2,
            )
    return na2d_torch(q, k, v, kernel, dil, rpb, scale)
