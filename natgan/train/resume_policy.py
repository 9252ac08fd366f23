"""What ``train`` may do in a run directory that already holds something: the resume policy.

Why a module of its own: these rules decide whether a run is continued, refused or started over, and a
wrong decision loses a run (a new run over checkpoints that merely failed to load, a foreign checkpoint
resumed over another run's ``latest.pt``). They are shared by the CLI and the Python API through
:func:`natgan.train.resolve_run`, and kept out of the trainer.
"""

from __future__ import annotations

from pathlib import Path

from natgan.errors import ConfigError, NatGanError
from natgan.fsutil import same_file
from natgan import checkpoint
from natgan.train.rundir import RunDir, run_id_of

START_OVER_HINT = "pass --overwrite to move them into a previous-<time>/ folder and start again"


def refuse_new_run_over_checkpoints(run_dir: RunDir, start_over: bool) -> None:
    """A run without ``--resume`` must not write into a directory that already holds checkpoints."""
    if run_dir.has_checkpoints() and not start_over:
        raise ConfigError(f"{run_dir.path}: already holds checkpoints; continue that run with --resume auto, "
                          f"choose a new --outdir, or {START_OVER_HINT}")


def auto(run_dir: RunDir) -> tuple[Path, dict] | None:
    """``--resume auto``: the newest checkpoint that loads, None for an empty directory; refuse (one line
    per file saying why) when checkpoints exist but none loads."""
    scan = run_dir.scan()
    here = run_dir.run_id()
    if scan.best is not None and here is not None and run_id_of(scan.best[1]) not in (here, None):
        raise NatGanError(f"{scan.best[0]}: belongs to run {run_id_of(scan.best[1])}, but {run_dir.path} holds run "
                          f"{here}; --resume auto continues only this directory's own run (move that file away, "
                          f"resume it explicitly elsewhere with --resume FILE --outdir NEW, or {START_OVER_HINT})")
    if scan.best is not None or not scan.failures:
        return scan.best
    why = "\n".join(f"  {path.name}: {reason}" for path, reason in scan.failures)
    raise NatGanError(f"{run_dir.path}: --resume auto found {len(scan.failures)} checkpoint(s) and none loads; "
                      f"refusing to start a new run over them (repair or move them, or {START_OVER_HINT}):\n{why}")


def check_same_run(run_dir: RunDir, ckpt: dict, source: str | Path, start_over: bool) -> None:
    """``--resume FILE --outdir RUN``: refuse when RUN holds a different run than FILE's."""
    if start_over or not (run_dir.has_checkpoints() or run_dir.run_id()):
        return
    if Path(source).parent.exists() and same_file(Path(source).parent, run_dir.path):
        return  # going back to an earlier snapshot of this very run
    here = run_dir.run_id()
    if here is None:
        best = run_dir.newest_valid()
        here = run_id_of(best[1]) if best else None
        if best is None:
            raise NatGanError(f"{run_dir.path}: holds checkpoints that do not load, so it cannot be shown to be "
                              f"the run of {source}; choose another --outdir or {START_OVER_HINT}")
    theirs = run_id_of(ckpt)
    if here != theirs:
        raise ConfigError(f"{run_dir.path}: holds run {here or '(no id)'}, but {source} belongs to run "
                          f"{theirs or '(no id)'}; resuming it here would overwrite that run's latest.pt and "
                          f"recipe.toml (choose another --outdir, or {START_OVER_HINT})")


def set_aside_for_new_start(outdir: str | Path) -> Path | None:
    """``--overwrite`` (old name ``--start-over``): move the directory's checkpoints aside under the run lock;
    None if there were none."""
    run_dir = RunDir(outdir)
    if not run_dir.has_checkpoints() and run_dir.run_id() is None:
        return None
    run_dir.lock()
    try:
        return run_dir.set_aside()
    finally:
        run_dir.unlock()


def check_finite(ck: dict, source: str | Path) -> None:
    """Weights and optimiser state to resume from hold no NaN/inf: a diverged state would only continue
    diverging (and the optimiser's moments would poison healthy weights at the first step)."""
    for tree, prefix in ((ck.get("weights", {}), "weights"), (ck.get("optim", {}), "optim")):
        bad = checkpoint.first_non_finite(tree, prefix)
        if bad is not None:
            raise NatGanError(f"{source}: key '{bad}': non-finite values (NaN/inf); resume from an earlier "
                              f"checkpoint")
