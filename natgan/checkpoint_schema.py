"""The whole structure of a v1 checkpoint, checked once when it is loaded.

Why: ``torch.load(weights_only=True)`` guarantees that no code runs, not that the dict makes sense. A
file with ``weights.G`` a list, a ``progress.step`` of -1, a tensor of the wrong shape or a config that
would allocate terabytes must stop at :func:`natgan.checkpoint.load` with one line naming the key,
rather than as a traceback somewhere in ``sample``, ``fid``, ``visualize`` or ``train --resume``.

Shapes are checked against the model the config describes, built on PyTorch's ``meta`` device (no
memory, no compute), after a bound on its size, so an absurd config never allocates anything.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from natgan.errors import CheckpointError, ConfigError, NatGanError
from natgan.limits import check_untrusted

MAX_STEP = 10 ** 12           # more optimizer steps than any run will ever take
WEIGHT_SETS = {"G": "generator", "G_ema": "generator", "D": "discriminator"}
RANK_KEYS = ("torch", "numpy", "python", "generators")


class _Bad(Exception):
    """(dotted key, what is wrong) inside this module; turned into one CheckpointError line."""

    def __init__(self, key: str, problem: str):
        super().__init__(key, problem)
        self.key, self.problem = key, problem


def check(obj: dict[str, Any], path: str | Path) -> None:
    """Raise :class:`CheckpointError` ``"<path>: key 'a.b': <problem>"`` for the first thing that is wrong."""
    check_untrusted(obj, str(path), error=CheckpointError)  # before anything below walks it
    try:
        _check(obj)
    except _Bad as bad:
        raise CheckpointError(f"{path}: key '{bad.key}': {bad.problem}") from None


def _type(value: Any, expected: type | tuple[type, ...], key: str) -> Any:
    if not isinstance(value, expected) or isinstance(value, bool) and expected in (int, float, (int, float)):
        names = " or ".join(t.__name__ for t in (expected if isinstance(expected, tuple) else (expected,)))
        raise _Bad(key, f"expected {names}, got {type(value).__name__}")
    return value


def _check(obj: dict[str, Any]) -> None:
    model = _type(obj["model"], dict, "model")
    _type(model.get("name"), str, "model.name")
    _type(model.get("config"), dict, "model.config")
    if obj.get("recipe") is not None:
        _type(obj["recipe"], dict, "recipe")
    if "normalization" in obj:
        _type(obj["normalization"], str, "normalization")
    progress = _type(obj["progress"], dict, "progress")
    for name in ("step", "images_seen"):
        value = _type(progress.get(name), int, f"progress.{name}")
        if not 0 <= value <= MAX_STEP * (1 if name == "step" else 2 ** 20):
            raise _Bad(f"progress.{name}", f"expected an int between 0 and {MAX_STEP:.0e}, got {value}")
    for name, kind in (("optim", dict), ("rng", dict), ("extra", dict), ("metrics", list)):
        if name in obj:
            _type(obj[name], kind, name)
    for i, entry in enumerate(obj.get("metrics", [])):
        _type(entry, dict, f"metrics[{i}]")
    pl_mean = obj.get("extra", {}).get("pl_mean")
    if pl_mean is not None and not (isinstance(pl_mean, torch.Tensor) and pl_mean.numel() == 1
                                    and pl_mean.is_floating_point()):
        raise _Bad("extra.pl_mean", "expected a one-element float tensor")
    _check_rng(obj.get("rng", {}))
    weights = _type(obj["weights"], dict, "weights")
    for name in weights:
        if name not in WEIGHT_SETS:
            raise _Bad(f"weights.{name}", f"unexpected entry (expected {', '.join(WEIGHT_SETS)})")
    generator, discriminator = _meta_models(model["name"], model["config"])
    nets = {"generator": generator, "discriminator": discriminator}
    for name, state in weights.items():
        _check_state(state, nets[WEIGHT_SETS[name]].state_dict(), f"weights.{name}")
    optim = obj.get("optim", {})
    for name, net in (("G", generator), ("D", discriminator)):
        if name in optim:
            _check_adam(optim[name], list(net.parameters()), f"optim.{name}")


def _meta_models(name: str, config: dict) -> tuple[torch.nn.Module, torch.nn.Module]:
    from natgan.models import get_spec
    from natgan.models.registry import check_model_fits

    try:
        spec = get_spec(name)
        cfg = spec.make_config(config, source="checkpoint")
    except ConfigError as exc:
        raise _Bad("model", str(exc)) from None
    try:
        with torch.device("meta"):
            generator, discriminator = spec.builder(cfg)
    except Exception as exc:  # noqa: BLE001 - a nonsensical config may fail anywhere in a builder
        raise _Bad("model.config", f"does not build a {name} ({type(exc).__name__}: "
                                   f"{(str(exc).splitlines() or [''])[0]})") from None
    try:
        check_model_fits(generator, discriminator)
    except NatGanError as exc:
        raise _Bad("model.config", str(exc)) from None
    return generator, discriminator


def _check_state(state: Any, expected: dict[str, torch.Tensor], key: str) -> None:
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise _Bad(key, "expected a state dict (parameter name -> tensor)")
    missing = [k for k in expected if k not in state]
    if missing:
        raise _Bad(key, f"missing tensor '{missing[0]}' ({len(missing)} missing) for this model config")
    extra = [k for k in state if k not in expected]
    if extra:
        raise _Bad(key, f"unexpected tensor '{extra[0]}' ({len(extra)} unexpected) for this model config")
    for name, tensor in state.items():
        want = expected[name]
        if tuple(tensor.shape) != tuple(want.shape):
            raise _Bad(f"{key}.{name}", f"shape {list(tensor.shape)} does not match the model's {list(want.shape)}")
        if tensor.dtype != want.dtype:
            raise _Bad(f"{key}.{name}", f"dtype {tensor.dtype} does not match the model's {want.dtype}")


def _check_adam(state: Any, params: list[torch.nn.Parameter], key: str) -> None:
    if not isinstance(state, dict) or not isinstance(state.get("state"), dict) \
            or not isinstance(state.get("param_groups"), list):
        raise _Bad(key, "expected an optimizer state dict with 'state' and 'param_groups'")
    ids: list[Any] = []
    for i, group in enumerate(state["param_groups"]):
        if not isinstance(group, dict) or not isinstance(group.get("params"), list):
            raise _Bad(f"{key}.param_groups[{i}]", "expected a table with a 'params' list")
        for name in ("lr", "betas", "eps"):
            _check_finite_numbers(group.get(name), f"{key}.param_groups[{i}].{name}")
        ids.extend(group["params"])
    if len(ids) != len(params):
        raise _Bad(key, f"covers {len(ids)} parameters, the model has {len(params)}")
    for pid, param in zip(ids, params):
        entry = state["state"].get(pid)
        if entry is None:
            continue
        if not isinstance(entry, dict):
            raise _Bad(f"{key}.state[{pid}]", "expected a table of tensors")
        for name, value in entry.items():
            if name == "step":
                continue
            if not isinstance(value, torch.Tensor) or tuple(value.shape) != tuple(param.shape):
                shape = list(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
                raise _Bad(f"{key}.state[{pid}].{name}", f"expected a tensor of shape {list(param.shape)}, got {shape}")


def _check_finite_numbers(value: Any, key: str) -> None:
    items = value if isinstance(value, (list, tuple)) else [value]
    for item in items:
        if isinstance(item, torch.Tensor):
            item = item.item() if item.numel() == 1 else 0.0
        if not isinstance(item, (int, float)) or isinstance(item, bool) or not math.isfinite(item):
            raise _Bad(key, f"expected finite numbers, got {value!r}")


def _check_rng(rng: dict) -> None:
    if "ranks" not in rng:  # only the trainer stores RNG streams (as one state per rank)
        return
    ranks = rng["ranks"]
    if not isinstance(ranks, list) or not ranks:
        raise _Bad("rng.ranks", "expected a non-empty list of per-rank states")
    for i, state in enumerate(ranks):
        key = f"rng.ranks[{i}]"
        if not isinstance(state, dict) or any(k not in state for k in RANK_KEYS):
            raise _Bad(key, f"expected a table with {', '.join(RANK_KEYS)}")
        if not isinstance(state["torch"], torch.Tensor) or state["torch"].dtype != torch.uint8:
            raise _Bad(f"{key}.torch", "expected a uint8 tensor (torch generator state)")
        numpy = state["numpy"]
        if not (isinstance(numpy, dict) and isinstance(numpy.get("keys"), torch.Tensor)
                and tuple(numpy["keys"].shape) == (624,) and isinstance(numpy.get("pos"), int)
                and isinstance(numpy.get("has_gauss"), int) and isinstance(numpy.get("cached_gaussian"), float)):
            raise _Bad(f"{key}.numpy", "expected numpy's MT19937 state (keys[624], pos, has_gauss, cached_gaussian)")
        python = state["python"]
        if not (isinstance(python, dict) and isinstance(python.get("version"), int)
                and isinstance(python.get("state"), list) and len(python["state"]) == 625
                and all(isinstance(v, int) and not isinstance(v, bool) for v in python["state"])
                and (python.get("gauss") == "none" or isinstance(python.get("gauss"), float))):
            raise _Bad(f"{key}.python", "expected Python's random state (version, state[625], gauss)")
        generators = state["generators"]
        if not isinstance(generators, dict) or not all(
                isinstance(generators.get(name), torch.Tensor) and generators[name].dtype == torch.uint8
                for name in ("z", "aug", "flip")):
            raise _Bad(f"{key}.generators", "expected uint8 generator states for z, aug and flip")
        if "cuda" in state and not (isinstance(state["cuda"], list)
                                    and all(isinstance(t, torch.Tensor) for t in state["cuda"])):
            raise _Bad(f"{key}.cuda", "expected a list of CUDA generator states")
