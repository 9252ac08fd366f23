"""The two conventions beyond the generator contract that latent tools and metrics read, and their helpers.

The contract itself (``G.mapping``, ``G.synthesis``, ``G.n_latent``, ...) is in :mod:`natgan.models.registry`.
Projection, walks, SeFa, style editing (:mod:`natgan.latent`) and PPL (:mod:`natgan.metrics.ppl`) also rely on:

* a model whose ``mapping`` returns ``z`` unchanged has no mapping network (HiT; conditional: z unchanged
  ahead of the label embedding): its latent space is z, which :func:`has_mapping_network` probes;
* models with noise (StyleGAN2, GANformer) keep one stored map per layer as a ``[1, 1, H, W]`` buffer whose
  name contains ``noise`` (used when ``noise_mode = "const"``). :func:`noise_inputs` finds them;
  :func:`using_noise` temporarily puts other tensors (trainable ones, or maps loaded from a ``.npz``) in
  their place.

They live here, beside the models, because tools on different floors (``latent`` above ``metrics``) use them.
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Mapping

import torch
from torch import nn

from natgan.errors import NatGanError


def has_mapping_network(G: nn.Module) -> bool:
    """False when ``G.mapping`` is the identity (probed on two fixed latents).

    A class-conditional ``G`` (``num_classes > 0``) refuses a call without labels, so it is probed with class
    0; z that comes through unchanged as w's leading features (HiT's conditional ``w = [z, embed(c)]``) is
    no mapping network either, so such a model keeps the z-space protocols (PPL's slerp in z) of its
    unconditional form."""
    z = torch.randn(2, G.z_dim, generator=torch.Generator().manual_seed(1))
    device = next(iter(G.parameters())).device
    k = int(getattr(G, "num_classes", 0) or 0)
    with torch.no_grad():
        if not k:
            w = G.mapping(z.to(device)).cpu()
            return not (w.shape == z.shape and torch.equal(w, z))
        w = G.mapping(z.to(device), torch.zeros(2, dtype=torch.long, device=device)).cpu()
    return not (w.ndim == 2 and w.shape[1] >= z.shape[1] and torch.equal(w[:, :z.shape[1]], z))


def noise_inputs(G: nn.Module) -> dict[str, torch.Tensor]:
    """``{buffer name: [1, 1, H, W] tensor}`` of every stored noise map (empty for models without noise)."""
    return {name: buf for name, buf in G.named_buffers()
            if "noise" in name.rsplit(".", 1)[-1] and buf.ndim == 4 and buf.shape[:2] == (1, 1)}


def _owner(G: nn.Module, name: str) -> tuple[nn.Module, str]:
    path, _, attr = name.rpartition(".")
    return (G.get_submodule(path) if path else G), attr


@contextlib.contextmanager
def using_noise(G: nn.Module, maps: Mapping[str, torch.Tensor]) -> Iterator[None]:
    """Within the block, ``G``'s stored noise maps are ``maps`` (same names and shapes); restored after.

    The tensors are used as they are (not copied), so gradients flow into trainable ones.
    """
    current = noise_inputs(G)
    for name, tensor in maps.items():
        if name not in current:
            raise NatGanError(f"noise map '{name}' does not exist in this model")
        if tuple(tensor.shape) != tuple(current[name].shape):
            raise NatGanError(f"noise map '{name}': shape {tuple(tensor.shape)}, the model has "
                              f"{tuple(current[name].shape)}")
    saved = {}
    try:
        for name, tensor in maps.items():
            module, attr = _owner(G, name)
            saved[name] = module._buffers[attr]
            module._buffers[attr] = tensor.to(saved[name].device)
        yield
    finally:
        for name, tensor in saved.items():
            module, attr = _owner(G, name)
            module._buffers[attr] = tensor
