"""The ``nat-gan`` command line: a thin Typer layer over the Python API.

Each subcommand lives in its own module and only parses arguments, calls the library and prints.
Errors raised as :class:`~natgan.errors.NatGanError` become one red line on stderr and exit code 1
(2 for bad usage or configuration); Typer/Click usage errors (unknown option, ``--num 1e12``) become one
line too, naming the command and the option, with exit code 2.
"""

from __future__ import annotations

import functools
import inspect
import sys
from typing import Callable, Optional

import typer

from natgan import __version__
from natgan.devices import set_openmp_wait_policy
from natgan.errors import NatGanError

set_openmp_wait_policy()  # before any command module imports torch: OpenMP reads it when torch loads it


def _plain_help_types() -> None:
    """``--help`` names a value's kind the conventional way (``--recipe PATH``, ``--seed INTEGER``) and shows
    nothing after a flag, instead of Typer >= 0.25's type tags (``<bool>``, ``<list[str]>``, ``<path>``), which
    read as Python internals. Older Typer releases have no tags and are left alone."""
    names = {"int": "INTEGER", "float": "NUMBER", "str": "TEXT", "path": "PATH", "file": "FILE", "dir": "DIRECTORY"}

    def display_type_rich(self, ctx):  # noqa: ANN001 - Typer's own signature
        if self.metavar is not None:
            return self.metavar
        if getattr(self, "is_flag", False) or getattr(self, "count", False):
            return None
        label = self.display_type(ctx).strip("<>")  # a repeatable option (list[...]) takes one value each time
        base = label.removeprefix("list[").removesuffix("]").removesuffix(" range")
        text = names.get(base, base.upper() if "|" not in base else f"[{base}]")
        return text + ("..." if getattr(self, "nargs", 1) != 1 else "")

    try:
        from typer.core import TyperArgument, TyperOption
    except ImportError:  # pragma: no cover - an older Typer without the tags
        return
    for cls in (TyperArgument, TyperOption):
        if hasattr(cls, "display_type_rich") and hasattr(cls, "display_type"):
            cls.display_type_rich = display_type_rich


_plain_help_types()

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
    from natgan.fsutil import release_inputs

    release_inputs()  # every command (also one invoked through Typer's test runner) starts unprotected


def _register_commands() -> None:
    from natgan.cli import bench, directions, fid, import_ckpt, prepare, project, sample, train, visualize

    for module in (prepare, train, sample, fid, visualize, bench, import_ckpt, project, directions):
        module.register(app)
    from natgan.cli import doctor; doctor.register(app)  # noqa: E702 - one line, so parallel edits merge
    from natgan.cli import studio; studio.register(app)  # noqa: E702
    from natgan.cli import cache; cache.register(app)  # noqa: E702


THREADS_HELP = ("CPU threads for torch (default: $NATGAN_THREADS, else the cores this process may use that "
                "other work leaves free).")


def _with_threads(callback: Callable) -> Callable:
    """``callback`` with a ``--threads`` option that sets torch's CPU threads (natgan.devices policy) before
    the command runs. Added at registration, so every command, present or future, has it and applies it."""

    @functools.wraps(callback)
    def command(*args, threads: Optional[int] = None, **kwargs):
        from natgan.devices import apply_cpu_threads

        apply_cpu_threads(threads)
        return callback(*args, **kwargs)

    signature = inspect.signature(callback)
    option = inspect.Parameter("threads", inspect.Parameter.KEYWORD_ONLY, annotation=Optional[int],
                               default=typer.Option(None, "--threads", help=THREADS_HELP, show_default=False))
    command.__signature__ = signature.replace(parameters=[*signature.parameters.values(), option])
    command.__annotations__ = {**getattr(callback, "__annotations__", {}), "threads": Optional[int]}
    command.natgan_threads = True  # other decorators may wrap callbacks too: this marks ours
    return command


def _add_threads_option(typer_app: typer.Typer) -> None:
    for info in typer_app.registered_commands:
        if info.callback is not None and not getattr(info.callback, "natgan_threads", False):
            info.callback = _with_threads(info.callback)
    for group in typer_app.registered_groups:
        if group.typer_instance is not None:
            _add_threads_option(group.typer_instance)


_register_commands()
_add_threads_option(app)


def _click_exceptions() -> tuple[tuple[type, ...], tuple[type, ...], tuple[type, ...]]:
    """Click's usage-error, error and abort classes: Typer >= 0.22 vendors Click (``typer._click``),
    older Typer uses the ``click`` package; both are caught, so either install gets one-line errors."""
    usage, errors, aborts = [], [], [typer.Abort]
    for name in ("typer._click.exceptions", "click.exceptions"):
        try:
            module = __import__(name, fromlist=["UsageError"])
        except ImportError:
            continue
        usage.append(module.UsageError)
        errors.append(module.ClickException)
        aborts.append(getattr(module, "Abort", typer.Abort))
    return tuple(usage), tuple(errors), tuple(aborts)


def os_error_message(exc: OSError) -> str | None:
    """One line for an operating-system refusal about a named file (permission denied on a read-only
    directory or checkpoint, a full or read-only disk): the file and the reason, never a traceback.
    Errors without a file name are left alone (they are bugs or need their own message)."""
    if exc.filename is None:
        return None
    reason = exc.strerror or type(exc).__name__
    target = f"{exc.filename} -> {exc.filename2}" if exc.filename2 else f"{exc.filename}"
    hint = {13: " (check the permissions of the file and its directory)",
            28: " (free some space)"}.get(exc.errno or 0, "")
    return f"{target}: {reason}{hint}"


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    from natgan.cli.console import print_error

    from natgan.fsutil import release_inputs

    usage_errors, click_errors, aborts = _click_exceptions()
    release_inputs()  # the inputs a command registers protect it for its own run only
    try:
        code = app(args=argv, prog_name="nat-gan", standalone_mode=False)
    except usage_errors as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":  # `nat-gan` / `nat-gan prepare` alone: the help text
            exc.show()
            sys.exit(exc.exit_code)
        where = exc.ctx.command_path if exc.ctx is not None else "nat-gan"
        print_error(f"{where}: {exc.format_message()} (see '{where} -h')")
        sys.exit(exc.exit_code)
    except click_errors as exc:
        print_error(exc.format_message())
        sys.exit(exc.exit_code)
    except aborts:
        print_error("interrupted")
        sys.exit(130)
    except NatGanError as exc:
        print_error(str(exc))
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        print_error("interrupted")
        sys.exit(130)
    except OSError as exc:
        message = os_error_message(exc)
        if message is None:
            raise
        print_error(message)
        sys.exit(1)
    except RecursionError:  # every loader bounds nesting (natgan.limits); this is the net behind them
        print_error("input nested too deeply to process (a malformed or hostile file or option?)")
        sys.exit(1)
    except MemoryError:
        print_error("out of memory (the input asks for more than this machine can hold)")
        sys.exit(1)
    finally:
        release_inputs()
    if code == 130:  # Typer >= 0.2x turns Ctrl-C into Exit(130) itself, silently: say why the command stopped
        print_error("interrupted (Ctrl-C); nothing more was written")
    sys.exit(code if isinstance(code, int) else 0)  # as Click's standalone mode does after a command
