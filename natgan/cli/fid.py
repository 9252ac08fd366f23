"""`nat-gan fid`: FID (and KID) of a checkpoint or a dataset against a reference, protocol stated."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from natgan.cli.console import console, emit_json, err_console
from natgan.errors import ConfigError, DataError
from natgan.noise_modes import DEFAULT_NOISE_MODE, NOISE_MODES


def recipe_reference(ckpt: dict, path: Path) -> str:
    """The reference a checkpoint's recipe names: ``eval.reference``, else ``data.path``."""
    from natgan.metrics import published

    recipe = ckpt.get("recipe") or {}
    for key in (("eval", "reference"), ("data", "path")):
        value = (recipe.get(key[0]) or {}).get(key[1])
        if value:
            if not published.is_published(value) and not Path(value).expanduser().exists():
                raise DataError(f"{path}: the dataset its recipe names ({key[0]}.{key[1]} = '{value}') is not there; "
                                f"pass --data PATH or --ref cleanfid:NAME:RES:SPLIT")
            return value
    raise ConfigError(f"{path}: the checkpoint's recipe names no dataset (data.path / eval.reference); pass --data PATH "
                      f"or --ref cleanfid:NAME:RES:SPLIT")


def _summary(result: dict, recorded: str | None) -> None:
    ref = result["reference"]
    gen = result["generated"]
    line = f"[bold]FID {result['fid']:.4f}[/]"
    if "kid" in result:
        line += f"   KID {result['kid']:.6f}"
    console.print(f"{line}   ({result['mode']}, {result['num_gen']:,} vs {result['num_ref']:,} images)")
    console.print(f"  protocol   {result['protocol']}")
    if gen.get("kind") == "generator":
        console.print(f"  generated  {gen.get('checkpoint', 'generator')} ({'EMA' if gen.get('ema', True) else 'raw'} "
                      f"weights, step {gen.get('step')}), seeds {gen['seeds']}, trunc {gen['trunc']}")
    else:
        console.print(f"  A          {gen['description']} [{gen['content_hash'][:24]}...]")
    if ref["kind"] == "cleanfid":
        console.print(f"  reference  {ref['spec']} ({ref['file']})")
    else:
        cached = " (cached statistics)" if result["reference_cached"] else ""
        console.print(f"  reference  {ref['description']}, {ref['count']:,} of {ref['length']:,} images "
                      f"[{ref['content_hash'][:24]}...]{cached}")
    t = result["timings"]
    rate = f", {t['images_per_s']:.1f} generated img/s" if "images_per_s" in t else ""
    console.print(f"  time       {t['total_s']:.1f} s{rate}")
    for warning in result.get("warnings", []):
        err_console.print(f"[yellow]warning:[/] {warning}")
    if recorded:
        console.print(f"  recorded   {recorded}")


def register(app: typer.Typer) -> None:
    @app.command("fid")
    def fid(
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
        mode: Optional[str] = typer.Option(None, "--mode", help="clean | legacy_pytorch | legacy_tensorflow (default: "
                                                                "recipe eval.mode, else legacy_pytorch = the papers')."),
        kid: bool = typer.Option(False, "--kid", help="Also compute KID (keeps all reference features)."),
        batch: Optional[int] = typer.Option(None, "--batch", min=1, help="Batch size (default: by device)."),
        device: str = typer.Option("auto", "--device", help="auto | cpu | cuda | cuda:N."),
        trunc: float = typer.Option(1.0, "--trunc", help="Truncation psi (1 = off, the standard FID protocol)."),
        seed: int = typer.Option(0, "--seed", min=0, max=2**62, help="Image i uses the latent of seed SEED+i."),
        no_ema: bool = typer.Option(False, "--no-ema", help="Score the raw generator weights, not the EMA."),
        noise_mode: str = typer.Option(DEFAULT_NOISE_MODE, "--noise-mode", help="Models with noise inputs: const (default, "
                                                                    "as `sample`; batch-size independent) | "
                                                                    "random (NVIDIA's metrics) | none."),
        inception: Optional[Path] = typer.Option(None, "--inception", help="Inception weights file or directory "
                                                                           "(offline machines; also $NATGAN_INCEPTION)."),
        no_cache: bool = typer.Option(False, "--no-cache", help="Recompute reference statistics; do not store them."),
        no_record: bool = typer.Option(False, "--no-record", help="Do not append the result to the checkpoint's "
                                                                  "metrics history."),
        workers: Optional[int] = typer.Option(None, "--workers", min=0, help="Dataset decoding processes."),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
        json_out: bool = typer.Option(False, "--json", help="Print the full result as JSON."),
    ) -> None:
        """Fréchet Inception Distance through clean-fid, with the protocol and reference identity recorded."""
        from natgan.metrics import MODES, fid_for_datasets, fid_for_generator, record_in_checkpoint
        from natgan.metrics.record import fingerprint
        from natgan.sampling import auto_batch_size, load_generator, resolve_device

        inputs = list(inputs or [])
        if mode is not None and mode not in MODES:
            raise ConfigError(f"--mode '{mode}': expected one of {', '.join(MODES)}")
        if noise_mode not in NOISE_MODES:
            raise ConfigError(f"--noise-mode '{noise_mode}': expected one of {', '.join(NOISE_MODES)}")
        common = dict(kid=kid, inception=inception, use_cache=not no_cache, workers=workers, progress=not quiet)
        dev = resolve_device(device)

        if ckpt is None:
            if len(inputs) == 2 and ref is None:
                a, b = inputs
            elif len(inputs) == 1 and ref is not None:
                a, b = inputs[0], ref
            else:
                raise ConfigError("give --ckpt CKPT (and optionally a reference), or two datasets A B, or one "
                                  "dataset A with --ref")
            result = fid_for_datasets(a, str(b), mode=mode or "legacy_pytorch", num=num, num_ref=num_ref,
                                      batch_size=batch or auto_batch_size(dev, 256), device=dev, **common)
            _finish(result, None, json_out)
            return

        if len(inputs) > 1 or (inputs and ref is not None):
            raise ConfigError("with --ckpt give at most one reference (--data/--ref or one argument)")
        before = fingerprint(ckpt) if ckpt.is_file() else None
        loaded = load_generator(ckpt, ema=not no_ema, device=dev)
        recipe_eval = (loaded.ckpt.get("recipe") or {}).get("eval") or {}
        reference = ref or (str(inputs[0]) if inputs else recipe_reference(loaded.ckpt, ckpt))
        G = loaded.G
        result = fid_for_generator(
            G, reference, num=num or int(recipe_eval.get("num") or 50_000),
            mode=mode or recipe_eval.get("mode") or "legacy_pytorch",
            batch_size=batch or auto_batch_size(dev, int(G.resolution)), device=dev, seed=seed, num_ref=num_ref,
            psi=trunc, noise_mode=noise_mode, **common)
        result["generated"].update({"checkpoint": str(ckpt), "model": loaded.ckpt["model"]["name"],
                                    "step": loaded.ckpt["progress"].get("step"), "ema": loaded.ema})
        recorded = None
        if not no_record:
            record_in_checkpoint(ckpt, result, ema=loaded.ema, expected=before)
            recorded = f"{ckpt} (metrics history)"
            result["recorded_in"] = str(ckpt)
        _finish(result, recorded, json_out)


def _finish(result: dict, recorded: str | None, json_out: bool) -> None:
    if json_out:
        emit_json(result)
    else:
        _summary(result, recorded)
