"""A rich progress bar on stderr with images/s and ETA (stdout stays clean for ``--json``)."""

from __future__ import annotations

from typing import Callable

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, ProgressColumn, Task, TextColumn,
                           TimeElapsedColumn, TimeRemainingColumn)
from rich.text import Text

ProgressCallback = Callable[[int, int], None]  # (done, total)

_stderr = Console(stderr=True, highlight=False)


class _RateColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:7.1f} img/s" if speed else "      - img/s", style="progress.data.speed")


class ProgressBar:
    """``with ProgressBar(total, "prepare", enabled) as bar: bar.advance()``; a no-op when disabled."""

    def __init__(self, total: int, description: str, enabled: bool = True,
                 callback: ProgressCallback | None = None):
        self.total, self.done = total, 0
        self.callback = callback
        self._progress = None
        if enabled:
            self._progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                      _RateColumn(), TimeElapsedColumn(), TextColumn("ETA"),
                                      TimeRemainingColumn(), console=_stderr, transient=False,
                                      speed_estimate_period=10.0)
            self._task = self._progress.add_task(description, total=total)

    def __enter__(self) -> "ProgressBar":
        if self._progress is not None:
            self._progress.start()
        return self

    def advance(self, n: int = 1) -> None:
        self.done += n
        if self._progress is not None:
            self._progress.update(self._task, advance=n)
        if self.callback is not None:
            self.callback(self.done, self.total)

    def set_total(self, total: int) -> None:
        self.total = total
        if self._progress is not None:
            self._progress.update(self._task, total=total)

    def __exit__(self, *exc) -> None:
        if self._progress is not None:
            self._progress.stop()


class FirstBatchEstimate:
    """Calls ``report({"total", "done", "images_per_s", "eta_s"})`` once, after the first advance that leaves
    work to do: the rate of that first batch, extrapolated to the rest.

    Why: a long evaluation (50,000 images on a CPU is hours) should say so before the user waits on it; the
    progress bar's own ETA needs a terminal and is hidden by ``--quiet``. The first batch carries warm-up
    costs, so the estimate errs long."""

    def __init__(self, total: int, report: Callable[[dict], None], clock: Callable[[], float] | None = None):
        import time

        self.total, self.report = total, report
        self.clock = clock or time.perf_counter
        self.start = self.clock()
        self.done = 0
        self.reported = False

    def advance(self, n: int = 1) -> None:
        self.done += n
        if self.reported or self.done >= self.total or self.done <= 0:
            return
        self.reported = True
        rate = self.done / max(self.clock() - self.start, 1e-9)
        self.report({"total": self.total, "done": self.done, "images_per_s": rate,
                     "eta_s": (self.total - self.done) / rate})


def format_duration(seconds: float) -> str:
    """``3725`` -> ``"1 h 02 min"``, ``95`` -> ``"1 min 35 s"``, ``4.2`` -> ``"4 s"`` (for estimates)."""
    seconds = max(0, int(round(seconds)))
    if seconds >= 3600:
        return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
    if seconds >= 60:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds} s"
