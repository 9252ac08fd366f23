"""Feature statistics, the Fréchet distance and KID, agreeing with clean-fid on the same features.

Mean/covariance are taken exactly as clean-fid does (``np.mean`` / ``np.cov`` of the float32 feature
matrix) and KID is :func:`cleanfid.fid.kernel_distance`'s
estimator on the same subsets (plus their spread). The Fréchet distance is computed here:
clean-fid calls ``scipy.linalg.sqrtm(..., disp=False)``, whose ``disp`` argument SciPy 1.18 removes,
and only the *trace* of the matrix square root is needed, which float64 eigenvalues give exactly
(see :func:`frechet_distance`); the result equals clean-fid's to 1e-6 (tests).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from natgan.errors import NatGanError
from natgan.metrics import cleanfid_compat

cleanfid_compat.install()  # clean-fid 0.1.35 + SciPy >= 1.18: sqrtm(disp=...) was removed

KID_SUBSETS = 100       # clean-fid's defaults (as torch-fidelity and stylegan2-ada-pytorch)
KID_SUBSET_SIZE = 1000


@dataclass
class Statistics:
    """Mean and covariance of a feature set (and the features themselves when KID needs them)."""

    mu: np.ndarray
    sigma: np.ndarray | None  # None when no metric of the run uses the covariance (e.g. VGG16 features)
    count: int
    feats: np.ndarray | None = None


def statistics(feats: np.ndarray, *, keep_feats: bool = False, side: str = "", covariance: bool = True) -> Statistics:
    """clean-fid's estimator: ``np.mean(axis=0)`` and ``np.cov(rowvar=False)`` (unbiased, float64).
    ``side`` names the image set in the error (e.g. the dataset's path). ``covariance=False`` skips ``np.cov``
    (a 4096² matrix and seconds for VGG16 features, which only k-NN metrics use)."""
    if feats.ndim != 2 or feats.shape[0] < 2:
        where = f"{side}: " if side else ""
        raise NatGanError(f"{where}FID needs at least 2 images per side, got {feats.shape[0] if feats.ndim else 0}")
    return Statistics(mu=np.mean(feats, axis=0), sigma=np.cov(feats, rowvar=False) if covariance else None,
                      count=int(feats.shape[0]), feats=feats if keep_feats else None)


def frechet_distance(a: Statistics, b: Statistics) -> float:
    """FID between two Gaussians fitted to features: ``|mu_a - mu_b|^2 + tr(S_a) + tr(S_b) - 2 tr((S_a S_b)^1/2)``.

    ``S_a S_b`` is similar to the symmetric positive semi-definite ``R S_b R`` with ``R = S_a^1/2``, so
    ``tr((S_a S_b)^1/2)`` is the sum of the square roots of that matrix's eigenvalues: two symmetric
    eigendecompositions in float64, no general (complex) matrix square root, no SciPy ``sqrtm``.
    Eigenvalues that round to slightly below zero are clipped (they are zero in exact arithmetic).
    """
    if a.sigma is None or b.sigma is None:
        raise NatGanError("Fréchet distance of statistics computed without a covariance")
    if a.mu.shape != b.mu.shape:
        raise NatGanError(f"feature dimensions differ ({a.mu.shape[0]} vs {b.mu.shape[0]}): the two sides were "
                          f"embedded by different feature extractors")
    mu_a, mu_b = np.asarray(a.mu, np.float64), np.asarray(b.mu, np.float64)
    s_a, s_b = np.atleast_2d(np.asarray(a.sigma, np.float64)), np.atleast_2d(np.asarray(b.sigma, np.float64))
    if not (np.isfinite(s_a).all() and np.isfinite(s_b).all() and np.isfinite(mu_a).all() and np.isfinite(mu_b).all()):
        raise NatGanError("Fréchet distance of non-finite statistics: the features contain NaN or inf")
    evals, evecs = np.linalg.eigh((s_a + s_a.T) / 2)
    root_a = (evecs * np.sqrt(np.clip(evals, 0, None))) @ evecs.T
    inner = root_a @ s_b @ root_a
    trace_sqrt = float(np.sqrt(np.clip(np.linalg.eigvalsh((inner + inner.T) / 2), 0, None)).sum())
    diff = mu_a - mu_b
    return float(diff @ diff + np.trace(s_a) + np.trace(s_b) - 2 * trace_sqrt)


@dataclass
class KidResult:
    """KID's mean over subsets (the reported value), their standard deviation, and the subsets actually used."""

    mean: float
    std: float
    subset_size: int
    subsets: int


def kernel_inception_distance(ref_feats: np.ndarray, gen_feats: np.ndarray, *, seed: int = 0,
                              num_subsets: int = KID_SUBSETS,
                              max_subset_size: int = KID_SUBSET_SIZE) -> float:
    """clean-fid's KID (cubic polynomial kernel MMD over random subsets), with the subsets seeded."""
    return kid_with_spread(ref_feats, gen_feats, seed=seed, num_subsets=num_subsets,
                           max_subset_size=max_subset_size).mean


def kid_with_spread(ref_feats: np.ndarray, gen_feats: np.ndarray, *, seed: int = 0, num_subsets: int = KID_SUBSETS,
                    max_subset_size: int = KID_SUBSET_SIZE) -> KidResult:
    """clean-fid's KID estimator with the spread over subsets that torch-fidelity also reports.

    The subsets are drawn exactly as :func:`cleanfid.fid.kernel_distance` draws them (numpy's global RNG,
    generated side first, ``m = min(n_ref, n_gen, max_subset_size)`` without replacement) and each
    subset's unbiased MMD^2 is the same expression, summed in the same order, so the mean is clean-fid's
    number bit for bit; the standard deviation is torch-fidelity's (``np.std`` of the per-subset values).
    The global numpy RNG is seeded for the call and restored after, so a KID is reproducible without
    disturbing anyone else's random state.
    """
    if min(len(ref_feats), len(gen_feats)) < 2:
        raise NatGanError("KID needs at least 2 images on each side")
    if ref_feats.shape[1] != gen_feats.shape[1]:
        raise NatGanError(f"feature dimensions differ ({ref_feats.shape[1]} vs {gen_feats.shape[1]})")
    n = ref_feats.shape[1]
    m = min(len(ref_feats), len(gen_feats), max_subset_size)
    state = np.random.get_state()
    per_subset = []
    try:
        np.random.seed(seed)
        total = 0
        for _ in range(num_subsets):
            x = gen_feats[np.random.choice(gen_feats.shape[0], m, replace=False)]
            y = ref_feats[np.random.choice(ref_feats.shape[0], m, replace=False)]
            a = (x @ x.T / n + 1) ** 3 + (y @ y.T / n + 1) ** 3
            b = (x @ y.T / n + 1) ** 3
            t = (a.sum() - np.diag(a).sum()) / (m - 1) - b.sum() * 2 / m
            total += t
            per_subset.append(float(t) / m)
    finally:
        np.random.set_state(state)
    return KidResult(mean=float(total / num_subsets / m), std=float(np.std(per_subset)), subset_size=int(m),
                     subsets=int(num_subsets))
