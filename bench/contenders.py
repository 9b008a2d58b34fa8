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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from urllib.parse import quote

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from edu_migrate.phases.staging import LEGACY_COLUMNS

MAPPED_TABLES: tuple[str, ...] = tuple(LEGACY_COLUMNS)


@dataclass
class Measurement:
    """One run of one contender. CPU seconds are user + system: the client's is the command's
    own (its rusage), the server's is what the server's processes used meanwhile."""
    seconds: float
    peak_rss_mb: float | None = None
    phases: dict[str, float] = field(default_factory=dict)
    steps: dict[str, float] = field(default_factory=dict)
    phase_steps: dict[str, dict[str, float]] = field(default_factory=dict)
    note: str | None = None
    load_average: float = field(default_factory=lambda: os.getloadavg()[0])
    client_cpu_seconds: float | None = None
    server_cpu_seconds: float | None = None


def recreate_database(admin_url: str, name: str) -> None:
    """Drop and create `name`, checkpoint so no run pays for the previous one's dirty pages."""
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
            sql.Identifier(name)))
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        admin.execute("CHECKPOINT")


def legacy_ddl() -> str:
    return (resources.files("edu_migrate.legacy") / "ddl.sql").read_text(encoding="utf-8")


def copy_tables(source: psycopg.Connection, dest: psycopg.Connection,
                tables: Sequence[str]) -> None:
    """Binary COPY of each table, as it is, from one connection into the same table of another."""
    for table in tables:
        out_query = sql.SQL("COPY {} TO STDOUT (FORMAT binary)").format(sql.Identifier(table))
        in_query = sql.SQL("COPY {} FROM STDIN (FORMAT binary)").format(sql.Identifier(table))
        with source.cursor().copy(out_query) as out, dest.cursor().copy(in_query) as into:
            for chunk in out:
                into.write(chunk)


def raw_copy_through(source_url: str, dest_url: str,
                     tables: tuple[str, ...] = MAPPED_TABLES,
                     server_cpu: Callable[[], float] | None = None) -> Measurement:
    """Every table as it is (same DDL as the legacy database), binary COPY out and in, through
    one client: what moving these bytes costs at the least."""
    with psycopg.connect(dest_url, autocommit=True) as dest:
        dest.execute(legacy_ddl().encode())
    server_before = server_cpu() if server_cpu else None
    client_before = time.process_time()
    started = time.perf_counter()
    with psycopg.connect(source_url) as source, psycopg.connect(dest_url) as dest:
        copy_tables(source, dest, tables)
        dest.commit()
    seconds = time.perf_counter() - started
    return Measurement(seconds, client_cpu_seconds=time.process_time() - client_before,
                       server_cpu_seconds=server_cpu() - server_before
                       if server_cpu and server_before is not None else None)


# On Linux a child's ru_maxrss starts at its parent's peak (exec records the memory it replaces),
# so the bench's own peak (it generates the legacy database in-process) would count as the
# migration's. A small launcher process starts the command instead: its rusage is the command's.
_LAUNCHER = ("import os, subprocess, sys\n"
             "process = subprocess.Popen(sys.argv[2:])\n"
             "_, status, usage = os.wait4(process.pid, 0)\n"
             "with open(sys.argv[1], 'w', encoding='ascii') as report:\n"
             "    report.write(f'{usage.ru_maxrss} {os.waitstatus_to_exitcode(status)} '\n"
             "                 f'{usage.ru_utime + usage.ru_stime}')\n")


@dataclass(frozen=True)
class Usage:
    """What one command cost: wall seconds, its own peak RSS, its exit status, and the CPU
    seconds of the command and of the server it talked to."""
    seconds: float
    peak_rss_mb: float
    status: int
    client_cpu_seconds: float | None = None
    server_cpu_seconds: float | None = None


def run_measured(command: list[str], env: dict[str, str] | None = None,
                 log_file: Path | None = None,
                 server_cpu: Callable[[], float] | None = None) -> Usage:
    """Run `command`; `server_cpu`, when given, reads the server's CPU seconds so far and is
    read before and after."""
    with tempfile.TemporaryDirectory() as scratch:
        report = Path(scratch) / "rusage"
        server_before = server_cpu() if server_cpu else None
        started = time.perf_counter()
        with (log_file.open("wb") if log_file else open(os.devnull, "wb")) as sink:
            launcher = subprocess.run([sys.executable, "-c", _LAUNCHER, str(report), *command],
                                      stdout=sink, stderr=subprocess.STDOUT, check=False,
                                      env={**os.environ, **(env or {})})
        seconds = time.perf_counter() - started
        server = server_cpu() - server_before if server_cpu and server_before is not None \
            else None
        if not report.exists():
            return Usage(seconds, 0.0, launcher.returncode or 1)
        maxrss_kb, status, cpu = report.read_text(encoding="ascii").split()
    return Usage(seconds, int(maxrss_kb) / 1024, int(status), float(cpu), server)


def edu_migrate_command() -> list[str]:
    script = Path(sys.executable).parent / "edu-migrate"
    return [str(script)] if script.exists() else [sys.executable, "-m", "edu_migrate"]


STEP_LINE = re.compile(r"INFO (step|stage|archive|changes in) (.+?): (\d+) rows in ([0-9.]+)s")
REBUILD_LINE = re.compile(r"indexes and foreign keys rebuilt in ([0-9.]+)s")
SECTION_LINE = re.compile(r"INFO (?:PHASE (\d+):|(ARCHIVING UNMAPPED TABLES)|(Froze the source))")


def profile_from_log(log_dir: Path, first_section: str = "before the phases"
                     ) -> dict[str, dict[str, float]]:
    """Seconds of each named statement, staged table, index rebuild, archived table and table
    compared by a sync, from the run's log, under the phase (or the archiving, or for a cutover
    the downtime window) it belongs to."""
    profile: dict[str, dict[str, float]] = {}
    section = first_section
    for log in sorted(log_dir.glob("migration_*.log")):
        for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
            if match := SECTION_LINE.search(line):
                section = f"phase {match[1]}" if match[1] else \
                    "archive" if match[2] else "inside the window"
            elif match := STEP_LINE.search(line):
                name = match[2] if match[1] == "step" else f"{match[1]} {match[2]}"
                steps = profile.setdefault(section, {})
                steps[name] = steps.get(name, 0.0) + float(match[4])
            elif match := REBUILD_LINE.search(line):
                profile.setdefault(section, {})["rebuild indexes and foreign keys"] = \
                    float(match[1])
    return profile


def steps_from_log(log_dir: Path) -> dict[str, float]:
    """The profile's steps, whatever their phase."""
    steps: dict[str, float] = {}
    for section in profile_from_log(log_dir).values():
        for name, seconds in section.items():
            steps[name] = steps.get(name, 0.0) + seconds
    return steps


def edu_migrate_all(source_url: str, target_url: str, work: Path,
                    server_cpu: Callable[[], float] | None = None) -> Measurement:
    """`edu-migrate migrate --all` into a fresh edu_v2 (schema applied beforehand, untimed)."""
    subprocess.run([*edu_migrate_command(), "schema", "apply", "--target", target_url],
                   check=True, capture_output=True,
                   env={**os.environ, "EDU_SOURCE_URL": source_url,
                        "EDU_LOG_DIR": str(work / "schema-logs")})
    log_dir = work / "logs"
    shutil.rmtree(log_dir, ignore_errors=True)
    usage = run_measured(
        [*edu_migrate_command(), "migrate", "--all", "--source", source_url,
         "--target", target_url],
        env={"EDU_LOG_DIR": str(log_dir)}, log_file=work / "migrate.out", server_cpu=server_cpu)
    if usage.status != 0:
        tail = (work / "migrate.out").read_text(errors="replace").strip().splitlines()[-3:]
        raise RuntimeError(f"migrate --all failed ({usage.status}): {' / '.join(tail)}")
    with psycopg.connect(target_url) as conn:
        phases = {f"phase {row[0]}": float(row[1]) for row in conn.execute(
            "SELECT phase, seconds FROM migration.phase_runs ORDER BY phase")}
    return Measurement(usage.seconds, usage.peak_rss_mb, phases, steps_from_log(log_dir),
                       profile_from_log(log_dir),
                       client_cpu_seconds=usage.client_cpu_seconds,
                       server_cpu_seconds=usage.server_cpu_seconds)


def edu_migrate_validate(source_url: str, target_url: str, work: Path,
                         server_cpu: Callable[[], float] | None = None) -> Measurement:
    usage = run_measured(
        [*edu_migrate_command(), "validate", "--source", source_url, "--target", target_url],
        env={"EDU_LOG_DIR": str(work / "validate-logs")}, log_file=work / "validate.out",
        server_cpu=server_cpu)
    note = None if usage.status == 0 else f"validate exited {usage.status}"
    return Measurement(usage.seconds, usage.peak_rss_mb, note=note,
                       client_cpu_seconds=usage.client_cpu_seconds,
                       server_cpu_seconds=usage.server_cpu_seconds)


# pgloader's defaults but one: `prefetch rows` (100,000 by default) exhausted its 1 GB Lisp heap
# on the 3.2 million marks of scale 1 in every run; at 25,000 it finishes, in about 630 MB.
PGLOADER_COMMAND = """LOAD DATABASE
    FROM {source}
    INTO {target}
    WITH prefetch rows = 25000
    INCLUDING ONLY TABLE NAMES MATCHING {tables} IN SCHEMA 'public';
"""


def pgloader_available() -> str | None:
    return shutil.which("pgloader")


def install_pgloader(say: Callable[[str], None]) -> str | None:
    """Install pgloader with apt-get when it is missing and this process may (root on a Debian
    machine). Returns why it is still missing, or None when it is there."""
    if pgloader_available():
        return None
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return ("pgloader is not installed and this machine does not allow installing it here "
                "(needs root and apt-get): `apt-get install -y pgloader`")
    say("pgloader is missing: installing it (apt-get update; apt-get install -y pgloader)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update"], ["apt-get", "install", "-y", "pgloader"]):
        done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
        if done.returncode != 0:
            last = (done.stderr or done.stdout).strip().splitlines()[-1:]
            return f"`{' '.join(command)}` failed: {' '.join(last)}"
    return None if pgloader_available() else "apt-get installed no pgloader binary"


def pgloader_copy(source_url: str, dest_url: str, work: Path,
                  tables: tuple[str, ...] = MAPPED_TABLES,
                  server_cpu: Callable[[], float] | None = None) -> Measurement:
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
    try:
        usage = run_measured([binary, "--no-ssl-cert-verification", command_file],
                             log_file=work / "pgloader.out", server_cpu=server_cpu)
    finally:
        Path(command_file).unlink(missing_ok=True)
    note = None
    if usage.status != 0:
        tail = (work / "pgloader.out").read_text(errors="replace").strip().splitlines()[-2:]
        note = f"pgloader exited {usage.status}: {' / '.join(tail)}"
    return Measurement(usage.seconds, usage.peak_rss_mb, note=note,
                       client_cpu_seconds=usage.client_cpu_seconds,
                       server_cpu_seconds=usage.server_cpu_seconds)


def _pgloader_url(url: str) -> str:
    """The URL as pgloader reads it: its grammar takes no `?passfile=`, so the password that
    file holds for this host and user goes into the URL, which is written only to the command
    file (removed after the run), never to an argument list."""
    params = conninfo_to_dict(url)
    passfile = params.pop("passfile", None)
    if passfile and not params.get("password"):
        params["password"] = _password_from(Path(str(passfile)), params)
    user = quote(str(params.get("user", "postgres")), safe="")
    password = f":{quote(str(params['password']), safe='')}" if params.get("password") else ""
    return (f"pgsql://{user}{password}@{params.get('host', 'localhost')}:"
            f"{params.get('port', 5432)}/{params.get('dbname', 'postgres')}")


def _password_from(passfile: Path, params: dict[str, object]) -> str | None:
    """The first line of a libpq password file that matches (`*` matches anything)."""
    wanted = [str(params.get(key, "")) for key in ("host", "port", "dbname", "user")]
    for line in passfile.read_text(encoding="utf-8").splitlines():
        fields = line.split(":", 4)
        if len(fields) == 5 and all(f in ("*", w) for f, w in zip(fields[:4], wanted,
                                                                    strict=True)):
            return fields[4]
    return None
