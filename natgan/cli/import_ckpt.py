"""`nat-gan import`: convert an official StyleNAT/StyleSwin/StyleGAN2/GANformer file into a nat-gan checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from rich.markup import escape

from natgan.cli.console import console, emit_json
from natgan.errors import ConfigError


def _parse_args_overrides(items: list[str]) -> dict:
    """``--arg dilations=[[1],[1,2]]`` -> {"dilations": [[1], [1, 2]]} (values are TOML literals)."""
    import tomllib

    out = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip().isidentifier():
            raise ConfigError(f"--arg {item}: expected KEY=VALUE, e.g. --arg 'dilations=[[1], [1], [1, 2]]'")
        try:
            out[key.strip()] = tomllib.loads(f"v = {raw.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            raise ConfigError(f"--arg {item}: VALUE must be a TOML literal (number, true/false, list, "
                              f"\"text\")") from None
    return out


def register(app: typer.Typer) -> None:
    @app.command("import")
    def import_cmd(
        source: Path = typer.Argument(..., help="Official checkpoint: StyleNAT/StyleSwin/rosinality .pt, NVlabs .pkl."),
        kind: str = typer.Option("auto", "--from", help="Which official code wrote it: stylenat | styleswin | "
                                                        "rosinality | stylegan2-ada | ganformer | auto."),
        out: Path = typer.Option(..., "--out", "-o", help="Where to write the nat-gan checkpoint."),
        size: Optional[int] = typer.Option(None, "--size", min=8,
            help="Expected resolution (checked against the weights)."),
        step: Optional[int] = typer.Option(None, "--step", min=0, help="Training step (default: from the file name, "
                                                                       "e.g. FFHQ256_940k_flip.pt -> 940000)."),
        keep_split_heads: bool = typer.Option(False, "--keep-split-heads",
                                              help="Keep StyleNAT's legacy rpb0/rpb1 layout instead of Hydra "
                                                   "partitions."),
        arg: Optional[list[str]] = typer.Option(None, "--arg", metavar="KEY=VALUE",
                                                help="Override a field of the official args (TOML literal), e.g. "
                                                     "--arg 'dilations=[[1],[1],[1,2],[1,4],[1,8],[1,16],[1,32]]'."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Replace OUT if it exists."),
        json_out: bool = typer.Option(False, "--json", help="Print the result as JSON."),
    ) -> None:
        """Convert an official checkpoint (G, G_ema, D, optimizers, recipe, truncation centre) to nat-gan format.

        NVlabs pickles (stylegan2-ada, GANformer) are read without importing or running the code they embed.
        """
        from natgan.checkpoint import build_generator, load, save
        from natgan.importers import import_checkpoint
        from natgan.models import count_params

        from natgan.fsutil import check_output_file

        if out.is_dir():
            raise ConfigError(f"--out {out}: is a directory; give the checkpoint's file name, e.g. {out / 'model.pt'}")
        check_output_file(out, "--out", ("SOURCE", source))  # not the source, no link/device/FIFO/read-only file
        if out.exists() and not overwrite:
            raise ConfigError(f"--out {out}: file exists (use --overwrite to replace it)")
        kind, ckpt = import_checkpoint(source, kind, size, keep_split_heads=keep_split_heads, step=step,
                                       args_override=_parse_args_overrides(arg or []))
        save(ckpt, out)
        written = load(out)
        generator = build_generator(written)
        info = written["extra"]["import"]
        result = {
            "source": str(source), "from": kind, "out": str(out), "model": written["model"]["name"],
            "resolution": generator.resolution, "g_params": count_params(generator),
            "step": written["progress"]["step"], "layout": info["layout"],
            "weights": sorted(written["weights"]), "optimizers": sorted(written["optim"]),
            "assumptions": info["assumptions"], "w_avg": "w_avg" in written["extra"],
        }
        if json_out:
            emit_json(result)
            return
        console.print(f"[bold]{result['model']}[/] (from {kind}) {result['resolution']}x{result['resolution']}, "
                      f"G {result['g_params'] / 1e6:.2f} M params, step {result['step']}")
        console.print(f"weights: {', '.join(result['weights'])}; optimizer states: "
                      f"{', '.join(result['optimizers']) or 'none'}; {result['layout']}")
        for note in result["assumptions"]:
            console.print(f"[yellow]note:[/] {escape(note)}")
        console.print(f"wrote {out}")
