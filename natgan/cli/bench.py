"""`nat-gan bench`: the registered models, their sizes and their speed, side by side on one machine."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import typer

from natgan.bench.listing import model_table
from natgan.cli.console import console, emit_json, err_console
from natgan.errors import ConfigError


def register(app: typer.Typer) -> None:
    @app.command("bench")
    def bench(
        list_models: bool = typer.Option(False, "--list", help="List registered models with default resolution "
                                                                "and parameter counts (G and D)."),
        model: Optional[str] = typer.Option(None, "--model", "-m", help="Model to measure (comma list allowed)."),
        models: Optional[str] = typer.Option(None, "--models", help="Several models, e.g. stylenat,styleswin,hit-b."),
        recipe: Optional[Path] = typer.Option(None, "--recipe", "-r",
            help="Recipe file; its model section is measured."),
        sets: Optional[list[str]] = typer.Option(None, "--set", help="Override a model key: model.KEY=VALUE."),
        resolution: Optional[int] = typer.Option(None, "--resolution", help="Shortcut for --set model.resolution=R."),
        batch: str = typer.Option("1", "--batch", "-b", help="Batch sizes, e.g. 1,8,32 (official protocol: 1)."),
        warmup: Optional[int] = typer.Option(None, "--warmup", help="Untimed passes (default 10 on CUDA, 2 on CPU)."),
        rounds: Optional[int] = typer.Option(None, "--rounds", help="Timed passes (default 500 on CUDA, 5 on CPU)."),
        precision: str = typer.Option("tf32", "--precision", help="fp32 | tf32 (official) | bf16 (autocast)."),
        compile_: bool = typer.Option(False, "--compile", help="torch.compile the generator (and D with --train)."),
        compile_mode: str = typer.Option("default", "--compile-mode",
                                         help="default | reduce-overhead (CUDA graphs) | max-autotune | "
                                              "max-autotune-no-cudagraphs."),
        attn_backend: Optional[str] = typer.Option(None, "--attn-backend",
                                                   help="Neighbourhood-attention backend: torch | natten | flex "
                                                        "(sets NATGAN_NA_BACKEND)."),
        train: bool = typer.Option(False, "--train", help="Also time one full G+D training step (fwd+bwd+Adam)."),
        train_batch: Optional[int] = typer.Option(None, "--train-batch", help="Batch of the training step "
                                                                               "(default: largest --batch)."),
        train_rounds: Optional[int] = typer.Option(None, "--train-rounds", help="Timed training steps "
                                                                                 "(default: min(rounds, 50))."),
        device: str = typer.Option("auto", "--device", help="auto | cpu | cuda | cuda:N."),
        flops: bool = typer.Option(True, "--flops/--no-flops", help="Count FLOPs per image (one extra pass)."),
        peak_tflops: Optional[float] = typer.Option(None, "--peak-tflops",
                                                    help="Device peak TFLOP/s at this precision, to report the "
                                                         "fraction of the compute bound."),
        output: Optional[Path] = typer.Option(None, "--output", "-o", help="Also write the JSON result here."),
        json_out: bool = typer.Option(False, "--json", help="Print machine-readable JSON."),
    ) -> None:
        """Benchmark models: parameters, throughput, memory, FLOPs (and training step time with --train).

        A class-conditional model (model.num_classes > 0) gets seeded uniform random class labels in every G and
        D call; the table caption and the JSON (`labels`) say so."""
        if list_models:
            _list(json_out)
            return
        from natgan.bench.measure import BenchSettings, benchmark
        from natgan.devices import current_threads
        from natgan.fsutil import check_output_file
        from natgan.model_choice import parse_int_list

        if output is not None:  # refused now, not after the measurements
            check_output_file(output, "--output", ("--recipe", recipe))

        names = [n.strip() for text in (model, models) if text for n in text.split(",") if n.strip()]
        settings = BenchSettings(
            batches=tuple(parse_int_list(batch, "--batch")), warmup=warmup, rounds=rounds,
            precision=precision,  # type: ignore[arg-type]
            compile=compile_mode if compile_ else None, attn_backend=attn_backend, train=train,
            train_batch=train_batch, train_rounds=train_rounds, device=device, flops=flops,
            peak_tflops=peak_tflops, threads=current_threads())  # --threads: set for every command
        if not compile_ and compile_mode != "default":
            raise ConfigError("--compile-mode needs --compile")

        def progress(row: dict) -> None:
            best = max(row["throughput"], key=lambda r: r["img_per_s"])
            err_console.print(f"[dim]{row['model']}: {best['img_per_s']:.2f} img/s at batch {best['batch']}[/]")

        def start(name: str, index: int, total: int) -> None:
            err_console.print(f"[dim]measuring {name} ({index + 1}/{total}) …[/]")

        quiet = json_out
        result = benchmark(names, settings, recipe=str(recipe) if recipe else None, sets=sets or [],
                           resolution=resolution, on_start=None if quiet else start,
                           on_result=None if quiet else progress)
        if output is not None:
            _write_json(result, output)
        if json_out:
            emit_json(result)
        elif result["results"]:
            console.print(results_table(result))
        failures = result["failures"]
        if failures:
            from natgan.errors import NatGanError

            measured = len(result["results"])
            only_config = not measured and all(f["stage"] == "configuration" for f in failures)
            head = f"bench: {len(failures)} of {len(failures) + measured} models could not be measured"
            if measured and not json_out:
                head += " (the others are above)"
            details = "\n".join(f"  {f['model']} ({f['stage']}): {f['error']}" for f in failures)
            raise (ConfigError if only_config else NatGanError)(f"{head}\n{details}")


def _write_json(obj: Any, path: Path) -> None:
    """Atomic write: a reader sees the previous file or the complete new one."""
    from natgan.fsutil import atomic_write_text

    atomic_write_text(path, json.dumps(obj, indent=2) + "\n")


def _labels_note(rows: list[dict]) -> str:
    """What a class-conditional model was fed (uniform random labels), for the table caption; '' if none is."""
    notes = sorted({f"{r['model']}: {r['labels']}" for r in rows if r.get("labels")})
    return "".join(f"; {note}" for note in notes)


def _fmt(value: Any, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)


def results_table(result: dict):
    """One row per model; one img/s, ms and memory column per batch size; training columns if measured."""
    from rich.table import Table

    machine, settings, rows = result["machine"], result["settings"], result["results"]
    compile_txt = f", compile={settings['compile']}" if settings["compile"] else ""
    table = Table(title=f"Generator throughput on {machine['device_name']} ({machine['device']}, torch "
                        f"{machine['torch']})",
                  caption=f"precision {settings['precision']}{compile_txt}, {settings['warmup']} warm-up / "
                          f"{settings['rounds']} timed passes, mapping network included; memory: "
                          f"{rows[0].get('memory_method', '-') if rows else '-'}{_labels_note(rows)}")
    table.add_column("model")
    table.add_column("res", justify="right")
    table.add_column("G (M)", justify="right")
    table.add_column("D (M)", justify="right")
    has_flops = any("gflops_per_img" in r for r in rows)
    if has_flops:
        table.add_column("GFLOP/img", justify="right")
    for b in settings["batches"]:
        table.add_column(f"img/s b{b}", justify="right")
        table.add_column(f"ms b{b}", justify="right")
        table.add_column(f"+MB b{b}", justify="right")
    has_paper = any(r.get("paper_img_per_s") for r in rows)
    if has_paper:
        table.add_column("paper img/s", justify="right")
    has_train = any(r.get("train") for r in rows)
    if has_train:
        table.add_column("train img/s", justify="right")
        table.add_column("train ms/step", justify="right")
    for r in rows:
        cells = [r["model"], str(r["resolution"]), f"{r['g_params'] / 1e6:.2f}", f"{r['d_params'] / 1e6:.2f}"]
        if has_flops:
            cells.append(_fmt(r.get("gflops_per_img"), ".1f"))
        by_batch = {t["batch"]: t for t in r["throughput"]}
        for b in settings["batches"]:
            t = by_batch.get(b, {})
            cells += [_fmt(t.get("img_per_s")), _fmt(t.get("ms_per_call"), ".1f"),
                      _fmt(t.get("added_memory_mb"), ".0f")]
        if has_paper:
            cells.append(_fmt(r.get("paper_img_per_s")))
        if has_train:
            tr = r.get("train") or {}
            cells += [_fmt(tr.get("img_per_s")), _fmt(tr.get("step_ms"), ".1f")]
        table.add_row(*cells)
    return table


def _list(json_out: bool) -> None:
    rows = model_table()
    if json_out:
        emit_json(rows)
        return
    for part in model_list(rows):
        console.print(part, soft_wrap=False)


def model_list(rows: list[dict]) -> list:
    """``bench --list``: a narrow table of the numbers (fits 80 columns), then one wrapped paragraph per model
    for its description (a description column would be squeezed to a word per line on a terminal)."""
    from rich.table import Table
    from rich.text import Text

    table = Table(title="Registered models", title_justify="left")
    for col in ("model", "px", "G (M)", "paper G (M)", "D (M)"):
        table.add_column(col, justify="left" if col == "model" else "right", no_wrap=True)
    for r in rows:
        paper = f"{r['paper_g_params_m']:.2f}" if r["paper_g_params_m"] else "-"
        table.add_row(r["model"], str(r["resolution"]), f"{r['g_params'] / 1e6:.2f}", paper,
                      f"{r['d_params'] / 1e6:.2f}")
    notes = [Text.assemble((f"{r['model']}: ", "bold"), r["description"]) for r in rows]
    return [table, Text(""), *notes]
