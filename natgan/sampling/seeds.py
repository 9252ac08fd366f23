"""Seed lists and the latents they name.

A seed names one latent: ``z = randn(1, z_dim)`` from a CPU generator seeded with it, exactly what the
official StyleNAT ``inference.py`` draws for a batch of one. Latents are made on the CPU and only then
moved, so seed 7 is the same image on a laptop and on an H100, and in a batch of 1 or of 64.
"""

from __future__ import annotations

import re
from typing import Iterable, Sequence

import torch

from natgan.errors import ConfigError

MAX_SEED = 2**63 - 1
MAX_SEEDS = 10_000_000  # one list of Python ints; more would take gigabytes before the first image
_RANGE = re.compile(r"^(\d+)\s*-\s*(\d+)$")


def parse_seeds(text: str, *, option: str = "--seeds") -> list[int]:
    """``"0,3,10-19"`` -> ``[0, 3, 10, ..., 19]`` (ranges inclusive, order kept, duplicates dropped)."""
    if not isinstance(text, str) or not text.strip():
        raise ConfigError(f"{option}: empty seed list (expected e.g. 0-99 or 0,3,10-19)")
    seeds: list[int] = []
    seen: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        match = _RANGE.match(part)
        if match:
            lo, hi = int(match.group(1)), int(match.group(2))
            if hi < lo:
                raise ConfigError(f"{option} '{text}': range '{part}' ends before it starts")
            if hi - lo >= 10_000_000:
                raise ConfigError(f"{option} '{text}': range '{part}' has more than 10 million seeds")
            if len(seeds) + hi - lo + 1 > MAX_SEEDS:
                raise ConfigError(f"{option} '{text}': more than {MAX_SEEDS:,} seeds in all")
            values: Iterable[int] = range(lo, hi + 1)
        elif part.isdigit():
            values = (int(part),)
        else:
            raise ConfigError(f"{option} '{text}': '{part}' is not a seed or a range like 10-19 "
                              f"(seeds are non-negative integers)")
        for seed in values:
            if seed > MAX_SEED:
                raise ConfigError(f"{option} '{text}': seed {seed} is larger than {MAX_SEED}")
            if seed not in seen:
                seen.add(seed)
                seeds.append(seed)
    return seeds


def format_seeds(seeds: Sequence[int]) -> str:
    """Compact inverse of :func:`parse_seeds`: ``[0, 1, 2, 5]`` -> ``"0-2,5"``."""
    parts: list[str] = []
    i = 0
    while i < len(seeds):
        j = i
        while j + 1 < len(seeds) and seeds[j + 1] == seeds[j] + 1:
            j += 1
        parts.append(str(seeds[i]) if i == j else f"{seeds[i]}-{seeds[j]}")
        i = j + 1
    return ",".join(parts)


def latent_for_seed(seed: int, z_dim: int) -> torch.Tensor:
    """``[1, z_dim]`` standard-normal latent of one seed (CPU, float32)."""
    generator = torch.Generator(device="cpu").manual_seed(int(seed))
    return torch.randn(1, z_dim, generator=generator)


def latents_for_seeds(seeds: Sequence[int], z_dim: int) -> torch.Tensor:
    """``[len(seeds), z_dim]``: row i is :func:`latent_for_seed` of ``seeds[i]``, independent of the others."""
    if len(seeds) == 0:
        return torch.empty(0, z_dim)
    return torch.cat([latent_for_seed(s, z_dim) for s in seeds])
