"""Stage: stream legacy tables from the source into UNLOGGED tables of the target, as they are.

Binary COPY out of the source and into the target, chunk by chunk, never a table in memory. All
reads share one exported snapshot of the source, in read-only transactions, so every phase sees
the same legacy data and the source is never written. Large tables are split by id range over
parallel sessions.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from queue import Empty, SimpleQueue

import psycopg
from psycopg import sql

from edu_migrate.mapping import DEFAULT_MAPPING, LEGACY_COLUMNS, LegacyMapping, MappedTable
from edu_migrate.mapping.fit import missing_names, require_names
from edu_migrate.pg.connect import connect
from edu_migrate.runlog import Advance, Reporter

STAGE_SCHEMA = "stage"

# Every session that renders rows as text for a comparison (the archive's fingerprints) renders
# dates alike, whatever the server's default.
FIXED_DATESTYLE = "SET datestyle = 'ISO, YMD'"

# xmin is 32 bits: a horizon further back than this cannot be told from a wrapped-around id.
HORIZON_REACH = 2**31 - 10_000_000

# Tables below this many rows are copied in one piece.
PARALLEL_THRESHOLD = 200_000


@dataclass(frozen=True)
class StageResult:
    table: str
    rows: int


class SourceSnapshot:
    """One read-only, repeatable-read transaction on the source, whose snapshot every reader
    imports. Held open for the whole run."""

    def __init__(self, source_url: str, mapping: LegacyMapping = DEFAULT_MAPPING) -> None:
        self.source_url = source_url
        self.mapping = mapping
        self._cm = connect(source_url, purpose="source", read_only=True)
        self.conn: psycopg.Connection = self._cm.__enter__()
        self.conn.execute(FIXED_DATESTYLE)
        self.conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        row = self.conn.execute(
            "SELECT pg_export_snapshot(), now(), "
            "pg_snapshot_xmin(pg_current_snapshot())::text::bigint, "
            "pg_snapshot_xmax(pg_current_snapshot())::text::bigint, "
            "pg_current_snapshot()::text").fetchone()
        assert row is not None
        self.snapshot_id: str | None = row[0]
        # The snapshot's time: the default as-of time of a run that reads it.
        self.taken_at: datetime = row[1]
        # The oldest transaction it saw running: every row it does not see was written by this
        # transaction or a later one (phases/changes.py). And the next transaction id then.
        self.horizon: int = int(row[2])
        self.next_xid: int = int(row[3])
        # The snapshot itself (xmin:xmax:running), to tell a snapshot older than the mirror.
        self.snapshot_text: str = str(row[4])
        # Where the source's WAL was when the snapshot was taken (read after it), and on which
        # timeline: a restored source or a promoted standby goes back or moves to another.
        self.lsn, self.timeline = self.position()

    def position(self) -> tuple[str, int | None]:
        """The source's WAL position now and its timeline (None where this role may not read
        it), with functions a read-only transaction, and a standby, may call."""
        row = self.conn.execute(
            "SELECT CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() "
            "ELSE pg_current_wal_insert_lsn() END::text, "
            "CASE WHEN NOT pg_is_in_recovery() THEN "
            "('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::bigint "
            "END").fetchone()
        assert row is not None
        lsn, timeline = str(row[0]), (None if row[1] is None else int(row[1]))
        if timeline is None:  # a standby: the timeline of its last restartpoint
            try:
                with self.conn.transaction():
                    found = self.conn.execute(
                        "SELECT timeline_id::bigint FROM pg_control_checkpoint()").fetchone()
                    timeline = None if found is None or found[0] is None else int(found[0])
            except psycopg.errors.InsufficientPrivilege:
                timeline = None
        return lsn, timeline

    def reaches_back_to(self, horizon: int) -> bool:
        """Whether the rows written since `horizon` (a 64-bit transaction id) can be told by
        their 32-bit xmin: the horizon is no later than this snapshot and less than 2^31
        transactions back. A source restored from a backup runs behind a horizon taken later."""
        return 0 <= self.next_xid - horizon < HORIZON_REACH

    def identity(self) -> tuple[str | None, str]:
        """The source cluster's system identifier (None where this role may not read it) and the
        database's name: what a sync checks so that it never applies another source's rows."""
        row = self.conn.execute("SELECT current_database()").fetchone()
        assert row is not None
        database = str(row[0])
        try:
            with self.conn.transaction():
                ident = self.conn.execute(
                    "SELECT system_identifier::text FROM pg_control_system()").fetchone()
        except psycopg.errors.InsufficientPrivilege:
            return None, database
        return (str(ident[0]) if ident else None), database

    def close(self) -> None:
        self.conn.rollback()
        self._cm.__exit__(None, None, None)

    @contextmanager
    def reader(self) -> Iterator[psycopg.Connection]:
        """A further source session that sees exactly the same data."""
        with connect(self.source_url, purpose="source", read_only=True) as conn:
            conn.execute(FIXED_DATESTYLE)
            conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            conn.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(
                sql.Literal(self.snapshot_id)))
            try:
                yield conn
            finally:
                conn.rollback()


def snapshot_older_than(conn: psycopg.Connection, older: str, than: str) -> bool:
    """Whether the snapshot `older` (a pg_snapshot's text) may not see a transaction committed
    that `than` sees, as the source's commit log in `conn` says. Conservative: an xid assigned
    after `older` and before `than` counts as committed in between (it may have written
    nothing: the caller then only does more work or refuses once more). Only meaningful for
    snapshots of one history (the source did not go back)."""
    row = conn.execute(
        "SELECT pg_snapshot_xmax(%(c)s::pg_snapshot) < pg_snapshot_xmax(%(r)s::pg_snapshot) "
        "OR EXISTS (SELECT 1 FROM pg_snapshot_xip(%(c)s::pg_snapshot) x "
        "  WHERE pg_visible_in_snapshot(x, %(r)s::pg_snapshot) "
        "  AND pg_xact_status(x) = 'committed')", {"c": older, "r": than}).fetchone()
    return bool(row and row[0])


def missing_legacy_columns(conn: psycopg.Connection, tables: tuple[str, ...] | None = None,
                           mapping: LegacyMapping = DEFAULT_MAPPING) -> list[str]:
    """'table' or 'table.column' for everything the mapping reads that the source lacks."""
    return missing_names(conn, mapping, tables)


def require_legacy_tables(conn: psycopg.Connection, tables: tuple[str, ...] | None = None,
                          hint: str | None = None,
                          mapping: LegacyMapping = DEFAULT_MAPPING) -> None:
    """Refuse, naming what is missing, a source that lacks what the mapping reads."""
    require_names(conn, mapping, tables, hint)


def stage_ddl(table: str) -> sql.Composed:
    columns = sql.SQL(", ").join(
        sql.SQL("{} {}").format(sql.Identifier(name), sql.SQL(kind))
        for name, kind in LEGACY_COLUMNS[table])
    return sql.SQL("CREATE UNLOGGED TABLE {}.{} ({})").format(
        sql.Identifier(STAGE_SCHEMA), sql.Identifier(table), columns)


def _select_from_source(source: MappedTable, ranged: bool) -> sql.Composed:
    where = sql.SQL(" WHERE {0} >= %(low)s AND {0} < %(high)s").format(
        source.id.expression) if ranged else sql.SQL("")
    return sql.SQL("COPY (SELECT {} FROM {}{}) TO STDOUT (FORMAT binary)").format(
        source.select_list(), source.relation, where)


def row_hash_of(columns: sql.Composable) -> sql.Composed:
    """A 64-bit hash of one staged row. Computed by the source over its cast columns and by the
    target over the staged ones, it is the same number for the same values: each column is
    hashed by its type's own hash function (no rendering as text, half the cost) and the
    columns combined alike (hash_record_extended, PostgreSQL 14 and later)."""
    return sql.SQL("hash_record_extended(ROW({}), 0)").format(columns)


def source_row_hashes(source: MappedTable) -> sql.Composed:
    """COPY out (id, row hash) of every row of a legacy table, as the source holds it now."""
    return sql.SQL("COPY (SELECT {}, {} FROM {}) TO STDOUT (FORMAT binary)").format(
        source.id.staged(), row_hash_of(source.select_list()), source.relation)


def staged_row_hash(table: str, alias: str) -> sql.Composed:
    """The same hash over stage.<table>'s row `alias`."""
    return row_hash_of(sql.SQL(", ").join(
        sql.Identifier(alias, name) for name, _ in LEGACY_COLUMNS[table]))


def source_rows_by_id(source: MappedTable) -> sql.Composed:
    """COPY out the staged columns of the rows whose ids are in the array %(ids)s."""
    return sql.SQL("COPY (SELECT {} FROM {} WHERE {} = ANY(%(ids)s)) TO STDOUT "
                   "(FORMAT binary)").format(source.select_list(), source.relation,
                                             source.id.expression)


def source_rows(source: MappedTable) -> sql.Composed:
    return _select_from_source(source, False)


def copy_into_stage(table: str) -> sql.Composed:
    return sql.SQL("COPY {}.{} FROM STDIN (FORMAT binary)").format(
        sql.Identifier(STAGE_SCHEMA), sql.Identifier(table))


def _pipe(source: psycopg.Connection, target: psycopg.Connection, mapped: MappedTable,
          params: dict[str, int] | None) -> int:
    with source.cursor() as out_cur, target.cursor() as in_cur:
        statement = _select_from_source(mapped, params is not None)
        with out_cur.copy(statement, params) as copy_out, \
                in_cur.copy(copy_into_stage(mapped.legacy)) as copy_in:
            for chunk in copy_out:
                copy_in.write(chunk)
        return max(out_cur.rowcount, 0)


# What the staged rows of a table are read through, besides the rows themselves: none of it
# writes a row version when it changes, so a horizon cannot see it (phases/changes.py). The
# relation (a table renamed into its place is another oid), every column of it (a column swap
# by RENAMEs keeps the names and moves the numbers), the labels of the enum types its columns
# are of (ALTER TYPE … RENAME VALUE), and, for a table read through an expression, every
# function and enum outside the system's schemas (an expression's functions, and what they
# call, replaced) and the settings a cast or a name depends on.
FINGERPRINT_SQL = """
WITH RECURSIVE used_types(oid) AS (
    SELECT a.atttypid FROM pg_attribute a
    WHERE a.attrelid = %(rel)s::regclass AND a.attnum > 0 AND NOT a.attisdropped
    UNION
    SELECT unnest(ARRAY[t.typbasetype, t.typelem]) FROM pg_type t JOIN used_types u USING (oid)
)
SELECT md5(concat_ws(E'\\n', %(mapping)s::text, c.oid::text, c.relkind::text,
    (SELECT string_agg(concat_ws(':', a.attnum, a.attname, a.atttypid, a.atttypmod,
                                 a.attcollation), ',' ORDER BY a.attnum)
     FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped),
    (SELECT string_agg(concat_ws(':', e.enumtypid, e.enumsortorder, e.enumlabel), ','
                       ORDER BY e.enumtypid, e.enumsortorder)
     FROM pg_enum e WHERE %(expressions)s OR e.enumtypid IN (SELECT oid FROM used_types)),
    CASE WHEN %(expressions)s THEN (
        SELECT string_agg(concat_ws(':', p.oid, n.nspname, p.proname, p.provolatile,
                                    p.prorettype, p.proargtypes::text, md5(p.prosrc), p.probin,
                                    p.proconfig::text), ',' ORDER BY p.oid)
        FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')) END,
    CASE WHEN %(expressions)s THEN current_setting('search_path') END,
    current_setting('server_version_num'), current_setting('TimeZone'),
    current_setting('DateStyle'), current_setting('IntervalStyle'),
    current_setting('extra_float_digits'),
    (SELECT datcollate || ':' || datctype FROM pg_database
     WHERE datname = current_database())))
FROM pg_class c WHERE c.oid = %(rel)s::regclass
"""


def definitions_fingerprint(conn: psycopg.Connection, mapped: MappedTable) -> str:
    """A digest of what `mapped`'s staged rows are read through, as `conn`'s snapshot sees the
    catalogue: equal digests, the same rows stage alike."""
    described = "|".join([mapped.shown, *(f"{c.name}:{c.staged_type}:{c.kind}:{c.text}"
                                          for c in mapped.columns)])
    row = conn.execute(FINGERPRINT_SQL, {
        "rel": mapped.relation.as_string(conn), "mapping": described,
        "expressions": any(c.kind == "sql" for c in mapped.columns)}).fetchone()
    assert row is not None
    return str(row[0])


@dataclass(frozen=True)
class MirrorSource:
    """Where a mirrored table's rows were read: the snapshot (its horizon, the snapshot, the WAL
    position and timeline) and the definitions' fingerprint."""

    horizon: int
    snapshot: str
    lsn: str
    timeline: int | None
    fingerprint: str

    @staticmethod
    def of(snapshot: SourceSnapshot, fingerprint: str) -> MirrorSource:
        return MirrorSource(snapshot.horizon, snapshot.snapshot_text, snapshot.lsn,
                            snapshot.timeline, fingerprint)


MIRROR_SOURCE_COLUMNS = ("source_horizon, source_snapshot, source_lsn, source_timeline, "
                         "source_fingerprint")
MIRROR_SOURCE_UPDATE = ("source_horizon = excluded.source_horizon, "
                        "source_snapshot = excluded.source_snapshot, "
                        "source_lsn = excluded.source_lsn, "
                        "source_timeline = excluded.source_timeline, "
                        "source_fingerprint = excluded.source_fingerprint")


def mirror_source_values(source: MirrorSource) -> list[object]:
    return [source.horizon, source.snapshot, source.lsn, source.timeline, source.fingerprint]


def record_mirror(conn: psycopg.Connection, table: str, rows: int, source: MirrorSource,
                  stale_phases: list[int] | None = None) -> None:
    """Note how many rows stage.<table> holds, and where they were read: a sync compares the
    count, to tell a staged copy that a server crash emptied (stage tables are UNLOGGED) from a
    source that has no rows, and reads the rows written since the horizon as long as nothing
    under the mirror changed. `stale_phases`: done phases that read an earlier copy."""
    conn.execute("INSERT INTO migration.mirror_state (table_name, rows, "
                 f"{MIRROR_SOURCE_COLUMNS}, stale_phases) "
                 "VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (table_name) DO UPDATE "
                 f"SET rows = excluded.rows, {MIRROR_SOURCE_UPDATE}, "
                 "stale_phases = ARRAY(SELECT DISTINCT unnest(migration.mirror_state.stale_phases "
                 "|| excluded.stale_phases) ORDER BY 1), staged_at = clock_timestamp()",
                 [table, rows, *mirror_source_values(source), stale_phases or []])


def stage_tables(snapshot: SourceSnapshot, target_url: str, tables: tuple[str, ...], *,
                 batch_size: int, workers: int, reporter: Reporter,
                 source: psycopg.Connection | None = None,
                 stale_phases: dict[str, list[int]] | None = None) -> list[StageResult]:
    """(Re)create stage.<table> for each table and fill it from the snapshot. `source`: a reader
    of the snapshot to use instead of the snapshot's own session (a background thread's).
    `stale_phases`: per table, the done phases that read an earlier copy of it."""
    source = snapshot.conn if source is None else source
    stale_phases = stale_phases or {}
    fingerprints: dict[str, str] = {}
    results: list[StageResult] = []
    with connect(target_url, purpose="target", autocommit=True) as target:
        target.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(
            sql.Identifier(STAGE_SCHEMA)))
        for table in tables:
            # with the counts a sync keeps of the mirror (phases/changes.py)
            target.execute(sql.SQL("DROP TABLE IF EXISTS {}.{}, {}.{}").format(
                sql.Identifier(STAGE_SCHEMA), sql.Identifier(table),
                sql.Identifier(STAGE_SCHEMA), sql.Identifier(f"buckets_{table}")))
            target.execute(stage_ddl(table))
    for table in tables:
        mapped = snapshot.mapping[table]
        require_legacy_tables(source, (table,), mapping=snapshot.mapping)
        fingerprints[table] = definitions_fingerprint(source, mapped)
        bounds = source.execute(sql.SQL(
            "SELECT count(*), min({0}), max({0}) FROM {1}").format(
                mapped.id.expression, mapped.relation)).fetchone()
        assert bounds is not None
        total, low, high = int(bounds[0]), bounds[1], bounds[2]
        with reporter.progress(f"stage {table}", total) as advance:
            if total < PARALLEL_THRESHOLD or low is None or high is None:
                with connect(target_url, purpose="target") as target:
                    rows = _pipe(source, target, mapped, None)
                    target.commit()
                advance(rows)
            else:
                rows = _stage_in_ranges(snapshot, target_url, mapped, int(low), int(high),
                                        batch_size, workers, advance)
        with connect(target_url, purpose="target", autocommit=True) as target:
            target.execute(sql.SQL("ANALYZE {}.{}").format(
                sql.Identifier(STAGE_SCHEMA), sql.Identifier(table)))
            record_mirror(target, table, rows, MirrorSource.of(snapshot, fingerprints[table]),
                          stale_phases.get(table))
        results.append(StageResult(table, rows))
    return results


def _stage_in_ranges(snapshot: SourceSnapshot, target_url: str, mapped: MappedTable, low: int,
                     high: int, batch_size: int, workers: int, advance: Advance) -> int:
    ranges: SimpleQueue[tuple[int, int]] = SimpleQueue()
    for start in range(low, high + 1, batch_size):
        ranges.put((start, start + batch_size))
    lock = threading.Lock()
    copied = [0]
    failures: list[BaseException] = []

    def work() -> None:
        try:
            with snapshot.reader() as source, connect(target_url, purpose="target") as target:
                while not failures:
                    try:
                        start, end = ranges.get_nowait()
                    except Empty:
                        break
                    rows = _pipe(source, target, mapped, {"low": start, "high": end})
                    with lock:
                        copied[0] += rows
                        advance(rows)
                target.commit()
        except BaseException as exc:  # a worker's failure must stop the run, not vanish
            failures.append(exc)

    threads = [threading.Thread(target=work, name=f"stage-{mapped.legacy}-{n}")
               for n in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise failures[0]
    return copied[0]

