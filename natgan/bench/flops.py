"""FLOPs of one call: torch's ``FlopCounterMode`` plus an analytic count for neighbourhood attention.

``FlopCounterMode`` counts matrix products and convolutions (2 FLOPs per multiply-add; element-wise
work such as norms, activations and softmax is not counted, by its convention and ours). It sees the
aten ops a call dispatches, which is wrong for neighbourhood attention in both directions: natten's
op is invisible to it, and flex or a traced halo-GEMM op would be charged for dense products that
compute about 4x what a neighbourhood really needs (our torch backend's custom op registers the model
formula with the counter, but natten and flex do not). So while counting, :func:`natgan.ops.neighborhood_attention`
is wrapped: its own dispatches are hidden from the counter and it is charged the model FLOPs of
neighbourhood attention instead, ``4 · B · H · W · heads · K_h · K_w · head_dim`` (QK and AV, each
one multiply-add per query, neighbour and channel). The result is the model's FLOPs per image, the
figure the papers' tables and the roofline estimates use, independent of the attention backend.
(Calls are charged when they go through the ``natgan.ops`` module attribute or any ``natgan.*``
module's imported name, which is how every model reaches the op.)
"""

from __future__ import annotations

import contextlib
import importlib
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

NA_FUNCTION = "neighborhood_attention"


@dataclass
class FlopReport:
    total: int                               # counted + analytic
    counted: int                             # seen by FlopCounterMode
    analytic: int                            # neighbourhood attention, by formula
    by_op: dict[str, int] = field(default_factory=dict)
    na_calls: int = 0

    @property
    def method(self) -> str:
        if self.na_calls:
            return (f"torch FlopCounterMode (matmul/conv/sdpa) + analytic neighbourhood attention "
                    f"({self.na_calls} calls, 4·N·K²·C)")
        return "torch FlopCounterMode (matmul/conv/sdpa)"


def _pair(value: Any) -> tuple[int, int]:
    if isinstance(value, (tuple, list)):
        return int(value[0]), int(value[1])
    return int(value), int(value)


def na_flops(q: torch.Tensor, kernel_size: Any) -> int:
    """Model FLOPs of 2-D neighbourhood attention for ``q`` of layout ``[B, H, W, heads, head_dim]``."""
    b, h, w, heads, d = q.shape
    kh, kw = _pair(kernel_size)
    return 4 * b * h * w * heads * kh * kw * d


def _hidden_from_modes():
    """Context that hides dispatches from active TorchDispatchModes (the flop counter)."""
    try:
        from torch.utils._python_dispatch import _disable_current_modes
    except ImportError:  # pragma: no cover - very old/new torch: count the op's own GEMMs instead
        return None
    return _disable_current_modes()


@contextlib.contextmanager
def _charge_neighborhood_attention(report: FlopReport) -> Iterator[None]:
    """Replace every reference to the NA entry point inside ``natgan`` by a FLOP-charging wrapper."""
    try:  # models may import the op lazily inside forward, so make sure the module exists now
        ops = importlib.import_module("natgan.ops")
    except ImportError:
        ops = None
    original = getattr(ops, NA_FUNCTION, None) if ops is not None else None
    if original is None:
        yield
        return

    def charged(q, k, v, kernel_size, *args, **kwargs):
        report.analytic += na_flops(q, kernel_size)
        report.na_calls += 1
        hidden = _hidden_from_modes()
        if hidden is None:
            return original(q, k, v, kernel_size, *args, **kwargs)
        with hidden:
            return original(q, k, v, kernel_size, *args, **kwargs)

    patched = []
    for name, module in list(sys.modules.items()):
        if module is None or not (name == "natgan" or name.startswith("natgan.")):
            continue
        for attr, value in list(vars(module).items()):
            if value is original:
                patched.append((module, attr))
                setattr(module, attr, charged)
    try:
        yield
    finally:
        for module, attr in patched:
            setattr(module, attr, original)


@contextlib.contextmanager
def _frozen(modules: Iterable[nn.Module]) -> Iterator[None]:
    """Parameters with ``requires_grad=False`` for the count.

    FlopCounterMode's module tracker hooks every module output that requires grad; under ``no_grad`` a
    view of a parameter (e.g. a constant input ``expand``-ed over the batch) requires grad but has no
    grad_fn, which the tracker cannot handle. Frozen parameters make such outputs plain tensors.
    """
    params = [p for m in modules for p in m.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


def count_flops(fn: Callable[[], object], modules: Iterable[nn.Module] = ()) -> FlopReport:
    """FLOPs of ``fn()`` (run once, under ``no_grad``); pass the ``modules`` it runs (see :func:`_frozen`)."""
    report = FlopReport(0, 0, 0)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), _frozen(modules), _charge_neighborhood_attention(report), counter:
        fn()
    report.counted = int(counter.get_total_flops())
    report.by_op = {str(op).removeprefix("aten."): int(n)
                    for op, n in counter.get_flop_counts().get("Global", {}).items()}
    report.total = report.counted + report.analytic
    return report
