"""Helpers every importer shares: reading torch containers safely, state-dict and Adam-state conversion.

One home for what the StyleNAT/StyleSwin, rosinality, stylegan2-ada and GANformer importers all need, so
that a fix to (say) optimizer re-indexing applies to every format at once.
"""

from __future__ import annotations

import argparse
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from natgan.archive import check_torch_file
from natgan.errors import CheckpointError
from natgan.limits import check_untrusted

ALLOWED_GLOBALS = [argparse.Namespace]
# Official runs: 8 GPUs (StyleNAT FFHQ-256: 8 x 8 = 64 images/step, 940k steps = 60.2 M images as the paper says).
ASSUMED_GPUS = 8


def load_official_container(path: str | Path) -> Any:
    """Read an official checkpoint, unpickling nothing but tensors, plain containers and argparse.Namespace."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: file not found" if not path.exists() else f"{path}: not a file")
    check_torch_file(path)  # CRCs and declared sizes before torch.load decompresses or allocates anything
    try:
        with torch.serialization.safe_globals(ALLOWED_GLOBALS):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        what = f"'{found.group(1)}'" if found else "an object that is not allowed"
        raise CheckpointError(f"{path}: refused to unpickle {what}: official checkpoints may only contain tensors, "
                              f"plain containers and argparse.Namespace") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: not a readable torch checkpoint ({reason})") from None
    check_untrusted(obj, str(path), error=CheckpointError,
                    children=lambda o: vars(o) if isinstance(o, argparse.Namespace) else None)
    return obj


def strip_module(state: Any, where: str) -> dict[str, torch.Tensor]:
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{where}: expected a state dict of tensors")
    if state and all(k.startswith("module.") for k in state):
        return {k[len("module."):]: v for k, v in state.items()}
    return dict(state)


def convert_state(official: dict[str, torch.Tensor], model: nn.Module, rename: Callable[[str], Any],
                   src: str, which: str, data_buffer: Callable[[str], bool] | None = None) -> dict[str, torch.Tensor]:
    """Official state dict -> ours; every key must map, buffers must agree, shapes must match.

    Buffers are constants nat-gan computes (blur kernels, index tables) and must be equal, except the ones
    that hold data: spectral-norm vectors, and whatever ``data_buffer(name)`` says (e.g. stored noise maps).
    """
    ours = model.state_dict()
    buffers = {name for name, _ in model.named_buffers()}
    converted: dict[str, torch.Tensor] = {}
    pieces: dict[str, list[tuple[int, torch.Tensor]]] = {}
    for key, value in official.items():
        target = rename(key)
        if target is None:
            continue
        if isinstance(target, tuple):
            pieces.setdefault(target[0], []).append((target[1], value))
            continue
        if target not in ours:
            raise CheckpointError(f"{src}: {which}: unexpected key '{key}' (no counterpart in nat-gan's model)")
        converted[target] = value
    for target, parts in pieces.items():
        if target not in ours:
            raise CheckpointError(f"{src}: {which}: unexpected key '{target}' (no counterpart in nat-gan's model)")
        converted[target] = torch.cat([t for _, t in sorted(parts, key=lambda p: p[0])], dim=0)
    for key in ours:
        if key not in converted:
            raise CheckpointError(f"{src}: {which}: missing key '{key}'")
        if tuple(converted[key].shape) != tuple(ours[key].shape):
            raise CheckpointError(f"{src}: {which}: key '{key}' has shape {tuple(converted[key].shape)}, "
                                  f"the rebuilt model expects {tuple(ours[key].shape)}")
        is_data = key.split(".")[-1] in ("weight_u", "weight_v") or (data_buffer is not None and data_buffer(key))
        if key in buffers and not is_data:
            if not torch.equal(converted[key].to(ours[key].dtype), ours[key]):
                raise CheckpointError(f"{src}: {which}: buffer '{key}' differs from the one nat-gan computes "
                                      f"(unexpected convention)")
    return {k: converted[k].to(ours[k].dtype) for k in ours}


def parameter_sources(official: dict[str, torch.Tensor], model: nn.Module, rename: Callable[[str], Any]
                       ) -> list[tuple[str, Any]]:
    """Official parameter names in official order, with their targets (buffers left out)."""
    params = {name for name, _ in model.named_parameters()}
    out = []
    for key in official:
        target = rename(key)
        name = target[0] if isinstance(target, tuple) else target
        if name in params:
            out.append((key, target))
    return out


def convert_optimizer(state: Any, sources: list[tuple[str, Any]], model: nn.Module, src: str, which: str
                       ) -> dict[str, Any]:
    """Re-index an official Adam state dict (indices = official parameter order) to our parameter order."""
    if not isinstance(state, dict) or "param_groups" not in state or "state" not in state:
        raise CheckpointError(f"{src}: {which}: expected an optimizer state dict with 'state' and 'param_groups'")
    official_ids = [i for group in state["param_groups"] for i in group["params"]]
    if len(official_ids) != len(sources):
        raise CheckpointError(f"{src}: {which}: optimizer holds {len(official_ids)} parameters, the official "
                              f"model has {len(sources)}")
    ours = [name for name, _ in model.named_parameters()]
    index_of = {name: i for i, name in enumerate(ours)}
    by_target: dict[str, list[tuple[int, int]]] = {}
    group_of: dict[str, int] = {}
    position = 0
    for g_index, group in enumerate(state["param_groups"]):
        for official_id in group["params"]:
            _, target = sources[position]
            position += 1
            name, part = target if isinstance(target, tuple) else (target, 0)
            by_target.setdefault(name, []).append((part, official_id))
            group_of[name] = g_index
    new_state: dict[int, Any] = {}
    for name, parts in by_target.items():
        entries = [state["state"].get(official_id) for _, official_id in sorted(parts)]
        if all(e is None for e in entries):
            continue
        if any(e is None for e in entries):
            raise CheckpointError(f"{src}: {which}: optimizer state covers only part of '{name}'")
        merged = dict(entries[0])
        for key, value in entries[0].items():
            if isinstance(value, torch.Tensor) and value.dim() > 0 and len(entries) > 1:
                merged[key] = torch.cat([e[key] for e in entries], dim=0)
        new_state[index_of[name]] = merged
    groups = []
    for g_index, group in enumerate(state["param_groups"]):
        new_group = {k: v for k, v in group.items() if k != "params"}
        new_group["params"] = sorted(index_of[n] for n, gi in group_of.items() if gi == g_index)
        groups.append(new_group)
    return {"state": new_state, "param_groups": groups}


def step_from_filename(path: str | Path) -> int | None:
    """``000500.pt`` -> 500, ``FFHQ256_940k_flip.pt`` -> 940000; None when the name does not say."""
    stem = Path(path).stem
    if stem.isdigit():
        return int(stem)
    m = re.search(r"(?:^|[_\-.])(\d+)k(?:$|[_\-.])", stem)
    return int(m.group(1)) * 1000 if m else None


def plain(value: Any) -> Any:
    """Official args as weights_only-safe plain values (anything exotic becomes its repr)."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return repr(value)
