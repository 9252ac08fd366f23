"""Inception Score (Salimans et al. 2016): ``exp(E_x KL(p(y|x) || p(y)))`` over splits, mean and std.

As the original TensorFlow code, stylegan2-ada-pytorch and torch-fidelity: softmax of the Inception's
*unbiased* logits (pool3 features times the classifier weight, no bias), ``p(y)`` the mean over each of
``splits`` consecutive parts, the score per part, then the mean and (population) standard deviation of
the parts. Computed in float64; no shuffling (torch-fidelity shuffles with a fixed seed by default, which
changes which images share a split but not the definition).
"""

from __future__ import annotations

import numpy as np
import torch

from natgan.errors import NatGanError

SPLITS = 10


def inception_score(logits: np.ndarray | torch.Tensor, splits: int = SPLITS) -> tuple[float, float]:
    """(mean, std) of the per-split scores of ``[N, classes]`` logits."""
    x = torch.as_tensor(np.asarray(logits) if not torch.is_tensor(logits) else logits).double()
    if x.ndim != 2 or len(x) < splits:
        raise NatGanError(f"the Inception Score needs at least {splits} images ({splits} splits), "
                          f"got logits of shape {tuple(x.shape)}")
    p, log_p = x.softmax(dim=1), x.log_softmax(dim=1)
    n = len(x)
    scores = []
    for i in range(splits):
        part, log_part = p[i * n // splits:(i + 1) * n // splits], log_p[i * n // splits:(i + 1) * n // splits]
        marginal = part.mean(dim=0, keepdim=True)
        scores.append(float((part * (log_part - marginal.log())).sum(dim=1).mean().exp()))
    return float(np.mean(scores)), float(np.std(scores))
