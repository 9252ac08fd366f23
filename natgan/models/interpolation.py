"""Spherical interpolation between latents: the path between two Gaussian ``z`` (walks, PPL in z).

A lerp between two draws of a high-dimensional Gaussian passes near the origin, where ``z`` is never
sampled; slerp keeps the norm, so every point on the path is a typical ``z``. Used by latent walks in z
(:mod:`natgan.latent.walk`) and by PPL for models without a mapping network (:mod:`natgan.metrics.ppl`),
which sit on different floors; hence its place beside the models.
"""

from __future__ import annotations

import torch


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation between rows of ``a`` and ``b`` (``t`` per row); lerp when they are parallel."""
    a_unit, b_unit = a / a.norm(dim=-1, keepdim=True), b / b.norm(dim=-1, keepdim=True)
    omega = torch.acos((a_unit * b_unit).sum(dim=-1, keepdim=True).clamp(-1, 1))
    sin = torch.sin(omega)
    t = t.view(-1, 1)
    parallel = sin.abs() < 1e-6
    safe = torch.where(parallel, torch.ones_like(sin), sin)
    out = (torch.sin((1 - t) * omega) / safe) * a + (torch.sin(t * omega) / safe) * b
    return torch.where(parallel, torch.lerp(a, b, t), out)
