"""Driving a studio from outside, as a user would: its process, and a headless Chromium pointed at it.

Shared by the browser test (tests/test_studio_browser.py) and the responsiveness benchmark
(benchmarks/bench_studio.py). Chromium is the system's (Debian's ``chromium`` package), driven by
Playwright's Python package, so nothing downloads a browser; the flags keep it from talking to anything
but the studio (no background networking, component updates, sync or QUIC).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Sequence

from natgan.errors import NatGanError

CHROMIUM = Path(os.environ.get("NATGAN_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync")
URL_LINE = re.compile(r"nat-gan studio: (http://127\.0\.0\.1:\d+/)")


def start_studio(args: Sequence[str], *, cwd: Path, log: Path, env: dict | None = None,
                 timeout_s: float = 300) -> tuple[subprocess.Popen, str]:
    """``python -m natgan studio ARGS --port 0`` in ``cwd``; waits for its URL line. Output goes to ``log``
    (a file, not a pipe: a chatty server can never block on a full pipe)."""
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "natgan", "studio", *args, "--port", "0"], cwd=cwd,
                                env=env, stdout=out, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.25)
        match = URL_LINE.search(log.read_text())
        if match:
            return proc, match.group(1)
    if proc.poll() is None:
        proc.kill()
    raise NatGanError("the studio did not start:\n" + log.read_text())


def launch_chromium(playwright, profile: Path, *, width: int = 1400, height: int = 1100):
    """A persistent headless Chromium context on a fresh profile directory."""
    return playwright.chromium.launch_persistent_context(
        str(profile), executable_path=str(CHROMIUM), args=list(CHROMIUM_FLAGS), headless=True,
        viewport={"width": width, "height": height})
