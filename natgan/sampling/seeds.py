"""Seed lists and the latents they name.

A seed names one latent: ``z = randn(1, z_dim)`` from a CPU generator seeded with it, exactly what the
official StyleNAT ``inference.py`` draws for a batch of one. Latents are made on the CPU and only then
moved, so seed 7 is the same image on a laptop and on an H100, and in a batch of 1 or of 64.
"""

from __future__ import annotations

import bisect
import re
from typing import Iterator, Sequence

import torch

from natgan.errors import ConfigError

MAX_SEED = 2**63 - 1
MAX_SEEDS = 10**12  # a bound on the count only: a SeedList holds ranges, not one Python int per seed
_RANGE = re.compile(r"^(\d+)\s*-\s*(\d+)$")


class SeedList(Sequence[int]):
    """An ordered seed list stored as disjoint ``range`` pieces, so ``0-49999999`` costs a few bytes.

    Why: ``nat-gan sample --seeds 0-49999999`` must start writing images at once, not first build a list
    (and a set) of 50 million Python ints (3 GB). Indexing and slicing are O(log pieces); iteration streams.
    """

    def __init__(self, pieces: list[range]):
        self._pieces = [r for r in pieces if len(r)]
        self._starts: list[int] = []
        total = 0
        for r in self._pieces:
            self._starts.append(total)
            total += len(r)
        self._len = total

    def __len__(self) -> int:
        return self._len

    def __iter__(self) -> Iterator[int]:
        for r in self._pieces:
            yield from r

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(self._len))]
        if index < 0:
            index += self._len
        if not 0 <= index < self._len:
            raise IndexError("seed index out of range")
        k = bisect.bisect_right(self._starts, index) - 1
        return self._pieces[k][index - self._starts[k]]

    def __eq__(self, other) -> bool:
        return isinstance(other, Sequence) and len(other) == len(self) and all(a == b for a, b in zip(self, other))

    def __repr__(self) -> str:
        return f"SeedList({format_seeds(self)!r})"

    def ranges(self) -> list[range]:
        return list(self._pieces)


def _subtract(lo: int, hi: int, taken: list[tuple[int, int]]) -> list[range]:
    """The parts of ``[lo, hi]`` not covered by the sorted disjoint closed intervals ``taken``."""
    out, cur = [], lo
    i = bisect.bisect_left(taken, (lo, lo))
    if i and taken[i - 1][1] >= lo:
        i -= 1
    while i < len(taken) and taken[i][0] <= hi:
        a, b = taken[i]
        if a > cur:
            out.append(range(cur, a))
        cur = max(cur, b + 1)
        i += 1
    if cur <= hi:
        out.append(range(cur, hi + 1))
    return out


def _take(taken: list[tuple[int, int]], lo: int, hi: int) -> None:
    """Add ``[lo, hi]`` to the sorted disjoint intervals, merging what it overlaps or touches."""
    i = bisect.bisect_left(taken, (lo, lo))
    if i and taken[i - 1][1] >= lo - 1:
        i -= 1
    j = i
    while j < len(taken) and taken[j][0] <= hi + 1:
        lo, hi = min(lo, taken[j][0]), max(hi, taken[j][1])
        j += 1
    taken[i:j] = [(lo, hi)]


def parse_seeds(text: str, *, option: str = "--seeds") -> SeedList:
    """``"0,3,10-19"`` -> ``[0, 3, 10, ..., 19]`` (ranges inclusive, order kept, duplicates dropped), as a
    :class:`SeedList` that stores ranges, so any size parses in microseconds and streams."""
    if not isinstance(text, str) or not text.strip():
        raise ConfigError(f"{option}: empty seed list (expected e.g. 0-99 or 0,3,10-19)")
    pieces: list[range] = []
    taken: list[tuple[int, int]] = []
    count = 0
    for part in text.split(","):
        part = part.strip()
        match = _RANGE.match(part)
        if match:
            lo, hi = int(match.group(1)), int(match.group(2))
            if hi < lo:
                raise ConfigError(f"{option} '{text}': range '{part}' ends before it starts")
        elif part.isdigit():
            lo = hi = int(part)
        else:
            raise ConfigError(f"{option} '{text}': '{part}' is not a seed or a range like 10-19 "
                              f"(seeds are non-negative integers)")
        if hi > MAX_SEED:
            raise ConfigError(f"{option} '{text}': seed {hi} is larger than {MAX_SEED}")
        new = _subtract(lo, hi, taken)
        count += sum(len(r) for r in new)
        if count > MAX_SEEDS:
            raise ConfigError(f"{option} '{text}': more than {MAX_SEEDS:,} seeds in all")
        pieces += new
        _take(taken, lo, hi)
    return SeedList(pieces)


def format_seeds(seeds: Sequence[int]) -> str:
    """Compact inverse of :func:`parse_seeds`: ``[0, 1, 2, 5]`` -> ``"0-2,5"``."""
    if isinstance(seeds, (SeedList, range)):
        pieces = seeds.ranges() if isinstance(seeds, SeedList) else [seeds]
        runs: list[list[int]] = []
        for r in pieces:
            if r.step != 1:
                return format_seeds(list(r))
            if runs and runs[-1][1] + 1 == r.start:
                runs[-1][1] = r.stop - 1
            else:
                runs.append([r.start, r.stop - 1])
        return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)
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
