"""`nat-gan sample`: images of chosen seeds, a grid, or a latent walk, from a checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from natgan.cli.console import console, emit_json
from natgan.cli.outputs import honours_overwrite, honours_scale, overwrite_option, scale_option
from natgan.errors import ConfigError
from natgan.fsutil import check_output_dir, protect_inputs
from natgan.noise_modes import DEFAULT_NOISE_MODE, NOISE_MODES
from natgan.validators import MAX_FPS, MAX_FRAMES, MAX_TRUNC, finite_number



def register(app: typer.Typer) -> None:
    @app.command("sample")
    @honours_overwrite
    @honours_scale
    def sample(
        ckpt: Path = typer.Option(..., "--ckpt", help="Checkpoint written by `nat-gan train` or `nat-gan import`."),
        seeds: Optional[str] = typer.Option(None, "--seeds", help="Seeds, e.g. 0-99 or 0,3,10-19 (one image each; "
                                                                  "default 0-15, or 0..COLS*ROWS-1 with --grid)."),
        outdir: Path = typer.Option(Path("samples"), "--outdir", "-o", help="Output directory."),
        grid: Optional[str] = typer.Option(None, "--grid", metavar="COLSxROWS",
                                           help="Tile the seeds into one PNG, OUTDIR/grid.png (e.g. 8x8)."),
        fmt: str = typer.Option("png", "--format", help="png (seedNNNN.png per seed) | zip (samples.zip) | npz "
                                                        "(samples.npz: images uint8 [N,H,W,3], seeds)."),
        trunc: float = typer.Option(1.0, "--trunc", help="Truncation psi in w space (1 = off), in every mode: toward "
                                                         "the checkpoint's stored centre (imported official files), "
                                                         "else the mean w of 10k fixed-seed latents (of the class, "
                                                         "for class-conditional models)."),
        interpolate: Optional[str] = typer.Option(None, "--interpolate", metavar="SEED_A,SEED_B",
                                                  help="Walk between seeds (keyframes A,B,C,...; several walks "
                                                       "1,5/2,7 play as a grid): OUTDIR/interp_<seeds>.gif|mp4 and "
                                                       "its frames in OUTDIR/interp_<seeds>/ (or .zip/.npz); the "
                                                       "keyframes are the seeds' own images."),
        frames: int = typer.Option(60, "--frames", min=2, max=MAX_FRAMES, help="Frames of --interpolate."),
        fps: float = typer.Option(20.0, "--fps", min=0.1, help="Frame rate of the --interpolate video."),
        batch: Optional[int] = typer.Option(None, "--batch", min=1,
            help="Images per forward pass (default: by device)."),
        device: str = typer.Option("auto", "--device", help="auto | cpu | cuda | cuda:N."),
        no_ema: bool = typer.Option(False, "--no-ema", help="Use the raw generator weights, not the EMA weights."),
        noise_mode: str = typer.Option(DEFAULT_NOISE_MODE, "--noise-mode",
                                       help="Models with noise inputs (StyleGAN2, GANformer): const (default, the "
                                            "stored maps, as generate.py) | random (seeded per batch: the images "
                                            "`fid` scores with the same seeds and --batch) | none."),
        w_file: Optional[Path] = typer.Option(None, "--w", help="Regenerate images from stored latents (.npz from "
                                                                "`nat-gan project`): OUTDIR/<name>.png."),
        style_mix: Optional[str] = typer.Option(None, "--style-mix", metavar="SEEDS", help="Row seeds of a style-"
                                                "mixing grid (OUTDIR/stylemix.png); needs --with and --layers."),
        mix_with: Optional[str] = typer.Option(None, "--with", metavar="SEEDS", help="Column seeds whose --layers "
                                                                                      "replace the row seeds'."),
        layers: Optional[str] = typer.Option(None, "--layers", help="w rows taken from --with, e.g. 0-6."),
        direction: Optional[str] = typer.Option(None, "--direction", metavar="FILE:INDEX", help="Edit strip along a "
                                                "direction from `nat-gan directions` (rows: --seeds or --w)."),
        strength: str = typer.Option("-5,5", "--strength", metavar="MIN,MAX", help="Range of --direction."),
        steps: int = typer.Option(7, "--steps", help="Images per --direction strip."),
        video: str = typer.Option("gif", "--video", help="--interpolate video format(s): gif, mp4 or gif,mp4."),
        walk_space: str = typer.Option("w", "--space", help="--interpolate path: w (lerp) | z (slerp)."),
        loop: bool = typer.Option(False, "--loop", help="--interpolate returns to its first keyframe (seamless)."),
        class_opt: Optional[str] = typer.Option(None, "--class", metavar="CLASS", help="Class-conditional "
                                                "checkpoints: a class index or name, several (3,7), or all. Several "
                                                "classes write one sub-folder each, or with --grid COLSxROWS one row "
                                                "per class (ROWS = number of classes, the same seeds per column); "
                                                "--trunc then moves each image toward its class's mean w."),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
        overwrite: bool = overwrite_option("files already in --outdir"),
        scale: int = scale_option(),
        json_out: bool = typer.Option(False, "--json", help="Print what was written as JSON."),
    ) -> None:
        """Generate images for seeds (same seed, same image on any device and batch size)."""
        from natgan.data.progress import ProgressBar
        from natgan.sampling import (FORMATS, auto_batch_size, fixed_class, format_seeds,
                                     load_generator, parse_grid, parse_seeds, resolve_device, write_class_grid,
                                     write_grid, write_samples)

        if fmt not in FORMATS:
            raise ConfigError(f"--format '{fmt}': expected one of {', '.join(FORMATS)}")
        if scale != 1 and fmt == "npz":
            raise ConfigError("--scale enlarges images and videos; --format npz stores the pixels as data: drop one")
        if noise_mode not in NOISE_MODES:
            raise ConfigError(f"--noise-mode '{noise_mode}': expected one of {', '.join(NOISE_MODES)}")
        finite_number(trunc, "--trunc", lo=-MAX_TRUNC, hi=MAX_TRUNC)
        finite_number(fps, "--fps", lo=0.1, hi=MAX_FPS)
        protect_inputs(("--ckpt", ckpt), ("--w", w_file), ("--direction", direction.rsplit(":", 1)[0] if direction
                                                           else None))
        from natgan.cli.sample_latent import latent_mode, run_latent_mode

        mode = latent_mode(interpolate, w_file, style_mix, mix_with, layers, direction, video, walk_space, loop)
        if mode is not None:
            run_latent_mode(mode, ckpt=ckpt, seeds=seeds, outdir=outdir, grid=grid, fmt=fmt, trunc=trunc,
                            interpolate=interpolate, frames=frames, fps=fps, batch=batch, device=device, no_ema=no_ema,
                            noise_mode=noise_mode, w_file=w_file, style_mix=style_mix, mix_with=mix_with,
                            layers=layers, direction=direction, strength=strength, steps=steps, video=video,
                            walk_space=walk_space, loop=loop, quiet=quiet, json_out=json_out, class_opt=class_opt)
            return
        if grid and fmt != "png":
            raise ConfigError(f"--grid writes one PNG; drop --format {fmt}")
        cols_rows = parse_grid(grid) if grid else None
        check_output_dir(outdir)
        dev = resolve_device(device)
        loaded = load_generator(ckpt, ema=not no_ema, device=dev)
        G = loaded.G
        classes = loaded.chosen_classes(class_opt)
        per_class_rows = cols_rows is not None and len(classes) > 1
        if cols_rows:
            cells = cols_rows[0] * (1 if per_class_rows else cols_rows[1])
            if per_class_rows and cols_rows[1] != len(classes):
                raise ConfigError(f"--grid {grid}: one row per class needs {len(classes)} rows "
                                  f"(--grid {cols_rows[0]}x{len(classes)})")
            seed_list = parse_seeds(seeds) if seeds is not None else list(range(cells))
            if len(seed_list) != cells:
                what = " per class row" if per_class_rows else ""
                raise ConfigError(f"--grid {grid} needs {cells} seeds{what}, --seeds '{seeds}' gives "
                                  f"{len(seed_list)}")
        else:
            seed_list = parse_seeds(seeds) if seeds is not None else list(range(16))
        from natgan.fsutil import refuse_existing
        from natgan.sampling.run import sample_outputs

        folders = [Path(outdir) / loaded.class_folder(k) for k in classes] if len(classes) > 1 and not cols_rows \
            else [Path(outdir)]
        refuse_existing([Path(outdir) / "grid.png"] if cols_rows else
                        [f for folder in folders for f in sample_outputs(folder, seed_list, fmt)])
        batch_size = batch or auto_batch_size(dev, int(G.resolution))
        w_avg = loaded.centre(trunc)  # None for a conditional model without a stored one: each image's class centre
        common = dict(batch_size=batch_size, psi=trunc, w_avg=w_avg, noise_mode=noise_mode)
        labels = fixed_class(classes[0]) if len(classes) == 1 else None
        total = len(seed_list) * max(1, len(classes) if (per_class_rows or not cols_rows) else 1)
        with ProgressBar(total, "sampling", enabled=not quiet) as bar:
            if per_class_rows:
                files = [write_class_grid(G, seed_list, classes, Path(outdir) / "grid.png", progress=bar.advance,
                                          **common)]
            elif cols_rows:
                files = [write_grid(G, seed_list, Path(outdir) / "grid.png", *cols_rows, progress=bar.advance,
                                    labels=labels, **common)]
            elif len(classes) > 1:
                files = []
                for k, folder in zip(classes, folders):
                    files += write_samples(G, seed_list, folder, fmt=fmt, progress=bar.advance, labels=fixed_class(k),
                                           **common)
            else:
                files = write_samples(G, seed_list, outdir, fmt=fmt, progress=bar.advance, labels=labels, **common)

        info = {**loaded.describe(), "device": str(dev), "trunc": trunc, "trunc_centre": loaded.centre_kind(trunc),
                "noise_mode": noise_mode,
                **({"classes": [loaded.class_names()[k] for k in classes]} if classes else {}),
                "format": "grid" if cols_rows else fmt, "seeds": format_seeds(seed_list),
                "images": total, "outdir": str(outdir), "files": [str(f) for f in files]}
        if json_out:
            emit_json(info)
            return
        if cols_rows:
            console.print(f"wrote a {cols_rows[0]}x{cols_rows[1]} grid: {files[0]}")
        else:
            console.print(f"wrote {total} image(s): {Path(outdir) if fmt == 'png' else files[0]}")
