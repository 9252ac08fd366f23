"""Feature statistics, the Fréchet distance and KID, computed by clean-fid's own functions.

We call :func:`cleanfid.fid.frechet_distance` and :func:`cleanfid.fid.kernel_distance` rather than
re-deriving them, and take mean/covariance exactly as clean-fid does (``np.mean`` / ``np.cov`` of the
float32 feature matrix), so a number from nat-gan and one from clean-fid on the same features agree.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from dataclasses import dataclass

import numpy as np
from cleanfid import fid as cleanfid_fid
from scipy.linalg import LinAlgWarning

from natgan.errors import NatGanError
from natgan.metrics import cleanfid_compat

cleanfid_compat.install()  # clean-fid 0.1.35 + SciPy >= 1.18: sqrtm(disp=...) was removed


@dataclass
class Statistics:
    """Mean and covariance of a feature set (and the features themselves when KID needs them)."""

    mu: np.ndarray
    sigma: np.ndarray
    count: int
    feats: np.ndarray | None = None


def statistics(feats: np.ndarray, *, keep_feats: bool = False) -> Statistics:
    """clean-fid's estimator: ``np.mean(axis=0)`` and ``np.cov(rowvar=False)`` (unbiased, float64)."""
    if feats.ndim != 2 or feats.shape[0] < 2:
        raise NatGanError(f"FID needs at least 2 feature vectors, got an array of shape {tuple(feats.shape)}")
    return Statistics(mu=np.mean(feats, axis=0), sigma=np.cov(feats, rowvar=False), count=int(feats.shape[0]),
                      feats=feats if keep_feats else None)


def frechet_distance(a: Statistics, b: Statistics) -> float:
    """FID between two Gaussians fitted to features; shape mismatches and complex roots are clear errors."""
    if a.mu.shape != b.mu.shape:
        raise NatGanError(f"feature dimensions differ ({a.mu.shape[0]} vs {b.mu.shape[0]}): the two sides were "
                          f"embedded by different feature extractors")
    # clean-fid prints when it regularises a singular product, and scipy warns about (near-)singular
    # covariances whenever fewer images than feature dimensions are used; the value is still clean-fid's.
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore", LinAlgWarning)
        try:
            value = cleanfid_fid.frechet_distance(a.mu, a.sigma, b.mu, b.sigma)
        except ValueError as exc:  # "Imaginary component ..." from an ill-conditioned covariance
            raise NatGanError(f"Fréchet distance is numerically unstable ({exc}); use more images "
                              f"(at least the feature dimension, {a.mu.shape[0]}, per side)") from None
    return float(value)


def kernel_inception_distance(ref_feats: np.ndarray, gen_feats: np.ndarray, *, seed: int = 0,
                              num_subsets: int = 100, max_subset_size: int = 1000) -> float:
    """clean-fid's KID (cubic polynomial kernel MMD over random subsets), with the subsets seeded.

    clean-fid draws subsets from numpy's global RNG; we seed it for the call and restore it after, so
    a KID is reproducible without disturbing anyone else's random state.
    """
    if min(len(ref_feats), len(gen_feats)) < 2:
        raise NatGanError("KID needs at least 2 images on each side")
    if ref_feats.shape[1] != gen_feats.shape[1]:
        raise NatGanError(f"feature dimensions differ ({ref_feats.shape[1]} vs {gen_feats.shape[1]})")
    state = np.random.get_state()
    try:
        np.random.seed(seed)
        return float(cleanfid_fid.kernel_distance(ref_feats, gen_feats, num_subsets=num_subsets,
                                                  max_subset_size=max_subset_size))
    finally:
        np.random.set_state(state)
