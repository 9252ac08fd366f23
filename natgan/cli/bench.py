"""`nat-gan bench`: the registered models, their sizes and (with --model) their speed."""

from __future__ import annotations

from typing import Optional

import typer

from natgan.cli.console import console, emit_json


def register(app: typer.Typer) -> None:
    @app.command("bench")
    def bench(
        list_models: bool = typer.Option(False, "--list", help="List registered models with default resolution "
                                                                "and parameter counts (G and D)."),
        json_out: bool = typer.Option(False, "--json", help="Print machine-readable JSON."),
    ) -> None:
        """Benchmark models: parameters, throughput, memory, FLOPs."""
        if list_models:
            _list(json_out)
            return
        raise typer.BadParameter("give --list (throughput benchmarks land with the bench issue)")


def model_table() -> list[dict]:
    """One row per registered model at its default config: name, resolution, G/D parameters."""
    from natgan.models import count_params, create, list_models

    rows = []
    for spec in list_models():
        pair = create(spec.name)
        rows.append({
            "model": spec.name,
            "resolution": pair.config.resolution,
            "g_params": count_params(pair.generator),
            "d_params": count_params(pair.discriminator),
            "paper_g_params_m": spec.paper_params_g,
            "description": spec.description,
        })
    return rows


def _list(json_out: bool) -> None:
    from rich.table import Table

    rows = model_table()
    if json_out:
        emit_json(rows)
        return
    table = Table(title="Registered models")
    for col in ("model", "resolution", "G params (M)", "paper G (M)", "D params (M)", "description"):
        table.add_column(col, justify="right" if "params" in col or col in ("resolution", "paper G (M)") else "left")
    for r in rows:
        paper = f"{r['paper_g_params_m']:.2f}" if r["paper_g_params_m"] else "-"
        table.add_row(r["model"], str(r["resolution"]), f"{r['g_params'] / 1e6:.2f}", paper,
                      f"{r['d_params'] / 1e6:.2f}", r["description"])
    console.print(table)
