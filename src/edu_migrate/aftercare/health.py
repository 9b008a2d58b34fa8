"""`edu-migrate health`: the guide's day-1 and week-1 watch over edu_v2.

Each finding has a severity and the one command that acts on it. `critical` means act now
(the command exits non-zero); `warning` means look at it this week; `info` is for the record.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from edu_migrate.aftercare.sqlfiles import query
from edu_migrate.backup import BackupRecord, read_manifest, server_of
from edu_migrate.pg.connect import connect
from edu_migrate.pg.urls import database_name, masked
from edu_migrate.schema import applied_version, versions

CRITICAL, WARNING, INFO = "critical", "warning", "info"
# Schemas of the migration's own bookkeeping and staging: not the application's access paths.
BOOKKEEPING_SCHEMAS = ["migration", "stage", "pg_toast"]
# Above this many rows, a join or a parent's delete through an unindexed foreign key reads enough
# of the table to hurt at once; below it, the index is worth adding but nothing is urgent.
FK_ROWS_URGENT = 10_000
IDLE_IN_TRANSACTION_SECONDS = 300
CONNECTIONS_URGENT_SHARE = 0.9
DEAD_ROWS_MINIMUM = 1_000
ANALYSE_MINIMUM = 1_000
DEAD_ROWS_SHARE = 0.2
SLOW_STATEMENT_MS = 100.0
# A nightly backup that is more than a day and a bit old did not run last night.
BACKUP_MAX_AGE = timedelta(hours=26)
TOP_STATEMENTS = 5
BACKUP_COMMAND = "edu-migrate backup --verify-restore --only target"


@dataclass(frozen=True)
class HealthFinding:
    check: str
    severity: str
    message: str
    command: str

    def line(self) -> str:
        mark = {CRITICAL: "✗", WARNING: "!", INFO: "·"}[self.severity]
        return f"{mark} {self.severity:<8} {self.check}: {self.message}"


@dataclass
class HealthReport:
    database: str
    checked_at: str
    connections: list[dict[str, Any]] = field(default_factory=list)
    statements: list[dict[str, Any]] = field(default_factory=list)
    findings: list[HealthFinding] = field(default_factory=list)

    @property
    def needs_action(self) -> bool:
        return any(f.severity == CRITICAL for f in self.findings)

    def to_dict(self) -> dict[str, Any]:
        return {"database": self.database, "checked_at": self.checked_at,
                "needs_action": self.needs_action, "connections": self.connections,
                "statements": self.statements, "findings": [asdict(f) for f in self.findings]}


def _qualified(conn: psycopg.Connection, schema: str, name: str) -> str:
    return sql.Identifier(schema, name).as_string(conn)


def _connections(conn: psycopg.Connection, report: HealthReport) -> None:
    report.connections = [{"state": state, "application": application, "sessions": int(n)}
                          for state, application, n in
                          conn.execute(query("health_connections")).fetchall()]
    row = conn.execute(query("health_capacity")).fetchone()
    assert row is not None
    sessions, usable = int(row[0]), int(row[1])
    if sessions >= CONNECTIONS_URGENT_SHARE * usable:
        report.findings.append(HealthFinding(
            "connections", CRITICAL, f"{sessions} client sessions of {usable} the server accepts",
            "edu-migrate tune --connections N  (or put a pooler such as PgBouncer in front)"))
    for pid, application, seconds in conn.execute(
            query("health_idle_in_transaction"),
            {"seconds": IDLE_IN_TRANSACTION_SECONDS}).fetchall():
        report.findings.append(HealthFinding(
            "idle in transaction", WARNING,
            f"session {pid} ({application}) has held a transaction open for {seconds // 60} min",
            f"SELECT pg_terminate_backend({int(pid)});"))


def _statements(conn: psycopg.Connection, report: HealthReport) -> None:
    installed = conn.execute("SELECT 1 FROM pg_extension "
                             "WHERE extname = 'pg_stat_statements'").fetchone()
    # A role that may not read the setting does not see its row: then the extension tells.
    row = conn.execute("SELECT setting FROM pg_settings "
                       "WHERE name = 'shared_preload_libraries'").fetchone()
    loaded = "pg_stat_statements" in str(row[0]) if row else installed is not None
    if not loaded:
        report.findings.append(HealthFinding(
            "statements", INFO, "pg_stat_statements is not loaded, so the slowest and most "
            "frequent statements are unknown: load it (a restart), then CREATE EXTENSION "
            "pg_stat_statements in this database",
            "edu-migrate tune --apply  (it adds pg_stat_statements to "
            "shared_preload_libraries; restart the server)"))
        return
    if not installed:
        report.findings.append(HealthFinding(
            "statements", INFO, "pg_stat_statements is loaded but not created in this database",
            "CREATE EXTENSION pg_stat_statements;"))
        return
    for kind, text, calls, mean_ms, total_ms in conn.execute(
            query("health_statements"), {"limit": TOP_STATEMENTS}).fetchall():
        shown = " ".join(str(text).split())
        report.statements.append({"kind": kind, "query": shown, "calls": int(calls),
                                  "mean_ms": round(float(mean_ms), 3),
                                  "total_ms": round(float(total_ms), 1)})
        if kind == "slowest" and float(mean_ms) > SLOW_STATEMENT_MS:
            report.findings.append(HealthFinding(
                "slow statement", WARNING,
                f"{float(mean_ms):,.0f} ms on average over {int(calls):,} calls: {shown[:120]}",
                f"EXPLAIN (ANALYZE, BUFFERS) {shown};  -- with values for $1, $2 …"))


def _index_name(table: str, columns: list[str]) -> str:
    return re.sub(r"\W", "_", f"{table}_{'_'.join(columns)}_idx")[:63]


def _foreign_keys(conn: psycopg.Connection, report: HealthReport) -> None:
    for schema, table, constraint, columns, rows in conn.execute(
            query("health_fk_without_index")).fetchall():
        statement = sql.SQL("CREATE INDEX CONCURRENTLY {} ON {} ({});").format(
            sql.Identifier(_index_name(table, columns)), sql.Identifier(schema, table),
            sql.SQL(", ").join(sql.Identifier(c) for c in columns)).as_string(conn)
        severity = CRITICAL if rows >= FK_ROWS_URGENT else WARNING
        report.findings.append(HealthFinding(
            "foreign key without index", severity,
            f"{schema}.{table} ({', '.join(columns)}) of {constraint}, about {rows:,} rows: "
            "joins and deletes in the parent read the whole table", statement))


def _shown_bytes(size: int) -> str:
    return f"{size / 1e6:,.1f} MB" if size >= 1e6 else f"{size // 1000:,} kB"


def _indexes(conn: psycopg.Connection, report: HealthReport) -> None:
    skip = {"skip": BOOKKEEPING_SCHEMAS}
    for schema, table, index, kept, exact in conn.execute(
            query("health_duplicate_indexes"), skip).fetchall():
        what = "duplicates" if exact else "is a leading part of"
        report.findings.append(HealthFinding(
            "redundant index", WARNING, f"{schema}.{index} on {table} {what} {kept}",
            f"DROP INDEX CONCURRENTLY {_qualified(conn, schema, index)};"))
    for schema, table, index, size, since in conn.execute(
            query("health_unused_indexes"), skip).fetchall():
        days = (datetime.now(UTC) - since).days
        # An index unused for a day after the cutover says little; after a week of real traffic
        # it is worth a look (the guide's week-1 task).
        severity = WARNING if days >= 7 else INFO
        report.findings.append(HealthFinding(
            "unused index", severity,
            f"{schema}.{index} on {table} ({_shown_bytes(size)}) has not been scanned in "
            f"{days} days of statistics", f"DROP INDEX CONCURRENTLY "
            f"{_qualified(conn, schema, index)};"))


def _tables(conn: psycopg.Connection, report: HealthReport) -> None:
    for schema, table, live, dead, never_analysed in conn.execute(
            query("health_table_stats"),
            {"skip": BOOKKEEPING_SCHEMAS, "dead_minimum": DEAD_ROWS_MINIMUM,
             "dead_share": DEAD_ROWS_SHARE, "analyse_minimum": ANALYSE_MINIMUM}).fetchall():
        name = _qualified(conn, schema, table)
        if never_analysed:
            report.findings.append(HealthFinding(
                "never analysed", WARNING,
                f"{schema}.{table} ({live:,} rows) has no statistics: the planner guesses",
                f"ANALYZE {name};"))
        else:
            report.findings.append(HealthFinding(
                "dead rows", WARNING,
                f"{schema}.{table} holds {dead:,} dead rows beside {live:,} live ones",
                f"VACUUM (ANALYZE) {name};"))


def _secured_tables() -> list[str]:
    text = "\n".join(v.text for v in versions())
    return sorted(set(re.findall(r"ALTER TABLE (\w+) FORCE ROW LEVEL SECURITY", text)))


def _row_security(conn: psycopg.Connection, report: HealthReport) -> None:
    tables = _secured_tables()
    rows = conn.execute(query("health_row_security"), {"tables": tables}).fetchall()
    loose = [name for name, enabled, forced in rows if not (enabled and forced)]
    for name in loose:
        report.findings.append(HealthFinding(
            "row-level security", CRITICAL,
            f"{name} no longer forces row-level security: its owner and every role that owns "
            "it read all rows", sql.SQL("ALTER TABLE {} ENABLE ROW LEVEL SECURITY, "
                                        "FORCE ROW LEVEL SECURITY;").format(
                sql.Identifier("public", name)).as_string(conn)))
    if rows and not loose:
        report.findings.append(HealthFinding(
            "row-level security", INFO, f"enabled and forced on all {len(rows)} business tables",
            "SELECT relname, relrowsecurity, relforcerowsecurity FROM pg_class "
            "WHERE relrowsecurity;"))


def _verified_backups(conn: psycopg.Connection, backup_dir: Path, url: str
                      ) -> list[BackupRecord]:
    """Verified dumps of this database: the manifest here, and those run_log remembers."""
    database, server = database_name(url), server_of(url)
    found = {r.file: r for r in read_manifest(backup_dir)
             if r.database == database and r.server == server and r.verified == "restored"}
    if applied_version(conn) is not None:
        for (detail,) in conn.execute("SELECT detail FROM migration.run_log "
                                      "WHERE event = 'backup' AND detail ->> 'verified' = "
                                      "'restored' AND detail ->> 'database' = %s",
                                      [database]).fetchall():
            fields = {k: v for k, v in detail.items() if k in BackupRecord.__dataclass_fields__}
            if fields.get("file") not in found:
                try:
                    found[str(fields["file"])] = BackupRecord(**fields)
                except (TypeError, KeyError):
                    continue  # an entry of an older format: the manifest has the record
    return sorted(found.values(), key=lambda r: r.created, reverse=True)


def _backup_age(conn: psycopg.Connection, backup_dir: Path, url: str,
                report: HealthReport) -> None:
    backups = _verified_backups(conn, backup_dir, url)
    name = database_name(url)
    if not backups:
        report.findings.append(HealthFinding(
            "backup", CRITICAL, f"no verified backup of {name}: none restored and counted",
            BACKUP_COMMAND))
        return
    newest = backups[0]
    age = datetime.now(UTC) - newest.created
    hours = age.total_seconds() / 3600
    if age > BACKUP_MAX_AGE:
        report.findings.append(HealthFinding(
            "backup", CRITICAL, f"the last verified backup of {name} is {hours:,.0f} h old "
            f"({newest.file}): the nightly backup did not run",
            "edu-migrate backup schedule --install  (and now: " + BACKUP_COMMAND + ")"))
    else:
        report.findings.append(HealthFinding(
            "backup", INFO, f"last verified backup of {name} {hours:,.1f} h ago ({newest.file})",
            "edu-migrate backup list"))


def check_health(url: str, backup_dir: Path) -> HealthReport:
    """Every check, read-only, in one session of edu_v2."""
    report = HealthReport(masked(url), datetime.now(UTC).replace(microsecond=0).isoformat())
    with connect(url, purpose="target", read_only=True) as conn:
        _connections(conn, report)
        _statements(conn, report)
        _foreign_keys(conn, report)
        _indexes(conn, report)
        _tables(conn, report)
        _row_security(conn, report)
        _backup_age(conn, backup_dir, url, report)
        conn.rollback()
    order = {CRITICAL: 0, WARNING: 1, INFO: 2}
    report.findings.sort(key=lambda f: order[f.severity])
    return report
