"""`nat-gan train`: train or resume a run from a recipe."""

from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional

import typer

from natgan.cli.console import console, emit_json, err_console
from natgan.cli.outputs import deprecated_alias


def register(app: typer.Typer) -> None:
    @app.command("train")
    def train_cmd(
        recipe: Optional[Path] = typer.Option(None, "--recipe", "-r", help="Recipe TOML (required for a new run)."),
        data: Optional[str] = typer.Option(None, "--data", help="Training dataset; overrides data.path."),
        outdir: Path = typer.Option(Path("runs/run"), "--outdir", "-o",
            help="Run directory (checkpoints, samples, logs)."),
        overrides: List[str] = typer.Option([], "--set", help="Override a recipe key, e.g. --set train.batch=16 "
                                                             "(repeatable, validated like the recipe)."),
        resume: Optional[str] = typer.Option(None, "--resume", help="'auto' (newest valid checkpoint in --outdir, "
                                                                     "or a fresh start) or a checkpoint path."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Move the checkpoints already in --outdir into a "
                                       "previous-<time>/ folder there and start afresh (a new run, or the --resume "
                                       "FILE given); nothing is deleted. Never needed for an empty directory."),
        start_over_alias: bool = deprecated_alias("--start-over"),
        init: Optional[str] = typer.Option(None, "--init", help="Start a NEW run from this checkpoint's weights "
                                                                  "(G, G_ema, D; fine-tuning): counters at zero, "
                                                                  "model from the checkpoint, the rest from --recipe."),
        init_optim: bool = typer.Option(False, "--init-optim", help="With --init: also take the Adam moments."),
        dry_run: bool = typer.Option(False, "--dry-run",
            help="Print the resolved recipe, model sizes and schedule, then exit."),
        max_steps: Optional[int] = typer.Option(None, "--max-steps", min=1,
                                                help="Stop after this many steps in this invocation (checkpoint "
                                                     "first); handy for cluster time limits."),
        progress: bool = typer.Option(True, "--progress/--no-progress", help="Live display / log lines."),
        json_out: bool = typer.Option(False, "--json", help="Print the result (or the dry run) as JSON."),
    ) -> None:
        """Train a GAN from a recipe (single process, or multi-GPU under torchrun)."""
        from natgan import train as training

        from natgan.errors import ConfigError

        from natgan.fsutil import protect_inputs

        start_over = overwrite or start_over_alias
        protect_inputs(("--init", init), ("--data", data))  # never replaced by the run's files
        init_ck = None
        if init is not None and resume is not None:
            raise ConfigError("--init starts a new run and --resume continues one: give only one of them")
        if init_optim and init is None:
            raise ConfigError("--init-optim needs --init CKPT")
        if init is not None:
            resolved, init_ck, decision = training.resolve_init(
                recipe_path=recipe, overrides=overrides, outdir=outdir, init=init,
                data_override=training.data_override(data), start_over=start_over)
            resume_ck = None
        else:
            resolved, resume_ck, decision = training.resolve_run(
                recipe_path=recipe, overrides=overrides, outdir=outdir, resume=resume, data=data, start_over=start_over)
        if dry_run:
            _dry_run(resolved, decision, json_out)
            return
        is_main = int(os.environ.get("RANK", "0")) == 0  # under torchrun only rank 0 talks
        training.check_training_data(resolved)  # a data error is then the only line printed
        if not json_out and is_main:
            err_console.print(decision, highlight=False)
        result = training.train(resolved, outdir, resume_from=resume_ck, init_from=init_ck, init_optim=init_optim,
                                max_steps=max_steps, console=err_console if json_out else console,
                                show_progress=progress, start_over=start_over)
        if not is_main:
            return
        summary = {"step": result.step, "images_seen": result.images_seen, "latest_checkpoint": result.latest,
                   "sample_grid": result.last_grid, "stopped_early": result.stopped_early, "reason": result.reason,
                   "metrics": result.metrics}
        if json_out:
            emit_json(summary)
            return
        verb = "stopped" if result.stopped_early else "finished"
        console.print(f"{verb} at step {result.step} ({result.reason}); latest checkpoint: {result.latest}",
                      highlight=False)
        if result.last_grid:
            console.print(f"sample grid: {result.last_grid}", highlight=False)


def _dry_run(resolved, decision: str, json_out: bool) -> None:
    from natgan.models import count_params, create
    from natgan.train import schedule_summary

    from natgan.train import distributed

    from natgan.train import check_training_data

    distributed.check_device(resolved.train.device)  # as the trainer will: --dry-run catches a missing GPU
    data = check_training_data(resolved)  # and a missing or wrong dataset
    pair = create(resolved.model_name, config=resolved.model)
    sizes = {"g_params": count_params(pair.generator), "d_params": count_params(pair.discriminator),
             "resolution": pair.generator.resolution}
    sched = schedule_summary(resolved)
    if json_out:
        emit_json({"decision": decision, "recipe": resolved.to_dict(), "model": sizes, "data": data,
                   "schedule": sched})
        return
    from rich.syntax import Syntax
    from rich.table import Table

    console.print(f"[bold]{decision}[/]")
    console.print("[bold]resolved recipe[/]")
    console.print(Syntax(resolved.to_toml(), "toml", theme="ansi_dark", background_color="default"))
    console.print(f"[bold]model[/] {resolved.model_name} at {sizes['resolution']}px: "
                  f"G {sizes['g_params'] / 1e6:.2f} M, D {sizes['d_params'] / 1e6:.2f} M parameters")
    from rich.markup import escape

    console.print(f"[bold]data[/] {escape(data['description'])}: {data['images']:,} images served at "
                  f"{data['resolution']}px")
    table = Table(title="schedule", show_header=False)
    for key, value in sched.items():
        table.add_row(key, str(value))
    console.print(table)
