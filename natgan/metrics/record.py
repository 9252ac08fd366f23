"""Appending an FID result to a checkpoint's ``metrics`` history (atomic rewrite).

The checkpoint is re-read just before writing and the entry is only added when the file is still the
one that was scored (same size and modification time), so an FID of old weights never lands in a
``latest.pt`` that the trainer replaced in the meantime.
"""

from __future__ import annotations

import os
from pathlib import Path

from natgan import checkpoint as ckpt_io
from natgan.errors import CheckpointError


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
