"""Preflight: the guide's pre-migration checklist as checks, each a small named function.

A check returns a Finding: ✓ ok, ! warn (look at it, the run may go on), ✗ fail (blocks
`migrate` unless --force). Findings come from the providers in FINDING_PROVIDERS: the standard
checklist here, and any further provider appended to that list. The anomalies of the legacy data
(checks.anomalies) are reported beside these by the `preflight` command; they never block, since
the migration repairs, merges or sets aside each kind.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict

from edu_migrate.backup import recent_backups
from edu_migrate.errors import MigrationError, PreconditionFailed
from edu_migrate.mapping import DEFAULT_MAPPING, LegacyMapping
from edu_migrate.mapping.fit import verify
from edu_migrate.pg.connect import connect
from edu_migrate.pg.freeze import is_frozen
from edu_migrate.pg.urls import database_name, masked, with_database
from edu_migrate.schema import LATEST_VERSION, applied_version, foreign_tables

MINIMUM_SERVER_VERSION = 150000
# A run holds the staged copies, the new tables, their indexes and the WAL of the load at once.
DISK_NEED_FACTOR = 3
LOCAL_HOSTS = ("", "localhost", "127.0.0.1", "::1")

OK, WARN, FAIL = "ok", "warn", "fail"
SOURCE_ACCESS = ("source connection", "legacy tables", "source privileges")
SYMBOLS = {OK: "✓", WARN: "!", FAIL: "✗"}


@dataclass(frozen=True)
class Finding:
    name: str
    status: str
    detail: str
    cause: MigrationError | None = field(default=None, compare=False)

    @property
    def blocking(self) -> bool:
        return self.status == FAIL

    def line(self) -> str:
        return f"{SYMBOLS[self.status]} {self.name}: {self.detail}"

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "status": self.status, "symbol": SYMBOLS[self.status],
                "detail": self.detail}


class PreflightContext:
    """What the checks look at; each side is connected once, and a failed connection is kept
    as the error that the connection checks report."""

    def __init__(self, source_url: str, target_url: str, backup_dir: Path,
                 mapping: LegacyMapping = DEFAULT_MAPPING) -> None:
        self.source_url = source_url
        self.target_url = target_url
        self.backup_dir = backup_dir
        self.mapping = mapping
        self._stack = ExitStack()
        self._connections: dict[str, psycopg.Connection | MigrationError] = {}

    def __enter__(self) -> PreflightContext:
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def _connection(self, side: str) -> psycopg.Connection | MigrationError:
        if side not in self._connections:
            try:
                url = (self.source_url if side == "source" else self.target_url
                       if side == "target" else with_database(self.target_url, "postgres"))
                self._connections[side] = self._stack.enter_context(
                    connect(url, purpose=side, autocommit=True, read_only=True))
            except MigrationError as exc:
                self._connections[side] = exc
        return self._connections[side]

    def source(self) -> psycopg.Connection | None:
        conn = self._connection("source")
        return conn if isinstance(conn, psycopg.Connection) else None

    def target(self) -> psycopg.Connection | None:
        conn = self._connection("target")
        return conn if isinstance(conn, psycopg.Connection) else None

    def target_server(self) -> psycopg.Connection | None:
        """The target database, or its server's maintenance database while it does not exist."""
        if not self.target_missing():
            return self.target()
        conn = self._connection("target server")
        return conn if isinstance(conn, psycopg.Connection) else None

    def connection_error(self, side: str) -> MigrationError | None:
        conn = self._connection(side)
        return conn if isinstance(conn, MigrationError) else None

    def target_missing(self) -> bool:
        error = self.connection_error("target")
        return error is not None and "does not exist" in error.message


Check = Callable[[PreflightContext], Finding]
FindingProvider = Callable[[PreflightContext], Iterable[Finding]]


def _not_checked(name: str, side: str) -> Finding:
    return Finding(name, WARN, f"not checked: no connection to the {side}")


def source_connection(ctx: PreflightContext) -> Finding:
    error = ctx.connection_error("source")
    if error is not None:
        return Finding("source connection", FAIL, error.message, error)
    conn = ctx.source()
    assert conn is not None
    return Finding("source connection", OK, f"{masked(ctx.source_url)} as {conn.info.user}")


def target_connection(ctx: PreflightContext) -> Finding:
    if ctx.target_missing():
        return Finding("target connection", WARN,
                       f"the database {database_name(ctx.target_url)} does not exist yet: "
                       "`edu-migrate schema apply` creates it")
    error = ctx.connection_error("target")
    if error is not None:
        return Finding("target connection", FAIL, error.message, error)
    conn = ctx.target()
    assert conn is not None
    return Finding("target connection", OK, f"{masked(ctx.target_url)} as {conn.info.user}")


def _version_finding(name: str, conn: psycopg.Connection | None, side: str) -> Finding:
    if conn is None:
        return _not_checked(name, side)
    version = conn.info.server_version
    shown = f"PostgreSQL {version // 10000}.{version % 10000}"
    if version < MINIMUM_SERVER_VERSION:
        return Finding(name, FAIL, f"{shown}; the migration needs 15 or newer",
                       PreconditionFailed(f"the {side} server is {shown}; 15 or newer is needed",
                                      "upgrade the server"))
    return Finding(name, OK, shown)


def source_version(ctx: PreflightContext) -> Finding:
    return _version_finding("source version", ctx.source(), "source")


def target_version(ctx: PreflightContext) -> Finding:
    return _version_finding("target version", ctx.target_server(), "target")


def legacy_tables(ctx: PreflightContext) -> Finding:
    conn = ctx.source()
    if conn is None:
        return _not_checked("legacy tables", "source")
    try:
        verify(conn, ctx.mapping)
    except MigrationError as exc:
        return Finding("legacy tables", FAIL, exc.message, exc)
    detail = f"all {len(ctx.mapping.tables)} mapped tables and their columns are there"
    if not ctx.mapping.canonical:
        detail += f", as {ctx.mapping.origin} maps them; every value casts"
    return Finding("legacy tables", OK, detail)


def _relations(ctx: PreflightContext) -> list[str]:
    """The source tables the mapping reads, quoted for regclass."""
    conn = ctx.source()
    assert conn is not None
    return sorted({t.relation.as_string(conn) for t in ctx.mapping if t.todo is None})


def source_privileges(ctx: PreflightContext) -> Finding:
    conn = ctx.source()
    if conn is None:
        return _not_checked("source privileges", "source")
    rows = conn.execute(
        "SELECT t FROM unnest(%s::text[]) t WHERE to_regclass(t) IS NOT NULL "
        "AND NOT has_table_privilege(t, 'SELECT')", [_relations(ctx)]).fetchall()
    if rows:
        names = ", ".join(r[0] for r in rows)
        return Finding("source privileges", FAIL,
                       f"{conn.info.user} may not read {names}", PreconditionFailed(
                           f"the source role {conn.info.user} may not read {names}",
                           f"GRANT SELECT ON {names} TO {conn.info.user}"))
    return Finding("source privileges", OK, f"{conn.info.user} can read every mapped table")


def target_privileges(ctx: PreflightContext) -> Finding:
    conn = ctx.target()
    if conn is None:
        return _database_creation_privilege(ctx)
    row = conn.execute(
        "SELECT has_database_privilege(current_database(), 'CREATE'), "
        "has_schema_privilege('public', 'CREATE')").fetchone()
    assert row is not None
    schema_applied = applied_version(conn) is not None
    lacking = [what for what, allowed, needed in
               (("CREATE on the database", row[0], True),
                ("CREATE on schema public", row[1], not schema_applied)) if needed and not allowed]
    if schema_applied:
        # A phase truncates its tables and drops and rebuilds their keys: owner's work.
        foreign_owned = conn.execute(
            "SELECT c.oid::regclass::text FROM pg_class c JOIN pg_namespace n "
            "ON n.oid = c.relnamespace WHERE n.nspname IN ('public', 'migration') "
            "AND c.relkind IN ('r', 'p') AND NOT pg_has_role(c.relowner, 'USAGE') "
            "ORDER BY 1").fetchall()
        lacking += [f"ownership of {r[0]}" for r in foreign_owned[:3]]
    if lacking:
        return Finding("target privileges", FAIL,
                       f"{conn.info.user} lacks {', '.join(lacking)}", PreconditionFailed(
                           f"the target role {conn.info.user} lacks {', '.join(lacking)}",
                           "run as the owner of edu_v2, or grant those privileges"))
    return Finding("target privileges", OK, f"{conn.info.user} can create, and owns the tables"
                   if schema_applied else f"{conn.info.user} can create the schema")


def _database_creation_privilege(ctx: PreflightContext) -> Finding:
    server = ctx.target_server()
    if server is None:
        return _not_checked("target privileges", "target")
    row = server.execute("SELECT rolcreatedb OR rolsuper FROM pg_roles "
                         "WHERE rolname = current_user").fetchone()
    if not row or not row[0]:
        return Finding("target privileges", FAIL, f"{server.info.user} may not create the "
                       "database", PreconditionFailed(
                           f"the target database does not exist and {server.info.user} may "
                           "not create it", "create it for this role, or grant CREATEDB"))
    return Finding("target privileges", OK, f"{server.info.user} can create the database")


def target_schema(ctx: PreflightContext) -> Finding:
    if ctx.target_missing():
        return Finding("target schema", WARN, "not applied yet: run `edu-migrate schema apply`")
    conn = ctx.target()
    if conn is None:
        return _not_checked("target schema", "target")
    version = applied_version(conn)
    if version is None:
        return Finding("target schema", WARN, "not applied yet: run `edu-migrate schema apply`")
    if version < LATEST_VERSION:
        return Finding("target schema", WARN, f"at version {version}, this tool's is "
                       f"{LATEST_VERSION}: `edu-migrate schema apply` upgrades it")
    runs = conn.execute("SELECT phase, status FROM migration.phase_runs ORDER BY phase").fetchall()
    if not runs:
        return Finding("target schema", OK, f"version {version}, empty")
    done = [str(p) for p, s in runs if s == "done"]
    unfinished = [str(p) for p, s in runs if s != "done"]
    detail = f"version {version}, a run of ours: phase {', '.join(done) or 'none'} done"
    if unfinished:
        detail += f", phase {', '.join(unfinished)} unfinished; migrate resumes it"
    return Finding("target schema", OK, detail)


def target_foreign_tables(ctx: PreflightContext) -> Finding:
    conn = ctx.target()
    if conn is None:
        if ctx.target_missing():
            return Finding("foreign tables", OK, "none (the database does not exist yet)")
        return _not_checked("foreign tables", "target")
    strangers = foreign_tables(conn)
    if strangers:
        listed = ", ".join(strangers[:5]) + (" …" if len(strangers) > 5 else "")
        return Finding("foreign tables", FAIL, f"the target holds tables that are not "
                       f"edu-migrate's: {listed}", PreconditionFailed(
                           f"the target {database_name(ctx.target_url)} holds tables that are "
                           f"not edu-migrate's: {listed}",
                           "point --target at an empty database (it is created when missing)"))
    return Finding("foreign tables", OK, "none")


def _is_local(url: str) -> bool:
    host = str(conninfo_to_dict(url).get("host") or "")
    return host in LOCAL_HOSTS or host.startswith("/")


def _free_bytes(path: Path) -> int | None:
    for candidate in (path, *path.parents):
        try:
            return shutil.disk_usage(candidate).free
        except OSError:
            continue
    return None


def disk_space(ctx: PreflightContext) -> Finding:
    source, target = ctx.source(), ctx.target_server()
    if source is None:
        return _not_checked("disk space", "source")
    row = source.execute(
        "SELECT coalesce(sum(pg_total_relation_size(to_regclass(t))), 0) "
        "FROM unnest(%s::text[]) t", [_relations(ctx)]).fetchone()
    need = DISK_NEED_FACTOR * int(row[0] if row else 0)
    shown_need = f"{need / 1e9:,.2f} GB needed ({DISK_NEED_FACTOR}× the mapped tables)"
    if target is None:
        return Finding("disk space", WARN, f"{shown_need}; free space not checked: no "
                       "connection to the target server")
    if not _is_local(ctx.target_url):
        return Finding("disk space", WARN, f"{shown_need}; free space unknown: the target "
                       "server is not on this machine, check it there")
    try:
        data_dir = target.execute("SHOW data_directory").fetchone()
    except psycopg.errors.InsufficientPrivilege:
        data_dir = None
    free = _free_bytes(Path(str(data_dir[0]))) if data_dir else None
    if free is None:
        return Finding("disk space", WARN, f"{shown_need}; free space unknown: the target's data "
                       "directory cannot be seen by this role")
    detail = f"{free / 1e9:,.2f} GB free for the target, {shown_need}"
    if free < need:
        return Finding("disk space", FAIL, detail, PreconditionFailed(
            f"too little disk for the target: {detail}", "free some space, or use another disk"))
    return Finding("disk space", OK, detail)


def recent_backup(ctx: PreflightContext) -> Finding:
    if ctx.source() is None:
        return _not_checked("backup", "source")
    found = recent_backups(ctx.backup_dir, ctx.source_url)
    hint = "run `edu-migrate backup --verify-restore`"
    if not found:
        return Finding("backup", WARN, f"no backup of the source in the last day: {hint}")
    tested = [r for r in found if r.verified == "restored"]
    age = datetime.now(UTC) - (tested or found)[0].created
    hours = f"{age.total_seconds() / 3600:.1f} h ago"
    if not tested:
        return Finding("backup", WARN, f"{found[0].file} ({hours}) was never test-restored: {hint}")
    return Finding("backup", OK, f"{tested[0].file} ({hours}), restore-tested")


def source_frozen(ctx: PreflightContext) -> Finding:
    conn = ctx.source()
    if conn is None:
        return _not_checked("source read-only", "source")
    if is_frozen(conn, conn.info.dbname):
        return Finding("source read-only", OK, "frozen: new sessions cannot write to it")
    return Finding("source read-only", OK, "writable; the migration only reads it "
                   "(`migrate --freeze-source` freezes it for the window)")


CHECKS: list[Check] = [
    source_connection, target_connection, source_version, target_version, legacy_tables,
    source_privileges, target_privileges, target_schema, target_foreign_tables, disk_space,
    recent_backup, source_frozen,
]


def standard_findings(ctx: PreflightContext) -> Iterator[Finding]:
    for check in CHECKS:
        yield check(ctx)


FINDING_PROVIDERS: list[FindingProvider] = [standard_findings]


@dataclass
class PreflightReport:
    findings: list[Finding]

    @property
    def blocking(self) -> list[Finding]:
        return [f for f in self.findings if f.blocking]

    @property
    def ready(self) -> bool:
        return not self.blocking

    @property
    def source_readable(self) -> bool:
        """Whether the source can be read as the legacy database: what findings about its data
        need."""
        return all(f.status != FAIL for f in self.findings if f.name in SOURCE_ACCESS)

    def to_dict(self) -> dict[str, Any]:
        return {"ready": self.ready, "findings": [f.to_dict() for f in self.findings]}


def run_preflight(source_url: str, target_url: str, backup_dir: Path,
                  mapping: LegacyMapping = DEFAULT_MAPPING) -> PreflightReport:
    with PreflightContext(source_url, target_url, backup_dir, mapping) as ctx:
        findings = [finding for provider in FINDING_PROVIDERS for finding in provider(ctx)]
    return PreflightReport(findings)
