"""Section ``gpu_tests``: the repository's ``pytest -m gpu`` tests in a child process that ends before the cap."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from natgan.bench.acceptance import SectionContext

from gpu_sections.common import ROOT, last_line

PYTEST_LINE = re.compile(r"^(\S+::\S+) (PASSED|FAILED|SKIPPED|ERROR|XFAIL|XPASS)\b")


def gpu_tests_section(ctx: SectionContext) -> None:
    """The repository's GPU tests (``pytest -m gpu``) in a child process that ends before the cap.

    Results are read from pytest's verbose lines, so a run killed at the cap still reports every test it
    finished (and names the failed ones); the whole log is kept next to the report as pytest-gpu.log.
    """
    targets = ["tests/test_na_gpu.py"] if ctx.smoke else ["tests"]
    cmd = [sys.executable, "-m", "pytest", "-v", "-m", "gpu", "-p", "no:cacheprovider",
           "-o", "console_output_style=classic",
           *targets]
    pythonpath = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env = {**os.environ, "PYTHONPATH": pythonpath}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    killed = False
    try:
        out, _ = proc.communicate(timeout=ctx.child_timeout())
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        killed = True
    finally:
        if proc.poll() is None:  # the section's own alarm fired while waiting: leave no child behind
            proc.kill()
            proc.wait()
    (ctx.out_dir or ctx.workdir).joinpath("pytest-gpu.log").write_text(out)  # comes back with the report
    outcomes = {}
    for line in out.splitlines():
        match = PYTEST_LINE.match(line)
        if match:
            outcomes[match.group(1)] = match.group(2)
    failed = [t for t, o in outcomes.items() if o in ("FAILED", "ERROR")]
    ctx.record("GPU tests passed", sum(o in ("PASSED", "XFAIL") for o in outcomes.values()))
    ctx.record("GPU tests skipped", sum(o == "SKIPPED" for o in outcomes.values()),
               note="all of them without CUDA" if ctx.device.type == "cpu" else "")
    ctx.record("GPU tests failed", len(failed), at_most=0,
               note=", ".join(t.split("::", 1)[-1] for t in failed[:6]) + (" ..." if len(failed) > 6 else ""))
    ctx.check("pytest -m gpu finished", not killed and bool(outcomes),
              f"killed at the cap after {len(outcomes)} tests" if killed
              else f"exit {proc.returncode}: {last_line(out)}")
