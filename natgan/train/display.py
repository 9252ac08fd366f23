"""Live training display: a rich progress bar on a terminal, plain log lines everywhere else."""

from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn


def format_stats(stats: dict[str, float]) -> str:
    return "  ".join(f"{k} {v:.4g}" for k, v in stats.items())


class Display:
    """``update`` every step (cheap); it redraws the bar and prints/appends a line every ``log_every``."""

    def __init__(self, *, total: int, start: int, log_every: int, console: Console | None = None,
                 log_file: Path | None = None, enabled: bool = True):
        self.console = console or Console()
        self.total, self.log_every, self.enabled = total, log_every, enabled
        self.log_file = log_file
        self._log_checked = False
        self.live = enabled and self.console.is_terminal
        self._progress: Progress | None = None
        self._task = None
        self._start = start
        if self.live:
            self._progress = Progress(
                TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                TimeRemainingColumn(), console=self.console, transient=False)
            self._task = self._progress.add_task("train", total=total, completed=start, info="")
            self._progress.start()

    def update(self, step: int, kimg: float, img_per_s: float, stats: dict[str, float] | None) -> None:
        info = f"kimg {kimg:.1f}  {img_per_s:.1f} img/s"
        if stats:
            info += "  " + format_stats(stats)
        if self._progress is not None:
            self._progress.update(self._task, completed=step, info=info)
        if stats is not None:
            line = f"step {step}/{self.total}  {info}"
            if self.enabled and not self.live:
                self.console.print(line, highlight=False, markup=False)
            self.write_log(line)

    def message(self, text: str) -> None:
        if self.enabled:
            self.console.print(text, highlight=False)
        self.write_log(text)

    def write_log(self, line: str) -> None:
        if self.log_file is not None:
            if not self._log_checked:  # appended to, never replaced: refuse a link, FIFO or device there
                from natgan.fsutil import refuse_unsafe_target

                refuse_unsafe_target(self.log_file)
                self._log_checked = True
            with open(self.log_file, "a") as fh:
                fh.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')}  {line}\n")

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


