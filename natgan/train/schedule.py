"""Optimiser hyper-parameters as the official code derives them: TTUR, lazy-regularisation factors, decay.

Kept as pure functions of (recipe, step) so the learning rate after a resume is recomputed exactly
instead of being restored from a possibly stale optimiser field.
"""

from __future__ import annotations

from dataclasses import dataclass

from natgan.recipe import TrainConfig


@dataclass(frozen=True)
class OptimSettings:
    lr: float
    betas: tuple[float, float]


def lazy_factor(every: int) -> float:
    """Lazy regularisation every k steps rescales lr and betas by k/(k+1) (StyleGAN2 §B); 1 when k == 1."""
    return every / (every + 1) if every > 1 else 1.0


def base_g_lr(t: TrainConfig) -> float:
    """TTUR (official): G lr = D lr / 4, overriding ``g_lr``."""
    return t.d_lr / 4 if t.ttur else t.g_lr


def g_settings(t: TrainConfig) -> OptimSettings:
    c = lazy_factor(t.g_reg_every) if t.pl_weight > 0 else 1.0
    return OptimSettings(base_g_lr(t) * c, (t.beta1 ** c, t.beta2 ** c))


def d_settings(t: TrainConfig) -> OptimSettings:
    c = lazy_factor(t.r1_every) if t.r1 > 0 else 1.0
    return OptimSettings(t.d_lr * c, (t.beta1 ** c, t.beta2 ** c))


def decay_fraction(t: TrainConfig, step: int) -> float:
    """1 before ``lr_decay_start``, then linear to 0 at ``iterations``."""
    if not t.lr_decay or step < t.lr_decay_start or t.iterations <= t.lr_decay_start:
        return 1.0
    return max(0.0, (t.iterations - step) / (t.iterations - t.lr_decay_start))


def learning_rates(t: TrainConfig, step: int) -> tuple[float, float]:
    """(G lr, D lr) at ``step``. During decay with TTUR the official code sets D lr = 4 x G lr, which
    drops the lazy R1 factor; we reproduce that quirk because the released checkpoints trained with it."""
    g, d = g_settings(t).lr, d_settings(t).lr
    frac = decay_fraction(t, step)
    if frac == 1.0:
        return g, d
    g_lr = base_g_lr(t) * frac
    return g_lr, (4 * g_lr if t.ttur else d * frac)
