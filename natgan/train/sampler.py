"""A resumable, deterministic, rank-sharded infinite index stream.

The order is a fresh permutation per epoch drawn from (seed, epoch); each rank takes every world-th
index. Position ``n`` of the stream is a pure function of (seed, n), so resuming at images_seen gives
exactly the batches an uninterrupted run would have seen — the data order survives a restart.
"""

from __future__ import annotations

from typing import Iterator

import torch
from torch.utils.data import Sampler


class ResumableSampler(Sampler[int]):
    def __init__(self, size: int, *, seed: int, rank: int = 0, world: int = 1, start: int = 0):
        if size <= 0:
            raise ValueError("cannot sample from an empty dataset")
        self.size, self.seed, self.rank, self.world, self.start = size, seed, rank, world, start

    def _epoch(self, epoch: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.size, generator=gen)

    def __iter__(self) -> Iterator[int]:
        """Yields this rank's indices from per-rank position ``start`` on, forever."""
        global_pos = self.start * self.world + self.rank
        epoch, offset = divmod(global_pos, self.size)
        perm = self._epoch(epoch)
        while True:
            while offset < self.size:
                yield int(perm[offset])
                offset += self.world
            epoch += 1
            offset -= self.size
            perm = self._epoch(epoch)
