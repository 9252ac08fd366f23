"""`nat-gan studio`: a web page to look inside checkpoints (seeds, psi, mixing, directions, attention, projection)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from natgan.cli.console import console


def register(app: typer.Typer) -> None:
    @app.command("studio")
    def studio_cmd(
        sources: List[Path] = typer.Argument(..., metavar="CKPT_OR_RUN_DIR",
                                             help="Checkpoints, or run directories (their snapshots, newest first)."),
        host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (anything but loopback serves "
                                                             "the page to your network, without a password)."),
        port: int = typer.Option(7860, "--port", help="Port (0 = any free port)."),
        device: str = typer.Option("auto", "--device", help="auto | cpu | cuda | cuda:N."),
        no_ema: bool = typer.Option(False, "--no-ema", help="Use the raw generator weights, not the EMA weights."),
        weights: Optional[Path] = typer.Option(None, "--weights", help="Directory with the LPIPS files projection "
                                                                       "needs (default $NATGAN_WEIGHTS)."),
        class_opt: Optional[str] = typer.Option(None, "--class", metavar="CLASS",
                                                help="Class-conditional checkpoints: the class the page starts in "
                                                     "(index or name; default the first). The page has a class "
                                                     "control for every conditional checkpoint."),
        random_lpips: bool = typer.Option(False, "--random-lpips", hidden=True,
                                          help="Random-init VGG for projection (testing only)."),
    ) -> None:
        """Serve a page to explore checkpoints in a browser; prints the URL and the ssh line to reach it."""
        from natgan.studio.server import check_port, is_local, require_gradio

        require_gradio()
        from natgan.devices import resolve_device
        from natgan.studio.catalog import expand
        from natgan.studio.session import MAX_UPLOAD_BYTES, Studio
        from natgan.studio.server import serve

        entries = expand(sources)
        port = check_port(host, port)
        if not is_local(host):
            console.print(f"[yellow]warning:[/] --host {host} serves the studio to every machine that can reach "
                          f"this one, without a password; prefer the default 127.0.0.1 and an ssh tunnel")
        studio = Studio(entries, resolve_device(device), ema=not no_ema, weights=weights, random_lpips=random_lpips)
        try:
            initial, failures = studio.first_loadable()
            if class_opt is not None:
                studio.first_class = studio.class_named(initial, class_opt)
        except BaseException:
            import shutil

            shutil.rmtree(studio.workdir, ignore_errors=True)
            raise
        serve(studio, host=host, port=port, initial=initial, failures=failures, say=console.print,
              max_upload_bytes=MAX_UPLOAD_BYTES)
