"""`edu-migrate decommission`: the guide's month-1 task, dropping the old database edu, safely.

Refused within `min_days` of the cutover (the first passing `cutover-check` after the last
migration phase, recorded in edu_v2's migration.run_log) unless forced, which is logged there.
A final backup of edu is dumped, restored into a scratch database and counted, and its SHA-256
recorded in the manifest; only then, once the operator has typed the database's name, is edu
dropped. Any failure before the drop leaves edu as it was.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from edu_migrate.aftercare.sqlfiles import query
from edu_migrate.backup import (
    BackupRecord,
    dump_database,
    record_backup,
    server_of,
    verify_by_restore,
)
from edu_migrate.errors import MigrationError, PreconditionFailed
from edu_migrate.pg.connect import connect
from edu_migrate.pg.urls import database_name, masked, with_database
from edu_migrate.runlog import Reporter
from edu_migrate.schema import applied_version

log = logging.getLogger("edu_migrate")
SYSTEM_DATABASES = ("postgres", "template0", "template1")


def record_cutover(target_url: str, detail: dict[str, Any]) -> None:
    """Log a passing cutover-check in edu_v2's run log: decommission counts days from it."""
    with connect(target_url, purpose="target") as conn:
        if applied_version(conn) is None:
            return
        conn.execute("INSERT INTO migration.run_log (event, detail) VALUES ('cutover', %s)",
                     [Jsonb(detail)])
        conn.commit()


def cutover_time(target_url: str) -> datetime | None:
    with connect(target_url, purpose="target", read_only=True) as conn:
        if applied_version(conn) is None:
            return None
        row = conn.execute(query("cutover_time")).fetchone()
        conn.rollback()
    return row[0] if row else None


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as dump:
        for chunk in iter(lambda: dump.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass
class DecommissionResult:
    database: str
    server: str
    cutover_at: str
    days_since_cutover: float
    forced: bool
    dry_run: bool
    steps: list[str] = field(default_factory=list)
    backup: BackupRecord | None = None
    dropped: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"database": self.database, "server": self.server,
                "cutover_at": self.cutover_at,
                "days_since_cutover": round(self.days_since_cutover, 1),
                "forced": self.forced, "dry_run": self.dry_run, "steps": self.steps,
                "backup": self.backup.summary() if self.backup else None,
                "dropped": self.dropped}


def _refuse_wrong_database(old_url: str, target_url: str) -> str:
    name = database_name(old_url)
    if name in SYSTEM_DATABASES or not name:
        raise MigrationError(f"{name or 'no database'} is not a database to decommission",
                             "point --source at the old database (edu)")
    if name == database_name(target_url) and server_of(old_url) == server_of(target_url):
        raise MigrationError(f"{name} is the target database itself: decommission drops the "
                             "old database, never edu_v2", "point --source at the old database")
    with connect(old_url, purpose="old", read_only=True) as conn:
        if applied_version(conn) is not None:
            raise MigrationError(f"{name} holds an edu_v2 schema: it is not the old database",
                                 "point --source at the old database (edu)")
    return name


def _sessions(admin: psycopg.Connection, name: str) -> None:
    row = admin.execute(query("sessions_of_database"), {"name": name}).fetchone()
    if row and row[0]:
        raise PreconditionFailed(
            f"{row[0]} session(s) still use {name} ({row[1]}): something still reads the old "
            "database", "stop them (or point them at edu_v2), then run decommission again")


def _final_backup(old_url: str, target_url: str, backup_dir: Path,
                  reporter: Reporter) -> BackupRecord:
    """Dump, restore into a scratch database and count, record with its checksum; any failure
    says that nothing was dropped."""
    try:
        record = dump_database(old_url, "source", backup_dir, reporter)
        record_backup(backup_dir, record, None)
        verify_by_restore(old_url, record, backup_dir, reporter)
    except (MigrationError, psycopg.Error) as exc:
        reason = exc.message if isinstance(exc, MigrationError) else \
            str(exc).strip().splitlines()[0]
        raise PreconditionFailed(f"the final backup of {database_name(old_url)} could not be "
                                 f"verified by restore ({reason}); nothing was dropped",
                                 "fix the cause (the role needs CREATEDB for the scratch "
                                 "restore) and run decommission again") from exc
    record.sha256 = sha256_of(backup_dir / record.file)
    record_backup(backup_dir, record, target_url)
    reporter.line(f"✓ final backup {record.file}: SHA-256 {record.sha256} recorded in "
                  f"{backup_dir / 'manifest.json'}")
    return record


def _log(target_url: str, event: str, detail: dict[str, Any]) -> None:
    with connect(target_url, purpose="target") as conn:
        conn.execute("INSERT INTO migration.run_log (event, detail) VALUES (%s, %s)",
                     [event, Jsonb(detail)])
        conn.commit()


def decommission(old_url: str, target_url: str, backup_dir: Path, *, min_days: int,
                 force: bool, typed_name: str | None, ask_name: Callable[[str], str] | None,
                 dry_run: bool, reporter: Reporter) -> DecommissionResult:
    """Drop the old database after a verified final backup, `min_days` after the cutover."""
    if min_days < 0:
        raise MigrationError("--min-days cannot be negative", "e.g. --min-days 30")
    name = _refuse_wrong_database(old_url, target_url)
    if typed_name is not None and typed_name != name:
        raise MigrationError(f"--yes-i-typed {typed_name!r} is not the database's name "
                             f"{name!r}; nothing was done", f"--yes-i-typed {name}")
    cutover = cutover_time(target_url)
    if cutover is None:
        raise PreconditionFailed(
            f"no cutover is recorded in {masked(target_url)}'s migration.run_log",
            "switch the applications to edu_v2 and run `edu-migrate cutover-check --api URL`; "
            "a passing check records the cutover")
    days = (datetime.now(UTC) - cutover).total_seconds() / 86400
    result = DecommissionResult(name, server_of(old_url), cutover.isoformat(), days, False,
                                dry_run)
    if days < min_days:
        if not force:
            raise PreconditionFailed(
                f"the cutover was {days:.1f} days ago ({cutover:%Y-%m-%d %H:%M} UTC); "
                f"{name} is kept for {min_days} days after it",
                "wait, or give --min-days N, or --force (logged)")
        result.forced = True
    with connect(with_database(old_url, "postgres"), purpose="old server",
                 autocommit=True) as admin:
        _sessions(admin, name)
    result.steps = [
        f"cutover at {cutover:%Y-%m-%d %H:%M} UTC, {days:.1f} days ago "
        + (f"(fewer than {min_days}: forced, logged in migration.run_log)" if result.forced
           else f"(at least {min_days})"),
        f"no session uses {name}",
        f"pg_dump -Fc of {name} into {backup_dir}/ with every table's row count",
        "restore it into a scratch database, compare every count, drop the scratch database",
        f"record its SHA-256 in {backup_dir / 'manifest.json'} and migration.run_log",
        f"ask for the database's name ({'given by --yes-i-typed' if typed_name else 'typed'})",
        f"DROP DATABASE {name} on {result.server}",
        "log the decommission in migration.run_log",
    ]
    reporter.line(f"Decommissioning {name} on {result.server}"
                  + (" (dry run: the steps a real run takes)" if dry_run else ""))
    for number, step in enumerate(result.steps, 1):
        reporter.line(f"{number}. {step}")
    if dry_run:
        reporter.line("Dry run: nothing was changed.")
        return result
    if result.forced:
        log.warning("decommission of %s forced %.1f days after the cutover", name, days)
        _log(target_url, "decommission forced", {"database": name, "days": round(days, 2),
                                                 "min_days": min_days})
    record = _final_backup(old_url, target_url, backup_dir, reporter)
    result.backup = record
    typed = typed_name if typed_name is not None else ask_name(name) if ask_name else None
    if typed != name:
        raise MigrationError(f"the name typed does not match {name}; nothing was dropped",
                             f"the verified final backup {record.file} is kept")
    with connect(with_database(old_url, "postgres"), purpose="old server",
                 autocommit=True) as admin:
        _sessions(admin, name)
        admin.execute(sql.SQL("DROP DATABASE {}").format(sql.Identifier(name)))
    result.dropped = True
    _log(target_url, "decommission", {"database": name, "server": result.server,
                                      "backup": record.file, "sha256": record.sha256,
                                      "forced": result.forced})
    reporter.line(f"✓ Dropped {name}; its final backup is {backup_dir / record.file}")
    return result
