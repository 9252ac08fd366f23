"""The run directory: one trainer at a time, numbered checkpoints + latest.pt, samples, logs.

Layout::

    run/recipe.toml              resolved recipe of this run
    run/ckpt-0001000.pt …        numbered snapshots (the newest `keep_checkpoints` kept)
    run/latest.pt                the newest snapshot (hard link, so no second write)
    run/run-id                   the id of the run this directory holds (also in each checkpoint's extra.run_id)
    run/samples/step-0001000.png grids from fixed latents
    run/tb/                      TensorBoard event files
    run/log.txt                  plain-text log lines
"""

from __future__ import annotations

import fcntl
import os
import re
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from natgan import checkpoint
from natgan.errors import CheckpointError, NatGanError
from natgan.fsutil import (atomic_link, atomic_write_text, make_output_dir, refuse_unsafe_target,
                           remove_stale_temps)

CKPT_RE = re.compile(r"^ckpt-(\d+)\.pt$")
RUN_ID_FILE = "run-id"


def new_run_id() -> str:
    return uuid.uuid4().hex


def run_id_of(ckpt: dict) -> str | None:
    """The run a checkpoint belongs to (None for checkpoints written before run ids existed)."""
    value = ckpt.get("extra", {}).get("run_id")
    return value if isinstance(value, str) else None


@dataclass
class Scan:
    """What a run directory's checkpoints hold: the newest that loads, and why the others do not."""

    best: tuple[Path, dict] | None = None
    failures: list[tuple[Path, str]] = field(default_factory=list)


class RunDir:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._lock_fh = None

    # ------------------------------------------------------------------------------------ locking
    def lock(self) -> None:
        """Refuse a second trainer on the same directory (advisory flock, released if the process dies)."""
        make_output_dir(self.path)
        refuse_unsafe_target(self.path / ".lock")  # opened for appending: never through a link or FIFO
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

    def scan(self) -> Scan:
        """Load every checkpoint; keep the newest (most steps; at equal steps the one with the longer
        metrics history, so an FID recorded into latest.pt after the fact survives a resume)."""
        candidates = [p for _, p in self.numbered_checkpoints()]
        if self.latest.exists():
            candidates.append(self.latest)
        result = Scan()
        best_key: tuple[int, int] | None = None
        for path in candidates:
            try:
                ck = checkpoint.load(path)
            except CheckpointError as exc:
                result.failures.append((path, str(exc).removeprefix(f"{path}: ")))
                continue
            bad = checkpoint.first_non_finite(ck["weights"])
            if bad is not None:  # written before the divergence was noticed: never "the last good checkpoint"
                result.failures.append((path, f"key '{bad}': non-finite values (NaN/inf)"))
                continue
            key = (ck["progress"]["step"], len(ck.get("metrics", [])))
            if best_key is None or key > best_key:
                best_key, result.best = key, (path, ck)
        return result

    def newest_valid(self) -> tuple[Path, dict] | None:
        """The newest checkpoint that loads and validates; broken ones are skipped (e.g. a torn disk)."""
        return self.scan().best

    # ---------------------------------------------------------------------------------- identity
    def run_id(self) -> str | None:
        """The id recorded in ``run-id`` (None for a new directory or one from before run ids)."""
        try:
            text = (self.path / RUN_ID_FILE).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError):
            return None
        return text or None

    def claim(self, run_id: str) -> None:
        """Record which run this directory holds (atomically)."""
        if self.run_id() != run_id:
            atomic_write_text(self.path / RUN_ID_FILE, run_id + "\n")

    def set_aside(self) -> Path:
        """Move everything of the old run (checkpoints, latest.pt, best.pt, recipe.toml, run id, logs, samples,
        TensorBoard) into ``previous-<UTC time>/`` (``--overwrite``): nothing is deleted, and the new run's
        resume and pruning never see the old files. All or nothing: a failed move puts back what moved."""
        name = time.strftime("previous-%Y%m%dT%H%M%SZ", time.gmtime())
        target, n = self.path / name, 1
        while True:  # two restarts within one second get their own folders
            try:
                target.mkdir()
                break
            except FileExistsError:
                n += 1
                target = self.path / f"{name}-{n}"
        entries = sorted(p for p in self.path.iterdir()
                         if p.name != ".lock" and p != target and not p.name.startswith("previous-"))
        moved: list[Path] = []
        try:
            for path in entries:
                os.replace(path, target / path.name)
                moved.append(path)
        except OSError:
            for path in reversed(moved):
                os.replace(target / path.name, path)
            target.rmdir()
            raise
        return target

    def save(self, ckpt: dict, step: int, keep: int) -> Path:
        """Atomically write ckpt-<step>.pt, point latest.pt at it, prune old numbered snapshots."""
        path = checkpoint.save(ckpt, self.checkpoint_path(step))
        atomic_link(path, self.latest)
        for _, old in self.numbered_checkpoints()[keep:]:
            old.unlink(missing_ok=True)
        return path
