"""`nat-gan fid`: FID and the other registered metrics of a checkpoint or a dataset, protocols stated."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from natgan.cli.console import console, emit_json, err_console
from natgan.errors import ConfigError, DataError
from natgan.sampling.seeds import MAX_SEED
from natgan.noise_modes import NOISE_MODES


def recipe_reference(ckpt: dict, path: Path) -> str:
    """The reference a checkpoint's recipe names (:func:`natgan.metrics.settings.default_reference`), checked."""
    from natgan.metrics import published
    from natgan.metrics.settings import default_reference

    found = default_reference(ckpt.get("recipe"))
    if found is None:
        raise ConfigError(f"{path}: the checkpoint's recipe names no dataset (data.path / eval.reference); pass "
                          f"--data PATH or --ref cleanfid:NAME:RES:SPLIT")
    value, key = found
    if not published.is_published(value) and not Path(value).expanduser().exists():
        raise DataError(f"{path}: the dataset its recipe names ({key} = '{value}') is not there; "
                        f"pass --data PATH or --ref cleanfid:NAME:RES:SPLIT")
    return value


def _summary(result: dict, recorded: str | None) -> None:
    from natgan.metrics.registry import numbers_line

    ref = result["reference"]
    gen = result["generated"]
    numbers = numbers_line(result)
    counts = f"{result['num_gen']:,} vs {result['num_ref']:,} images" if ref else f"{result['num_gen']:,} images"
    console.print(f"[bold]{numbers}[/]   ({result['mode']}, {counts})")
    for name in result["metrics"]:
        console.print(f"  {name:<10} {result['details'][name]['protocol']}")
    intra = result["details"].get("intra_fid")
    if intra:
        console.print("  per class  " + ", ".join(f"{name} {value:.2f}" for name, value in intra["per_class"].items()))
        _intra_cache_note(intra.get("reference_cache"))
    if gen.get("kind") == "generator":
        console.print(f"  generated  {gen.get('checkpoint', 'generator')} ({'EMA' if gen.get('ema', True) else 'raw'} "
                      f"weights, step {gen.get('step')}), seeds {gen['seeds']}, trunc {gen['trunc']}")
        console.print(f"  noise      {gen.get('noise', gen.get('noise_mode'))}")
        if gen.get("labels"):
            console.print(f"  labels     {gen['labels']}")
    else:
        console.print(f"  A          {gen['description']} [{gen['content_hash'][:24]}...]")
    if ref is None:
        pass
    elif ref["kind"] == "cleanfid":
        console.print(f"  reference  {ref['spec']} ({ref['file']})")
    else:
        cached = " (cached statistics)" if result["reference_cached"] else ""
        console.print(f"  reference  {ref['description']}, {ref['count']:,} of {ref['length']:,} images "
                      f"[{ref['content_hash'][:24]}...]{cached}")
        if ref.get("stats_file") and not result["reference_cached"]:
            _cache_note(Path(ref["stats_file"]))
    t = result["timings"]
    rate = f", {t['images_per_s']:.1f} generated img/s" if "images_per_s" in t else ""
    console.print(f"  time       {t['total_s']:.1f} s{rate}")
    for warning in result.get("warnings", []):
        err_console.print(f"[yellow]warning:[/] {warning}")
    if recorded:
        console.print(f"  recorded   {recorded}")


def _cache_note(stored: Path | float, what: str = "statistics") -> None:
    """Say what a new cache entry costs and how full the cache is (it is capped; `nat-gan cache` lists/clears).
    ``stored``: the new entry's file, or the MB of several new entries."""
    from natgan.metrics.cache import StatsCache, max_cache_bytes

    if isinstance(stored, Path):
        mb = (stored.stat().st_size if stored.is_file() else 0) / 2**20
    else:
        mb = float(stored)
    console.print(f"  cached     {mb:,.1f} MB of {what}; the cache holds "
                  f"{StatsCache().total_bytes() / 2**20:,.1f} of {max_cache_bytes() / 2**20:,.0f} MB "
                  f"(`nat-gan cache list`, `nat-gan cache clear`)", markup=False)


def _intra_cache_note(report: dict | None) -> None:
    """intra-FID's per-class reference statistics: how many classes came from the cache, what was stored."""
    if not report:
        return
    k = report["classes"]
    if report["cached"]:
        console.print(f"  per-class  real statistics of {report['cached']} of {k} classes from the cache", markup=False)
    if report["stored"]:
        _cache_note(report["stored_mb"], f"per-class statistics ({report['stored']} of {k} classes)")
    for note in report.get("notes", []):
        console.print(f"  per-class  {note}", markup=False)


def register(app: typer.Typer) -> None:
    @app.command("fid")
    def fid(
        ctx: typer.Context,
        inputs: Optional[List[Path]] = typer.Argument(None, metavar="DATASETS",
                                                      help="Datasets (LMDB/folder/zip): `fid A B` scores A against B; "
                                                           "with --ckpt a single argument is the reference."),
        ckpt: Optional[Path] = typer.Option(None, "--ckpt", help="Score this checkpoint's generator."),
        ref: Optional[str] = typer.Option(None, "--data", "--ref",
                                          help="Reference: dataset path or cleanfid:NAME:RES:SPLIT (e.g. "
                                               "cleanfid:ffhq:256:trainval70k) (default: the checkpoint's recipe)."),
        num: Optional[int] = typer.Option(None, "--num", min=2, help="Generated images (default: recipe eval.num, "
                                                                     "else 50000); with datasets: a fixed random "
                                                                     "subset of A (default: all)."),
        num_ref: Optional[int] = typer.Option(None, "--num-ref", min=2,
                                              help="Reference images: a fixed random subset (default: all; the "
                                                   "StyleNAT/StyleSwin papers used a random 50000)."),
        mode: Optional[str] = typer.Option(None, "--mode",
                                           help="clean | legacy_pytorch | legacy_tensorflow (default: recipe "
                                                "eval.mode, else legacy_pytorch = the papers')."),
        metrics: Optional[str] = typer.Option(None, "--metrics", help="Comma-separated registered metrics: fid, kid, "
                                                                       "pr, dc, is, ppl (default: recipe eval.metrics, "
                                                                       "else fid)."),
        kid: bool = typer.Option(False, "--kid", help="Also compute KID (same as adding kid to --metrics)."),
        pr_features: Optional[str] = typer.Option(None, "--pr-features", help="Features of pr and dc: vgg16 (as "
                                                                              "stylegan2-ada) | inception (default: "
                                                                              "recipe eval.pr_features, else vgg16)."),
        batch: Optional[int] = typer.Option(None, "--batch", min=1, help="Batch size (default: by device)."),
        device: str = typer.Option("auto", "--device", help="auto | cpu | cuda | cuda:N."),
        trunc: float = typer.Option(1.0, "--trunc", help="Truncation psi (1 = off, the standard FID protocol)."),
        seed: int = typer.Option(0, "--seed", min=0, max=MAX_SEED, help="Image i uses the latent of seed SEED+i."),
        no_ema: bool = typer.Option(False, "--no-ema", help="Score the raw generator weights, not the EMA."),
        noise_mode: Optional[str] = typer.Option(None, "--noise-mode",
                                                 help="Models with noise inputs: random (default: recipe "
                                                      "eval.noise_mode, else random = the published protocol, "
                                                      "seeded) | const (the stored maps, as `sample`) | none."),
        inception: Optional[Path] = typer.Option(None, "--inception",
                                                 help="Inception weights file or directory (offline machines; "
                                                      "also $NATGAN_INCEPTION)."),
        trust_torchscript: Optional[Path] = typer.Option(
            None, "--trust-torchscript",
            help="Load this TorchScript Inception although its sha256 is not the official file's: TorchScript RUNS "
                 "CODE from the file when loaded, so name only a file you made yourself "
                 "(also $NATGAN_TRUST_TORCHSCRIPT)."),
        weights: Optional[Path] = typer.Option(None, "--weights",
                                               help="Directory of metric network weights (Inception, VGG16) under "
                                                    "their usual file names (also $NATGAN_WEIGHTS)."),
        no_cache: bool = typer.Option(False, "--no-cache", help="Recompute reference statistics; do not store them."),
        no_record: bool = typer.Option(False, "--no-record", help="Record the result nowhere (by default it is "
                                                                  "appended to CKPT.metrics.json beside the "
                                                                  "checkpoint, which is never rewritten)."),
        in_checkpoint: bool = typer.Option(False, "--record-in-checkpoint",
                                           help="Append the result to the checkpoint's own metrics history instead "
                                                "(rewrites the checkpoint; what train --resume and "
                                                "train.keep_best read)."),
        workers: Optional[int] = typer.Option(None, "--workers", min=0, help="Dataset decoding processes."),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
        json_out: bool = typer.Option(False, "--json", help="Print the full result as JSON."),
    ) -> None:
        """FID and the other registered metrics (KID, precision/recall, density/coverage, IS), protocols recorded."""
        from natgan.metrics import MODES, evaluate_datasets, evaluate_generator, record_in_checkpoint
        from natgan.metrics.record import fingerprint, record_beside
        from natgan.metrics.registry import FEATURE_SETS, METRICS, parse_metrics
        from natgan.metrics.settings import eval_config, evaluation_kwargs
        from natgan.metrics.weights import weights_directory
        from natgan.sampling import auto_batch_size, load_generator, resolve_device

        from natgan.fsutil import protect_inputs
        from natgan.validators import MAX_TRUNC, finite_number

        inputs = list(inputs or [])
        finite_number(trunc, "--trunc", lo=-MAX_TRUNC, hi=MAX_TRUNC)
        # --record-in-checkpoint rewrites the checkpoint on purpose (atomically, only if it did not change meanwhile)
        protect_inputs(("--ckpt", None if in_checkpoint else ckpt), ("--ref", ref), *(("DATASETS", p) for p in inputs))
        if no_record and in_checkpoint:
            raise ConfigError("--no-record and --record-in-checkpoint contradict each other: give one")
        if mode is not None and mode not in MODES:
            raise ConfigError(f"--mode '{mode}': expected one of {', '.join(MODES)}")
        if noise_mode is not None and noise_mode not in NOISE_MODES:
            raise ConfigError(f"--noise-mode '{noise_mode}': expected one of {', '.join(NOISE_MODES)}")
        if pr_features is not None and pr_features not in FEATURE_SETS:
            raise ConfigError(f"--pr-features '{pr_features}': expected one of {', '.join(FEATURE_SETS)}")
        chosen = parse_metrics(metrics) if metrics is not None else None
        weights_directory(weights)  # a wrong --weights fails now, not after the reference pass
        if trust_torchscript is not None:
            from natgan.metrics.weight_trust import trust_torchscript_file

            ctx.call_on_close(trust_torchscript_file(trust_torchscript))  # for this command only
        common = dict(inception=inception, weights_dir=weights, use_cache=not no_cache, workers=workers,
                      progress=not quiet)
        dev = resolve_device(device)

        def metric_names(default: list[str]) -> list[str]:
            names = list(chosen or default)
            return names + ["kid"] if kid and "kid" not in names else names

        if ckpt is None:
            if len(inputs) == 2 and ref is None:
                a, b = inputs
            elif len(inputs) == 1 and ref is not None:
                a, b = inputs[0], ref
            else:
                raise ConfigError("give --ckpt CKPT (and optionally a reference), or two datasets A B, or one "
                                  "dataset A with --ref")
            defaults = eval_config(None)
            result = evaluate_datasets(a, str(b), metrics=metric_names(defaults.metrics), mode=mode or defaults.mode,
                                       num=num, num_ref=num_ref, pr_features=pr_features or defaults.pr_features,
                                       batch_size=batch or auto_batch_size(dev, 256), device=dev, **common)
            _finish(result, None, json_out)
            return

        if len(inputs) > 1 or (inputs and ref is not None):
            raise ConfigError("with --ckpt give at most one reference (--data/--ref or one argument)")
        before = fingerprint(ckpt) if ckpt.is_file() else None
        loaded = load_generator(ckpt, ema=not no_ema, device=dev)
        settings = evaluation_kwargs(eval_config(loaded.ckpt.get("recipe"), source=f"{ckpt}: recipe"))
        settings["metrics"] = metric_names(settings["metrics"])
        # a class-conditional generator draws its labels from the (labelled) training data
        needs_reference = any(METRICS[name].real != "none" for name in settings["metrics"]) or \
            getattr(loaded.G, "num_classes", 0) > 0
        reference = ref or (str(inputs[0]) if inputs else
                            recipe_reference(loaded.ckpt, ckpt) if needs_reference else None)
        G = loaded.G
        settings.update({k: v for k, v in (("num", num), ("mode", mode), ("pr_features", pr_features),
                                           ("noise_mode", noise_mode)) if v})
        settings["batch_size"] = batch or auto_batch_size(dev, int(G.resolution))
        if seed + settings["num"] - 1 > MAX_SEED:
            raise ConfigError(f"--seed {seed}: images use seeds up to SEED+{settings['num'] - 1}, above the largest "
                              f"seed {MAX_SEED}")
        # the checkpoint's own truncation centre (imported official files carry one), as `sample` uses
        centre = None if trunc == 1.0 else loaded.truncation_centre()
        where = "--num" if num else "eval.num of the checkpoint's recipe; --num N to change"
        plan = f"({where}) with {', '.join(settings['metrics'])} on {dev}"
        result = evaluate_generator(G, reference, device=dev, seed=seed, num_ref=num_ref, psi=trunc, w_avg=centre,
                                    on_estimate=None if quiet else lambda info: _estimate(info, plan),
                                    **settings, **common)
        result["generated"].update({"checkpoint": str(ckpt), "model": loaded.ckpt["model"]["name"],
                                    "step": loaded.ckpt["progress"].get("step"), "ema": loaded.ema})
        recorded = None
        if in_checkpoint:
            record_in_checkpoint(ckpt, result, ema=loaded.ema, expected=before)
            recorded = f"{ckpt} (the checkpoint's metrics history)"
            result["recorded_in"] = str(ckpt)
        elif not no_record:
            side, _ = record_beside(ckpt, result, loaded.ckpt, ema=loaded.ema, expected=before)
            recorded = str(side)
            result["recorded_in"] = str(side)
        _finish(result, recorded, json_out)


def _estimate(info: dict, plan: str) -> None:
    """Before generating: how many images and why; after the first batch: its rate extrapolated (stderr)."""
    from natgan.data.progress import format_duration

    if not info["done"]:
        err_console.print(f"scoring {info['total']:,} generated images {plan}", highlight=False, markup=False)
        return
    err_console.print(f"estimate: {info['total']:,} images at {info['images_per_s']:.1f} img/s (first batch) "
                      f"= about {format_duration(info['eta_s'])} more; Ctrl-C stops", highlight=False, markup=False)


def _finish(result: dict, recorded: str | None, json_out: bool) -> None:
    if json_out:
        emit_json(result)
    else:
        _summary(result, recorded)
