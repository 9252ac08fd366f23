"""`nat-gan cache list|clear`: what nat-gan keeps in its user cache, and emptying it."""

from __future__ import annotations

from typing import List, Optional

import typer

from natgan.cli.console import console, emit_json

cache_app = typer.Typer(
    name="cache",
    help="Show or empty nat-gan's user cache ($NATGAN_CACHE_DIR, else ~/.cache/nat-gan): reference statistics, "
         "published statistics, metric weights.",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _mb(n: int) -> str:
    return f"{n / 2**20:,.1f} MB"


@cache_app.command("list")
def list_cmd(json_out: bool = typer.Option(False, "--json", help="Print machine-readable JSON.")) -> None:
    """Each section's files and size, and every cached reference statistics entry (newest use first)."""
    from rich.table import Table

    from natgan.metrics.cache import cache_report

    report = cache_report()
    if json_out:
        emit_json(report)
        return
    console.print(f"cache {report['root']} (reference statistics capped at {_mb(report['max_bytes'])}, "
                  f"NATGAN_CACHE_MAX_MB)", markup=False)
    for s in report["sections"]:
        console.print(f"  {s['name']:<15} {s['files']:>4} files {_mb(s['bytes']):>12}  {s['what']}", markup=False)
    if report["stats"]:
        table = Table(title="reference statistics", title_justify="left")
        for col in ("last used", "MB", "mode", "extractor", "px", "images", "subset", "dataset"):
            table.add_column(col, justify="right" if col in ("MB", "px", "images") else "left")
        for e in report["stats"]:
            table.add_row(e["last_used"], f"{e['bytes'] / 2**20:.1f}", str(e.get("mode", "?")),
                          str(e.get("extractor", "?")), str(e.get("resolution", "?")), f"{e.get('count', '?')}",
                          str(e.get("subset", "?")), str(e.get("content_hash", "?"))[:16])
        console.print(table)


@cache_app.command("clear")
def clear_cmd(
    section: Optional[List[str]] = typer.Option(None, "--section", help="fid-stats (default) | cleanfid-stats | "
                                                                        "weights (repeatable)."),
    everything: bool = typer.Option(False, "--all", help="Every section, weights and downloads included."),
    older_than: Optional[float] = typer.Option(None, "--older-than", min=0, metavar="DAYS",
                                               help="Only files not used for this many days."),
    json_out: bool = typer.Option(False, "--json", help="Print machine-readable JSON."),
) -> None:
    """Remove cached reference statistics (or the chosen sections); they are recomputed when next needed."""
    from natgan.errors import ConfigError
    from natgan.metrics.cache import SECTIONS, clear_cache

    if everything and section:
        raise ConfigError("--all and --section: give one of them")
    chosen = list(SECTIONS) if everything else list(section or ["fid-stats"])
    result = clear_cache(chosen, older_than_days=older_than)
    if json_out:
        emit_json(result)
        return
    console.print(f"removed {result['files']} files ({_mb(result['bytes'])}) from {', '.join(chosen)} in "
                  f"{result['root']}", markup=False)


def register(app: typer.Typer) -> None:
    app.add_typer(cache_app, name="cache")
