"""Running the real CLI as a child process against test databases, stopping it at a chosen point
of a phase, and comparing what the target holds with an uninterrupted run's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import psycopg
from psycopg import sql

from edu_migrate.config import Settings
from edu_migrate.phases.runner import PHASES
from tests.integration.helpers import table_digest

BUSINESS_TABLES = ("users", "persons", "organization_units", "academic_terms", "students",
                   "staff_members", "courses", "course_offerings", "course_enrollments",
                   "assessments", "grades")
# What a run leaves in edu_v2: the business tables and the migration's own records of rows.
RESULT_TABLES = (*BUSINESS_TABLES, "migration.crosswalk", "migration.rejected_rows",
                 "migration.repairs")

# Where a phase can be held, so that it is stopped mid-way, deterministically: the statement
# that waits for a lock the test holds, and that lock.
#   staging: the phase recreates its staged copy of a legacy table (before its transaction);
#   start:   the phase's transaction empties the tables it writes (its first write);
#   commit:  everything is loaded and the phase marked done, one statement before COMMIT.


def hold_target(point: str, phase: int) -> tuple[str, str]:
    """The table to lock in the target and the lock mode that stops `phase` at `point`."""
    if point == "staging":
        return f"stage.{PHASES[phase].reads[0]}", "ACCESS SHARE"
    if point == "start":
        return PHASES[phase].writes[0], "ACCESS SHARE"
    return "migration.run_log", "SHARE"


def result_digests(target_url: str) -> dict[str, str]:
    return {table: table_digest(target_url, table) for table in RESULT_TABLES}


def database_digest(url: str) -> dict[str, str]:
    """Every table of a database (all schemas but the system's), and the list of its relations."""
    with psycopg.connect(url) as conn:
        tables = [f"{s}.{t}" for s, t in conn.execute(
            "SELECT schemaname, tablename FROM pg_tables WHERE schemaname NOT IN "
            "('pg_catalog', 'information_schema') ORDER BY 1, 2").fetchall()]
        relations = conn.execute(
            "SELECT string_agg(n.nspname || '.' || c.relname || ':' || c.relkind::text, ',' "
            "ORDER BY 1) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')").fetchone()
    assert tables, "the source is empty"
    return {"relations": str(relations[0] if relations else ""),
            **{table: table_digest(url, table) for table in tables}}


def phase_statuses(target_url: str) -> dict[int, str]:
    with psycopg.connect(target_url) as conn:
        return {int(p): str(s) for p, s in conn.execute(
            "SELECT phase, status FROM migration.phase_runs")}


def child_env(settings: Settings, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EDU_", "PG"))}
    env |= {"EDU_LOG_DIR": str(settings.log_dir), "EDU_BACKUP_DIR": str(settings.backup_dir),
            "EDU_MIGRATE_HOME": str(settings.home)}
    return env | (extra or {})


def url_args(settings: Settings) -> list[str]:
    return ["--source", str(settings.source_url), "--target", str(settings.target_url)]


def cli(settings: Settings, *args: str, env: dict[str, str] | None = None,
        input_text: str | None = None) -> subprocess.CompletedProcess[str]:
    settings.log_dir.mkdir(parents=True, exist_ok=True)
    return subprocess.run([sys.executable, "-m", "edu_migrate", *args], capture_output=True,
                          text=True, env=child_env(settings, env), timeout=300, check=False,
                          input=input_text, cwd=settings.log_dir)


def start_cli(settings: Settings, *args: str,
              env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    settings.log_dir.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen([sys.executable, "-m", "edu_migrate", *args], text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=child_env(settings, env), cwd=settings.log_dir)


def status_json(settings: Settings) -> dict[str, object]:
    result = cli(settings, "status", "--target", str(settings.target_url), "--json",
                 str(settings.log_dir / "status.json"))
    assert result.returncode == 0, result.stderr
    data: dict[str, object] = json.loads((settings.log_dir / "status.json").read_text())
    return data


def wait_for(condition: Callable[[], object], what: str, timeout: float = 60) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@dataclass(frozen=True)
class Backend:
    pid: int
    query: str


def waiting_backend(admin_url: str, child_pid: int) -> Backend | None:
    """The child's target session that waits for a table's lock (the one a test holds), if
    there is one. Only a relation lock: the child's background sessions (staging and parsing
    the marks in two sessions each) also wait, for moments, on the lock that extends the table
    they write, and terminating one of those would leave the phase waiting for good."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT pid, query FROM pg_stat_activity WHERE application_name = %s "
            "AND wait_event_type = 'Lock' AND wait_event = 'relation'",
            [f"edu-migrate target pid={child_pid}"]).fetchone()
    return Backend(int(row[0]), str(row[1])) if row else None


def sessions_of(admin_url: str, child_pid: int) -> int:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name "
                           "LIKE %s", [f"edu-migrate % pid={child_pid}"]).fetchone()
    return int(row[0]) if row else 0


@contextmanager
def holding(url: str, table: str, mode: str) -> Iterator[None]:
    """Hold a lock on a table of `url` until the block ends."""
    with psycopg.connect(url) as conn:
        conn.execute(sql.SQL("LOCK TABLE {} IN {} MODE").format(
            sql.Identifier(*table.split(".")), sql.SQL(mode)))
        try:
            yield
        finally:
            conn.rollback()


def one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: "), stderr
    assert "Traceback" not in stderr
    return lines[0]


def admin_of(settings: Settings) -> str:
    from edu_migrate.pg.urls import with_database

    return with_database(str(settings.target_url), "postgres")
