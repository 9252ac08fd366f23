"""`nat-gan project`: invert real images into a checkpoint's generator (GAN inversion)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from natgan.cli.console import console, emit_json
from natgan.cli.outputs import honours_overwrite, overwrite_option
from natgan.sampling.seeds import MAX_SEED


def register(app: typer.Typer) -> None:
    @app.command("project")
    @honours_overwrite
    def project_cmd(
        ckpt: Path = typer.Option(..., "--ckpt", help="Checkpoint written by `nat-gan train` or `nat-gan import`."),
        targets: List[Path] = typer.Option(..., "--target", "-t", help="Image file or folder of images "
                                                                       "(repeat for several)."),
        outdir: Path = typer.Option(Path("proj"), "--outdir", "-o", help="Output directory."),
        steps: int = typer.Option(1000, "--steps", min=1, help="Optimisation steps per target."),
        space: str = typer.Option("w", "--space", help="w (one w for all layers) | wplus (one per layer); models "
                                                       "without a mapping network (HiT) always use z."),
        mse: float = typer.Option(0.0, "--mse", help="Weight of an extra pixel MSE loss (0 = LPIPS only)."),
        seed: int = typer.Option(303, "--seed", min=0, max=MAX_SEED,
                                 help="Seed of the noise (stylegan2-ada's default 303)."),
        init: Optional[Path] = typer.Option(None, "--init", help="Continue from latents written by a previous run "
                                                                 "(projected_w.npz: one latent, or one per target; "
                                                                 "the schedule continues: lr ramp-down, no w "
                                                                 "noise)."),
        video: bool = typer.Option(False, "--video", help="Also write proj.mp4: target | image of every step."),
        fps: float = typer.Option(30.0, "--fps", min=0.1, help="Frame rate of --video."),
        weights: Optional[Path] = typer.Option(None, "--weights", help="Directory with vgg16-397923af.pth and "
                                                                       "LPIPS vgg.pth (default $NATGAN_WEIGHTS)."),
        random_lpips: bool = typer.Option(False, "--random-lpips", help="Random-init VGG instead of LPIPS weights "
                                                                        "(testing only: not a perceptual loss).",
                                          hidden=True),
        w_avg_samples: int = typer.Option(10_000, "--w-avg-samples", min=1, max=1_000_000,
                                          help="Latents averaged for the start w."),
        device: str = typer.Option("auto", "--device", help="auto | cpu | cuda | cuda:N."),
        no_ema: bool = typer.Option(False, "--no-ema", help="Use the raw generator weights, not the EMA weights."),
        class_opt: Optional[str] = typer.Option(None, "--class", help="Class-conditional checkpoints: project into "
                                                                      "this class (index or name); the start w is "
                                                                      "the class's mean w."),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
        overwrite: bool = overwrite_option("files already in --outdir"),
        json_out: bool = typer.Option(False, "--json", help="Print a JSON summary (final LPIPS/MSE per target)."),
    ) -> None:
        """Find the latent of each target image (stylegan2-ada-pytorch's projector, for every model)."""
        from natgan.data.progress import ProgressBar
        from natgan.fsutil import protect_inputs, refuse_unsafe_target
        from natgan.latent.outputs import find_targets, planned_outputs, project_targets
        from natgan.latent.project import ProjectionSettings
        from natgan.metrics.lpips import load_lpips
        from natgan.sampling import load_generator, resolve_device

        settings = ProjectionSettings(steps=steps, space=space, mse_weight=mse, seed=seed,
                                      w_avg_samples=w_avg_samples)
        settings.validate()
        files = find_targets(targets)
        # The targets are inputs (--target DIR/x/target.png --outdir DIR would overwrite its own target);
        # --init is not: continuing a target from its own projected_w.npz replaces that file by design.
        protect_inputs(("--ckpt", ckpt), *(("--target", f) for f in files))
        for planned in planned_outputs(files, outdir, video=video):
            refuse_unsafe_target(planned, "--outdir")
        dev = resolve_device(device)
        lpips = load_lpips(weights, random_init=random_lpips, device=dev)
        loaded = load_generator(ckpt, ema=not no_ema, device=dev)
        G = loaded.for_class(class_opt)
        with ProgressBar(steps * len(files), "projecting", enabled=not quiet) as bar:
            summary = project_targets(G, files, outdir, lpips, settings, model=loaded.ckpt["model"]["name"],
                                      video=video, fps=fps, init=init, on_step=bar.advance)
        info = {**loaded.describe(), "device": str(dev), **summary}
        if json_out:
            emit_json(info)
            return
        for row in summary["targets"]:
            console.print(f"{row['target']}: LPIPS {row['start_lpips']:.4f} -> {row['lpips']:.4f}, "
                          f"MSE {row['start_mse']:.5f} -> {row['mse']:.5f}")
        console.print(f"wrote {outdir} (latents: {summary['latents']}, space {summary['space']})")
