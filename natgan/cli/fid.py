"""`nat-gan fid` (placeholder until its issue lands)."""

from __future__ import annotations

import typer

from natgan.errors import NatGanError


def register(app: typer.Typer) -> None:
    @app.command("fid")
    def _cmd() -> None:
        """Not implemented yet."""
        raise NatGanError("`nat-gan fid` is not implemented yet")
