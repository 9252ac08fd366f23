"""DiffAugment (Zhao et al. 2020, "Differentiable Augmentation for Data-Efficient GAN Training").

A policy is a comma-separated list of groups, applied in the order given, to every image (no
probability): ``color`` (brightness + U(-1/2, 1/2), saturation x U(0, 2), contrast x U(1/2, 3/2)),
``translation`` (integer shift up to 1/8 of the side, zero fill) and ``cutout`` (a zeroed square of half
the side). The operations are the same ones bCR uses (:mod:`natgan.augment.bcr`), on images in
[-1, 1], and are differentiable w.r.t. the images.
"""

from __future__ import annotations

from typing import Callable

import torch

from natgan.errors import ConfigError
from natgan.augment import bcr

Op = Callable[[torch.Tensor, torch.Generator], torch.Tensor]

GROUPS: dict[str, tuple[Op, ...]] = {
    "color": (bcr.brightness, bcr.saturation, bcr.contrast),
    "translation": (bcr.translate,),
    "cutout": (bcr.cutout,),
}


def parse_policy(policy: str) -> tuple[str, ...]:
    """``"color,translation,cutout"`` -> its groups; an unknown group is a one-line ConfigError."""
    names = tuple(p.strip() for p in policy.split(",") if p.strip())
    for name in names:
        if name not in GROUPS:
            raise ConfigError(f"key 'train.diffaug_policy': unknown DiffAugment group {name!r} in {policy!r}; "
                              f"valid groups: {', '.join(GROUPS)}")
    if not names:
        raise ConfigError(f"key 'train.diffaug_policy': empty policy {policy!r}; e.g. 'color,translation,cutout'")
    return names


def diff_augment(x: torch.Tensor, policy: tuple[str, ...], generator: torch.Generator) -> torch.Tensor:
    for name in policy:
        for op in GROUPS[name]:
            x = op(x, generator)
    return x
