"""Timing calls the way the official StyleNAT throughput script does, on CUDA or CPU.

Official protocol (StyleNAT ``src/throughput.py``): ``warmup`` untimed calls, then ``rounds`` calls each
bracketed by a pair of CUDA events with a ``synchronize`` after the second, so every round's time is
device time of exactly one call and the rounds are summed. img/s = rounds · batch / Σ time. On CPU
the same loop uses ``time.perf_counter`` (CPU ops are synchronous, so wall time is device time).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable

import torch


@dataclass
class Timing:
    """Per-round seconds of ``rounds`` timed calls (after ``warmup`` untimed ones)."""

    seconds: list[float]
    warmup: int
    first_call_s: float | None = None   # duration of the first warm-up call (compilation shows up here)

    @property
    def total(self) -> float:
        return sum(self.seconds)

    @property
    def mean(self) -> float:
        return self.total / len(self.seconds)

    @property
    def std(self) -> float:
        if len(self.seconds) < 2:
            return 0.0
        m = self.mean
        return math.sqrt(sum((s - m) ** 2 for s in self.seconds) / (len(self.seconds) - 1))

    def per_second(self, items_per_call: int) -> float:
        """Items per second over all timed rounds (rounds · items / Σ time), as the official script."""
        return len(self.seconds) * items_per_call / self.total


def _is_cuda(device: torch.device | str) -> bool:
    return torch.device(device).type == "cuda"


def time_calls(fn: Callable[[], object], *, warmup: int, rounds: int, device: torch.device | str) -> Timing:
    """Run ``fn`` ``warmup`` times untimed, then ``rounds`` times timed one by one."""
    if rounds < 1:
        raise ValueError("rounds must be >= 1")
    cuda = _is_cuda(device)
    first = None
    for i in range(warmup):
        start = time.perf_counter()
        fn()
        if cuda:
            torch.cuda.synchronize(device)
        if i == 0:
            first = time.perf_counter() - start
    seconds: list[float] = []
    if cuda:
        begin = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        for _ in range(rounds):
            begin.record()
            fn()
            end.record()
            torch.cuda.synchronize(device)
            seconds.append(begin.elapsed_time(end) / 1e3)  # elapsed_time is in milliseconds
    else:
        for _ in range(rounds):
            start = time.perf_counter()
            fn()
            seconds.append(time.perf_counter() - start)
    return Timing(seconds, warmup, first)
