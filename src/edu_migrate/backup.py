"""Backups, the guide's `pg_dump -Fc` automated and tested.

A backup is taken from an exported snapshot, and the row count of every table is read in that
same snapshot: the counts are exactly what the dump holds. Each dump is checked with
`pg_restore --list`, and with `--verify-restore` restored into a scratch database whose counts
must equal them (a backup is tested only once it has been restored). Every backup is recorded in
`manifest.json` next to the dumps, and in the target's migration.run_log when it has one, where
preflight looks for a recent one.
"""

from __future__ import annotations

import json
import os
import re
import secrets
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from edu_migrate.errors import MigrationError, PreconditionFailed
from edu_migrate.files import owner_only_folder, reserve_private_file
from edu_migrate.pg.connect import connect, create_database_if_missing
from edu_migrate.pg.freeze import is_frozen
from edu_migrate.pg.locks import migration_lock
from edu_migrate.pg.tools import client_program, restore_archive, run_client
from edu_migrate.pg.urls import database_name, masked, parse, with_database
from edu_migrate.runlog import Reporter
from edu_migrate.schema import applied_version, apply_security_grants, foreign_tables

MANIFEST = "manifest.json"
# Staged copies of legacy tables: rebuilt by every phase, not worth a byte of backup.
TARGET_SCHEMAS_NOT_BACKED_UP = ("stage",)
RECENT = timedelta(hours=24)

_COUNTED_TABLES = """
SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r' AND n.nspname <> ALL(%(skip)s)
  AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%%'
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                  AND d.objid = c.oid AND d.deptype = 'e')
ORDER BY 1, 2
"""
_TABLE_DATA_ENTRY = re.compile(r"^\d+; \d+ \d+ TABLE DATA (\S+) (\S+) ")
_PLAIN_COPY = re.compile(r'^COPY ((?:"[^"]+"|[^ ."]+))\.((?:"[^"]+"|[^ ."]+)) .*FROM stdin;$')
_PLAIN_END = "-- PostgreSQL database dump complete"


@dataclass
class BackupRecord:
    """One dump: where it is, what it holds, and how far it was verified."""

    file: str
    role: str
    database: str
    server: str
    created_at: str
    bytes: int
    tables: int
    rows: int
    verified: str  # "listed" (pg_restore --list read it) or "restored" (counts matched)
    table_counts: dict[str, int] = field(default_factory=dict)
    # SHA-256 of the dump file, recorded for the final backup before a database is dropped.
    sha256: str | None = None
    # `backup --format plain`: the SQL dump beside the -Fc one (same snapshot, same checks).
    plain: str | None = None
    plain_bytes: int | None = None

    @property
    def created(self) -> datetime:
        return datetime.fromisoformat(self.created_at)

    def summary(self) -> dict[str, object]:
        data = asdict(self)
        data.pop("table_counts")
        return data


def server_of(url: str) -> str:
    params = parse(url, purpose="server")
    return f"{params.get('host') or 'localhost'}:{params.get('port') or 5432}"


def table_row_counts(conn: psycopg.Connection,
                     skip_schemas: tuple[str, ...] = ()) -> dict[str, int]:
    """Exact row count of every table (schema.table), in the connection's current snapshot."""
    counts: dict[str, int] = {}
    for schema, table in conn.execute(_COUNTED_TABLES, {"skip": list(skip_schemas)}).fetchall():
        row = conn.execute(sql.SQL("SELECT count(*) FROM {}.{}").format(
            sql.Identifier(schema), sql.Identifier(table))).fetchone()
        counts[f"{schema}.{table}"] = int(row[0]) if row else 0
    return counts


def read_manifest(backup_dir: Path) -> list[BackupRecord]:
    path = backup_dir / MANIFEST
    if not path.exists():
        return []
    try:
        entries = json.loads(path.read_text(encoding="utf-8")).get("backups", [])
        return [BackupRecord(**entry) for entry in entries]
    except (ValueError, TypeError, AttributeError) as exc:
        raise MigrationError(f"the backup manifest {path} is unreadable: {exc}",
                             "fix or remove it; the dumps themselves are intact") from exc


def _write_manifest(backup_dir: Path, records: list[BackupRecord]) -> None:
    path = backup_dir / MANIFEST
    scratch = path.with_suffix(".tmp")
    scratch.write_text(json.dumps({"backups": [asdict(r) for r in records]}, indent=2) + "\n",
                       encoding="utf-8")
    scratch.replace(path)


def _listed_tables(listing: str) -> set[str]:
    found = set()
    for line in listing.splitlines():
        match = _TABLE_DATA_ENTRY.match(line)
        if match:
            found.add(f"{match.group(1)}.{match.group(2)}")
    return found


@contextmanager
def _exported_snapshot(url: str, purpose: str) -> Iterator[tuple[psycopg.Connection, str]]:
    with connect(url, purpose=purpose, read_only=True) as conn:
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        row = conn.execute("SELECT pg_export_snapshot()").fetchone()
        assert row is not None
        try:
            yield conn, str(row[0])
        finally:
            conn.rollback()


def _dump_file(backup_dir: Path, role: str, database: str, when: datetime) -> Path:
    """A new dump file, created empty and 0600 in a folder of mode 0700: pg_dump writes into
    it, so no byte of the dump is ever readable by another user (pg_dump would create it under
    the process's umask)."""
    owner_only_folder(backup_dir)
    stamp = when.strftime("%Y%m%dT%H%M%SZ")
    number = 1
    while True:
        suffix = f"_{number}" if number > 1 else ""
        candidate = backup_dir / f"{role}_{database}_{stamp}{suffix}.dump"
        try:
            return reserve_private_file(candidate)
        except FileExistsError:
            number += 1


def _plain_tables(path: Path) -> tuple[set[str], bool]:
    """The tables whose data a plain (SQL) dump holds, and whether it ends as pg_dump ends a
    complete dump: the plain dump's --list. Read line by line, never whole."""
    found: set[str] = set()
    in_copy, complete = False, False
    with path.open(encoding="utf-8", errors="replace") as dump:
        for line in dump:
            line = line.rstrip("\n")
            if in_copy:
                in_copy = line != "\\."
            elif match := _PLAIN_COPY.match(line):
                found.add(".".join(part.strip('"') for part in match.groups()))
                in_copy = True
            elif line == _PLAIN_END:
                complete = True
    return found, complete


def _dump_plain(pg_dump: Path, url: str, snapshot: str, skip: tuple[str, ...], dump: Path,
                database: str, reporter: Reporter) -> Path:
    """The guide's "SQL backup for easy inspection", beside the -Fc dump and from the same
    snapshot. The file is created private (0600) before pg_dump writes its first byte."""
    path = dump.with_suffix(".sql")
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        raise MigrationError(f"{path.name} exists already", "move it away and back up again"
                             ) from None
    reporter.line(f"Dumping {database} as SQL to {path.name} …")
    args = ["--format=plain", f"--snapshot={snapshot}", f"--file={path}"]
    try:
        run_client(pg_dump, args + [f"--exclude-schema={schema}" for schema in skip], url,
                   what=f"pg_dump --format=plain of {database}")
    except MigrationError:
        path.unlink(missing_ok=True)
        raise
    return path


def dump_database(url: str, role: str, backup_dir: Path, reporter: Reporter, *,
                  plain: bool = False) -> BackupRecord:
    """pg_dump -Fc of one database, its counts from the same snapshot, checked by --list; with
    `plain`, also the SQL dump from that snapshot, checked for every table's data."""
    skip = TARGET_SCHEMAS_NOT_BACKED_UP if role == "target" else ()
    when = datetime.now(UTC).replace(microsecond=0)
    database = database_name(url)
    path = _dump_file(backup_dir, role, database, when)
    with _exported_snapshot(url, role) as (conn, snapshot):
        pg_dump = client_program("pg_dump", conn.info.server_version)
        reporter.line(f"Dumping the {role} database {database} to {path.name} …")
        args = ["--format=custom", f"--snapshot={snapshot}", f"--file={path}"]
        args += [f"--exclude-schema={schema}" for schema in skip]
        try:
            run_client(pg_dump, args, url, what=f"pg_dump of {database}")
            plain_path = _dump_plain(pg_dump, url, snapshot, skip, path, database, reporter) \
                if plain else None
        except MigrationError:
            path.unlink(missing_ok=True)
            raise
        counts = table_row_counts(conn, skip)
    pg_restore = client_program("pg_restore", 0)
    listing = run_client(pg_restore, ["--list", str(path)], None,
                         what=f"pg_restore --list of {path.name}").stdout
    unlisted = sorted(set(counts) - _listed_tables(listing))
    if unlisted:
        raise MigrationError(f"the dump {path.name} lacks the data of {', '.join(unlisted[:5])}",
                             "the dump is incomplete: look at the run log and dump again")
    record = BackupRecord(path.name, role, database, server_of(url), when.isoformat(),
                          path.stat().st_size, len(counts), sum(counts.values()), "listed",
                          counts)
    if plain_path is not None:
        held, complete = _plain_tables(plain_path)
        lacking = sorted(set(counts) - held)
        if lacking or not complete:
            path.unlink(missing_ok=True)
            plain_path.unlink(missing_ok=True)
            raise MigrationError(
                f"the SQL dump {plain_path.name} "
                + (f"lacks the data of {', '.join(lacking[:5])}" if lacking else
                   "does not end as a complete dump"),
                "the dump is incomplete: look at the run log and dump again")
        record.plain, record.plain_bytes = plain_path.name, plain_path.stat().st_size
        reporter.line(f"✓ {plain_path.name}: every table's data, "
                      f"{record.plain_bytes / 1e6:,.1f} MB of SQL")
    reporter.line(f"✓ {path.name}: {record.tables} tables, {record.rows:,} rows, "
                  f"{record.bytes / 1e6:,.1f} MB, readable by pg_restore")
    return record


def verify_by_restore(url: str, record: BackupRecord, backup_dir: Path,
                      reporter: Reporter) -> None:
    """Restore the dump into a scratch database beside the original, compare every table's row
    count with the counts taken with the dump, drop the scratch database."""
    scratch = f"{record.database[:40]}_verify_{secrets.token_hex(4)}"
    with connect(url, purpose=record.role, autocommit=True) as conn:
        # Creating a database beside a frozen source does not write to the source, but the
        # frozen default would refuse it in this session.
        conn.execute("SET default_transaction_read_only = off")
        row = conn.execute(
            "SELECT pg_encoding_to_char(encoding), datcollate, datctype FROM pg_database "
            "WHERE datname = current_database()").fetchone()
        assert row is not None
        conn.execute(sql.SQL(
            "CREATE DATABASE {} TEMPLATE template0 ENCODING {} LC_COLLATE {} LC_CTYPE {}").format(
                sql.Identifier(scratch), sql.Literal(row[0]), sql.Literal(row[1]),
                sql.Literal(row[2])))
        # A new database lets PUBLIC connect, and the restore below brings no grants back: for
        # the minutes it lives, nobody but its owner may open the copy.
        conn.execute(sql.SQL("REVOKE CONNECT, TEMPORARY ON DATABASE {} FROM PUBLIC").format(
            sql.Identifier(scratch)))
        try:
            scratch_url = with_database(url, scratch)
            reporter.line(f"Restoring {record.file} into the scratch database {scratch} …")
            restore_archive(backup_dir / record.file, scratch_url, conn.info.server_version,
                            ["--no-owner", "--no-privileges"],
                            what=f"test restore of {record.file}")
            with connect(scratch_url, purpose="scratch", read_only=True) as restored:
                counts = table_row_counts(restored)
                restored.rollback()
        finally:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(scratch)))
    differences = [f"{table}: {record.table_counts.get(table)} dumped, {counts.get(table)} "
                   "restored" for table in sorted(set(counts) | set(record.table_counts))
                   if counts.get(table) != record.table_counts.get(table)]
    if differences:
        raise MigrationError(f"the test restore of {record.file} differs: {differences[0]}"
                             + (f" (and {len(differences) - 1} more)" if len(differences) > 1
                                else ""), "do not rely on this backup; see the run log")
    record.verified = "restored"
    reporter.line(f"✓ {record.file} restored into a scratch database: {record.tables} tables, "
                  f"{record.rows:,} rows, every count equal")


def target_holds_data(url: str) -> bool:
    """Whether the target is worth a dump: a phase ran in it, or it holds tables not ours."""
    name = database_name(url)
    with connect(with_database(url, "postgres"), purpose="target server") as admin:
        exists = admin.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                               [name]).fetchone()
    if not exists:
        return False
    with connect(url, purpose="target", read_only=True) as conn:
        if applied_version(conn) is None:
            return bool(foreign_tables(conn))
        row = conn.execute("SELECT EXISTS (SELECT 1 FROM migration.phase_runs)").fetchone()
        return bool(row and row[0])


def record_backup(backup_dir: Path, record: BackupRecord, target_url: str | None) -> None:
    """Add the backup to the manifest, or update its entry, and log it in the target."""
    records = [r for r in read_manifest(backup_dir) if r.file != record.file]
    records.append(record)
    _write_manifest(backup_dir, records)
    if target_url is None:
        return
    try:
        with connect(target_url, purpose="target") as conn:
            if applied_version(conn) is None:
                return
            conn.execute("INSERT INTO migration.run_log (event, detail) VALUES ('backup', %s)",
                         [Jsonb({**record.summary(), "path": str(backup_dir / record.file)})])
            conn.commit()
    except MigrationError:
        return  # no target yet: the manifest is the record


def backup(source_url: str, target_url: str, backup_dir: Path, *, verify_restore: bool,
           reporter: Reporter, roles: tuple[str, ...] = ("source", "target"),
           plain: bool = False) -> list[BackupRecord]:
    """Dump the source, and the target when it holds data (of `roles`); record each dump.
    `plain` adds the SQL dump of each beside its -Fc dump."""
    made: list[BackupRecord] = []
    plan = [("source", source_url)] if "source" in roles else []
    if "target" in roles:
        if target_holds_data(target_url):
            plan.append(("target", target_url))
        elif plan:
            reporter.line(f"The target {database_name(target_url)} holds no migrated data: "
                          "only the source is dumped")
        else:
            raise PreconditionFailed(f"the target {database_name(target_url)} holds no "
                                     "migrated data to back up", "run the migration first, or "
                                     "back up the source (`edu-migrate backup --only source`)")
    for role, url in plan:
        # A dump of the target while a phase rewrites it would wait on, or hold up, the phase.
        with migration_lock(url) if role == "target" else nullcontext():
            record = dump_database(url, role, backup_dir, reporter, plain=plain)
        record_backup(backup_dir, record, None)
        if verify_restore:
            verify_by_restore(url, record, backup_dir, reporter)
            record_backup(backup_dir, record, None)
        made.append(record)
    for record in made:
        record_backup(backup_dir, record, target_url)
    return made


def recent_backups(backup_dir: Path, source_url: str, now: datetime | None = None
                   ) -> list[BackupRecord]:
    """This source's backups of the last day whose dump file is still there, newest first."""
    now = now or datetime.now(UTC)
    database, server = database_name(source_url), server_of(source_url)
    return sorted((r for r in read_manifest(backup_dir)
                   if r.role == "source" and r.database == database and r.server == server
                   and now - r.created <= RECENT and (backup_dir / r.file).exists()),
                  key=lambda r: r.created, reverse=True)


@dataclass(frozen=True)
class RestorePlan:
    file: Path
    role: str | None
    database: str
    destination_url: str
    record: BackupRecord | None

    def describe(self) -> str:
        taken = f", taken {self.record.created_at}" if self.record else ""
        return (f"{self.file.name} ({self.role or 'a'} database {self.database}{taken}) "
                f"into {masked(self.destination_url)}")


def _dumped_database(listing: str) -> str:
    for line in listing.splitlines():
        if line.startswith(";") and "dbname:" in line.lower():
            return line.split(":", 1)[1].strip()
    return ""


def plan_restore(file: Path, backup_dir: Path, source_url: str, target_url: str,
                 into_url: str | None) -> RestorePlan:
    """Where a dump goes back to: `into_url`, else the database of its role that it came from."""
    if not file.is_file() and (backup_dir / file).is_file():
        file = backup_dir / file
    if not file.is_file():
        raise MigrationError(f"no backup file {file}", f"see the dumps in {backup_dir}")
    listing = run_client(client_program("pg_restore", 0), ["--list", str(file)], None,
                         what=f"pg_restore --list of {file.name}").stdout
    database = _dumped_database(listing)
    record = next((r for r in read_manifest(file.parent) if r.file == file.name), None)
    role = record.role if record else next(
        (r for r in ("source", "target") if file.name.startswith(f"{r}_")), None)
    if into_url is not None:
        return RestorePlan(file, role, database, into_url, record)
    if role is None or not database:
        raise MigrationError(f"cannot tell which database {file.name} came from",
                             "say where it goes with --into URL")
    origin = source_url if role == "source" else target_url
    return RestorePlan(file, role, database, with_database(origin, database), record)


def restore(plan: RestorePlan, reporter: Reporter) -> dict[str, int]:
    """Replace the destination's objects by the dump's, in one transaction; return the counts."""
    destination = plan.destination_url
    name = database_name(destination)
    if create_database_if_missing(destination, purpose="restore"):
        reporter.line(f"Created database {name}")
    with connect(with_database(destination, "postgres"), purpose="restore server",
                 autocommit=True) as admin:
        if is_frozen(admin, name):
            raise PreconditionFailed(f"the database {name} is frozen read-only",
                                     "run `edu-migrate unfreeze-source` first")
        version = admin.info.server_version
    options = ["--clean", "--if-exists"]
    if plan.role is None or plan.database != name:
        options += ["--no-owner", "--no-privileges"]
    with migration_lock(destination):
        reporter.line(f"Restoring {plan.describe()} …")
        restore_archive(plan.file, destination, version, options,
                        what=f"restore of {plan.file.name}")
        _reapply_security_grants(destination, reporter)
    skip = TARGET_SCHEMAS_NOT_BACKED_UP if plan.role == "target" else ()
    with connect(destination, purpose="restored database", read_only=True) as conn:
        counts = table_row_counts(conn, skip)
        conn.rollback()
    if plan.record is not None:
        wrong = [t for t, n in plan.record.table_counts.items() if counts.get(t) != n]
        if wrong:
            raise MigrationError(
                f"after the restore, {wrong[0]} has {counts.get(wrong[0])} rows; the backup "
                f"had {plan.record.table_counts[wrong[0]]}",
                "the destination held other objects: restore into an empty database (--into)")
    reporter.line(f"✓ Restored {len(counts)} tables, {sum(counts.values()):,} rows"
                  + (", every count equal to the backup's" if plan.record else ""))
    return counts


def _reapply_security_grants(url: str, reporter: Reporter) -> None:
    """An edu_v2 restored without its privileges (--no-privileges, or into another database)
    would have every SECURITY DEFINER helper executable by PUBLIC and be open to every role:
    its grants are applied again, whole."""
    with connect(url, purpose="restored database") as conn:
        if applied_version(conn) is None:
            return
        apply_security_grants(conn)
        conn.commit()
    reporter.line("✓ The security grants of edu_v2 applied to the restored database")


def prune(backup_dir: Path, kept: BackupRecord, keep_days: int, reporter: Reporter,
          now: datetime | None = None) -> list[str]:
    """Remove the dumps of `kept`'s database older than `keep_days`: never `kept` itself, the
    newest verified one, or a final backup (one with a recorded checksum)."""
    now = now or datetime.now(UTC)
    records = read_manifest(backup_dir)
    same = [r for r in records if (r.role, r.database, r.server) ==
            (kept.role, kept.database, kept.server)]
    verified = [r for r in same if r.verified == "restored"]
    protected = {kept.file} | ({max(verified, key=lambda r: r.created).file} if verified
                               else set())
    old = [r for r in same if now - r.created > timedelta(days=keep_days)
           and r.file not in protected and r.sha256 is None]
    for record in old:
        (backup_dir / record.file).unlink(missing_ok=True)
        if record.plain:
            (backup_dir / record.plain).unlink(missing_ok=True)
        reporter.line(f"Removed {record.file}: older than {keep_days} days")
    gone = {r.file for r in old}
    if gone:
        _write_manifest(backup_dir, [r for r in records if r.file not in gone])
    return sorted(gone)
