"""Shared rich consoles and output helpers, so every command prints, errs and emits JSON alike."""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console
from rich.markup import escape

from natgan.jsonable import jsonable

console = Console(highlight=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)


def print_error(message: str) -> None:
    """``error: <message>`` on stderr: one line naming the file/key/value at fault, followed by the
    message's own detail lines when it has them (e.g. one line per checkpoint that failed to load)."""
    lines = message.strip().splitlines() or ["unknown error"]
    cut = next((i for i, line in enumerate(lines) if "Traceback" in line), len(lines))
    lines = lines[:max(cut, 1)]  # never a traceback quoted inside a message (e.g. a DataLoader re-raise)
    err_console.print(f"[bold red]error:[/] {escape(lines[0])}", markup=True, soft_wrap=True, highlight=False,
                      emoji=False)
    for line in lines[1:]:
        err_console.print(escape(line), markup=True, soft_wrap=True, highlight=False, emoji=False)


def emit_json(obj: Any) -> None:
    """Machine-readable result on stdout (nothing else is printed there when --json is given)."""
    sys.stdout.write(json.dumps(obj, indent=2, sort_keys=False, default=jsonable) + "\n")
    sys.stdout.flush()

