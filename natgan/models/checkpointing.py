"""Activation checkpointing shared by every generator: recompute a segment in backward, store only its input.

``checkpointed(module, fn, *args)`` is ``torch.utils.checkpoint`` (non-reentrant, RNG state preserved, so noise
injections draw the same values when recomputed) plus one fix: BatchNorm layers inside the segment
update their running statistics on the first pass only. Without it, HiT's BatchNorm generator would
take two momentum steps per training step when checkpointed. The recomputation still normalises with
the same batch statistics, so the outputs and gradients are the ones of the unchecked forward.

Generators expose ``set_activation_checkpointing(enabled)`` and the trainer calls it for
``train.activation_checkpointing = true``.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint


class _RunningStatsFrozen:
    """While entered, BatchNorms of ``module`` update throwaway copies of their running statistics.

    A class rather than a generator context: a double backward (path-length regularisation) recomputes
    a segment twice, so the same context is entered more than once. (Turning ``track_running_stats``
    off instead would save fewer tensors for backward than the first pass, which checkpoint refuses.)
    """

    NAMES = ("running_mean", "running_var", "num_batches_tracked")

    def __init__(self, module: nn.Module):
        self.module = module
        self._kept: list[tuple[nn.Module, dict[str, torch.Tensor]]] = []

    def __enter__(self) -> None:
        for m in self.module.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats and m.training:
                buffers = {n: getattr(m, n) for n in self.NAMES if getattr(m, n) is not None}
                self._kept.append((m, buffers))
                for n, t in buffers.items():
                    setattr(m, n, t.clone())

    def __exit__(self, *exc: Any) -> None:
        for m, buffers in self._kept:
            for n, t in buffers.items():
                setattr(m, n, t)
        self._kept = []


def checkpointed(module: nn.Module, fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` with activation checkpointing when gradients are being recorded, plainly otherwise.

    ``module`` owns every layer ``fn`` runs (its BatchNorms are frozen during the recomputation).
    """
    if not torch.is_grad_enabled():
        return fn(*args)
    contexts = lambda: (contextlib.nullcontext(), _RunningStatsFrozen(module))  # noqa: E731
    return checkpoint(fn, *args, use_reentrant=False, context_fn=contexts)
