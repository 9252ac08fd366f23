"""Collecting what attention modules expose under the capture contract, in forward order.

Every attention module of a registered generator has a bool attribute ``capture`` (default False).
When it is True the module's forward stores ``self.captured``:

* self-attention: ``{"q": [B, heads, H, W, hd] (scaled, before any RPB), "k": [B, heads, H, W, hd],
  "labels": [str per head]}`` in spatial layout (windows / blocks already undone);
* image -> latent cross-attention: ``{"attn": [B, heads, H, W, n_latents] (probabilities),
  "labels": [...]}``.

:func:`capturing` switches capture on, reduces every stored dict to a small map right after the call
(so a 1024² generator never keeps all of its q/k alive) and restores the modules afterwards.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, Iterator

import torch
from torch import nn

from natgan.errors import ConfigError, NatGanError


@dataclass
class Capture:
    """One call of one attention module, already reduced by the caller's ``reduce`` function."""

    name: str        # module path inside the generator, e.g. "layers.3.blocks.0.attn"
    kind: str        # "self" | "cross"
    labels: list[str]
    value: torch.Tensor


def attention_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Modules that honour the capture contract, found by their ``capture`` attribute."""
    return [(name, m) for name, m in model.named_modules() if hasattr(m, "capture")]


def _kind(captured: dict, name: str) -> str:
    if "attn" in captured:
        return "cross"
    if "q" in captured and "k" in captured:
        return "self"
    raise NatGanError(f"attention module '{name}' stored a capture with keys {sorted(captured)}; "
                      f"expected q/k/labels (self-attention) or attn/labels (cross-attention)")


def _check(captured: dict, kind: str, name: str) -> None:
    tensors = [captured["attn"]] if kind == "cross" else [captured["q"], captured["k"]]
    for t in tensors:
        if not isinstance(t, torch.Tensor) or t.dim() != 5:
            shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise NatGanError(f"attention module '{name}' captured a tensor of shape {shape}; "
                              f"expected 5 dims [B, heads, H, W, *]")
    if kind == "self" and captured["q"].shape != captured["k"].shape:
        raise NatGanError(f"attention module '{name}' captured q {tuple(captured['q'].shape)} and "
                          f"k {tuple(captured['k'].shape)} of different shapes")
    heads = tensors[0].shape[1]
    labels = captured.get("labels")
    if labels is not None and len(labels) != heads:
        raise NatGanError(f"attention module '{name}' gave {len(labels)} head labels for {heads} heads")


@contextlib.contextmanager
def capturing(model: nn.Module, reduce: Callable[[str, dict], torch.Tensor]) -> Iterator[list[Capture]]:
    """Within the block, every attention call appends a :class:`Capture` (``reduce(kind, captured)``).

    Raises :class:`ConfigError` (a usage error, exit 2) if the model has no capture-capable module, so a user asking for
    attention maps of a convolutional model (StyleGAN2) gets a sentence, not an empty folder.
    """
    modules = attention_modules(model)
    if not modules:
        raise ConfigError(f"{type(model).__name__} has no attention modules to visualise (no module exposes the "
                          f"'capture' attribute); attention maps are drawn for stylenat, styleswin, hit and ganformer")
    records: list[Capture] = []
    handles = []
    previous = [(m, m.capture) for _, m in modules]

    def make_hook(name: str):
        def hook(module: nn.Module, args, output) -> None:
            captured = getattr(module, "captured", None)
            if not isinstance(captured, dict):
                raise NatGanError(f"attention module '{name}' has capture=True but stored no 'captured' dict")
            kind = _kind(captured, name)
            _check(captured, kind, name)
            lead = captured["attn"] if kind == "cross" else captured["q"]
            labels = [str(s) for s in captured.get("labels") or [""] * lead.shape[1]]
            records.append(Capture(name, kind, labels, reduce(kind, captured)))
            module.captured = None  # free the q/k tensors now
        return hook

    try:
        for name, m in modules:
            m.capture = True
            handles.append(m.register_forward_hook(make_hook(name)))
        yield records
    finally:
        for h in handles:
            h.remove()
        for m, flag in previous:
            m.capture = flag
            if hasattr(m, "captured"):
                m.captured = None
