"""How a run talks: a Reporter gets the guide's lines and the progress of long steps.

The library never prints; the CLI passes a Reporter that draws progress bars on a terminal and
plain lines elsewhere. Every line also goes to the run's log file.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

from edu_migrate.pg.urls import redacted

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


class _RedactingFormatter(logging.Formatter):
    """Every line of the run log passes through `redacted`: a password that some message
    (a program's output, a driver's error) quotes never reaches the file."""

    def format(self, record: logging.LogRecord) -> str:
        return redacted(super().format(record))


def _owner_only_folder(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    if folder.stat().st_uid == os.geteuid():
        folder.chmod(0o700)


def open_run_log(log_dir: Path, command: str) -> Path:
    """Every run writes logs/migration_<timestamp>.log, readable by its owner only (the folder
    too); returns its path."""
    _owner_only_folder(log_dir)
    stamp = datetime.now().strftime("%Y%m%d_%H%M%S")
    path = log_dir / f"migration_{stamp}.log"
    # Created 0600 before the handler opens it: never a moment readable by others.
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600))
    path.chmod(0o600)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(_RedactingFormatter("%(asctime)s %(levelname)s %(message)s"))
    root = logging.getLogger("edu_migrate")
    root.setLevel(logging.INFO)
    for old in [h for h in root.handlers if isinstance(h, logging.FileHandler)]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.info("edu-migrate %s", command)
    return path


def loggable_command(argv: list[str], secret_options: frozenset[str]) -> str:
    """A command line fit for the log: the value of each option in `secret_options` (given as
    `--opt VALUE` or `--opt=VALUE`) keeps what precedes its first colon (a user name) and loses
    the rest; every other argument is `redacted` on its own, so that a password with spaces in
    a URL is found whole."""
    shown: list[str] = []
    hide_next = False
    for arg in argv:
        option, equals, value = arg.partition("=")
        if hide_next:
            shown.append(_hidden(arg))
        elif equals and option in secret_options:
            shown.append(f"{option}={_hidden(value)}")
        else:
            shown.append(redacted(arg))
        hide_next = arg in secret_options
    return " ".join(shown)


def _hidden(value: str) -> str:
    user, colon, _ = value.partition(":")
    return f"{user}:***" if colon else "***"
