"""The run directory: one trainer at a time, numbered checkpoints + latest.pt, samples, logs.

Layout::

    run/recipe.toml              resolved recipe of this run
    run/ckpt-0001000.pt …        numbered snapshots (the newest `keep_checkpoints` kept)
    run/latest.pt                the newest snapshot (hard link, so no second write)
    run/samples/step-0001000.png grids from fixed latents
    run/tb/                      TensorBoard event files
    run/log.txt                  plain-text log lines
"""

from __future__ import annotations

import fcntl
import os
import re
from pathlib import Path

from natgan import checkpoint
from natgan.errors import CheckpointError, NatGanError
from natgan.fsutil import atomic_link, remove_stale_temps

CKPT_RE = re.compile(r"^ckpt-(\d+)\.pt$")


class RunDir:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._lock_fh = None

    # ------------------------------------------------------------------------------------ locking
    def lock(self) -> None:
        """Refuse a second trainer on the same directory (advisory flock, released if the process dies)."""
        self.path.mkdir(parents=True, exist_ok=True)
        fh = open(self.path / ".lock", "a+")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.seek(0)
            owner = fh.read().strip() or "unknown"
            fh.close()
            raise NatGanError(f"{self.path}: run directory is in use by another trainer (pid {owner})") from None
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        self._lock_fh = fh
        remove_stale_temps(self.path)  # left by a writer killed mid-write (kill -9)

    def unlock(self) -> None:
        if self._lock_fh is not None:
            fcntl.flock(self._lock_fh, fcntl.LOCK_UN)
            self._lock_fh.close()
            self._lock_fh = None

    # -------------------------------------------------------------------------------- checkpoints
    def checkpoint_path(self, step: int) -> Path:
        return self.path / f"ckpt-{step:07d}.pt"

    @property
    def latest(self) -> Path:
        return self.path / "latest.pt"

    def numbered_checkpoints(self) -> list[tuple[int, Path]]:
        """(step, path) of numbered snapshots, newest first."""
        if not self.path.is_dir():
            return []
        found = [(int(m.group(1)), p) for p in self.path.iterdir() if (m := CKPT_RE.match(p.name))]
        return sorted(found, reverse=True)

    def has_checkpoints(self) -> bool:
        return self.latest.exists() or bool(self.numbered_checkpoints())

    def newest_valid(self) -> tuple[Path, dict] | None:
        """The newest checkpoint that loads and validates; broken ones are skipped (e.g. a torn disk)."""
        candidates = [p for _, p in self.numbered_checkpoints()]
        if self.latest.exists():
            candidates.append(self.latest)  # same step as a numbered file normally: prefer the numbered name
        best: tuple[int, Path, dict] | None = None
        for path in candidates:
            try:
                ck = checkpoint.load(path)
            except CheckpointError:
                continue
            step = ck["progress"]["step"]
            if best is None or step > best[0]:
                best = (step, path, ck)
        return (best[1], best[2]) if best else None

    def save(self, ckpt: dict, step: int, keep: int) -> Path:
        """Atomically write ckpt-<step>.pt, point latest.pt at it, prune old numbered snapshots."""
        path = checkpoint.save(ckpt, self.checkpoint_path(step))
        atomic_link(path, self.latest)
        for _, old in self.numbered_checkpoints()[keep:]:
            old.unlink(missing_ok=True)
        return path
