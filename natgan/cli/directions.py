"""`nat-gan directions`: closed-form factorization (SeFa) of a checkpoint's style-modulation weights."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from natgan.cli.console import console, emit_json
from natgan.cli.outputs import honours_overwrite, overwrite_option


def register(app: typer.Typer) -> None:
    @app.command("directions")
    @honours_overwrite
    def directions(
        ckpt: Path = typer.Option(..., "--ckpt", help="Checkpoint written by `nat-gan train` or `nat-gan import`."),
        out: Path = typer.Option(Path("dirs.npz"), "--out", "-o", help="Output file (directions, eigenvalues, "
                                                                       "layers)."),
        layers: Optional[str] = typer.Option(None, "--layers", help="w rows whose style layers are factorised, "
                                                                    "e.g. 0-6 (default: all)."),
        select: str = typer.Option("official", "--select",
                                   help="official: per w row the modulated convs reading it, the last ToRGB only "
                                        "for the last row (genforce/sefa) | all: every modulation, intermediate "
                                        "ToRGBs too."),
        no_ema: bool = typer.Option(False, "--no-ema", help="Use the raw generator weights, not the EMA weights."),
        overwrite: bool = overwrite_option("--out"),
        json_out: bool = typer.Option(False, "--json", help="Print the result as JSON."),
    ) -> None:
        """Editing directions: eigenvectors of A^T A for the chosen layers' style weights A (Shen & Zhou 2021)."""
        from natgan.fsutil import check_output_file, refuse_existing
        from natgan.latent.sefa import factorize
        from natgan.latent.space import format_layers, parse_layers
        from natgan.models.conditioning import ClassBoundGenerator
        from natgan.sampling import load_generator

        check_output_file(out, "--out", ("--ckpt", ckpt))  # before any work: not the checkpoint, a regular file
        refuse_existing([out])
        loaded = load_generator(ckpt, ema=not no_ema, device="cpu")
        G = loaded.G
        if getattr(G, "num_classes", 0):
            # SeFa factorises style weights, which no label enters: the directions hold for every class.
            # Bound to class 0 only so the probe that finds the style layers can run the mapping network.
            G = ClassBoundGenerator(G, 0)
        chosen = parse_layers(layers, G) if layers is not None else None
        result = factorize(G, chosen, selection=select)
        result.save(out, model=loaded.ckpt["model"]["name"])
        info = {**loaded.describe(), "out": str(out), "space": result.space, "layers": format_layers(result.layers),
                "directions": len(result.values), "modules": len(result.modules), "select": select,
                "eigenvalues": [round(float(v), 6) for v in result.values[:10]]}
        if json_out:
            emit_json(info)
            return
        note = " (no mapping network: directions in z)" if result.space == "z" else ""
        console.print(f"wrote {len(result.values)} directions from {len(result.modules)} style layers "
                      f"(w rows {info['layers']}){note}: {out}")
