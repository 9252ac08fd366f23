"""Running official code from a checkout: import it, then forget every module it loaded; re-draw its init.

See ``benchmarks/bench_peers.py``'s docstring for why ``cpp_extension.load`` is answered with None on CPU.
"""

from __future__ import annotations

import contextlib
import copy
import pickle
import sys
import types
from pathlib import Path
from typing import Iterator

import torch
from torch import nn


@contextlib.contextmanager
def official_checkout(path: str | Path, device: torch.device,
                      stand_ins: dict[str, types.ModuleType] | None = None) -> Iterator[Path]:
    """Import from ``path`` (prepended to sys.path); afterwards forget every module loaded from it.

    The checkouts share top-level names (``training``, ``torch_utils``, ``dnnlib``, ``models``, ``op``), so
    each peer gets a clean slate. On CPU, ``torch.utils.cpp_extension.load`` returns None meanwhile (see
    module docstring). ``stand_ins`` ({module name: module}) sit in ``sys.modules`` meanwhile; whatever was
    there before (e.g. an installed natten >= 0.20) is put back afterwards.
    """
    root = Path(path).resolve()
    if not root.is_dir():
        raise SystemExit(f"error: {path}: not a directory (expected a checkout of the official code)")
    import torch.utils.cpp_extension as cpp

    saved_load = cpp.load
    stand_ins = stand_ins or {}
    saved_modules = {name: sys.modules.get(name) for name in stand_ins}
    if device.type == "cpu":
        cpp.load = lambda *args, **kwargs: None
    sys.modules.update(stand_ins)
    sys.path.insert(0, str(root))
    try:
        yield root
    finally:
        cpp.load = saved_load
        for name, module in list(sys.modules.items()):   # before sys.path changes: namespace paths follow it
            if _loaded_from(module, root):
                del sys.modules[name]
        sys.path.remove(str(root))
        for name, module in saved_modules.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


def _loaded_from(module: types.ModuleType, root: Path) -> bool:
    """Whether ``module`` comes from the checkout at ``root``: by its file, or for a namespace package (StyleSwin's
    and StyleNAT's ``models/`` have no ``__init__.py``, so ``__file__`` is None) by its search path; a stale
    ``models`` package would hand the next checkout the previous one's submodules."""
    files = [getattr(module, "__file__", None) or ""]
    search = getattr(module, "__path__", None)
    if isinstance(search, list) or type(search).__name__ == "_NamespacePath":   # not torch's odd __path__ objects
        files += [str(entry) for entry in search]
    return any(str(f).startswith(str(root)) for f in files)


def redraw(*modules: nn.Module) -> None:
    """Non-zero biases and noise strengths (official inits are 0/1), so parity covers every parameter."""
    gen = torch.Generator().manual_seed(1000)
    with torch.no_grad():
        for module in modules:
            for name, p in module.named_parameters():
                if name.endswith("bias") or "noise" in name:
                    p.add_(torch.randn(p.shape, generator=gen) * 0.1)


def write_snapshot(path: Path, extra: dict, networks: tuple[tuple[str, nn.Module], ...]) -> Path:
    """``pickle.dump`` of an NVlabs training loop's snapshot (stylegan2-ada, GANformer): ``extra`` (e.g. the
    dataset arguments), then each network as the loop stores it: a copy, in eval mode, without gradients, on CPU."""
    snapshot = dict(extra)
    for name, module in networks:
        snapshot[name] = copy.deepcopy(module).eval().requires_grad_(False).cpu()
    with open(path, "wb") as fh:
        pickle.dump(snapshot, fh)
    return path
