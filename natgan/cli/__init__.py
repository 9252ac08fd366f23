"""The ``nat-gan`` command line: a thin Typer layer over the Python API.

Each subcommand lives in its own module and only parses arguments, calls the library and prints.
Errors raised as :class:`~natgan.errors.NatGanError` become one red line on stderr and exit code 1
(2 for bad usage or configuration); Typer/Click usage errors keep their exit code 2.
"""

from __future__ import annotations

import sys

import typer

from natgan import __version__
from natgan.errors import NatGanError

app = typer.Typer(
    name="nat-gan",
    help="StyleNAT and its baselines (StyleSwin, HiT, GANformer, StyleGAN2): prepare data, train, sample, "
         "score, visualise and benchmark with one registry and one checkpoint format.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"nat-gan {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", "-V", callback=_version, is_eager=True,
                                       help="Print the version and exit.")) -> None:
    """nat-gan: one tool for StyleNAT and its baselines."""


def _register_commands() -> None:
    from natgan.cli import bench, directions, fid, import_ckpt, prepare, project, sample, train, visualize

    for module in (prepare, train, sample, fid, visualize, bench, import_ckpt, project, directions):
        module.register(app)
    from natgan.cli import doctor; doctor.register(app)  # noqa: E702 - one line, so parallel edits merge


_register_commands()


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    from natgan.cli.console import print_error

    try:
        app(args=argv, prog_name="nat-gan")
    except NatGanError as exc:
        print_error(str(exc))
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        print_error("interrupted")
        sys.exit(130)
