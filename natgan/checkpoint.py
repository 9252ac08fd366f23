"""Checkpoint format v1: one self-describing, ``weights_only``-loadable file per snapshot.

Layout (all plain dicts / lists / tensors / numbers / strings)::

    format: "nat-gan-checkpoint"   format_version: 1   natgan_version: "0.1.0"
    model: {name, config}          recipe: {model, data, train, eval}   normalization: "imagenet"
    weights: {G, D, G_ema}         optim: {G, D}                        progress: {step, images_seen}
    rng: {...}                     metrics: [ {...}, ... ]              extra: {...}

Writes are atomic (temp file in the same directory, fsync, rename, fsync of the directory), so a crash
never leaves a truncated file under the final name, and loading never unpickles arbitrary objects.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch

from natgan import __version__, checkpoint_schema
from natgan.archive import check_torch_file
from natgan.fsutil import atomic_write
from natgan.errors import CheckpointError

FORMAT = "nat-gan-checkpoint"
FORMAT_VERSION = 1
REQUIRED_KEYS = ("model", "weights", "progress")


def atomic_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` to ``path`` atomically: readers see the old file or the complete new one."""
    return atomic_write(path, lambda fh: torch.save(obj, fh))


def make_checkpoint(*, model_name: str, model_config: dict, recipe: dict | None, normalization: str,
                    G: dict, G_ema: dict | None = None, D: dict | None = None, optim: dict | None = None,
                    step: int = 0, images_seen: int = 0, rng: dict | None = None,
                    metrics: list | None = None, extra: dict | None = None) -> dict[str, Any]:
    """Assemble a v1 checkpoint dict (state dicts are copied to CPU so the file is device-independent)."""
    weights = {"G": _cpu(G)}
    if G_ema is not None:
        weights["G_ema"] = _cpu(G_ema)
    if D is not None:
        weights["D"] = _cpu(D)
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "natgan_version": __version__,
        "model": {"name": model_name, "config": dict(model_config)},
        "recipe": recipe,
        "normalization": normalization,
        "weights": weights,
        "optim": _cpu(optim or {}),
        "progress": {"step": int(step), "images_seen": int(images_seen)},
        "rng": rng or {},
        "metrics": list(metrics or []),
        "extra": extra or {},
    }


def _cpu(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_cpu(v) for v in obj)
    return obj


def save(ckpt: dict[str, Any], path: str | Path) -> Path:
    """Atomically write a checkpoint made by :func:`make_checkpoint`."""
    if ckpt.get("format") != FORMAT:
        raise ValueError("not a nat-gan checkpoint dict (use make_checkpoint)")
    return atomic_save(ckpt, path)


def load(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load and validate a v1 checkpoint; any problem is a one-line :class:`CheckpointError`.

    The zip container's declared sizes are bounded and the CRC-32 of every entry is verified first
    (``torch.load`` does neither), so a zip bomb is refused before anything is allocated and a flipped
    byte inside a weight or optimizer tensor is refused, naming the damaged entry, instead of loading
    silently different numbers. Then the whole structure is checked (:mod:`natgan.checkpoint_schema`).
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: checkpoint not found")
    if path.is_dir():
        raise CheckpointError(f"{path}: is a directory, not a checkpoint file")
    if not path.is_file():
        raise CheckpointError(f"{path}: not a regular file (a FIFO, socket or device), not a checkpoint")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: empty file (truncated checkpoint)")
    try:
        pickled = looks_pickled(path)
    except OSError as exc:  # permissions, I/O errors: say so rather than "not a checkpoint"
        raise CheckpointError(f"{path}: cannot read the checkpoint ({exc.strerror or exc})") from None
    if not pickled:
        raise CheckpointError(not_a_checkpoint(path))
    _verify_container(path)
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        detail = str(exc).splitlines()
        culprit = next((line.strip() for line in detail if "GLOBAL" in line or "Unsupported" in line), "")
        raise CheckpointError(
            f"{path}: refused to load: the file contains pickled Python objects, which a nat-gan checkpoint "
            f"never does{' (' + culprit + ')' if culprit else ''}; official StyleNAT/StyleSwin files go "
            f"through `nat-gan import`") from None
    except Exception as exc:  # torch raises many types for garbage input (RuntimeError, KeyError, EOFError…)
        if _looks_truncated(path):
            raise CheckpointError(f"{path}: truncated or corrupt checkpoint (incomplete file)") from None
        reason = (str(exc).splitlines() or [""])[0]
        raise CheckpointError(f"{path}: not a checkpoint (torch.load failed: {type(exc).__name__}: {reason})") from None
    return validate(obj, path)


def _verify_container(path: Path) -> None:
    """Declared sizes bounded and every entry's CRC-32 verified (:func:`natgan.archive.check_zip`) before
    ``torch.load`` decompresses or allocates anything; name the first damaged entry."""
    check_torch_file(path, f"{path}: checkpoint")


def _looks_truncated(path: Path) -> bool:
    """A torch zip whose header is intact but whose end of central directory is missing."""
    with open(path, "rb") as fh:
        head = fh.read(4)
    return head == b"PK\x03\x04"


def looks_pickled(path: Path) -> bool:
    """A torch zip holds a pickle; a bare pickle (protocol 2+, legacy torch files too) starts with PROTO.
    Random bytes are neither, and must not be described as "pickled Python objects"."""
    with open(path, "rb") as fh:
        head = fh.read(4)
    return head == b"PK\x03\x04" or (len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5)


def not_a_checkpoint(path: str | Path) -> str:
    """The one message for a file that is no checkpoint of any kind (an image, text, random bytes)."""
    return f"{path}: not a checkpoint (neither a torch zip archive nor a pickle)"


def validate(obj: Any, path: str | Path = "<checkpoint>") -> dict[str, Any]:
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        hint = ""
        if isinstance(obj, dict) and {"g_ema", "args"} & set(obj):
            hint = " (looks like an official StyleNAT/StyleSwin checkpoint: convert it with `nat-gan import`)"
        raise CheckpointError(f"{path}: not a nat-gan checkpoint{hint}")
    version = obj.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(f"{path}: unknown checkpoint format version {version!r} "
                              f"(this nat-gan {__version__} reads version {FORMAT_VERSION})")
    missing = [k for k in REQUIRED_KEYS if k not in obj]
    if missing:
        raise CheckpointError(f"{path}: checkpoint is missing key '{missing[0]}'")
    if not isinstance(obj["weights"], dict) or "G" not in obj["weights"]:
        raise CheckpointError(f"{path}: checkpoint has no generator weights (key 'weights.G')")
    checkpoint_schema.check(obj, path)
    return obj


def first_non_finite(tree: Any, prefix: str = "weights") -> str | None:
    """Dotted key (``weights.G.conv.weight``, ``optim.D.state.3.exp_avg``) of the first floating-point tensor
    in ``tree`` (nested dicts/lists) holding NaN/inf, else None."""
    stack = [(tree, prefix)]
    while stack:
        node, key = stack.pop()
        if isinstance(node, dict):
            stack.extend((v, f"{key}.{k}") for k, v in reversed(list(node.items())))
        elif isinstance(node, (list, tuple)):
            stack.extend((v, f"{key}[{i}]") for i, v in reversed(list(enumerate(node))))
        elif isinstance(node, torch.Tensor) and node.is_floating_point() and not torch.isfinite(node).all():
            return key
    return None


def build_generator(ckpt: dict[str, Any], *, ema: bool = True, device: str | torch.device = "cpu",
                    source: str | Path = "checkpoint") -> torch.nn.Module:
    """Rebuild the checkpoint's generator (EMA weights by default) in eval mode; refuse NaN/inf weights.

    ``source`` names the file in error messages."""
    from natgan.models import get_spec

    spec = get_spec(ckpt["model"]["name"])
    config = spec.make_config(ckpt["model"]["config"], source="checkpoint model config")
    generator, _ = spec.builder(config)
    weights = ckpt["weights"]
    key = "G_ema" if ema and "G_ema" in weights else "G"
    bad = first_non_finite(weights[key], f"weights.{key}")
    if bad is not None:
        raise CheckpointError(f"{source}: key '{bad}': non-finite values "
                              f"(NaN/inf); this generator would only produce garbage images")
    generator.load_state_dict(weights[key])
    return generator.to(device).eval()
