"""The truncation trick, one rule for every registered generator.

``G(z, psi, w_avg)`` moves ``w = G.mapping(z)`` towards ``w_avg`` by ``psi`` before synthesis. The centre
is the caller's: :func:`natgan.sampling.truncation_centre` (a checkpoint's stored centre, else
:func:`natgan.sampling.compute_w_avg`, 10,000 fixed-seed latents) is what ``sample``, ``fid`` and the trainer
use, so a model never keeps a private average that another model would lack.
``psi != 1`` without ``w_avg`` is an error rather than a silently untruncated (or differently
centred) image.
"""

from __future__ import annotations

import torch


def truncate(w: torch.Tensor, psi: float, w_avg: torch.Tensor | None) -> torch.Tensor:
    """``w_avg + psi * (w - w_avg)``; ``psi = 1`` returns ``w`` itself and needs no centre."""
    if psi == 1.0:
        return w
    if w_avg is None:
        raise ValueError(f"truncation psi={psi} needs w_avg (the centre, e.g. natgan.sampling.compute_w_avg(G))")
    return torch.lerp(w_avg.to(w), w, psi)
