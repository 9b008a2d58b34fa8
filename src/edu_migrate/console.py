"""The terminal side of a Reporter: rich progress bars on a terminal, plain lines elsewhere."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from edu_migrate.runlog import Advance, Reporter, log


class ConsoleReporter(Reporter):
    def __init__(self, console: Console, *, quiet: bool = False) -> None:
        self.console = console
        self.quiet = quiet

    def line(self, text: str) -> None:
        log.info(text)
        if not self.quiet:
            self.console.print(text, markup=False, highlight=False)

    def warn(self, text: str) -> None:
        log.warning(text)
        self.console.print(f"! {text}", style="yellow", markup=False, highlight=False)

    @contextmanager
    def progress(self, description: str, total: int | None) -> Iterator[Advance]:
        started = time.perf_counter()
        done = 0
        if self.quiet or not self.console.is_terminal:
            def count(rows: int) -> None:
                nonlocal done
                done += rows

            yield count
            log.info("%s: %s rows in %.2fs", description, done, time.perf_counter() - started)
            return
        columns = [SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                   MofNCompleteColumn(), TextColumn("{task.fields[rate]}"),
                   TimeElapsedColumn(), TimeRemainingColumn()]
        with Progress(*columns, console=self.console, transient=True) as bar:
            task = bar.add_task(description, total=total, rate="")

            def advance(rows: int) -> None:
                nonlocal done
                done += rows
                elapsed = max(time.perf_counter() - started, 1e-6)
                bar.update(task, advance=rows, rate=f"{done / elapsed:,.0f} rows/s")

            yield advance
        log.info("%s: %s rows in %.2fs", description, done, time.perf_counter() - started)
