"""Bounds on untrusted input: nesting depth, declared sizes and the memory budget.

Why one module: a file or option can *declare* far more than it *holds* (a 42 kB checkpoint of stride-0
tensors describing a 1.9e9-parameter generator, an ``.npz`` header claiming 1e12 x 64 floats, a recipe of
100k nested arrays). Every loader asks the same three questions before materialising anything: is the
structure nested beyond reason, does each array hold what it declares, and does the total fit in the
memory this process may use. Answering them here gives one wording and one budget for every command,
instead of a ``RecursionError``, ``MemoryError`` or a kill by the OOM killer somewhere downstream.
"""

from __future__ import annotations

import os
import resource
from pathlib import Path
from typing import Any, Callable

from natgan.errors import NatGanError

MAX_DEPTH = 64  # recipes, metadata and checkpoints nest 4-6 levels; 64 is generous and far from Python's limit
ENV_BUDGET = "NATGAN_MEMORY_BUDGET"  # bytes (suffixes K, M, G, T), to lower the budget below what is free


def check_untrusted(obj: Any, where: str, *, error: type[NatGanError] = NatGanError, limit: int = MAX_DEPTH,
                    children: Callable[[Any], dict | list | tuple | None] | None = None) -> None:
    """Refuse containers nested deeper than ``limit`` and tensors that declare more than they hold, naming
    the dotted key (iteratively: the check itself never recurses).

    ``children(obj)`` may expose the contents of other types (a pickled record's state, a Namespace's
    vars) as a dict or list; it returns None for leaves. Dicts, lists and tuples are walked by default.
    """
    stack: list[tuple[Any, str, int]] = [(obj, "", 0)]
    seen: set[int] = set()
    while stack:
        node, key, depth = stack.pop()
        at = f"{where}: key '{key}'" if key else where
        if depth > limit:
            raise error(f"{at}: nested more than {limit} levels deep (a malformed or hostile file?)")
        inner = children(node) if children is not None else None
        if inner is None and isinstance(node, (dict, list, tuple)):
            inner = node
        if inner is None:
            if tensor_declares_more_than_it_holds(node):
                raise error(f"{at}: a tensor of shape {list(node.shape)} stored in only "
                            f"{node.untyped_storage().nbytes():,} bytes (a stride-0 or overlapping view); "
                            f"refusing to materialise it")
            continue
        if id(node) in seen:  # shared or cyclic references are walked once
            continue
        seen.add(id(node))
        items = inner.items() if isinstance(inner, dict) else enumerate(inner)
        for k, v in items:
            part = (f".{k}" if key else str(k)) if isinstance(inner, dict) else f"[{k}]"
            stack.append((v, key if key.endswith("…") else (key + part if len(key) < 60 else key + "…"), depth + 1))


def _parse_bytes(text: str) -> int | None:
    units = {"": 1, "K": 2 ** 10, "M": 2 ** 20, "G": 2 ** 30, "T": 2 ** 40}
    text = text.strip().upper().removesuffix("IB").removesuffix("B")
    unit = text[-1:] if text[-1:] in units and text[-1:] else ""
    try:
        value = float(text[:-1] if unit else text) * units[unit]
    except ValueError:
        return None
    return int(value) if value > 0 else None


def _meminfo_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _cgroup_available() -> int | None:
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit == "max":
            return None
        used = int(Path("/sys/fs/cgroup/memory.current").read_text().strip())
        return max(0, int(limit) - used)
    except (OSError, ValueError):
        return None


def address_space_left() -> int | None:
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY:
        return None
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmSize:"):
                return max(0, soft - int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    return soft


def memory_budget() -> int:
    """Bytes this process may still allocate: the least of free memory, the cgroup's limit, the address-space
    limit (``ulimit -v``) and ``$NATGAN_MEMORY_BUDGET``."""
    candidates = [_meminfo_available(), _cgroup_available(), address_space_left()]
    if os.environ.get(ENV_BUDGET):
        parsed = _parse_bytes(os.environ[ENV_BUDGET])
        if parsed is None:
            from natgan.errors import ConfigError

            raise ConfigError(f"${ENV_BUDGET} '{os.environ[ENV_BUDGET]}': expected a size such as 8G or 512M")
        candidates.append(parsed)
    known = [c for c in candidates if c is not None]
    return min(known) if known else 2 ** 62


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:.3g} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.3g} EiB"


def check_fits(nbytes: float, what: str, *, error: type[NatGanError] = NatGanError) -> None:
    """Refuse ``what`` when it needs more than the memory budget (nothing has been allocated yet)."""
    budget = memory_budget()
    if nbytes > budget:
        raise error(f"{what} needs {human_bytes(nbytes)}, more than the {human_bytes(budget)} of memory available "
                    f"to this process: refusing before allocating it")


def tensor_declares_more_than_it_holds(tensor: Any) -> bool:
    """True for tensors whose shape spans more elements than their storage holds (stride-0 / overlapping
    views): a few bytes on disk that become gigabytes as soon as anything copies them."""
    import torch

    if not isinstance(tensor, torch.Tensor) or tensor.numel() == 0 or tensor.is_sparse:
        return False
    try:
        held = tensor.untyped_storage().nbytes()
    except (RuntimeError, NotImplementedError):
        return False
    return tensor.numel() * tensor.element_size() > held
