"""Where numbers and lists from users and files enter: finite, in range, well formed, named in the error.

Why: ``float("nan")``, ``inf`` and ``1e400`` parse as floats, and ``"gif,gif"`` or ``"mp4,"`` split into
lists; without a check they pass silently (an all-NaN image written with exit 0) or fail deep inside
torch with a traceback. Each option parser and file loader calls these helpers once, at the point of
entry, so the one-line error names the option or the file and the value.
"""

from __future__ import annotations

import math
from typing import Any, Callable, TypeVar

import numpy as np

from natgan.errors import ConfigError, NatGanError

T = TypeVar("T")

MAX_TRUNC = 100.0     # truncation psi: 0-1 truncates, >1 extrapolates; beyond +-100 w leaves every learnt range
MAX_FPS = 1000.0      # video frame rate (GIF frame durations are whole milliseconds)
MAX_FRAMES = 10 ** 6  # frames of a walk (9 hours at 30 fps); MP4 streams them, a GIF must fit in memory


def finite_number(value: float, name: str, *, lo: float | None = None, hi: float | None = None,
                  error: type[NatGanError] = ConfigError) -> float:
    """``value`` if finite and within ``[lo, hi]``; else a one-line error naming ``name`` (an option or key)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise error(f"{name} {value}: expected a finite number")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        bounds = " and ".join(b for b in (f">= {lo:g}" if lo is not None else "",
                                          f"<= {hi:g}" if hi is not None else "") if b)
        raise error(f"{name} {value:g}: expected a number {bounds}")
    return float(value)


def parse_number(text: str, name: str, **bounds: Any) -> float:
    """A float from text (``"1e400"`` overflows to inf and is refused like ``"nan"``)."""
    try:
        value = float(text.strip())
    except ValueError:
        raise ConfigError(f"{name} '{text}': expected a number") from None
    return finite_number(value, name, **bounds)


def parse_list(text: str, name: str, item: Callable[[str], T], *, allow_empty: bool = False) -> list[T]:
    """Comma-separated items: no empty items (``"mp4,"``), no repeats (``"gif,gif"``), at least one item."""
    if not text.strip():
        if allow_empty:
            return []
        raise ConfigError(f"{name} '': expected a comma-separated list")
    parts = [p.strip() for p in text.split(",")]
    if any(not p for p in parts):
        raise ConfigError(f"{name} '{text}': empty item in the comma-separated list")
    values = [item(p) for p in parts]
    repeated = next((p for p, v in zip(parts, values) if values.count(v) > 1), None)
    if repeated is not None:
        raise ConfigError(f"{name} '{text}': '{repeated}' is given twice")
    return values


def finite_array(array: Any, where: str, *, error: type[NatGanError] = NatGanError) -> np.ndarray:
    """A real, finite float32 array from a file: complex, non-numeric, NaN and inf values are refused."""
    arr = np.asarray(array)
    if arr.dtype.kind == "c":
        raise error(f"{where}: complex values (expected real numbers)")
    if arr.dtype.kind not in "biuf":
        raise error(f"{where}: {arr.dtype} values (expected numbers)")
    arr = arr.astype(np.float32, copy=False)
    if arr.size and not np.isfinite(arr).all():
        bad = int((~np.isfinite(arr)).sum())
        raise error(f"{where}: {bad} non-finite value(s) (NaN/inf)")
    return arr
