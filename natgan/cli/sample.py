"""`nat-gan sample` (placeholder until its issue lands)."""

from __future__ import annotations

import typer

from natgan.errors import NatGanError


def register(app: typer.Typer) -> None:
    @app.command("sample")
    def _cmd() -> None:
        """Not implemented yet."""
        raise NatGanError("`nat-gan sample` is not implemented yet")
