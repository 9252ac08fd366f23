"""k-nearest-neighbour manifold metrics: precision/recall and density/coverage, in one chunked pass.

* Precision/recall (Kynkäänniemi et al. 2019, as stylegan2-ada-pytorch and torch-fidelity compute it):
  each set's manifold is the union of balls around its points whose radius is the distance to the
  k-th nearest *other* point of the same set (k = 3); precision is the fraction of generated points
  inside the real manifold (``distance <= radius``), recall the fraction of real points inside the
  generated one.
* Density/coverage (Naeem et al. 2020, as the authors' ``prdc`` package): real balls only (k = 5);
  density is the mean number of real balls containing a generated point, divided by k; coverage is the
  fraction of real balls that contain at least one generated point. Both use strict ``distance < radius``
  like ``prdc`` (precision/recall use ``<=`` like the PR references; the two differ only on exact ties).

Precision: float32 throughout, as torch-fidelity and Kynkäänniemi et al.'s TF code. stylegan2-ada-pytorch
casts the features and the radii to float16 before comparing; its rounding puts probes on or inside a
radius that they exceed in exact arithmetic, so its values come out higher (+0.004 to +0.010 for 2,000
ReLU features of 512-d, side by side with its ``compute_distances``; ours equal exact float64 there).

Distances are Euclidean (``torch.cdist``, float32, as both references), computed in row chunks sized to
a memory budget. ``cdist`` takes the matrix-product shortcut ``|a|^2 + |b|^2 - 2 a.b``, whose float32
rounding error scales with the squared *norms*, not the distances: on features with a large common
offset (pairwise distances ~1e-3 of the norms) it moved precision/recall by 0.03-0.06 and density/coverage
by half. Both sets are therefore centred on the real set's mean (computed in float64) first: distances
are unchanged in exact arithmetic, and the shortcut's error falls back to the scale of the distances,
which gives the float64 answer without giving up the fast product. The computation runs on the GPU when
the features are there, so 50k x 50k never materialises: the real-real and fake-fake passes keep only
each row's nearest few distances, and one real-fake pass gives all four numbers.
"""

from __future__ import annotations

import numpy as np
import torch

from natgan.errors import NatGanError

PR_K = 3
DC_K = 5
CPU_CHUNK_BYTES = 256 << 20
GPU_CHUNK_BYTES = 2 << 30


def _rows_per_chunk(columns: int, device: torch.device, budget: int | None) -> int:
    budget = budget or (GPU_CHUNK_BYTES if device.type == "cuda" else CPU_CHUNK_BYTES)
    return max(1, budget // (4 * max(1, columns)))


def nearest_distances(x: torch.Tensor, k: int, *, chunk_bytes: int | None = None) -> torch.Tensor:
    """``[N, k]``: column ``j`` holds each point's distance to its ``j+1``-th nearest other point of ``x``.

    The point itself is the nearest (distance 0) and is dropped, exactly as ``kthvalue(k + 1)`` in the
    reference implementations (a duplicate point therefore counts as a neighbour at distance 0).
    """
    if len(x) <= k:
        raise NatGanError(f"k-NN radii with k = {k} need more than {k} feature vectors per side, got {len(x)}")
    rows = _rows_per_chunk(len(x), x.device, chunk_bytes)
    out = [torch.cdist(part, x).topk(k + 1, dim=1, largest=False).values[:, 1:] for part in x.split(rows)]
    return torch.cat(out)


def manifold_scores(real: np.ndarray | torch.Tensor, fake: np.ndarray | torch.Tensor, *, pr_k: int = PR_K,
                    dc_k: int = DC_K, device: str | torch.device = "cpu",
                    chunk_bytes: int | None = None) -> dict[str, float]:
    """Precision, recall (k = ``pr_k``), density and coverage (k = ``dc_k``) of ``fake`` against ``real``."""
    real_t = torch.as_tensor(np.asarray(real, dtype=np.float32) if not torch.is_tensor(real) else real)
    fake_t = torch.as_tensor(np.asarray(fake, dtype=np.float32) if not torch.is_tensor(fake) else fake)
    if real_t.ndim != 2 or fake_t.ndim != 2 or real_t.shape[1] != fake_t.shape[1]:
        raise NatGanError(f"feature arrays must be [N, D] with one D, got {tuple(real_t.shape)} and "
                          f"{tuple(fake_t.shape)}")
    device = torch.device(device)
    real_t, fake_t = real_t.to(device, torch.float32), fake_t.to(device, torch.float32)
    centre = real_t.double().mean(dim=0).float()    # translation-invariant; see the module docstring
    real_t, fake_t = real_t - centre, fake_t - centre
    with torch.inference_mode():
        real_nn = nearest_distances(real_t, max(pr_k, dc_k), chunk_bytes=chunk_bytes)
        real_pr, real_dc = real_nn[:, pr_k - 1], real_nn[:, dc_k - 1]
        fake_pr = nearest_distances(fake_t, pr_k, chunk_bytes=chunk_bytes)[:, pr_k - 1]
        precise = torch.zeros((), dtype=torch.int64, device=device)
        inside = torch.zeros((), dtype=torch.int64, device=device)
        recalled = torch.zeros(len(real_t), dtype=torch.bool, device=device)
        nearest_fake = torch.full((len(real_t),), float("inf"), device=device)
        rows = _rows_per_chunk(len(real_t), device, chunk_bytes)
        for part, radius in zip(fake_t.split(rows), fake_pr.split(rows)):
            d = torch.cdist(part, real_t)                                   # [chunk of fake, real]
            precise += (d <= real_pr[None]).any(dim=1).sum()
            inside += (d < real_dc[None]).sum()
            recalled |= (d <= radius[:, None]).any(dim=0)
            nearest_fake = torch.minimum(nearest_fake, d.min(dim=0).values)
        return {
            "precision": float(precise) / len(fake_t),
            "recall": float(recalled.sum()) / len(real_t),          # exact fractions, not float32 means
            "density": float(inside) / (dc_k * len(fake_t)),
            "coverage": float((nearest_fake < real_dc).sum()) / len(real_t),
        }
