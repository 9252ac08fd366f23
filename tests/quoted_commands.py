"""Every ``nat-gan ...`` command the README and the recipes quote, as argument lists.

Why: a quoted command that does not run (``train RECIPE`` without ``--recipe``) is the first thing a newcomer
copies. ``tests/test_quoted_commands.py`` parses each with the CLI's own parser.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
INLINE = re.compile(r"`(nat-gan [^`]+)`")
FENCE = re.compile(r"^```")


def _join_continuations(lines: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """(line number, text) with ``\\``-continued lines joined onto the first."""
    out: list[tuple[int, str]] = []
    for number, line in lines:
        if out and out[-1][1].endswith("\\"):
            out[-1] = (out[-1][0], out[-1][1][:-1].rstrip() + " " + line.strip())
        else:
            out.append((number, line.strip()))
    return out


def from_markdown(path: Path) -> list[tuple[str, str]]:
    """(where, command) for commands in fenced blocks (one per line, ``\\`` continued) and in inline code."""
    found: list[tuple[str, str]] = []
    text = path.read_text(encoding="utf-8").splitlines()
    in_block, block = False, []
    for number, line in enumerate(text, 1):
        if FENCE.match(line.strip()):
            if in_block:
                found.extend((f"{path.name}:{n}", cmd) for n, cmd in _join_continuations(block)
                             if cmd.startswith("nat-gan "))
            in_block, block = not in_block, []
            continue
        if in_block:
            block.append((number, line))
        else:
            found.extend((f"{path.name}:{number}", m.group(1)) for m in INLINE.finditer(line))
    return found


def from_recipe(path: Path) -> list[tuple[str, str]]:
    """Commands in a recipe's comments: a comment line starting with ``nat-gan`` (``\\`` continues it), and
    inline code in comments."""
    found: list[tuple[str, str]] = []
    lines = path.read_text(encoding="utf-8").splitlines()
    comments = [(n, line.split("#", 1)[1].strip()) for n, line in enumerate(lines, 1) if "#" in line]
    pending: tuple[int, str] | None = None
    for number, comment in comments:
        if pending is not None:
            pending = (pending[0], pending[1][:-1].rstrip() + " " + comment)
        elif comment.startswith("nat-gan "):
            pending = (number, comment)
        else:
            found.extend((f"{path.name}:{number}", m.group(1)) for m in INLINE.finditer(comment))
            continue
        if not pending[1].endswith("\\"):
            found.append((f"{path.name}:{pending[0]}", pending[1]))
            pending = None
    return found


def quoted_commands() -> list[tuple[str, list[str]]]:
    """(where, argv after ``nat-gan``) for README.md and every recipe."""
    found = from_markdown(REPO / "README.md")
    for recipe in sorted((REPO / "recipes").glob("*.toml")):
        found.extend(from_recipe(recipe))
    return [(where, shlex.split(cmd, comments=True)[1:]) for where, cmd in found]
