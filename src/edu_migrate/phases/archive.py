"""The legacy tables the migration does not map, copied as they are into `legacy_archive`.

The old database has hundreds of tables besides the eight the phases read (schedules, news,
logs, old copies of tables). Nothing of it may vanish without a trace: once every phase is
done (by `migrate --all`, or by the `migrate --phase N` that runs the last one; validation fails
until then), every table of the source's schema `public` that is neither mapped nor excluded
by a name pattern (`exclude` in edu-migrate.toml, EDU_EXCLUDE) is recreated in the target's
schema `legacy_archive` with the same column names and types and filled by a binary COPY from
the run's source snapshot. Each table is dropped and recreated in one transaction, so running the
step again gives the same result. Types the target cannot know (the source's own enums and
domains) are archived as text.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from edu_migrate.pg.connect import connect
from edu_migrate.phases.staging import LEGACY_COLUMNS, SourceSnapshot
from edu_migrate.reporting import Reporter

ARCHIVE_SCHEMA = "legacy_archive"
MAPPED, ARCHIVED, EXCLUDED = "mapped", "archived", "excluded"

SOURCE_TABLES = """
SELECT c.relname, c.relname LIKE ANY(%(exclude)s::text[])
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND NOT c.relispartition
ORDER BY c.relname
"""

# Column names and types in table order; a type outside pg_catalog (an enum, a domain, an
# extension's type) is archived as text, the one type every target has.
SOURCE_COLUMNS = """
SELECT a.attname,
       CASE WHEN t.typnamespace = 'pg_catalog'::regnamespace
                 OR (t.typelem <> 0 AND e.typnamespace = 'pg_catalog'::regnamespace)
            THEN format_type(a.atttypid, a.atttypmod) ELSE 'text' END
FROM pg_attribute a
JOIN pg_type t ON t.oid = a.atttypid
LEFT JOIN pg_type e ON e.oid = t.typelem
WHERE a.attrelid = ('public.' || quote_ident(%(table)s))::regclass
  AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum
"""


@dataclass(frozen=True)
class TableEntry:
    """One table of the source, what the migration does with it, and its rows on both sides."""

    table: str
    rows: int
    status: str
    archived_rows: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ArchiveResult:
    archived: dict[str, int]
    excluded: list[str]


def source_inventory(source: psycopg.Connection, exclude: Sequence[str]) -> list[TableEntry]:
    """Every table of the source's schema public, with its exact row count and its status.
    Mapped tables are never excluded: the phases need them."""
    entries = []
    for name, excluded in source.execute(SOURCE_TABLES, {"exclude": list(exclude)}).fetchall():
        row = source.execute(sql.SQL("SELECT count(*) FROM public.{}").format(
            sql.Identifier(name))).fetchone()
        status = MAPPED if name in LEGACY_COLUMNS else EXCLUDED if excluded else ARCHIVED
        entries.append(TableEntry(name, int(row[0]) if row else 0, status))
    return entries


def archived_counts(target: psycopg.Connection) -> dict[str, int]:
    """Rows of each table in the target's legacy_archive (empty when it was never archived)."""
    names = [r[0] for r in target.execute(
        "SELECT tablename FROM pg_tables WHERE schemaname = %s", [ARCHIVE_SCHEMA])]
    counts = {}
    for name in names:
        row = target.execute(sql.SQL("SELECT count(*) FROM {}.{}").format(
            sql.Identifier(ARCHIVE_SCHEMA), sql.Identifier(name))).fetchone()
        counts[name] = int(row[0]) if row else 0
    return counts


def last_archive(target: psycopg.Connection) -> dict[str, Any] | None:
    """What the last archive step recorded in migration.run_log, or None."""
    row = target.execute("SELECT detail FROM migration.run_log WHERE event = 'archive' "
                         "ORDER BY id DESC LIMIT 1").fetchone()
    return dict(row[0]) if row else None


def _archive_table(snapshot: SourceSnapshot, target: psycopg.Connection, table: str) -> int:
    columns = snapshot.conn.execute(SOURCE_COLUMNS, {"table": table}).fetchall()
    archived = sql.Identifier(ARCHIVE_SCHEMA, table)
    target.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(archived))
    target.execute(sql.SQL("CREATE TABLE {} ({})").format(archived, sql.SQL(", ").join(
        sql.SQL("{} {}").format(sql.Identifier(name), sql.SQL(kind)) for name, kind in columns)))
    select = sql.SQL(", ").join(
        sql.SQL("{}::{}").format(sql.Identifier(name), sql.SQL(kind)) for name, kind in columns)
    with snapshot.conn.cursor() as out_cur, target.cursor() as in_cur:
        copy_out_sql = sql.SQL("COPY (SELECT {} FROM public.{}) TO STDOUT (FORMAT binary)").format(
            select, sql.Identifier(table))
        with out_cur.copy(copy_out_sql) as copy_out, in_cur.copy(sql.SQL(
                "COPY {} FROM STDIN (FORMAT binary)").format(archived)) as copy_in:
            for chunk in copy_out:
                copy_in.write(chunk)
        return max(out_cur.rowcount, 0)


def _fingerprint(conn: psycopg.Connection, table: sql.Composed) -> tuple[int, int]:
    """Rows and the sum of their hashes: equal on both sides when the rows are (the archive keeps
    the source's column types, or text, which renders alike)."""
    row = conn.execute(sql.SQL(
        "SELECT count(*), coalesce(sum(hashtextextended(t::text, 0)::numeric), 0) FROM {} t"
    ).format(table)).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def _unchanged(snapshot: SourceSnapshot, target: psycopg.Connection, table: str) -> bool:
    archived = sql.Identifier(ARCHIVE_SCHEMA, table)
    exists = target.execute("SELECT to_regclass(%s) IS NOT NULL",
                            [f"{ARCHIVE_SCHEMA}.{table}"]).fetchone()
    if not exists or not exists[0]:
        return False
    return _fingerprint(snapshot.conn, sql.SQL("public.{}").format(sql.Identifier(table))) \
        == _fingerprint(target, sql.SQL("{}").format(archived))


def archive_unmapped(snapshot: SourceSnapshot, target_url: str, exclude: Sequence[str],
                     reporter: Reporter, *, skip_unchanged: bool = False) -> ArchiveResult:
    """Copy every unmapped, not excluded source table into legacy_archive; record the step.
    `skip_unchanged` (a sync's refresh): copy only the tables whose rows differ from the
    archived ones."""
    entries = source_inventory(snapshot.conn, exclude)
    result = ArchiveResult({}, [e.table for e in entries if e.status == EXCLUDED])
    reporter.line("=" * 60)
    reporter.line("ARCHIVING UNMAPPED TABLES")
    reporter.line("=" * 60)
    with connect(target_url, purpose="target") as target:
        target.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(
            sql.Identifier(ARCHIVE_SCHEMA)))
        target.commit()
        for entry in entries:
            if entry.status != ARCHIVED:
                continue
            if skip_unchanged and _unchanged(snapshot, target, entry.table):
                result.archived[entry.table] = entry.rows
                continue
            with reporter.progress(f"archive {entry.table}", entry.rows) as advance:
                rows = _archive_table(snapshot, target, entry.table)
                target.commit()
                advance(rows)
            result.archived[entry.table] = rows
            reporter.line(f"✓ Archived {entry.table}: {rows} rows")
        for stale in sorted(set(archived_counts(target)) - set(result.archived)):
            target.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(ARCHIVE_SCHEMA, stale)))
            reporter.line(f"  dropped {ARCHIVE_SCHEMA}.{stale}: no longer an archived table")
        for table in result.excluded:
            reporter.line(f"! Excluded {table} (matches exclude = {list(exclude)}): not archived")
        target.execute("INSERT INTO migration.run_log (event, detail) VALUES ('archive', %s)",
                       [Jsonb({"archived": result.archived, "excluded": result.excluded,
                               "patterns": list(exclude)})])
        target.commit()
    return result
