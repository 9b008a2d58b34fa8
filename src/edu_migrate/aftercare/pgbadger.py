"""pgBadger for edu_v2: the logging settings its analysis needs, and its HTML report.

`monitoring logging` proposes the settings (and `--apply` sets them as `tune --apply` does: the
right to set each checked first, then ALTER SYSTEM and a reload; none needs a restart).
`monitoring pgbadger` renders the report from the server's log when the log is on this
machine, and says how to do it on the server when it is not.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from edu_migrate.aftercare.tune import Advice, _on_this_machine, advice_against, apply_changes
from edu_migrate.errors import ConnectionFailed, MigrationError, PreconditionFailed
from edu_migrate.pg.connect import connect
from edu_migrate.pg.urls import masked

# pgBadger's recommended prefix for a stderr log: time, process and line, then who and where.
LOG_LINE_PREFIX = "%t [%p]: [%l-1] user=%u,db=%d,app=%a,client=%h "
DEFAULT_MIN_DURATION_MS = 250
PGBADGER_TIMEOUT_SECONDS = 1800
INSTALL_HINT = "install it (Debian: apt-get install pgbadger)"


def logging_settings(min_duration_ms: int = DEFAULT_MIN_DURATION_MS
                     ) -> list[tuple[str, str, str]]:
    """(parameter, value, why): what pgBadger reads from the log."""
    if min_duration_ms < 0:
        raise MigrationError("--min-duration must be 0 or more milliseconds",
                             "e.g. --min-duration 250 (0 logs every statement)")
    return [
        ("log_min_duration_statement", str(min_duration_ms),
         "statements slower than this many ms are logged with their duration: pgBadger's "
         "slowest and most frequent queries (0 logs every statement: for a short survey)"),
        ("log_line_prefix", LOG_LINE_PREFIX,
         "time, process, user, database, application and client on every line: how pgBadger "
         "groups them"),
        ("log_checkpoints", "on", "each checkpoint, with its duration and buffers written"),
        ("log_lock_waits", "on", "waits on a lock longer than deadlock_timeout"),
        ("log_temp_files", "0", "every temporary file and its size: sorts and hashes that "
         "outgrow work_mem"),
        ("log_autovacuum_min_duration", "0", "every autovacuum and autoanalyse run"),
        ("lc_messages", "C", "messages in English, the only language pgBadger reads"),
    ]


@dataclass
class LoggingReport:
    server: str | None
    advice: list[Advice]
    applied: list[str] = field(default_factory=list)

    @property
    def changes(self) -> list[Advice]:
        return [a for a in self.advice if a.differs]

    def to_dict(self) -> dict[str, Any]:
        return {"server": self.server, "advice": [asdict(a) for a in self.advice],
                "applied": self.applied}


def advise_logging(url: str, min_duration_ms: int = DEFAULT_MIN_DURATION_MS) -> LoggingReport:
    """The settings against the server's current values (advice alone when it is not
    reachable)."""
    wanted = logging_settings(min_duration_ms)
    try:
        with connect(url, purpose="target", read_only=True) as conn:
            return LoggingReport(masked(url), advice_against(conn, wanted))
    except ConnectionFailed:
        return LoggingReport(None, advice_against(None, wanted))


def apply_logging(url: str, report: LoggingReport) -> list[str]:
    if report.server is None:
        raise PreconditionFailed("--apply needs the server, which is not reachable",
                                 "check --target")
    report.applied = apply_changes(url, report.changes)
    return report.applied


@dataclass
class BadgerReport:
    log: str
    html: str
    prefix: str
    bytes: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _pgbadger() -> str:
    found = shutil.which("pgbadger")
    if found is None:
        raise PreconditionFailed("pgbadger is not installed", INSTALL_HINT)
    return found


def _how_on_the_server(prefix: str) -> str:
    return (f"copy the log here and run `edu-migrate monitoring pgbadger --log FILE`, or run "
            f"on the server: pgbadger --prefix '{prefix}' -o report.html <its log file>")


def _server_log(conn: psycopg.Connection, url: str, prefix: str,
                fallback: Path | None) -> Path:
    """The log file the server writes now, when it is on this machine."""
    if not _on_this_machine(conn, url):
        raise PreconditionFailed("the server's log is not on this machine",
                                 _how_on_the_server(prefix))
    row = conn.execute("SELECT pg_current_logfile(), current_setting('data_directory')"
                       ).fetchone()
    if row is not None and row[0]:
        log = Path(str(row[0]))
        return log if log.is_absolute() else Path(str(row[1])) / log
    if fallback is not None:
        return fallback
    raise PreconditionFailed(
        "the server logs to standard error (logging_collector is off), whose file it does not "
        "know", "give --log FILE: the file its standard error goes to (Debian: "
        "/var/log/postgresql/postgresql-15-main.log)")


def render_report(url: str | None, out: Path, *, log: Path | None = None,
                  prefix: str | None = None, fallback_log: Path | None = None,
                  timeout: float = PGBADGER_TIMEOUT_SECONDS) -> BadgerReport:
    """pgBadger's HTML report of the server's log (`log`, else the one the server at `url`
    writes, else `fallback_log`: the embedded server's) into `out`. What the user gave is
    checked before pgbadger is looked for: a wrong --log says so on any machine."""
    if log is None or prefix is None:
        if url is None:
            raise PreconditionFailed("no log and no server to ask for it", "give --log FILE")
        try:
            with connect(url, purpose="target", read_only=True) as conn:
                row = conn.execute("SELECT current_setting('log_line_prefix')").fetchone()
                prefix = prefix or (str(row[0]) if row else LOG_LINE_PREFIX)
                if log is None:
                    log = _server_log(conn, url, prefix, fallback_log)
        except ConnectionFailed:
            if log is None:
                raise
            prefix = prefix or LOG_LINE_PREFIX
    assert log is not None and prefix is not None
    if not log.is_file():
        raise PreconditionFailed(f"the log {log} is not a file here", _how_on_the_server(prefix))
    if not out.resolve().parent.is_dir():
        raise MigrationError(f"cannot write {out}: its folder does not exist",
                             "create the folder or choose another path")
    if out.suffix.lower() not in (".html", ".htm"):
        raise MigrationError(f"{out} does not end in .html", "e.g. --out pgbadger.html")
    binary = _pgbadger()
    try:
        done = subprocess.run([binary, "--quiet", "--prefix", prefix, "--outfile", str(out),
                               str(log)], capture_output=True, text=True, timeout=timeout,
                              check=False)
    except subprocess.TimeoutExpired as exc:
        raise MigrationError(f"pgbadger did not finish within {timeout:.0f} s",
                             "run it on a part of the log (its --begin and --end)") from exc
    if done.returncode != 0 or not out.is_file():
        first = (done.stderr.strip() or done.stdout.strip() or "no output").splitlines()[0]
        raise MigrationError(f"pgbadger failed on {log}: {first}",
                             "check that --prefix matches the server's log_line_prefix")
    return BadgerReport(str(log), str(out), prefix, out.stat().st_size)
