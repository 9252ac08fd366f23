"""`nat-gan prepare` (placeholder until its issue lands)."""

from __future__ import annotations

import typer

from natgan.errors import NatGanError


def register(app: typer.Typer) -> None:
    @app.command("prepare")
    def _cmd() -> None:
        """Not implemented yet."""
        raise NatGanError("`nat-gan prepare` is not implemented yet")
