"""Spectral norm's stored power-iteration state: why a never-trained discriminator's eval-mode logits are huge,
and how to settle it the way training does.

The StyleSwin/StyleNAT discriminator (:mod:`natgan.models.wavelet_discriminator`, ``sn=True``, also the church
and demo recipes) wraps its convs and linears in ``torch.nn.utils.spectral_norm``, as the official code does.
That wrapper draws random unit vectors ``u``, ``v`` when the layer is built and runs no power iteration then.
In training mode every forward first does one power-iteration step and divides the weight by
``sigma = u . (W v)``; in eval mode it divides by ``u . (W v)`` with the stored ``u``, ``v`` as they are. For
fresh random vectors that estimate is 1/10 to 1/500 of the real top singular value, and of either sign, in every
layer, so a new D in eval mode multiplies its input by their product: logits of about 1e14 at 32 px and 1e24 to
1e31 for the shipped 256/1024 px recipes, where one training-mode forward gives -0.17.

This is the official behaviour, not a nat-gan bug: the official StyleSwin and StyleNAT discriminators, given the
same state dict, return the same eval-mode logits bit for bit (checked side by side on CPU, 64 px: 6.58e18 on a
uniform image from both, -0.0941 from both after one training-mode forward). The official training never
evaluates D in eval mode, so it never shows there. nat-gan keeps the construction exactly as it is, so training
(and every shipped recipe's trajectory) stays the official one. The vectors are part of the state dict, so any
D that has taken a training step, in a nat-gan checkpoint or an imported official one, is settled already.

Code that shows the logits of a D that may never have been trained (a parity check of fresh models, a figure)
calls :func:`settle` on it, or on a copy: the power-iteration steps that the same number of training-mode
forwards would run, without the forwards, so the stored vectors end bit-identical to that training.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.spectral_norm import SpectralNorm


def spectral_norm_layers(module: nn.Module) -> list[tuple[nn.Module, SpectralNorm]]:
    """Every ``(layer, hook)`` of ``torch.nn.utils.spectral_norm`` inside ``module`` (in module order)."""
    return [(m, hook) for m in module.modules() for hook in m._forward_pre_hooks.values()
            if isinstance(hook, SpectralNorm)]


def eval_sigma(layer: nn.Module, hook: SpectralNorm) -> torch.Tensor:
    """The sigma an eval-mode forward divides ``layer``'s weight by now: ``u . (W v)`` with the stored vectors."""
    weight = getattr(layer, hook.name + "_orig")
    u, v = getattr(layer, hook.name + "_u"), getattr(layer, hook.name + "_v")
    return torch.dot(u, torch.mv(hook.reshape_weight_to_matrix(weight), v))


@torch.no_grad()
def settle(module: nn.Module, iterations: int = 1) -> int:
    """Advance every spectral-norm layer of ``module`` by ``iterations`` power-iteration steps, exactly what
    ``iterations`` training-mode forwards would do to the stored ``u``, ``v`` (bit-identical; the first training
    step of the official scripts runs one). Returns the number of layers. In place: settle a copy
    (``copy.deepcopy``) when the original must stay as it was built, since training from a settled D differs
    from training from the unsettled one."""
    if iterations < 0:
        raise ValueError(f"iterations: expected >= 0, got {iterations}")
    layers = spectral_norm_layers(module)
    for _ in range(iterations):
        for layer, hook in layers:
            setattr(layer, hook.name, hook.compute_weight(layer, do_power_iteration=True))
    return len(layers)
