"""How a run talks: a Reporter gets the guide's lines and the progress of long steps.

The library never prints; the CLI passes a Reporter that draws progress bars on a terminal and
plain lines elsewhere. Every line also goes to the run's log file.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

log = logging.getLogger("edu_migrate")

Advance = Callable[[int], None]


class Reporter:
    """The silent default: lines and progress go to the log only."""

    def line(self, text: str) -> None:
        log.info(text)

    def warn(self, text: str) -> None:
        log.warning(text)

    def step(self, name: str, seconds: float, rows: int) -> None:
        log.info("step %s: %s rows in %.2fs", name, rows, seconds)

    @contextmanager
    def progress(self, description: str, total: int | None) -> Iterator[Advance]:
        log.info("%s: started (%s rows)", description, total if total is not None else "?")
        done = 0

        def advance(rows: int) -> None:
            nonlocal done
            done += rows

        yield advance
        log.info("%s: %s rows", description, done)


def open_run_log(log_dir: Path, command: str) -> Path:
    """Every run writes logs/migration_<timestamp>.log; returns its path."""
    log_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now().strftime("%Y%m%d_%H%M%S")
    path = log_dir / f"migration_{stamp}.log"
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    root = logging.getLogger("edu_migrate")
    root.setLevel(logging.INFO)
    for old in [h for h in root.handlers if isinstance(h, logging.FileHandler)]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.info("edu-migrate %s", command)
    return path
