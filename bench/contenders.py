"""The three ways of moving the legacy data that the benchmark races, each into a fresh database:
raw copy-through (the floor), edu-migrate itself, and pgloader."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import psycopg
from psycopg import sql

from edu_migrate.phases.staging import LEGACY_COLUMNS

MAPPED_TABLES: tuple[str, ...] = tuple(LEGACY_COLUMNS)


@dataclass
class Measurement:
    """One run of one contender."""
    seconds: float
    peak_rss_mb: float | None = None
    phases: dict[str, float] = field(default_factory=dict)
    steps: dict[str, float] = field(default_factory=dict)
    note: str | None = None
    load_average: float = field(default_factory=lambda: os.getloadavg()[0])


def recreate_database(admin_url: str, name: str) -> None:
    """Drop and create `name`, checkpoint so no run pays for the previous one's dirty pages."""
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
            sql.Identifier(name)))
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        admin.execute("CHECKPOINT")


def legacy_ddl() -> str:
    return (resources.files("edu_migrate.legacy") / "ddl.sql").read_text(encoding="utf-8")


def raw_copy_through(source_url: str, dest_url: str,
                     tables: tuple[str, ...] = MAPPED_TABLES) -> Measurement:
    """Every table as it is (same DDL as the legacy database), binary COPY out and in, through
    one client: what moving these bytes costs at the least."""
    with psycopg.connect(dest_url, autocommit=True) as dest:
        dest.execute(legacy_ddl().encode())
    started = time.perf_counter()
    with psycopg.connect(source_url) as source, psycopg.connect(dest_url) as dest:
        for table in tables:
            out_query = sql.SQL("COPY {} TO STDOUT (FORMAT binary)").format(sql.Identifier(table))
            in_query = sql.SQL("COPY {} FROM STDIN (FORMAT binary)").format(sql.Identifier(table))
            with source.cursor().copy(out_query) as out, dest.cursor().copy(in_query) as into:
                for chunk in out:
                    into.write(chunk)
        dest.commit()
    return Measurement(time.perf_counter() - started)


# On Linux a child's ru_maxrss starts at its parent's peak (exec records the memory it replaces),
# so the bench's own peak (it generates the legacy database in-process) would count as the
# migration's. A small launcher process starts the command instead: its rusage is the command's.
_LAUNCHER = ("import os, subprocess, sys\n"
             "process = subprocess.Popen(sys.argv[2:])\n"
             "_, status, usage = os.wait4(process.pid, 0)\n"
             "with open(sys.argv[1], 'w', encoding='ascii') as report:\n"
             "    report.write(f'{usage.ru_maxrss} {os.waitstatus_to_exitcode(status)}')\n")


def run_measured(command: list[str], env: dict[str, str] | None = None,
                 log_file: Path | None = None) -> tuple[float, float, int]:
    """Run `command`; return wall seconds, its own peak resident memory in MB, and exit status."""
    with tempfile.TemporaryDirectory() as scratch:
        report = Path(scratch) / "rusage"
        started = time.perf_counter()
        with (log_file.open("wb") if log_file else open(os.devnull, "wb")) as sink:
            launcher = subprocess.run([sys.executable, "-c", _LAUNCHER, str(report), *command],
                                      stdout=sink, stderr=subprocess.STDOUT, check=False,
                                      env={**os.environ, **(env or {})})
        seconds = time.perf_counter() - started
        if not report.exists():
            return seconds, 0.0, launcher.returncode or 1
        maxrss_kb, status = report.read_text(encoding="ascii").split()
    return seconds, int(maxrss_kb) / 1024, int(status)


def edu_migrate_command() -> list[str]:
    script = Path(sys.executable).parent / "edu-migrate"
    return [str(script)] if script.exists() else [sys.executable, "-m", "edu_migrate"]


STEP_LINE = re.compile(r"INFO (step|stage) (.+?): (\d+) rows in ([0-9.]+)s")
REBUILD_LINE = re.compile(r"indexes and foreign keys rebuilt in ([0-9.]+)s")


def steps_from_log(log_dir: Path) -> dict[str, float]:
    """Seconds of each named statement, staged table and index rebuild, from the run's log."""
    steps: dict[str, float] = {}
    for log in sorted(log_dir.glob("migration_*.log")):
        for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
            if match := STEP_LINE.search(line):
                name = match[2] if match[1] == "step" else f"stage {match[2]}"
                steps[name] = steps.get(name, 0.0) + float(match[4])
            elif match := REBUILD_LINE.search(line):
                steps["rebuild indexes and foreign keys"] = float(match[1])
    return steps


def edu_migrate_all(source_url: str, target_url: str, work: Path) -> Measurement:
    """`edu-migrate migrate --all` into a fresh edu_v2 (schema applied beforehand, untimed)."""
    subprocess.run([*edu_migrate_command(), "schema", "apply", "--target", target_url],
                   check=True, capture_output=True,
                   env={**os.environ, "EDU_SOURCE_URL": source_url,
                        "EDU_LOG_DIR": str(work / "schema-logs")})
    log_dir = work / "logs"
    shutil.rmtree(log_dir, ignore_errors=True)
    seconds, rss, status = run_measured(
        [*edu_migrate_command(), "migrate", "--all", "--source", source_url,
         "--target", target_url],
        env={"EDU_LOG_DIR": str(log_dir)}, log_file=work / "migrate.out")
    if status != 0:
        tail = (work / "migrate.out").read_text(errors="replace").strip().splitlines()[-3:]
        raise RuntimeError(f"migrate --all failed ({status}): {' / '.join(tail)}")
    with psycopg.connect(target_url) as conn:
        phases = {f"phase {row[0]}": float(row[1]) for row in conn.execute(
            "SELECT phase, seconds FROM migration.phase_runs ORDER BY phase")}
    return Measurement(seconds, rss, phases, steps_from_log(log_dir))


def edu_migrate_validate(source_url: str, target_url: str, work: Path) -> Measurement:
    seconds, rss, status = run_measured(
        [*edu_migrate_command(), "validate", "--source", source_url, "--target", target_url],
        env={"EDU_LOG_DIR": str(work / "validate-logs")}, log_file=work / "validate.out")
    note = None if status == 0 else f"validate exited {status}"
    return Measurement(seconds, rss, note=note)


PGLOADER_COMMAND = """LOAD DATABASE
    FROM {source}
    INTO {target}
    INCLUDING ONLY TABLE NAMES MATCHING {tables} IN SCHEMA 'public';
"""


def pgloader_available() -> str | None:
    return shutil.which("pgloader")


def pgloader_copy(source_url: str, dest_url: str, work: Path,
                  tables: tuple[str, ...] = MAPPED_TABLES) -> Measurement:
    """pgloader PostgreSQL → PostgreSQL, the same tables as they are, with its defaults
    (it creates the tables, loads them, then builds their indexes)."""
    binary = pgloader_available()
    if binary is None:
        return Measurement(0.0, note="pgloader is not installed")
    names = ", ".join(f"'{table}'" for table in tables)
    with tempfile.NamedTemporaryFile("w", suffix=".load", dir=work, delete=False) as handle:
        handle.write(PGLOADER_COMMAND.format(source=_pgloader_url(source_url),
                                             target=_pgloader_url(dest_url), tables=names))
        command_file = handle.name
    seconds, rss, status = run_measured([binary, "--no-ssl-cert-verification", command_file],
                                        log_file=work / "pgloader.out")
    note = None
    if status != 0:
        tail = (work / "pgloader.out").read_text(errors="replace").strip().splitlines()[-2:]
        note = f"pgloader exited {status}: {' / '.join(tail)}"
    return Measurement(seconds, rss, note=note)


def _pgloader_url(url: str) -> str:
    return "pgsql://" + url.split("://", 1)[1]
