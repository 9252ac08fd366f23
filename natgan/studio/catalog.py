"""The checkpoints a studio was given: files as named, run directories expanded to their snapshots.

A run directory lists its numbered snapshots newest first; ``latest.pt`` is listed only when it is not
a hard link of the newest snapshot (the trainer writes it as one), so no checkpoint appears twice.
Nothing is loaded here: a checkpoint that fails to load is reported when it is chosen, and the page
keeps working with the others.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from natgan.errors import ConfigError
from natgan.fsutil import same_file


@dataclass(frozen=True)
class Entry:
    path: Path     # absolute, so the captured `nat-gan sample` command works from any directory
    label: str     # what the page's drop-down shows


def _run_dir_entries(folder: Path) -> list[Path]:
    from natgan.train.rundir import RunDir

    run = RunDir(folder)
    numbered = [p for _, p in run.numbered_checkpoints()]
    latest = run.latest
    if latest.is_file() and not (numbered and same_file(latest, numbered[0])):
        numbered.insert(0, latest)
    return numbered


def expand(sources: Sequence[str | Path]) -> list[Entry]:
    """One entry per checkpoint file, in the order given (a run directory's newest first); duplicates once."""
    if not sources:
        raise ConfigError("give at least one checkpoint file or run directory")
    found: list[Path] = []
    for source in map(Path, sources):
        if source.is_dir():
            inside = _run_dir_entries(source)
            if not inside:
                raise ConfigError(f"{source}: no checkpoints in this directory (expected ckpt-*.pt or latest.pt)")
            found.extend(inside)
        elif source.is_file():
            found.append(source)
        else:
            raise ConfigError(f"{source}: no such checkpoint file or run directory")
    entries: list[Entry] = []
    seen: set[Path] = set()
    for path in found:
        resolved = path.resolve()
        if resolved in seen:
            continue
        seen.add(resolved)
        label = f"{path.parent.name}/{path.name}" if path.parent.name else path.name
        entries.append(Entry(resolved, label))
    labels = [e.label for e in entries]
    return [Entry(e.path, str(e.path) if labels.count(e.label) > 1 else e.label) for e in entries]
