"""Peak memory of a region of code, on CUDA (allocator statistics) or CPU (peak resident set size).

* CUDA: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats`` — tensor memory only
  (weights + activations + workspaces the caching allocator handed out; not its cached-but-free
  blocks, not the CUDA context).
* CPU: Linux keeps the process' peak RSS in ``VmHWM``; writing ``5`` to ``/proc/self/clear_refs``
  resets it to the current RSS, so ``VmHWM`` after the region is the region's own peak. Freed heap
  memory is first handed back to the OS (``malloc_trim``) so the baseline is memory actually in use. No tracing
  (tracemalloc does not see torch's allocator and would slow every op). Where that file is not
  writable (non-Linux, restricted containers) the measurement is reported as unavailable rather than
  replaced by the lifetime peak, which would be misleading.

``peak`` is the whole process/device figure; ``delta`` = peak − usage just before the region, i.e.
what running the region added (activations and temporaries, the weights already being resident).
"""

from __future__ import annotations

import ctypes
import gc
from dataclasses import dataclass
from pathlib import Path

import torch

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


@dataclass
class MemoryReport:
    method: str                # what was measured, in words
    peak_bytes: int | None
    delta_bytes: int | None


def _status_kib(field: str) -> int | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def _release_free_heap() -> None:
    """Return freed heap pages to the OS (glibc ``malloc_trim``), so the baseline RSS is what is in use.

    Without it, memory freed by an earlier measurement stays resident and is silently reused, and the
    next region's peak would hide inside the stale baseline.
    """
    gc.collect()
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _reset_cpu_peak() -> bool:
    _release_free_heap()
    try:
        _CLEAR_REFS.write_text("5")
        return True
    except OSError:
        return False


class PeakMemory:
    """``with PeakMemory(device) as m: ...`` then ``m.report``."""

    def __init__(self, device: torch.device | str):
        self.device = torch.device(device)
        self.report = MemoryReport("not measured", None, None)
        self._base: int | None = None
        self._ok = False

    def __enter__(self) -> "PeakMemory":
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
            self._ok = True
        elif self.device.type == "cpu":
            self._ok = _reset_cpu_peak()
            rss = _status_kib("VmRSS")
            self._base = None if rss is None else rss * 1024
            self._ok = self._ok and self._base is not None
        return self

    def __exit__(self, *exc) -> None:
        if not self._ok or exc[0] is not None:
            if not self._ok:
                self.report = MemoryReport(f"unavailable on {self.device.type} here", None, None)
            return
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
            method = "CUDA max_memory_allocated (tensors incl. weights)"
        else:
            hwm = _status_kib("VmHWM")
            if hwm is None:
                self.report = MemoryReport("unavailable on cpu here", None, None)
                return
            peak = hwm * 1024
            method = "CPU peak RSS (VmHWM after clear_refs; whole process)"
        assert self._base is not None
        self.report = MemoryReport(method, peak, max(0, peak - self._base))
