"""`nat-gan doctor`: versions, devices, attention backends, FID weights and writable directories, with fixes."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from natgan.cli.console import console, emit_json

STYLE = {"ok": "green", "warn": "yellow", "fail": "bold red", "skip": "dim"}


def register(app: typer.Typer) -> None:
    @app.command("doctor")
    def doctor(
        device: str = typer.Option("auto", "--device", help="auto (CPU and the first GPU) | cpu | cuda | cuda:N."),
        run_dir: Path = typer.Option(Path("runs"), "--run-dir", help="Run directory to check for writing."),
        attention: bool = typer.Option(True, "--attention/--no-attention",
                                       help="Run each attention backend on a small problem (a few seconds)."),
        weights: Optional[Path] = typer.Option(None, "--weights", help="Weights directory to check (default: "
                                               "$NATGAN_WEIGHTS); also lists every weights file: what needs it, "
                                               "its URL, found or missing."),
        json_out: bool = typer.Option(False, "--json", help="Print machine-readable JSON."),
    ) -> None:
        """Check this install: what works here, what is missing, and the one-line fix.

        Exit 1 if a needed check fails."""
        from natgan.doctor import run_checks, summary, weights_table

        rows = run_checks(device=device, run_dir=run_dir, attention=attention, weights_dir=weights)
        report = summary(rows)
        files = weights_table(weights) if weights is not None else None
        if files is not None:
            report["weights"] = files
        if json_out:
            emit_json(report)
        else:
            if files is not None:
                _weights_table(files)
            _table(rows, report)
        if not report["ok"]:
            raise typer.Exit(1)


def _weights_table(files: list[dict]) -> None:
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="weights files", show_lines=False)
    for column in ("needed by", "file", "URL", "found"):
        table.add_column(column, overflow="fold")
    for f in files:
        found = f"[green]{escape(f['found'])}[/]" if f["found"] else "[bold red]missing[/]" + (
            f" ({escape(f['error'])})" if f["error"] else "")
        table.add_row(escape(f["needed by"]), escape(f["file"]), escape(f["url"]), found)
    console.print(table)


def _table(rows, report) -> None:
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="nat-gan doctor", show_lines=False)
    for column in ("group", "check", "status", "detail", "fix"):
        table.add_column(column, overflow="fold")
    for r in rows:
        status = f"[{STYLE[r.status]}]{r.status}{' (needed)' if r.blocking else ''}[/]"
        table.add_row(r.group, escape(r.name), status, escape(r.detail), escape(r.fix))
    console.print(table)
    if report["ok"]:
        console.print("[green]everything this setup needs works[/]")
    else:
        console.print(f"[bold red]needed checks failed:[/] {', '.join(report['blocking'])}")
        for r in rows:
            if r.blocking:  # the fix on one unwrapped line each, for copy and paste
                console.print(f"  fix {escape(r.group)}/{escape(r.name)}: {escape(r.fix)}", soft_wrap=True)
