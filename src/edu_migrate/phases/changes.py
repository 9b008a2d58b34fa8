"""What changed in a legacy table since the mirror was taken: the rows inserted, updated and
deleted, found from one snapshot of the source without writing to it.

Two ways, the same answer:

- **Since the horizon** (the usual way). Every row a transaction wrote after the mirror's
  snapshot carries that transaction's id in its `xmin`, and that id is at least the snapshot's
  horizon (the oldest transaction it saw running). So the source returns only the rows whose
  `xmin` is that new (one scan comparing integers, no hashing), and the target keeps those whose
  staged columns differ from the mirror's. Deletions leave no row to find: the source counts its
  rows, and only when there are fewer than the mirror's plus those just inserted does it count
  its ids per bucket of 64 consecutive ids; the target compares with the mirror's counts per
  bucket, and only for buckets that disagree are the source's ids read. Used when the
  source table is a table (not a view) with a unique index on its id column, the horizon is
  known, and fewer than 2³¹ transactions lie between it and now (`xmin` is 32 bits).
- **By comparison** (the fallback, and always right). The source hashes every row, the target
  compares every hash with the mirror's.

A row's `xmin` can only be newer than the horizon, never older, so the first way can return too
many rows (they are compared and dropped) but never miss one: an update, an insert, a row
written in a savepoint, a row frozen by VACUUM (its `xmin` is kept) are all seen. A source whose
transaction counter went back (restored from a backup) is compared the second way.
"""

from __future__ import annotations

import contextlib
import re
import tempfile
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import IO, Any

import psycopg
from psycopg import sql

from edu_migrate.errors import PreconditionFailed
from edu_migrate.mapping import MappedTable
from edu_migrate.phases import sqlfile
from edu_migrate.phases.feed import FEED_ROWS, OpenFeed, lsn_value
from edu_migrate.phases.mirror_index import BUCKET_BITS, buckets_table, count_buckets, index_mirror
from edu_migrate.phases.staging import (
    STAGE_SCHEMA,
    SourceSnapshot,
    copy_into_stage,
    snapshot_older_than,
    source_row_hashes,
    source_rows,
    source_rows_by_id,
    stage_ddl,
    staged_row_hash,
)
from edu_migrate.runlog import Reporter

CHANGES_SQL = "changes.sql"
# How many transaction ids past the mirror's snapshot same_commits looks at one by one; beyond,
# the tables are scanned (a day of writes is far more: the check is for a quiet source).
SAME_COMMITS_REACH = 10_000
# From how many mirrored rows the source's rows are counted in a second session of the sync's
# snapshot while the first streams the rows written since the horizon: a session costs a few
# milliseconds, the two scans of 3.2 million marks about 0.4 s at scale 1 (docs/benchmarks.md).
COUNT_AHEAD_ROWS = 1_000_000
# The tables whose rows before the change no scope reads, so that no old_<table> is made (a copy
# of every changed mark, 0.1 s of the day's sync at scale 1): a rule that came to read one would
# fail on the missing table, not read an empty one. The others' are read: a user's old groups
# and a person's old user (phase1_scope.sql), an enrollment's old student and run (sync.sql), a
# course run's old code (phase4_scope.sql).
OLD_ROWS_UNREAD = ("grades",)
# The source's counts per bucket are held in memory up to this size, then on disk.
SPOOL_BYTES = 16 * 2**20
# The memory the source's session may give the grouping of a large table's ids by bucket: a
# session setting of the read-only transaction, which changes nothing on the source.
BUCKETS_WORK_MEM = "SET LOCAL work_mem = '64MB'"


@dataclass
class TableChanges:
    inserted: int = 0
    updated: int = 0
    deleted: int = 0
    # how they were found: 'horizon', 'comparison', 'whole' (the mirror was lost) or
    # 'unchanged' (no scan: the source committed nothing since the mirror's snapshot)
    method: str = "comparison"
    # why not by the horizon, when compared
    reason: str = ""

    @property
    def total(self) -> int:
        return self.inserted + self.updated + self.deleted


def pipe(snapshot: SourceSnapshot, conn: psycopg.Connection, copy_out_of: sql.Composed,
         copy_into: sql.Composed, params: dict[str, Any] | None = None) -> int:
    """Stream one COPY out of the snapshot into one COPY of the target's transaction."""
    with snapshot.conn.cursor() as out_cur, conn.cursor() as in_cur, \
            out_cur.copy(copy_out_of, params) as copy_out, in_cur.copy(copy_into) as copy_in:
        for chunk in copy_out:
            copy_in.write(chunk)
    return max(out_cur.rowcount, 0)


@dataclass(frozen=True)
class MirrorRecord:
    """What migration.mirror_state says of one mirrored table."""

    rows: int
    horizon: int | None
    snapshot: str | None
    lsn: str | None
    timeline: int | None
    fingerprint: str | None
    stale_phases: tuple[int, ...] = ()


def mirror_records(conn: psycopg.Connection) -> dict[str, MirrorRecord]:
    return {str(r[0]): MirrorRecord(int(r[1]), None if r[2] is None else int(r[2]),
                                    None if r[3] is None else str(r[3]),
                                    None if r[4] is None else str(r[4]),
                                    None if r[5] is None else int(r[5]),
                                    None if r[6] is None else str(r[6]), tuple(r[7]))
            for r in conn.execute(
                "SELECT table_name, rows, source_horizon, source_snapshot::text, "
                "source_lsn::text, source_timeline, source_fingerprint, stale_phases "
                "FROM migration.mirror_state").fetchall()}


def source_went_back(snapshot: SourceSnapshot, records: dict[str, MirrorRecord]) -> str | None:
    """Why the source's transaction ids cannot be trusted against the mirror's horizons: its
    WAL is now behind where a mirror was read (restored to an earlier point) or it is on
    another timeline (a promoted standby, a point-in-time recovery). None when neither."""
    live, timeline = snapshot.position()
    for table, record in records.items():
        if record.lsn is None:
            continue
        if lsn_value(live) < lsn_value(record.lsn):
            return (f"the source's WAL is at {live}, behind {record.lsn} where the mirror of "
                    f"{table} was read: restored to an earlier point")
        if record.timeline != timeline:
            return (f"the source is on timeline {timeline}, the mirror of {table} was read on "
                    f"{record.timeline}: promoted or recovered")
    return None


def usable_horizon(snapshot: SourceSnapshot, table: str, record: MirrorRecord | None,
                   fingerprint: str, went_back: str | None) -> tuple[int | None, str]:
    """The horizon a table's changes may be read from, or None and why they must be compared:
    the horizon is only as good as the snapshot it was taken in and the definitions the rows
    were read through."""
    if record is None or record.horizon is None or record.lsn is None:
        return None, "the mirror's horizon or WAL position is not recorded"
    if went_back is not None:
        return None, went_back
    if record.fingerprint != fingerprint:
        return None, ("what the mirror was read through changed (the mapping, the source "
                      "table, its columns, an enum, a function)")
    return record.horizon, ""


def snapshot_older_than_mirror(snapshot: SourceSnapshot,
                               records: dict[str, MirrorRecord]) -> str | None:
    """A mirrored table whose snapshot saw a transaction committed that `snapshot` does not
    see: `snapshot` is older than the mirror (a sync that stalled while a later one ran), and
    applying it would put older rows over newer. Only meaningful while the source did not go
    back (source_went_back): xids of one history. An xid assigned after `snapshot` and before
    the mirror's counts as seen by the mirror (it may have written nothing: refusing then only
    costs a rerun)."""
    for table, record in sorted(records.items()):
        if record.snapshot is not None and snapshot_older_than(
                snapshot.conn, snapshot.snapshot_text, record.snapshot):
            return table
    return None


def same_commits(snapshot: SourceSnapshot, mirrored: str) -> bool:
    """True when the source committed no transaction that `snapshot` sees and the mirror's
    snapshot `mirrored` (a pg_snapshot's text) did not (changes.sql's same_commits): every row
    then reads as it did, and no table needs a scan. Decided from the commit log in the
    snapshot, never from statistics counters (pg_stat_user_tables' counts are neither
    transactional nor kept: a rolled-back insert counts, pg_stat_reset() forgets them). Only
    meaningful while the source did not go back (source_went_back)."""
    (statement,) = [s for s in sqlfile.load(CHANGES_SQL) if s.name == "same_commits"]
    row = snapshot.conn.execute(statement.text.encode(), {
        "c": snapshot.snapshot_text, "m": mirrored, "reach": SAME_COMMITS_REACH}).fetchone()
    return bool(row and row[0])


def quiet_tables(snapshot: SourceSnapshot, records: dict[str, MirrorRecord],
                 went_back: str | None) -> set[str]:
    """The mirrored tables whose mirror's snapshot saw every commit `snapshot` sees
    (same_commits, asked once per recorded snapshot: a full run's tables share one). None when
    the source went back: its transaction ids are of another history."""
    if went_back is not None:
        return set()
    answers: dict[str, bool] = {}
    for record in records.values():
        if record.snapshot is not None and record.snapshot not in answers:
            answers[record.snapshot] = same_commits(snapshot, record.snapshot)
    return {table for table, record in records.items()
            if record.snapshot is not None and answers[record.snapshot]}


def take_changes(conn: psycopg.Connection, snapshot: SourceSnapshot, table: str, *,
                 whole: bool, horizon: int | None, batch_size: int,
                 reason: str = "", quiet_since: bool = False,
                 feed: OpenFeed | None = None, feed_reason: str = "") -> TableChanges:
    """Bring stage.<table> to the snapshot's rows; leave delta_<table> (the ids that changed)
    and old_<table> (those rows as the mirror held them; none for OLD_ROWS_UNREAD) for the
    scope. `quiet_since`: the
    source committed nothing since the mirror's snapshot (same_commits), so where the horizon
    holds (nothing the rows are read through changed, and they are read through their own row
    alone) the table is not scanned at all. `feed`: the change feed read for this sync
    (phases/feed.py); where the horizon holds and the feed follows the table, its ids replace
    the scan. `feed_reason`: why no feed could be read, for the record."""
    if whole:
        return _take_whole(conn, snapshot, table)
    if horizon is not None:
        why_not = _horizon_unusable(snapshot, table, horizon)
        if why_not is None and quiet_since:
            return _take_nothing(conn, table)
        if why_not is None and feed is not None and feed.reason(table) is None:
            return _take_from_feed(conn, snapshot, table, batch_size)
        if why_not is None:
            changes = _take_since_horizon(conn, snapshot, table, horizon, batch_size)
            changes.reason = (feed.reason(table) or "") if feed is not None else feed_reason
            return changes
        reason = why_not
    changes = _take_by_comparison(conn, snapshot, table, batch_size)
    changes.reason = reason
    return changes


def untouched_since(conn: psycopg.Connection, snapshot: SourceSnapshot, table: str,
                    horizon: int) -> bool:
    """Whether the source's table holds exactly the mirror's rows, as far as counting its row
    headers can tell: no row written since the horizon, and as many rows as the mirror holds.
    Then nothing changed (an insert or an update leaves a row version whose xmin is at least
    the horizon; a deletion leaves none, and lowers the count), and the rows need not be read
    (the cutover's test that nothing reached the source after its last sync). False
    says only that they must be compared (take_changes). Both counts come from one pass, which a
    large table splits by its pages over a second session of the snapshot (the upper half open:
    a page added since the split was computed is read too); take_changes reads a table twice,
    its rows since the horizon on one core and its count on the other. Only where take_changes
    would read the rows since the horizon."""
    if _horizon_unusable(snapshot, table, horizon) is not None:
        return False
    mirrored = _mirrored_rows(conn, table)
    source = snapshot.mapping[table]
    row = snapshot.conn.execute(
        "SELECT pg_relation_size(%s::regclass) / current_setting('block_size')::bigint",
        [source.relation.as_string(snapshot.conn)]).fetchone()
    half = int(row[0]) // 2 if row and mirrored >= COUNT_AHEAD_ROWS else 0

    def counted(pages: sql.Composable) -> sql.Composed:
        return sql.SQL(
            "SELECT count(*), count(*) FILTER (WHERE age(xmin) <= age({}::text::xid)) "
            "FROM {} WHERE {}").format(sql.Literal(str(horizon % 2**32)), source.relation, pages)

    lower = sql.SQL("ctid < {}::tid").format(sql.Literal(f"({half},0)"))
    upper = sql.SQL("ctid >= {}::tid").format(sql.Literal(f"({half},0)"))
    if half == 0:
        rows, written = snapshot.conn.execute(counted(sql.SQL("true"))).fetchone() or (0, 0)
    else:
        def first_half() -> tuple[int, int]:
            with snapshot.reader() as reader:
                found = reader.execute(counted(lower)).fetchone()
                return (int(found[0]), int(found[1])) if found else (0, 0)

        with ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"count-{table}") as pool:
            other = pool.submit(first_half)
            rows, written = snapshot.conn.execute(counted(upper)).fetchone() or (0, 0)
            other_rows, other_written = other.result()
        rows, written = int(rows) + other_rows, int(written) + other_written
    return int(written) == 0 and int(rows) == mirrored


def _mirrored_rows(conn: psycopg.Connection, table: str) -> int:
    """The mirror's rows of `table`, from its counts per bucket (built first where a comparison
    dropped them; the full run builds them with the mirror)."""
    count_buckets(conn, table)
    row = conn.execute(sql.SQL("SELECT coalesce(sum(rows), 0) FROM {}").format(
        buckets_table(table))).fetchone()
    return int(row[0]) if row else 0


def _take_nothing(conn: psycopg.Connection, table: str) -> TableChanges:
    """No row changed: the scope's delta_<table> and old_<table> (OLD_ROWS_UNREAD aside),
    empty."""
    stage = sql.Identifier(STAGE_SCHEMA, table)
    conn.execute(sql.SQL("CREATE TEMP TABLE {} (id bigint, change text) ON COMMIT DROP").format(
        sql.Identifier(f"delta_{table}")))
    if table not in OLD_ROWS_UNREAD:
        conn.execute(sql.SQL("CREATE TEMP TABLE {} (LIKE {}) ON COMMIT DROP").format(
            sql.Identifier(f"old_{table}"), stage))
    return TableChanges(method="unchanged")


def _take_whole(conn: psycopg.Connection, snapshot: SourceSnapshot, table: str) -> TableChanges:
    stage = sql.Identifier(STAGE_SCHEMA, table)
    delta, old = sql.Identifier(f"delta_{table}"), sql.Identifier(f"old_{table}")
    conn.execute(sql.SQL("DROP TABLE IF EXISTS {}, {}").format(stage, buckets_table(table)))
    conn.execute(stage_ddl(table))
    copied = pipe(snapshot, conn, source_rows(snapshot.mapping[table]), copy_into_stage(table))
    # Everything is in scope: the rows there are, and every row derived from before.
    conn.execute(sql.SQL(
        "CREATE TEMP TABLE {} ON COMMIT DROP AS SELECT id, 'inserted'::text AS change "
        "FROM {} UNION SELECT source_id, 'deleted' FROM migration.crosswalk "
        "WHERE source_table = %(t)s UNION SELECT source_id, 'deleted' "
        "FROM migration.rejected_rows WHERE source_table = %(t)s").format(delta, stage),
        {"t": table})
    if table not in OLD_ROWS_UNREAD:
        conn.execute(sql.SQL("CREATE TEMP TABLE {} (LIKE {}) ON COMMIT DROP").format(old, stage))
    # The new copy's look-ups, for this sync's scope and the next one's (Reporter(): the
    # sync reports its tables' totals).
    index_mirror(conn, (table,), Reporter())
    return TableChanges(inserted=copied, method="whole")


def _horizon_unusable(snapshot: SourceSnapshot, table: str, horizon: int) -> str | None:
    """Why not, unless the source's rows carry an xmin that can be compared with the horizon,
    their staged values depend on their own row alone, and their ids are unique by an index
    (so no count of duplicates is needed)."""
    if not snapshot.reaches_back_to(horizon):
        return "the horizon is not within the source's transaction ids"
    source = snapshot.mapping[table]
    if source.id.kind != "column":
        return "the id is not a column"
    if not _expressions_follow_rows(snapshot, source):
        return "a mapping expression may read more than its own row"
    row = snapshot.conn.execute(
        "SELECT c.relkind IN ('r', 'p') AND EXISTS (SELECT 1 FROM pg_index i "
        "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0] "
        "WHERE i.indrelid = c.oid AND i.indisunique AND i.indnkeyatts = 1 "
        "AND i.indpred IS NULL AND a.attname = %s) FROM pg_class c WHERE c.oid = %s::regclass",
        [source.id.text, source.relation.as_string(snapshot.conn)]).fetchone()
    return None if row and row[0] else "the source is not a table with a unique index on its id"


_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_$]*")


def _expressions_follow_rows(snapshot: SourceSnapshot, source: MappedTable) -> bool:
    """A staged value changes only with its row's xmin when every mapping expression reads its
    row alone: no subquery, and no function by any of its words that is not IMMUTABLE (a
    STABLE or VOLATILE one may read other tables or the clock). Conservative: a word that
    merely shares a name with such a function sends the table to comparison."""
    words = {w.lower() for c in source.columns if c.kind == "sql" for w in _NAME.findall(c.text)}
    if not words:
        return True
    if "select" in words:
        return False
    row = snapshot.conn.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_proc WHERE lower(proname) = ANY(%s) "
        "AND provolatile <> 'i')", [sorted(words)]).fetchone()
    return not (row and row[0])


def _take_since_horizon(conn: psycopg.Connection, snapshot: SourceSnapshot, table: str,
                        horizon: int, batch_size: int) -> TableChanges:
    source = snapshot.mapping[table]
    names = _names(table)
    fetched = names["fetched"]
    assert isinstance(fetched, sql.Identifier)

    def run(statement: str, params: dict[str, Any] | None = None) -> psycopg.Cursor[Any]:
        return conn.execute(sql.SQL(statement).format(**names), params)

    mirrored_rows = _mirrored_rows(conn, table)
    run("CREATE TEMP TABLE {fetched} (LIKE {stage}) ON COMMIT DROP")
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"count-{table}") as pool:
        # A large table's rows are counted, and its ids per bucket, in a session of the same
        # snapshot on the second core while this one streams the new rows.
        ahead = _SourceCounts(snapshot, source, pool) if mirrored_rows >= COUNT_AHEAD_ROWS \
            else None
        try:
            # The rows written since the horizon. age() measures both xids from the same point,
            # so the comparison holds across a wrap-around of the 32-bit counter.
            pipe(snapshot, conn, sql.SQL(
                "COPY (SELECT {} FROM {} WHERE age(xmin) <= age(%(horizon)s::text::xid)) "
                "TO STDOUT (FORMAT binary)").format(source.select_list(), source.relation),
                _copy_into(fetched), {"horizon": str(horizon % 2**32)})
            run("ANALYZE {fetched}")
            # What the rows fetched are, in one pass over the mirror's index: new, or changed
            # (the rows written since the horizon whose staged columns are the mirror's are
            # dropped). The count below and the buckets read it, not the mirror again.
            run(_DELTA_OF_FETCHED)
            # The source's rows are the mirror's, less those deleted, plus those inserted: when
            # the source holds exactly as many as the mirror plus the new rows fetched, nothing
            # was deleted (a count is one cheap scan; the buckets below cost a grouping of
            # every id).
            if ahead is not None:
                source_rows_now = ahead.rows.result()
            else:
                row = snapshot.conn.execute(sql.SQL("SELECT count(*) FROM {}").format(
                    source.relation)).fetchone()
                source_rows_now = int(row[0]) if row else 0
            row = run("SELECT %(mirrored)s::bigint + (SELECT count(*) FROM {delta} "
                      "WHERE change = 'inserted')", {"mirrored": mirrored_rows}).fetchone()
            if row and row[0] is not None and int(row[0]) == source_rows_now:
                differing: list[int] = []
            else:
                differing = _differing_buckets(conn, snapshot, table, names,
                                               None if ahead is None else ahead.buckets.result())
        finally:
            if ahead is not None:
                ahead.stop()
    if differing:
        _reconcile_buckets(conn, snapshot, table, names, differing, batch_size)
    return _apply_fetched(conn, table, names, "horizon")


_DELTA_OF_FETCHED = (
    "CREATE TEMP TABLE {delta} ON COMMIT DROP AS "
    "SELECT f.id, CASE WHEN m.id IS NULL THEN 'inserted' ELSE 'updated' END AS change "
    "FROM {fetched} f LEFT JOIN {stage} m ON m.id = f.id "
    "WHERE m.id IS NULL OR {hash_f} IS DISTINCT FROM {hash_m}")


def _names(table: str) -> dict[str, sql.Composable]:
    return {
        "stage": sql.Identifier(STAGE_SCHEMA, table), "buckets": buckets_table(table),
        "fetched": sql.Identifier(f"fetched_{table}"),
        "counted": sql.Identifier(f"source_buckets_{table}"),
        "delta": sql.Identifier(f"delta_{table}"), "old": sql.Identifier(f"old_{table}"),
        "hash_f": staged_row_hash(table, "f"), "hash_m": staged_row_hash(table, "m"),
        "bits": sql.Literal(BUCKET_BITS),
        # A bucket's last id is its first plus 63: the first id of the next bucket would
        # overflow bigint for the top bucket (ids near 2^63), where << wraps without an error.
        "last": sql.Literal(2**BUCKET_BITS - 1), "feed": FEED_ROWS}


def _apply_fetched(conn: psycopg.Connection, table: str, names: dict[str, sql.Composable],
                   method: str) -> TableChanges:
    """delta_<table> found, fetched_<table> holding the source's rows of it: the mirror's rows
    of the delta kept as old_<table> (but for OLD_ROWS_UNREAD), and the mirror and its counts
    per bucket brought to the source's."""
    def run(statement: str) -> None:
        conn.execute(sql.SQL(statement).format(**names))

    run("ANALYZE {delta}")
    if table not in OLD_ROWS_UNREAD:
        run("CREATE TEMP TABLE {old} ON COMMIT DROP AS SELECT m.* FROM {stage} m "
            "JOIN {delta} d USING (id)")
    run("DELETE FROM {stage} m USING {delta} d WHERE m.id = d.id")
    run("INSERT INTO {stage} SELECT f.* FROM {fetched} f JOIN {delta} d USING (id) "
        "WHERE d.change <> 'deleted'")
    delta = names["delta"]
    assert isinstance(delta, sql.Identifier)
    counts = _count_delta(conn, delta)
    _move_mirror_buckets(conn, names)
    return TableChanges(inserted=counts.get("inserted", 0), updated=counts.get("updated", 0),
                        deleted=counts.get("deleted", 0), method=method)


def _take_from_feed(conn: psycopg.Connection, snapshot: SourceSnapshot, table: str,
                    batch_size: int) -> TableChanges:
    """The rows of the ids the change feed named, read by id from the snapshot: those the
    source has and the mirror lacks were inserted, those whose staged columns differ were
    updated, those the mirror has and the source no longer has were deleted. Nothing else can
    have changed (phases/feed.py says why)."""
    source = snapshot.mapping[table]
    names = _names(table)

    def run(statement: str) -> psycopg.Cursor[Any]:
        return conn.execute(sql.SQL(statement).format(**names), {"t": table})

    count_buckets(conn, table)  # where a comparison dropped them (built with the mirror)
    run("CREATE TEMP TABLE {fetched} (LIKE {stage}) ON COMMIT DROP")
    named = [int(r[0]) for r in run(
        "SELECT DISTINCT id FROM {feed} WHERE kind = 'change' AND table_name = %(t)s "
        "ORDER BY 1")]
    for start in range(0, len(named), batch_size):
        pipe(snapshot, conn, source_rows_by_id(source), _copy_into(names["fetched"]),  # type: ignore[arg-type]
             {"ids": named[start:start + batch_size]})
    run("ANALYZE {fetched}")
    run("CREATE TEMP TABLE {delta} ON COMMIT DROP AS "
        "SELECT n.id, CASE WHEN m.id IS NULL THEN 'inserted' WHEN f.id IS NULL THEN 'deleted' "
        "ELSE 'updated' END AS change "
        "FROM (SELECT DISTINCT id FROM {feed} WHERE kind = 'change' AND table_name = %(t)s) n "
        "LEFT JOIN {fetched} f ON f.id = n.id LEFT JOIN {stage} m ON m.id = n.id "
        "WHERE (f.id IS NOT NULL OR m.id IS NOT NULL) "
        "AND (m.id IS NULL OR f.id IS NULL OR {hash_f} IS DISTINCT FROM {hash_m}) "
        # in id order, as a scan returns them: the scope's writes then touch the indexes of
        # grades in order, not at random (0.6 s more for 36,000 marks at scale 1)
        "ORDER BY n.id")
    return _apply_fetched(conn, table, names, "feed")


def _bucket_counts(source: MappedTable) -> sql.Composed:
    """COPY out the source's ids counted per bucket."""
    return sql.SQL(
        "COPY (SELECT {id}::bigint >> {bits}, count(*) FROM {rel} GROUP BY 1) TO STDOUT "
        "(FORMAT binary)").format(id=source.id.expression, bits=sql.Literal(BUCKET_BITS),
                                  rel=source.relation)


class _SourceCounts:
    """In a second session of the sync's snapshot: the source's rows counted, then its ids per
    bucket (spooled, for the target to load only if a deletion is to be found). stop() cancels
    what is no longer needed and waits for the session to end."""

    def __init__(self, snapshot: SourceSnapshot, source: MappedTable,
                 pool: ThreadPoolExecutor) -> None:
        self.rows: Future[int] = Future()
        self._reader: psycopg.Connection | None = None
        self._stopping = False
        self.buckets = pool.submit(self._count, snapshot, source)

    def _count(self, snapshot: SourceSnapshot, source: MappedTable) -> IO[bytes]:
        try:
            with snapshot.reader() as reader:
                self._reader = reader
                row = reader.execute(sql.SQL("SELECT count(*) FROM {}").format(
                    source.relation)).fetchone()
                self.rows.set_result(int(row[0]) if row else 0)
                # returned open: the caller reads it, and it is deleted when dropped
                spool: IO[bytes] = tempfile.SpooledTemporaryFile(  # noqa: SIM115
                    max_size=SPOOL_BYTES)
                if self._stopping:
                    return spool
                # The grouping holds one entry per 64 ids: with the server's default work_mem
                # (4 MB) the 500,000 buckets of 32 million marks spill to disk in 257 batches,
                # 1 GB written, 9.0 s; in memory (90 MB), 4.5 s. For this transaction only.
                reader.execute(BUCKETS_WORK_MEM)
                with reader.cursor() as cur, cur.copy(_bucket_counts(source)) as copy:
                    for chunk in copy:
                        spool.write(chunk)
                spool.seek(0)
                return spool
        except BaseException as exc:
            if not self.rows.done():
                self.rows.set_exception(exc)
            raise
        finally:
            self._reader = None

    def stop(self) -> None:
        self._stopping = True
        reader = self._reader
        if reader is not None and not self.buckets.done():
            reader.cancel_safe()
        with contextlib.suppress(psycopg.errors.QueryCanceled):
            self.buckets.result()


def _differing_buckets(conn: psycopg.Connection, snapshot: SourceSnapshot, table: str,
                       names: dict[str, sql.Composable],
                       counted: IO[bytes] | None = None) -> list[int]:
    """Buckets whose ids differ from the mirror's beyond the rows just fetched: a deletion
    there (or, in a mirror out of step, a row it lacks). `counted`: the source's counts per
    bucket, already read (binary COPY), or None to read them now."""
    source = snapshot.mapping[table]
    conn.execute(sql.SQL("CREATE TEMP TABLE {counted} (bucket bigint, rows bigint) "
                         "ON COMMIT DROP").format(**names))
    copy_counted = sql.SQL("COPY {} FROM STDIN (FORMAT binary)").format(names["counted"])
    if counted is None:
        pipe(snapshot, conn, _bucket_counts(source), copy_counted)
    else:
        with conn.cursor() as cur, cur.copy(copy_counted) as copy_in:
            while chunk := counted.read(2**20):
                copy_in.write(chunk)
    return [int(r[0]) for r in conn.execute(sql.SQL(
        "WITH inserted AS (SELECT id >> {bits} AS bucket, count(*) AS rows FROM {delta} "
        "  WHERE change = 'inserted' GROUP BY 1) "
        "SELECT coalesce(s.bucket, b.bucket) FROM {counted} s FULL JOIN {buckets} b "
        "USING (bucket) LEFT JOIN inserted i USING (bucket) "
        "WHERE coalesce(s.rows, 0) <> coalesce(b.rows, 0) + coalesce(i.rows, 0) "
        "ORDER BY 1").format(**names))]


def _copy_into(relation: sql.Identifier) -> sql.Composed:
    return sql.SQL("COPY {} FROM STDIN (FORMAT binary)").format(relation)


def _reconcile_buckets(conn: psycopg.Connection, snapshot: SourceSnapshot, table: str,
                       names: dict[str, sql.Composable], differing: list[int],
                       batch_size: int) -> None:
    """For the buckets that disagree, compare the source's ids with the mirror's: the mirror's
    ids the source no longer has were deleted; source ids the mirror lacks and the horizon did
    not return are fetched as inserted."""
    source = snapshot.mapping[table]
    ids = sql.Identifier(f"source_ids_{table}")
    conn.execute(sql.SQL("CREATE TEMP TABLE {} (id bigint) ON COMMIT DROP").format(ids))
    # One index range scan per bucket on the source's unique id index.
    pipe(snapshot, conn, sql.SQL(
        "COPY (SELECT t.{id}::bigint FROM unnest(%(buckets)s::bigint[]) AS b(bucket) "
        "JOIN {rel} t ON t.{id} >= b.bucket << {bits} "
        "AND t.{id} <= (b.bucket << {bits}) + {last}) "
        "TO STDOUT (FORMAT binary)").format(id=source.id.expression, rel=source.relation,
                                            bits=names["bits"], last=names["last"]),
        sql.SQL("COPY {} FROM STDIN (FORMAT binary)").format(ids), {"buckets": differing})
    conn.execute(sql.SQL("ANALYZE {}").format(ids))
    # The mirror's ids of those buckets, by index range scans too: the two sets are compared
    # with each other, never with the whole mirror.
    mirrored = sql.Identifier(f"mirror_ids_{table}")
    conn.execute(sql.SQL(
        "CREATE TEMP TABLE {mirrored} ON COMMIT DROP AS SELECT m.id FROM {stage} m "
        "JOIN unnest(%(buckets)s::bigint[]) AS b(bucket) ON m.id >= b.bucket << {bits} "
        "AND m.id <= (b.bucket << {bits}) + {last}").format(mirrored=mirrored, **names),
        {"buckets": differing})
    conn.execute(sql.SQL("ANALYZE {}").format(mirrored))
    conn.execute(sql.SQL(
        "INSERT INTO {delta} (id, change) SELECT m.id, 'deleted' FROM {mirrored} m "
        "WHERE NOT EXISTS (SELECT 1 FROM {ids} s WHERE s.id = m.id)").format(
            ids=ids, mirrored=mirrored, **names))
    lacking = [int(r[0]) for r in conn.execute(sql.SQL(
        "SELECT s.id FROM {ids} s WHERE NOT EXISTS (SELECT 1 FROM {mirrored} m "
        "WHERE m.id = s.id) AND NOT EXISTS (SELECT 1 FROM {fetched} f WHERE f.id = s.id) "
        "ORDER BY 1").format(ids=ids, mirrored=mirrored, **names))]
    for start in range(0, len(lacking), batch_size):
        pipe(snapshot, conn, source_rows_by_id(source), sql.SQL(
            "COPY {} FROM STDIN (FORMAT binary)").format(names["fetched"]),
             {"ids": lacking[start:start + batch_size]})
    if lacking:
        conn.execute(sql.SQL("INSERT INTO {delta} (id, change) "
                             "SELECT unnest(%(ids)s::bigint[]), 'inserted'").format(**names),
                     {"ids": lacking})


def _move_mirror_buckets(conn: psycopg.Connection, names: dict[str, sql.Composable]) -> None:
    """The mirror's counts per bucket, after this delta."""
    conn.execute(sql.SQL(
        "INSERT INTO {buckets} AS b (bucket, rows) "
        "SELECT id >> {bits}, sum(CASE change WHEN 'inserted' THEN 1 WHEN 'deleted' THEN -1 "
        "ELSE 0 END) FROM {delta} GROUP BY 1 "
        "ON CONFLICT (bucket) DO UPDATE SET rows = b.rows + excluded.rows").format(**names))
    conn.execute(sql.SQL("DELETE FROM {buckets} WHERE rows = 0").format(**names))


def _count_delta(conn: psycopg.Connection, delta: sql.Identifier) -> dict[str, int]:
    return {str(r[0]): int(r[1]) for r in conn.execute(
        sql.SQL("SELECT change, count(*) FROM {} GROUP BY change").format(delta)).fetchall()}


def _take_by_comparison(conn: psycopg.Connection, snapshot: SourceSnapshot, table: str,
                        batch_size: int) -> TableChanges:
    stage = sql.Identifier(STAGE_SCHEMA, table)
    delta, old = sql.Identifier(f"delta_{table}"), sql.Identifier(f"old_{table}")
    keys = sql.Identifier(f"source_keys_{table}")
    # Counts per bucket are not kept up to date this way: the next sync counts them again.
    conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(buckets_table(table)))
    conn.execute(sql.SQL("CREATE TEMP TABLE {} (id bigint, row_hash bigint) ON COMMIT DROP")
                 .format(keys))
    pipe(snapshot, conn, source_row_hashes(snapshot.mapping[table]),
         sql.SQL("COPY {} FROM STDIN (FORMAT binary)").format(keys))
    _require_unique_ids(conn, snapshot, table, keys)
    conn.execute(sql.SQL(
        "CREATE TEMP TABLE {delta} ON COMMIT DROP AS "
        "SELECT coalesce(k.id, m.id) AS id, CASE WHEN m.id IS NULL THEN 'inserted' "
        "WHEN k.id IS NULL THEN 'deleted' ELSE 'updated' END AS change "
        "FROM {keys} k FULL JOIN (SELECT s.id, {hash} AS row_hash FROM {stage} s) m "
        "ON m.id = k.id WHERE k.row_hash IS DISTINCT FROM m.row_hash").format(
            delta=delta, keys=keys, hash=staged_row_hash(table, "s"), stage=stage))
    if table not in OLD_ROWS_UNREAD:
        conn.execute(sql.SQL("CREATE TEMP TABLE {} ON COMMIT DROP AS SELECT s.* FROM {} s "
                             "JOIN {} d USING (id)").format(old, stage, delta))
    conn.execute(sql.SQL("DELETE FROM {} s USING {} d WHERE s.id = d.id").format(stage, delta))
    counts = _count_delta(conn, delta)
    wanted = [int(r[0]) for r in conn.execute(sql.SQL(
        "SELECT id FROM {} WHERE change <> 'deleted' ORDER BY id").format(delta))]
    for start in range(0, len(wanted), batch_size):
        pipe(snapshot, conn, source_rows_by_id(snapshot.mapping[table]), copy_into_stage(table),
             {"ids": wanted[start:start + batch_size]})
    conn.execute(sql.SQL("ANALYZE {}").format(delta))
    return TableChanges(inserted=counts.get("inserted", 0), updated=counts.get("updated", 0),
                        deleted=counts.get("deleted", 0))


def _require_unique_ids(conn: psycopg.Connection, snapshot: SourceSnapshot, table: str,
                        keys: sql.Identifier) -> None:
    """A table whose ids repeat cannot be followed by id: refuse before anything is applied.
    A unique index on the source's id column settles it without counting."""
    source = snapshot.mapping[table]
    if source.id.kind == "column":
        row = snapshot.conn.execute(
            "SELECT EXISTS (SELECT 1 FROM pg_index i JOIN pg_attribute a "
            "ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0] "
            "WHERE i.indrelid = %s::regclass AND i.indisunique AND i.indnkeyatts = 1 "
            "AND i.indpred IS NULL AND a.attname = %s)",
            [source.relation.as_string(snapshot.conn), source.id.text]).fetchone()
        if row and row[0]:
            return
    twice = conn.execute(sql.SQL("SELECT id FROM {} GROUP BY id HAVING count(*) > 1 LIMIT 1")
                         .format(keys)).fetchone()
    if twice:
        raise PreconditionFailed(
            f"the source table {source.shown} holds id {twice[0]} more than once: its ids are "
            "no longer unique, so its rows cannot be followed",
            f"make the ids of {source.shown} unique again in the source (nothing was applied), "
            "then run sync again")
