"""The legacy tables the migration does not map, copied as they are into `legacy_archive`.

The old database has hundreds of tables besides the eight the phases read (schedules, news,
logs, old copies of tables). Nothing of it may vanish without a trace: after the phases, every
table of the source's schema `public` (and of each schema the legacy mapping reads from) that is
neither mapped nor excluded by a name pattern (`exclude` in edu-migrate.toml, EDU_EXCLUDE) is
recreated in the target's schema `legacy_archive` with the same column names and types (a table
of another schema as `legacy_archive."schema.table"`) and filled by a binary COPY from the
run's source snapshot. Each table is dropped and recreated in one transaction, so running the
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

from edu_migrate.mapping import CANONICAL_SCHEMA, DEFAULT_MAPPING, LegacyMapping
from edu_migrate.pg.connect import connect
from edu_migrate.phases.staging import SourceSnapshot
from edu_migrate.reporting import Reporter

ARCHIVE_SCHEMA = "legacy_archive"
MAPPED, ARCHIVED, EXCLUDED = "mapped", "archived", "excluded"

SOURCE_TABLES = """
SELECT n.nspname, c.relname,
       c.relname LIKE ANY(%(exclude)s::text[])
       OR n.nspname || '.' || c.relname LIKE ANY(%(exclude)s::text[])
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = ANY(%(schemas)s::text[]) AND c.relkind IN ('r', 'p') AND NOT c.relispartition
ORDER BY n.nspname <> 'public', n.nspname, c.relname
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
WHERE a.attrelid = %(relation)s::regclass
  AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum
"""


@dataclass(frozen=True)
class TableEntry:
    """One table of the source, what the migration does with it, and its rows on both sides.
    `table` is its name in public, `schema.table` elsewhere, and its name in legacy_archive;
    `maps` names the legacy tables it holds when it is mapped."""

    table: str
    rows: int
    status: str
    archived_rows: int | None = None
    schema: str = CANONICAL_SCHEMA
    maps: str | None = None

    @property
    def relation(self) -> sql.Identifier:
        return sql.Identifier(self.schema, self.table.removeprefix(f"{self.schema}."))

    @property
    def archive_name(self) -> str:
        return self.table

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ArchiveResult:
    archived: dict[str, int]
    excluded: list[str]


def source_inventory(source: psycopg.Connection, exclude: Sequence[str],
                     mapping: LegacyMapping = DEFAULT_MAPPING) -> list[TableEntry]:
    """Every table of the source's schema public and of the schemas the mapping reads, with its
    exact row count and its status. Mapped tables are never excluded: the phases need them."""
    entries = []
    for schema, name, excluded in source.execute(SOURCE_TABLES, {
            "exclude": list(exclude), "schemas": mapping.schemas()}).fetchall():
        row = source.execute(sql.SQL("SELECT count(*) FROM {}").format(
            sql.Identifier(schema, name))).fetchone()
        legacy = mapping.legacy_tables_of(schema, name)
        status = MAPPED if legacy else EXCLUDED if excluded else ARCHIVED
        shown = name if schema == CANONICAL_SCHEMA else f"{schema}.{name}"
        entries.append(TableEntry(shown, int(row[0]) if row else 0, status, None, schema,
                                  ", ".join(legacy) or None))
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


def _archive_table(snapshot: SourceSnapshot, target: psycopg.Connection,
                   entry: TableEntry) -> int:
    columns = snapshot.conn.execute(SOURCE_COLUMNS, {
        "relation": entry.relation.as_string(snapshot.conn)}).fetchall()
    archived = sql.Identifier(ARCHIVE_SCHEMA, entry.archive_name)
    target.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(archived))
    target.execute(sql.SQL("CREATE TABLE {} ({})").format(archived, sql.SQL(", ").join(
        sql.SQL("{} {}").format(sql.Identifier(name), sql.SQL(kind)) for name, kind in columns)))
    select = sql.SQL(", ").join(
        sql.SQL("{}::{}").format(sql.Identifier(name), sql.SQL(kind)) for name, kind in columns)
    with snapshot.conn.cursor() as out_cur, target.cursor() as in_cur:
        copy_out_sql = sql.SQL("COPY (SELECT {} FROM {}) TO STDOUT (FORMAT binary)").format(
            select, entry.relation)
        with out_cur.copy(copy_out_sql) as copy_out, in_cur.copy(sql.SQL(
                "COPY {} FROM STDIN (FORMAT binary)").format(archived)) as copy_in:
            for chunk in copy_out:
                copy_in.write(chunk)
        return max(out_cur.rowcount, 0)


def archive_unmapped(snapshot: SourceSnapshot, target_url: str, exclude: Sequence[str],
                     reporter: Reporter) -> ArchiveResult:
    """Copy every unmapped, not excluded source table into legacy_archive; record the step."""
    entries = source_inventory(snapshot.conn, exclude, snapshot.mapping)
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
            with reporter.progress(f"archive {entry.table}", entry.rows) as advance:
                rows = _archive_table(snapshot, target, entry)
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
