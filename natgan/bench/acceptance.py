"""A time-boxed acceptance run: registered sections, each under its own cap, reported after every section.

Written for a short slot on a shared GPU node (``benchmarks/gpu_acceptance.py`` registers the sections):
the run must say where things stand even when it is cut off. So

* sections run in registration order (= priority), each with a wall-clock cap, clamped to what is left
  of the whole budget; a section that would start with too little time left is recorded as skipped;
* the cap is enforced with ``SIGALRM`` (the Python code of a section is interrupted at its next
  bytecode), and every figure a section recorded before it failed or ran out of time is kept;
* a failure in one section is recorded (error line + traceback tail) and the next section runs;
* after every section the JSON file and the markdown table are rewritten atomically, so a run killed
  from outside still leaves the report of what it finished;
* a smoke run (``smoke=True``: tiny sizes on a CPU, in CI) is not time-boxed: it checks that every
  section runs, not how fast, so neither the caps nor the budget apply (a busy CI machine must not turn
  a working section into a "timeout"), and sections see an unbounded deadline (no work is skipped).

A section is one entry: ``Section(name, run, cap_s, goals)`` where ``run(ctx)`` records figures with
:meth:`SectionContext.record` (value, unit and, where there is one, the goal it is judged against).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import shutil
import signal
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

MIN_START_S = 5.0          # a section is not started with less than this left of the budget
clock = time.monotonic     # the runner's clock (tests replace it to make budgets independent of the load)
JSON_NAME, MD_NAME = "acceptance.json", "acceptance.md"


class Terminated(BaseException):
    """SIGTERM (e.g. ``timeout`` around the whole run): the running section is recorded and the run ends."""


def _on_sigterm(signum, frame):
    raise Terminated("terminated (SIGTERM)")


class SectionTimeout(BaseException):
    """Raised inside a section when its cap is reached (a BaseException, so that a section's own
    ``except Exception`` around one measurement cannot swallow it)."""


@dataclass
class Figure:
    """One measured number (or correctness verdict) and the goal it is judged against, if any."""

    name: str
    value: float | str | None
    unit: str = ""
    goal: str = ""                 # e.g. ">= 100 img/s"; empty: reported for information
    passed: bool | None = None     # None when there is no goal
    note: str = ""


@dataclass
class Section:
    """A registered part of the run: ``run(ctx)`` measures; ``cap_s`` bounds it; ``goals`` says what it checks."""

    name: str
    run: Callable[["SectionContext"], None]
    cap_s: float
    goals: tuple[str, ...] = ()


@dataclass
class SectionResult:
    name: str
    status: str = "pending"        # passed | failed | error | timeout | terminated | skipped
    cap_s: float = 0.0
    seconds: float = 0.0
    goals: list[str] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    error: str = ""
    traceback: str = ""


class SectionContext:
    """What a section sees: the device, smoke mode, its deadline, a work folder, and the recorders."""

    def __init__(self, result: SectionResult, *, device: Any, smoke: bool, deadline: float, workdir: Path,
                 options: dict[str, Any], out_dir: Path | None = None):
        self.result = result
        self.out_dir = out_dir        # the report folder: small files worth keeping (logs) go here
        self.device = device
        self.smoke = smoke
        self.deadline = deadline
        self.workdir = workdir
        self.options = options

    def remaining(self) -> float:
        """Seconds left before the cap (``inf`` in a smoke run, which has no caps)."""
        return self.deadline - clock()

    def child_timeout(self, margin_s: float = 3.0) -> float | None:
        """Timeout for a child process started by the section: what is left minus ``margin_s`` (at least
        1 s), or None (wait as long as it takes) when the run is not time-boxed."""
        left = self.remaining()
        return None if left == float("inf") else max(1.0, left - margin_s)

    def record(self, name: str, value: float | str | None, unit: str = "", *, at_least: float | None = None,
               at_most: float | None = None, note: str = "") -> Figure:
        """Record a figure; with ``at_least``/``at_most`` it is judged (a missing value fails its goal)."""
        goal, passed = "", None
        if at_least is not None or at_most is not None:
            parts = ([f">= {_fmt(at_least)}"] if at_least is not None else []) + \
                    ([f"<= {_fmt(at_most)}"] if at_most is not None else [])
            goal = " and ".join(parts) + (f" {unit}" if unit else "")
            number = value if isinstance(value, (int, float)) else None
            passed = number is not None and (at_least is None or number >= at_least) and \
                (at_most is None or number <= at_most)
        fig = Figure(name, _round(value), unit, goal, passed, note)
        self.result.figures.append(fig)
        return fig

    def check(self, name: str, ok: bool, detail: str = "") -> Figure:
        """A correctness verdict (pass/fail) with what was compared."""
        fig = Figure(name, "pass" if ok else "FAIL", "", "pass", bool(ok), detail)
        self.result.figures.append(fig)
        return fig

    def note(self, text: str) -> None:
        self.result.notes.append(text)

    def time_left_for(self, seconds: float) -> bool:
        """True when ``seconds`` more fit before the deadline; otherwise a note says what was not reached."""
        return self.remaining() >= seconds


def _round(value):
    if isinstance(value, float):
        return float(f"{value:.4g}") if abs(value) < 1e4 else round(value, 1)
    return value


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{_round(float(value)):g}"


def _status(result: SectionResult) -> str:
    judged = [f.passed for f in result.figures if f.passed is not None]
    return "failed" if any(p is False for p in judged) else "passed"


class _Alarm:
    """``SIGALRM`` after ``seconds``, raising :class:`SectionTimeout` in the main thread."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.previous = None

    def _fire(self, signum, frame):
        raise SectionTimeout(f"cap of {self.seconds:.0f} s reached")

    def __enter__(self):
        self.previous = signal.signal(signal.SIGALRM, self._fire)
        signal.setitimer(signal.ITIMER_REAL, max(self.seconds, 0.01))
        return self

    def __exit__(self, *exc):
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, self.previous or signal.SIG_DFL)
        return False


def _atomic_write(path: Path, text: str) -> None:
    from natgan.fsutil import atomic_write_text

    atomic_write_text(path, text)


def run_sections(sections: list[Section], *, out_dir: Path, budget_s: float, device: Any = "cpu",
                 smoke: bool = False, machine: dict[str, Any] | None = None, options: dict[str, Any] | None = None,
                 cleanup: Callable[[], None] | None = None, log: Callable[[str], None] | None = None,
                 work_root: Path | None = None) -> dict:
    """Run ``sections`` in order within ``budget_s`` seconds; write the report after each; return it.

    Sections' scratch files (datasets, PNGs) go under ``work_root``, by default a temporary folder that is
    removed at the end, so the report folder holds only what is worth copying back from a node.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    scratch = Path(work_root) if work_root else Path(tempfile.mkdtemp(prefix="natgan-acceptance-"))
    try:
        return _run(sections, out_dir, scratch, budget_s=budget_s, device=device, smoke=smoke, machine=machine,
                    options=options, cleanup=cleanup, log=log)
    finally:
        if work_root is None:
            shutil.rmtree(scratch, ignore_errors=True)


def _run(sections, out_dir: Path, scratch: Path, *, budget_s, device, smoke, machine, options, cleanup, log) -> dict:
    start = clock()
    report: dict[str, Any] = {
        "started": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine or {}, "device": str(device), "smoke": smoke, "budget_s": budget_s,
        "sections": [], "summary": {},
    }
    results = [SectionResult(s.name, cap_s=0.0 if smoke else s.cap_s, goals=list(s.goals)) for s in sections]
    previous_term = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        _run_all(sections, results, report, out_dir, scratch, start=start, budget_s=budget_s, device=device,
                 smoke=smoke, options=options, cleanup=cleanup, log=log)
    finally:
        signal.signal(signal.SIGTERM, previous_term)
    return report


def _run_all(sections, results, report, out_dir, scratch, *, start, budget_s, device, smoke, options, cleanup,
             log) -> None:
    terminated = False
    for section, result in zip(sections, results):
        left = float("inf") if smoke else budget_s - (clock() - start)
        cap = min(result.cap_s, left) if not smoke else float("inf")
        if terminated:
            result.status = "skipped"
            result.notes.append("not started: the run was terminated")
        elif left < MIN_START_S:
            result.status = "skipped"
            result.notes.append(f"not started: {max(left, 0):.0f} s of the {budget_s:.0f} s budget left")
        else:
            result.cap_s = 0.0 if smoke else round(cap, 1)
            if log:
                log(f"[{section.name}] " + ("smoke: no cap" if smoke else f"up to {cap:.0f} s"))
            workdir = scratch / section.name
            workdir.mkdir(parents=True, exist_ok=True)
            ctx = SectionContext(result, device=device, smoke=smoke, deadline=clock() + cap,
                                 workdir=workdir, options=options or {}, out_dir=out_dir)
            t0 = clock()
            try:
                with _Alarm(cap) if not smoke else contextlib.nullcontext():
                    section.run(ctx)
                result.status = _status(result)
            except SectionTimeout as exc:
                result.status, result.error = "timeout", str(exc)
            except Terminated as exc:
                result.status, result.error = "terminated", str(exc)
                terminated = True
            except BaseException as exc:  # noqa: BLE001 - record and carry on (KeyboardInterrupt re-raised below)
                if isinstance(exc, KeyboardInterrupt):
                    raise
                lines = str(exc).strip().splitlines()
                result.status = "error"
                result.error = f"{type(exc).__name__}: {lines[0] if lines else ''}".rstrip(": ")
                result.traceback = "".join(traceback.format_exc().splitlines(True)[-12:])
            finally:
                result.seconds = round(clock() - t0, 2)
                if cleanup:
                    try:
                        cleanup()
                    except Exception as exc:  # noqa: BLE001 - never lose the report to the tidy-up
                        result.notes.append(f"cleanup after the section failed: {type(exc).__name__}: {exc}")
            if log:
                log(f"[{section.name}] {result.status} in {result.seconds:.1f} s")
        report["sections"] = [asdict(r) for r in results if r.status != "pending"]
        report["elapsed_s"] = round(clock() - start, 1)
        report["summary"] = _summary(results)
        write_report(report, out_dir)


def _summary(results: list[SectionResult]) -> dict[str, Any]:
    figures = [f for r in results for f in r.figures]
    return {
        "sections": {r.name: r.status for r in results},
        "goals_passed": sum(f.passed is True for f in figures),
        "goals_failed": sum(f.passed is False for f in figures),
        "ok": all(r.status == "passed" for r in results),
    }


def write_report(report: dict, out_dir: Path) -> None:
    _atomic_write(out_dir / JSON_NAME, json.dumps(report, indent=2, default=str) + "\n")
    _atomic_write(out_dir / MD_NAME, markdown(report))


def _cell(value) -> str:
    text = "—" if value is None or value == "" else str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def markdown(report: dict) -> str:
    """The report as one markdown table per section: figure, value, goal, pass/fail."""
    machine = report.get("machine", {})
    desc = ", ".join(f"{k} {v}" for k, v in machine.items())
    lines = [f"# nat-gan acceptance ({'smoke, ' if report['smoke'] else ''}{report['device']})", "",
             f"Started {report['started']}; "
             f"{'not time-boxed (smoke)' if report['smoke'] else 'budget %.0f s' % report['budget_s']}; elapsed "
             f"{report.get('elapsed_s', 0):.0f} s. {desc}", ""]
    summary = report.get("summary", {})
    lines += [f"Goals passed: {summary.get('goals_passed', 0)}, failed: {summary.get('goals_failed', 0)}.", ""]
    for s in report["sections"]:
        cap = f"of a {s['cap_s']:.0f} s cap" if s["cap_s"] else "smoke, no cap"
        head = f"## {s['name']}: {s['status']} ({s['seconds']:.0f} s {cap})"
        lines += [head, ""]
        if s["goals"]:
            lines += [f"Checks: {'; '.join(s['goals'])}.", ""]
        if s["error"]:
            lines += [f"**{s['status']}**: {_cell(s['error'])}", ""]
        if s["figures"]:
            lines += ["| figure | value | goal | result | note |", "|---|---|---|---|---|"]
            for f in s["figures"]:
                verdict = "" if f["passed"] is None else ("pass" if f["passed"] else "**FAIL**")
                bare = f["unit"] in ("", None) or f["value"] in (None, "")
                value = f["value"] if bare else f"{f['value']} {f['unit']}"
                lines.append(f"| {_cell(f['name'])} | {_cell(value)} | {_cell(f['goal'])} | {_cell(verdict)} | "
                             f"{_cell(f['note'])} |")
            lines.append("")
        for n in s["notes"]:
            lines.append(f"- {n}")
        if s["notes"]:
            lines.append("")
    return "\n".join(lines)
