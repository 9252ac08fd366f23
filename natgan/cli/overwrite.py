"""The one ``--overwrite`` option of every command that writes outputs (rule: :func:`natgan.fsutil.check_may_write`).

Existing outputs are refused (exit 2, naming the file) unless ``--overwrite`` is given. ``prepare --force`` and
``train --start-over`` are kept as hidden aliases so old scripts still run.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import typer

from natgan.fsutil import OVERWRITE_FLAG, overwrite_policy


def overwrite_option(what: str) -> Any:
    return typer.Option(False, OVERWRITE_FLAG, help=f"Replace {what} if it exists (default: refuse, exit 2).")


def deprecated_alias(flag: str) -> Any:
    """A hidden boolean flag that means ``--overwrite`` (the name a command used before the one rule)."""
    return typer.Option(False, flag, hidden=True, help=f"Old name of {OVERWRITE_FLAG}.")


def honours_overwrite(command: Callable[..., Any]) -> Callable[..., Any]:
    """Run ``command`` under the overwrite policy its ``overwrite`` argument states (Typer still sees the
    command's own signature through ``functools.wraps``)."""
    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> Any:
        with overwrite_policy(bool(kwargs.get("overwrite", False))):
            return command(*args, **kwargs)
    return run
