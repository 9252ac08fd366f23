"""Shared rich consoles and output helpers, so every command prints, errs and emits JSON alike."""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console
from rich.markup import escape

console = Console(highlight=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)


def print_error(message: str) -> None:
    """One line on stderr: ``error: <message>`` (the message names the file/key/value at fault)."""
    first = message.strip().splitlines()[0] if message.strip() else "unknown error"
    err_console.print(f"[bold red]error:[/] {escape(first)}", markup=True, soft_wrap=True, highlight=False,
                      emoji=False)


def emit_json(obj: Any) -> None:
    """Machine-readable result on stdout (nothing else is printed there when --json is given)."""
    sys.stdout.write(json.dumps(obj, indent=2, sort_keys=False, default=_default) + "\n")
    sys.stdout.flush()


def _default(obj: Any) -> Any:
    if hasattr(obj, "item"):
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    return str(obj)
