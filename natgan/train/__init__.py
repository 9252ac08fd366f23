"""Training API: ``resolve_run`` decides what to train (fresh or resumed), ``train`` runs it.

The CLI is a thin wrapper over these two, so notebooks and tests drive exactly the same path.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from rich.console import Console

from natgan import checkpoint, recipe as recipes
from natgan.errors import ConfigError, NatGanError
from natgan.fsutil import check_output_dir
from natgan.train import resume_policy
from natgan.train.finetune import resolve_init
from natgan.train.preflight import check_training_data
from natgan.train.rundir import RunDir
from natgan.train.trainer import Trainer, TrainResult, schedule_summary

__all__ = ["resolve_run", "resolve_init", "check_training_data", "train", "Trainer", "TrainResult", "schedule_summary"]


def resolve_run(*, recipe_path: str | Path | None, overrides: list[str], outdir: str | Path,
                resume: str | None, data: str | None = None,
                start_over: bool = False) -> tuple[recipes.Recipe, dict | None, str]:
    """Return (recipe, checkpoint to resume from or None, a one-line description of the decision).

    Resuming takes the recipe stored in the checkpoint (so a run cannot silently change model); ``--set``
    may still change training/eval/data keys, e.g. to extend ``train.iterations``. What is allowed in a
    directory that already holds checkpoints is :mod:`natgan.train.resume_policy`'s decision;
    ``start_over`` (``--overwrite``) lets :func:`train` move them aside first.
    """
    check_output_dir(outdir)
    run_dir = RunDir(outdir)
    ck = None
    source = ""
    if resume is None:
        resume_policy.refuse_new_run_over_checkpoints(run_dir, start_over)
    elif resume == "auto":
        found = None if start_over else resume_policy.auto(run_dir)
        if found is not None:
            source, ck = str(found[0]), found[1]
    else:
        ck, source = checkpoint.load(resume), str(resume)
        resume_policy.check_same_run(run_dir, ck, source, start_over)
    if ck is not None:
        resume_policy.check_finite(ck, source)

    overrides = [*overrides, *data_override(data)]
    if ck is None:
        if recipe_path is None:
            raise ConfigError("--recipe is required to start a new run")
        how = "starting a new run" + (" (--resume auto found no checkpoint)" if resume == "auto" else "")
        if start_over and run_dir.has_checkpoints():
            how += f"; --overwrite: the checkpoints in {run_dir.path} are moved into a previous-<time>/ folder"
        fresh = recipes.load(recipe_path, overrides)
        if fresh.data.path and not Path(fresh.data.path).expanduser().is_absolute():
            # stored absolute: a resume from another directory must find the same data
            fresh.data.path = str(Path(fresh.data.path).expanduser().absolute())
        return fresh, None, how
    if not ck.get("recipe"):
        raise NatGanError(f"{source}: checkpoint has no recipe, so training cannot resume from it")
    resolved = recipes.apply_overrides(ck["recipe"], overrides, base_source=f"{source} (stored recipe)")
    if recipe_path is not None:
        given = recipes.load(recipe_path)
        if given.to_dict()["model"] != resolved.to_dict()["model"]:
            raise ConfigError(f"{recipe_path}: [model] differs from the run being resumed ({source}); "
                              f"resume without --recipe or start a new --outdir")
    if any(o.split("=", 1)[0].strip().startswith("model.") for o in overrides):
        raise ConfigError("--set model.*: the model of a run cannot change when resuming")
    return resolved, ck, f"resuming from {source} at step {ck['progress']['step']}"


def data_override(data: str | None) -> list[str]:
    """``--data PATH`` as the ``--set`` it stands for."""
    return [] if data is None else [f"data.path={recipes.toml_value(data)}"]


def train(recipe: recipes.Recipe, outdir: str | Path, *, resume_from: dict | None = None,
          init_from: dict | None = None, init_optim: bool = False,
          max_steps: int | None = None, console: Console | None = None, show_progress: bool = True,
          fid_extractor: Any = None, start_over: bool = False) -> TrainResult:
    """Train (or continue) a run in ``outdir``; returns where the latest checkpoint and samples are.

    ``init_from`` (from :func:`resolve_init`) starts a new run from a checkpoint's weights.
    ``start_over``: first move the directory's existing checkpoints aside (see :func:`resolve_run`).
    The data is checked first (:func:`check_training_data`), so a wrong dataset creates and moves nothing."""
    check_training_data(recipe)
    if start_over and int(os.environ.get("RANK", "0")) == 0:
        resume_policy.set_aside_for_new_start(outdir)
    trainer = Trainer(recipe, outdir, resume_from=resume_from, init_from=init_from, init_optim=init_optim,
                      max_steps=max_steps, console=console, show_progress=show_progress,
                      fid_extractor=fid_extractor)
    from natgan.train import distributed

    finished = False
    try:
        result = trainer.run()
        finished = True
        return result
    finally:
        distributed.shutdown(finished=finished)
