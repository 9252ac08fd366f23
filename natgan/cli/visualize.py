"""`nat-gan visualize`: attention maps of one generated image (StyleNAT paper, Appendix D)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from natgan.cli.console import console, emit_json
from natgan.cli.outputs import honours_overwrite, honours_scale, overwrite_option, scale_option
from natgan.errors import ConfigError
from natgan.sampling.seeds import MAX_SEED


def _ints(text: Optional[str], option: str) -> Optional[list[int]]:
    from natgan.model_choice import parse_int_list

    return None if text is None else parse_int_list(text, option)


def register(app: typer.Typer) -> None:
    @app.command("visualize")
    @honours_overwrite
    @honours_scale
    def visualize(
        ckpt: Optional[Path] = typer.Option(None, "--ckpt", "-c", help="nat-gan checkpoint (EMA generator)."),
        model: Optional[str] = typer.Option(None, "--model", "-m", help="Registered model with random weights "
                                                                         "(instead of --ckpt)."),
        recipe: Optional[Path] = typer.Option(None, "--recipe", "-r", help="Recipe for --model's config."),
        sets: Optional[list[str]] = typer.Option(None, "--set", help="Override a model key: model.KEY=VALUE."),
        resolution: Optional[int] = typer.Option(None, "--resolution", help="Shortcut for --set model.resolution=R."),
        seed: int = typer.Option(42, "--seed", "-s", min=0, max=MAX_SEED,
            help="Seed of z (CPU RNG, as the official analysis)."),
        outdir: Path = typer.Option(Path("attention_maps"), "--outdir", "-o", help="Folder for the PNG files."),
        levels: Optional[str] = typer.Option(None, "--levels", help="Resolutions, e.g. 16,32 or 'all' "
                                                                    "(default: every level from 16x16 up)."),
        blocks: Optional[str] = typer.Option(None, "--blocks", help="Block indices within a level, e.g. 0,1."),
        heads: Optional[str] = typer.Option(None, "--heads", help="Head indices, e.g. 0,1,2."),
        cmap: str = typer.Option("gray", "--cmap", help="gray | viridis | magma | inferno | coolwarm."),
        norm: str = typer.Option("head", "--norm", help="head: stretch each head to [0,1]; block: one range per "
                                                        "block; official: clamp q̄·k/2 to [0,1] as the paper."),
        cross: str = typer.Option("soft", "--cross", help="Cross-attention (GANformer, HiT): soft | hard | "
                                                          "latents (one tile per latent)."),
        no_ema: bool = typer.Option(False, "--no-ema", help="Use the raw generator of --ckpt, not its EMA."),
        class_opt: Optional[str] = typer.Option(None, "--class", help="Class-conditional models: the class (index "
                                                                      "or name) of the image whose attention is "
                                                                      "drawn."),
        device: str = typer.Option("auto", "--device", help="auto | cpu | cuda | cuda:N."),
        overwrite: bool = overwrite_option("files already in --outdir"),
        scale: int = scale_option(),
        json_out: bool = typer.Option(False, "--json", help="Print the written files and maps as JSON."),
    ) -> None:
        """Draw per-block, per-head attention maps (mean query · every key) and one overview per level."""
        from natgan.devices import resolve_device
        from natgan.fsutil import check_output_dir, protect_inputs
        from natgan.viz import attention_maps, render
        from natgan.viz.colormaps import lookup_table
        from natgan.viz.render import CROSS_MODES, NORMS

        lookup_table(cmap)  # validate every option before any model is built
        if norm not in NORMS:
            raise ConfigError(f"--norm: expected one of {', '.join(NORMS)}, got '{norm}'")
        if cross not in CROSS_MODES:
            raise ConfigError(f"--cross: expected one of {', '.join(CROSS_MODES)}, got '{cross}'")
        level_sel = "all" if levels is not None and levels.strip().lower() == "all" else _ints(levels, "--levels")
        block_sel, head_sel = _ints(blocks, "--blocks"), _ints(heads, "--heads")
        check_output_dir(outdir)
        protect_inputs(("--ckpt", ckpt), ("--recipe", recipe))
        dev = resolve_device(device)
        G, name, data = _generator(ckpt, model, recipe, sets or [], resolution, no_ema)
        from natgan.sampling.classes import bind_class

        G = bind_class(G, data, class_opt, where=ckpt or name).to(dev)
        result = attention_maps(G, seed, levels=level_sel, blocks=block_sel, heads=head_sel, model=name)
        files = render(result, outdir, cmap=cmap, norm=norm, cross=cross)
        if json_out:
            emit_json({
                "model": name, "seed": seed, "outdir": str(outdir), "files": [str(f) for f in files],
                "blocks": [{"level": b.level, "block": b.block, "kind": b.kind, "module": b.name,
                            "heads": b.heads, "labels": b.labels} for b in result.blocks],
            })
            return
        console.print(f"{name}, seed {seed}: {len(result.blocks)} blocks at levels "
                      f"{', '.join(map(str, result.levels))} -> {len(files)} files in {outdir}/")
        for f in files:
            if f.name.endswith("_overview.png") or f.name == "sample.png":
                console.print(f"  {f}")


def _generator(ckpt: Optional[Path], model: Optional[str], recipe: Optional[Path], sets: list[str],
               resolution: Optional[int], no_ema: bool):
    """The generator to look at: from a checkpoint, or a registered model with random weights."""
    import torch

    if ckpt is not None:
        if model is not None or recipe is not None or sets or resolution is not None:
            raise ConfigError("--ckpt already names its model; drop --model/--recipe/--set/--resolution")
        from natgan import checkpoint

        data = checkpoint.load(ckpt)
        return checkpoint.build_generator(data, ema=not no_ema, source=ckpt), data["model"]["name"], data
    if model is None and recipe is None:
        raise ConfigError("give --ckpt FILE, or --model NAME (random weights) with an optional --recipe")
    from natgan.model_choice import resolve_model

    torch.manual_seed(0)  # random weights are reproducible run to run
    pair = resolve_model(model, recipe=str(recipe) if recipe else None, sets=sets, resolution=resolution)
    return pair.generator, pair.name, None
