"""Options every command that writes outputs shares: ``--overwrite`` and ``--scale``.

``--overwrite`` (rule: :func:`natgan.fsutil.check_may_write`): existing outputs are refused (exit 2, naming the
file) unless it is given; ``prepare --force`` and ``train --start-over`` are hidden aliases so old scripts still
run. ``--scale N`` (:func:`natgan.sampling.export.image_scale`): images and videos are written N times larger,
nearest neighbour, so 32-px samples can be looked at.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import typer

from natgan.fsutil import OVERWRITE_FLAG, overwrite_policy
from natgan.sampling.export import MAX_SCALE, image_scale


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


def scale_option() -> Any:
    return typer.Option(1, "--scale", min=1, max=MAX_SCALE, help="Write images and videos N times larger "
                                                                  "(nearest neighbour; pixels stay exact).")


def honours_scale(command: Callable[..., Any]) -> Callable[..., Any]:
    """Run ``command`` with its ``scale`` argument applied to every image and video it writes."""
    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> Any:
        with image_scale(int(kwargs.get("scale", 1))):
            return command(*args, **kwargs)
    return run
