"""Where ``nat-gan fid`` records a result: beside the checkpoint by default, in it on request.

By default the entry is appended to ``<checkpoint>.metrics.json`` next to the file (:func:`record_beside`): a
scoring command must not rewrite a large, shared or read-only checkpoint in place. ``--record-in-checkpoint``
appends it to the checkpoint's own ``metrics`` history instead (:func:`record_in_checkpoint`, an atomic
rewrite), which ``train --resume`` and ``train.keep_best`` read. In both cases the entry is only written when
the checkpoint is still the one that was scored (same size and modification time), so an FID of old weights
never lands beside or in a ``latest.pt`` that the trainer replaced in the meantime.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from natgan import checkpoint as ckpt_io
from natgan.errors import CheckpointError, NatGanError
from natgan.fsutil import atomic_write_text
from natgan.jsonable import jsonable

SIDECAR_SUFFIX = ".metrics.json"


def fingerprint(path: str | Path) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns


def metric_entry(result: dict, ckpt: dict, *, ema: bool) -> dict:
    """The history record: the result plus which weights it describes."""
    progress = ckpt.get("progress", {})
    return {**result, "step": int(progress.get("step", 0)), "images_seen": int(progress.get("images_seen", 0)),
            "ema": bool(ema)}


def record_in_checkpoint(path: str | Path, result: dict, *, ema: bool, expected: tuple[int, int] | None = None) -> dict:
    """Append ``result`` to ``path``'s ``metrics`` and rewrite it atomically; returns the entry written."""
    path = Path(path)
    if expected is not None and fingerprint(path) != expected:
        raise CheckpointError(f"{path}: the checkpoint changed while FID was running; result not recorded "
                              f"(use --json to keep it)")
    ckpt = ckpt_io.load(path)
    entry = metric_entry(result, ckpt, ema=ema)
    ckpt["metrics"] = [*ckpt.get("metrics", []), entry]
    ckpt_io.save(ckpt, path)
    return entry


def sidecar_path(path: str | Path) -> Path:
    """``run/latest.pt`` -> ``run/latest.pt.metrics.json``."""
    path = Path(path)
    return path.with_name(path.name + SIDECAR_SUFFIX)


def read_sidecar(path: str | Path) -> list[dict]:
    """The entries recorded beside checkpoint ``path`` (``[]`` when none)."""
    side = sidecar_path(path)
    try:
        text = side.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError) as exc:
        raise NatGanError(f"{side}: cannot read the metrics record ({getattr(exc, 'strerror', None) or exc})") \
            from None
    try:
        entries = json.loads(text)
    except (ValueError, RecursionError):
        entries = None
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise NatGanError(f"{side}: not a metrics record (expected a JSON list of results); move it away to "
                          f"start a new one")
    return entries


def record_beside(path: str | Path, result: dict, ckpt: dict, *, ema: bool,
                  expected: tuple[int, int] | None = None) -> tuple[Path, dict]:
    """Append ``result`` to ``<path>.metrics.json`` (atomically); the checkpoint itself is not touched."""
    path = Path(path)
    if expected is not None and fingerprint(path) != expected:
        raise CheckpointError(f"{path}: the checkpoint changed while FID was running; result not recorded "
                              f"(use --json to keep it)")
    entries = read_sidecar(path)
    entry = {**metric_entry(result, ckpt, ema=ema), "checkpoint": path.name}
    side = sidecar_path(path)
    try:
        atomic_write_text(side, json.dumps([*entries, entry], indent=1, default=jsonable) + "\n")
    except OSError as exc:
        raise NatGanError(f"{side}: cannot record the result ({exc.strerror or exc}); --no-record skips it, "
                          f"--json prints it") from None
    return side, entry

