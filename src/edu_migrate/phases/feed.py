"""The opt-in change feed: a logical replication slot on the source, decoded with test_decoding
(a plugin PostgreSQL ships), tells a sync which rows of each table were written, so that it reads
those rows by id instead of scanning every table's row headers (phases/changes.py).

The source must allow it (`wal_level = logical`, a free replication slot, a role with
REPLICATION and a `replication` line in pg_hba.conf), and `edu-migrate feed start` creates the
slot there: the only object the tool ever creates on the source, and dropped by `feed stop` and
by a successful `cutover` (a slot keeps the source's WAL until it is advanced).

Exact, never trusted further than it can be checked:

- The slot's exported snapshot is recorded as `covers_snapshot`: every transaction it does not
  see is decoded. A table's mirror is followed by the feed only while its snapshot is not older
  (changes.snapshot_older_than). Otherwise the table is scanned, as without a feed.
- The feed gives ids, never values: the rows are read from the sync's own snapshot, by id, and
  compared with the mirror. A transaction decoded that the snapshot does not see, or an id read
  out of a text value that mimics a column, only brings a row that compares equal.
- The slot must exist, be of this plugin and database, keep its WAL (`wal_status` not lost),
  and stand no further than the record's `confirmed_lsn` (a slot ahead of it skipped changes:
  a target restored from a backup, another client). A TRUNCATE decoded, a partitioned table
  (its changes are decoded under the partitions' names), or a replica identity that does not
  carry the id column sends the table, or all of them, back to the scan.
- Before the slot is read, the sync waits until the source's WAL is flushed to where it stood
  at the snapshot: a transaction committed asynchronously is visible before its commit record
  is flushed, and decoding reads only flushed WAL.
- After the sync committed, the slot is advanced past the longest run of decoded transactions,
  in commit order, that the sync's snapshot sees, and to the snapshot's WAL position when it
  sees them all (_advance_point says why that is safe): a transaction committed after it, or
  whose commit record follows one that it does not see, is decoded again next time. A slot
  that is never advanced keeps the WAL of everything since (the full run's too, where the
  target shares the source's server) and decodes it again at every sync.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from edu_migrate.errors import PreconditionFailed
from edu_migrate.mapping import LEGACY_COLUMNS, LegacyMapping
from edu_migrate.pg.connect import connect
from edu_migrate.phases.staging import SourceSnapshot, snapshot_older_than

PLUGIN = "test_decoding"
DEFAULT_SLOT = "edu_migrate_feed"
# How long a sync waits for the source to flush its WAL to the snapshot's position (the WAL
# writer flushes asynchronous commits every wal_writer_delay, 200 ms by default).
FLUSH_WAIT_SECONDS = 30.0
FEED_ROWS = sql.Identifier("feed_rows")
_SLOT_NAME = re.compile(r"^[a-z0-9_]{1,63}$")

# The slot's changes since its confirmed position, as rows: each commit (its lsn and xid), each
# TRUNCATE, and per mapped table each id that a change names (in the new tuple, and in the old
# key of an UPDATE that changed it or of a DELETE). Peeked, never consumed: the slot is advanced
# only after the sync committed.
PEEK = """
COPY (
  WITH changes AS MATERIALIZED (
    SELECT lsn, xid, data FROM pg_logical_slot_peek_changes(%(slot)s, NULL, NULL,
      'include-xids', '1', 'skip-empty-xacts', '1')),
  tables AS (
    SELECT * FROM unnest(%(names)s::text[], %(prefixes)s::text[], %(patterns)s::text[])
      AS t (name, prefix, pattern))
  SELECT 'commit', NULL::text, NULL::bigint, c.lsn, c.xid::text::bigint FROM changes c
    WHERE c.data LIKE 'COMMIT%%'
  UNION ALL
  SELECT 'truncate', NULL, NULL, c.lsn, c.xid::text::bigint FROM changes c
    WHERE c.data ~ '^table .*: TRUNCATE:'
  UNION ALL
  SELECT 'change', t.name, m.id::bigint, c.lsn, c.xid::text::bigint FROM changes c
    JOIN tables t ON starts_with(c.data, t.prefix)
    CROSS JOIN LATERAL (SELECT found[1]::numeric AS id FROM regexp_matches(
      substr(c.data, length(t.prefix) + 1), t.pattern, 'g') AS found) m
    -- a text value may mimic the id column with any number: out of range, it is no id
    WHERE m.id BETWEEN -9223372036854775808 AND 9223372036854775807
) TO STDOUT (FORMAT binary)
"""


@dataclass(frozen=True)
class FeedRecord:
    """What migration.change_feed says of the feed."""

    slot: str
    plugin: str
    source_system_id: str | None
    source_database: str
    covers_snapshot: str
    confirmed_lsn: str


def feed_record(conn: psycopg.Connection) -> FeedRecord | None:
    row = conn.execute(
        "SELECT slot_name, plugin, source_system_id, source_database, covers_snapshot::text, "
        "confirmed_lsn::text FROM migration.change_feed").fetchone()
    if row is None:
        return None
    return FeedRecord(str(row[0]), str(row[1]), None if row[2] is None else str(row[2]),
                      str(row[3]), str(row[4]), str(row[5]))


@dataclass
class OpenFeed:
    """One sync's reading of the slot: the ids per table are in the target's temporary table
    feed_rows; `why_not` says per table why it is scanned instead (absent: followed by the
    feed)."""

    record: FeedRecord
    why_not: dict[str, str] = field(default_factory=dict)
    advance_to: str | None = None
    transactions: int = 0

    def reason(self, table: str) -> str | None:
        return self.why_not.get(table)


def open_feed(snapshot: SourceSnapshot, conn: psycopg.Connection,
              mirror_snapshots: dict[str, str | None],
              went_back: str | None) -> tuple[OpenFeed | None, str]:
    """The feed for this sync, or None and why not (an empty reason: no feed was started)."""
    record = feed_record(conn)
    if record is None:
        return None, ""
    why_not = _feed_unusable(snapshot, record, went_back)
    if why_not is not None:
        return None, f"the change feed is not usable: {why_not}"
    _wait_for_flush(snapshot)
    tables = {t: _decoded_names(snapshot, t) for t in LEGACY_COLUMNS}
    followed = {t: names for t, names in tables.items() if names is not None}
    conn.execute(sql.SQL("CREATE TEMP TABLE {} (kind text, table_name text, id bigint, "
                         "lsn pg_lsn, xid bigint) ON COMMIT DROP").format(FEED_ROWS))
    try:
        with snapshot.conn.transaction(), conn.transaction(), \
                snapshot.conn.cursor() as out_cur, conn.cursor() as in_cur, \
                out_cur.copy(PEEK.encode(), {
                    "slot": record.slot, "names": list(followed),
                    "prefixes": [prefix for prefix, _ in followed.values()],
                    "patterns": [pattern for _, pattern in followed.values()]}) as copy_out, \
                in_cur.copy(sql.SQL("COPY {} FROM STDIN (FORMAT binary)").format(
                    FEED_ROWS)) as copy_in:
            for chunk in copy_out:
                copy_in.write(chunk)
    except psycopg.Error as exc:
        return None, f"the change feed could not be read: {str(exc).strip().splitlines()[0]}"
    conn.execute(sql.SQL("CREATE INDEX ON {} (table_name, id)").format(FEED_ROWS))
    conn.execute(sql.SQL("ANALYZE {}").format(FEED_ROWS))
    feed = OpenFeed(record)
    truncated = conn.execute(sql.SQL("SELECT EXISTS (SELECT 1 FROM {} WHERE kind = 'truncate')")
                             .format(FEED_ROWS)).fetchone()
    for table, names in tables.items():
        if names is None:
            feed.why_not[table] = _why_not_decoded(snapshot, table)
        elif truncated and truncated[0]:
            feed.why_not[table] = "a TRUNCATE was decoded"
        elif mirror_snapshots.get(table) is None or snapshot_older_than(
                snapshot.conn, str(mirror_snapshots[table]), record.covers_snapshot):
            feed.why_not[table] = ("the mirror is older than what the feed covers (the feed "
                                   "started after it was read)")
    commits = conn.execute(sql.SQL("SELECT lsn::text, xid FROM {} WHERE kind = 'commit' "
                                   "ORDER BY lsn").format(FEED_ROWS)).fetchall()
    feed.transactions = len(commits)
    feed.advance_to = _advance_point([(str(lsn), int(xid)) for lsn, xid in commits],
                                     snapshot.snapshot_text, snapshot.lsn)
    return feed, ""


def record_advance(conn: psycopg.Connection, snapshot: SourceSnapshot, feed: OpenFeed) -> None:
    """In the sync's transaction: the feed now covers what the sync's snapshot does not see,
    from the position the slot will be advanced to once the sync committed."""
    conn.execute("UPDATE migration.change_feed SET covers_snapshot = %s::pg_snapshot, "
                 "confirmed_lsn = greatest(confirmed_lsn, coalesce(%s::pg_lsn, confirmed_lsn)), "
                 "advanced_at = clock_timestamp() WHERE slot_name = %s",
                 [snapshot.snapshot_text, feed.advance_to, feed.record.slot])


def advance_slot(snapshot: SourceSnapshot, feed: OpenFeed) -> str | None:
    """After the sync committed: the slot advanced to what it recorded (a failure only leaves the
    slot behind its record, which decodes a few transactions again). Why not, or None."""
    if feed.advance_to is None:
        return None
    try:
        with snapshot.conn.transaction():
            snapshot.conn.execute(
                "SELECT pg_replication_slot_advance(%s, %s::pg_lsn) FROM pg_replication_slots "
                "WHERE slot_name = %s AND confirmed_flush_lsn < %s::pg_lsn",
                [feed.record.slot, feed.advance_to, feed.record.slot, feed.advance_to])
    except psycopg.Error as exc:
        return str(exc).strip().splitlines()[0]
    return None


def _feed_unusable(snapshot: SourceSnapshot, record: FeedRecord,
                   went_back: str | None) -> str | None:
    if went_back is not None:
        return went_back
    system_id, database = snapshot.identity()
    if database != record.source_database or (None not in (system_id, record.source_system_id) \
            and system_id != record.source_system_id):
        return "it was started on another source"
    standby = snapshot.conn.execute("SELECT pg_is_in_recovery()").fetchone()
    if standby and standby[0]:
        return "the source is a standby now (promoted elsewhere, or recovering)"
    row = snapshot.conn.execute(
        "SELECT plugin, database, wal_status, confirmed_flush_lsn::text, "
        "confirmed_flush_lsn <= %s::pg_lsn, "
        "(SELECT rolsuper OR rolreplication FROM pg_roles WHERE rolname = current_user) "
        "FROM pg_replication_slots WHERE slot_name = %s",
        [record.confirmed_lsn, record.slot]).fetchone()
    if row is None:
        return f"the slot {record.slot} no longer exists on the source"
    plugin, slot_database, wal_status, confirmed, not_ahead, may_read = row
    if plugin != PLUGIN or slot_database != database:
        return f"the slot {record.slot} is not a {PLUGIN} slot of {database}"
    if wal_status == "lost":
        return f"the slot {record.slot} lost WAL it needed (max_slot_wal_keep_size)"
    if not not_ahead:
        return (f"the slot {record.slot} stands at {confirmed}, beyond {record.confirmed_lsn} "
                "where the target left it: it skipped changes (a target restored from a backup, "
                "or another client advanced it)")
    if not may_read:
        return "the source role lacks the REPLICATION attribute"
    return None


def _wait_for_flush(snapshot: SourceSnapshot) -> None:
    deadline = time.monotonic() + FLUSH_WAIT_SECONDS
    while True:
        row = snapshot.conn.execute("SELECT pg_current_wal_flush_lsn() >= %s::pg_lsn",
                                    [snapshot.lsn]).fetchone()
        if row and row[0]:
            return
        if time.monotonic() > deadline:
            raise PreconditionFailed(
                f"the source did not flush its WAL to {snapshot.lsn} within "
                f"{FLUSH_WAIT_SECONDS:.0f}s, so the change feed cannot be read up to this "
                "sync's snapshot (nothing was applied)",
                "check the source's WAL writer and disk, then run sync again")
        time.sleep(0.02)


def _decoded_names(snapshot: SourceSnapshot, table: str) -> tuple[str, str] | None:
    """How test_decoding names the source table (`table <schema>.<name>: `, both quoted as
    quote_ident quotes) and a pattern that finds its id column's values in a change, or None
    when the feed cannot follow it by id (a view or a partitioned table, an id that is not a
    column, a replica identity that does not carry the id)."""
    source = snapshot.mapping[table]
    if source.id.kind != "column":
        return None
    row = snapshot.conn.execute(
        "SELECT 'table ' || quote_ident(n.nspname) || '.' || quote_ident(c.relname) || ': ', "
        "quote_ident(%(id)s), c.relkind = 'r' AND (c.relreplident = 'f' OR EXISTS ("
        "  SELECT 1 FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid "
        "  AND a.attnum = i.indkey[0] WHERE i.indrelid = c.oid AND i.indnkeyatts = 1 "
        "  AND a.attname = %(id)s AND CASE c.relreplident WHEN 'd' THEN i.indisprimary "
        "  WHEN 'i' THEN i.indisreplident ELSE false END)) "
        "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE c.oid = %(rel)s::regclass",
        {"id": source.id.text, "rel": source.relation.as_string(snapshot.conn)}).fetchone()
    if row is None or not row[2]:
        return None
    # test_decoding writes each column as name[type]:value, separated by spaces.
    pattern = r"(?:^| )" + _are_literal(str(row[1])) + r"\[[^]]*\]:(-?[0-9]+)"
    return str(row[0]), pattern


def _are_literal(text: str) -> str:
    """`text` as a literal in a PostgreSQL regular expression (a backslash before any character
    that is not a letter or a digit makes it literal)."""
    return "".join(c if c.isalnum() or c == "_" else "\\" + c for c in text)


def _why_not_decoded(snapshot: SourceSnapshot, table: str) -> str:
    source = snapshot.mapping[table]
    if source.id.kind != "column":
        return "the id is not a column"
    return ("the source is not a plain table whose replica identity (its primary key, a "
            "REPLICA IDENTITY index or FULL) carries the id column")


def _advance_point(commits: list[tuple[str, int]], snapshot_text: str,
                   snapshot_lsn: str) -> str | None:
    """Where the slot may be advanced to: past every decoded transaction, in commit order, up to
    the first that the snapshot does not see; and when it sees every one committed before its
    WAL position (`snapshot_lsn`, the insert position read just after the snapshot was taken),
    to that position. None: not even the first.

    Why the position is safe: a transaction the snapshot sees inserted its commit record before
    the snapshot was taken, so before `snapshot_lsn`, and every record begun before it also
    ends before it; the WAL was flushed past it before the slot was read (_wait_for_flush), so
    every such commit was decoded. One the snapshot does not see but whose commit precedes the
    position is decoded too, and stops the advance before it. A commit after the position is
    of a transaction the snapshot does not see, and a slot advanced to the position decodes it
    (decoding skips only the transactions whose commit record begins before that point)."""
    xmin_text, xmax_text, running = snapshot_text.split(":")
    xmin, xmax = int(xmin_text), int(xmax_text)
    in_progress = {int(x) for x in running.split(",") if x}
    point = None
    for lsn, xid in commits:
        if lsn_value(lsn) > lsn_value(snapshot_lsn):
            break
        full = _widen(xid, xmax)
        if not (full < xmin or (full < xmax and full not in in_progress)):
            return point
        point = lsn
    return snapshot_lsn


def lsn_value(lsn: str) -> int:
    high, low = lsn.split("/")
    return int(high, 16) << 32 | int(low, 16)


def _widen(xid: int, near: int) -> int:
    """The 64-bit transaction id of a 32-bit one, within 2^31 of `near` (a 64-bit id)."""
    full = (near & ~0xFFFFFFFF) | xid
    if full - near > 2**31:
        full -= 2**32
    elif near - full > 2**31:
        full += 2**32
    return full


# The commands ------------------------------------------------------------------------------


@dataclass
class FeedStatus:
    slot: str | None
    started: bool
    confirmed_lsn: str | None = None
    slot_confirmed_lsn: str | None = None
    retained_wal_bytes: int | None = None
    wal_status: str | None = None
    problem: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"slot": self.slot, "started": self.started, "confirmed_lsn": self.confirmed_lsn,
                "slot_confirmed_lsn": self.slot_confirmed_lsn,
                "retained_wal_bytes": self.retained_wal_bytes, "wal_status": self.wal_status,
                "problem": self.problem}


def start_feed(source_url: str, target_url: str, slot: str, mapping: LegacyMapping) -> FeedStatus:
    """Create the slot on the source and record it in the target. Refuses when a feed is
    recorded already, or the source does not allow logical decoding."""
    if not _SLOT_NAME.match(slot):
        raise PreconditionFailed(f"{slot!r} is no slot name", "use lower-case letters, digits "
                                 "and underscores, at most 63")
    with connect(target_url, purpose="target") as target:
        existing = feed_record(target)
        if existing is not None:
            raise PreconditionFailed(f"a change feed is already started (slot {existing.slot})",
                                     "`edu-migrate feed status` shows it; `feed stop` ends it")
        _require_decodable(source_url)
        with connect(source_url, purpose="source", replication=True) as repl:
            try:
                result = repl.pgconn.exec_(sql.SQL(
                    "CREATE_REPLICATION_SLOT {} LOGICAL {} (SNAPSHOT 'export')").format(
                        sql.Identifier(slot), sql.Identifier(PLUGIN)).as_bytes(repl))
            except psycopg.Error as exc:  # pragma: no cover - exec_ reports in the result
                raise PreconditionFailed(f"the slot could not be created: {exc}",
                                         "check the source's replication settings") from exc
            if result.status != psycopg.pq.ExecStatus.TUPLES_OK:
                message = (result.error_message or b"").decode(errors="replace").strip()
                raise PreconditionFailed(
                    f"the source refused to create the slot {slot}: {message}",
                    "a slot of that name may exist already (`feed stop --slot`), or the source "
                    "has no free replication slot (max_replication_slots)")
            consistent = result.get_value(0, 1)
            exported = result.get_value(0, 2)
            assert consistent is not None and exported is not None
            try:
                covers, system_id, database = _exported_snapshot(source_url, exported.decode())
                target.execute(
                    "INSERT INTO migration.change_feed (slot_name, plugin, source_system_id, "
                    "source_database, covers_snapshot, confirmed_lsn) "
                    "VALUES (%s, %s, %s, %s, %s::pg_snapshot, %s::pg_lsn)",
                    [slot, PLUGIN, system_id, database, covers, consistent.decode()])
                target.commit()
            except BaseException:
                _drop_slot(source_url, slot)
                raise
    return feed_status(source_url, target_url)


def _exported_snapshot(source_url: str, exported: str) -> tuple[str, str | None, str]:
    """The slot's snapshot as a pg_snapshot's text, the source's system identifier (None where
    this role may not read it) and its database, read in a session that imports the snapshot
    (while the replication session that exported it waits)."""
    with connect(source_url, purpose="source", read_only=True) as conn:
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        conn.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(exported)))
        row = conn.execute("SELECT pg_current_snapshot()::text, current_database()").fetchone()
        assert row is not None
        try:
            with conn.transaction():
                ident = conn.execute(
                    "SELECT system_identifier::text FROM pg_control_system()").fetchone()
        except psycopg.errors.InsufficientPrivilege:
            ident = None
        conn.rollback()
    return str(row[0]), (str(ident[0]) if ident else None), str(row[1])


def feed_status(source_url: str, target_url: str) -> FeedStatus:
    with connect(target_url, purpose="target") as target:
        record = feed_record(target)
    if record is None:
        return FeedStatus(slot=None, started=False)
    status = FeedStatus(slot=record.slot, started=True, confirmed_lsn=record.confirmed_lsn)
    with connect(source_url, purpose="source", read_only=True) as source:
        row = source.execute(
            "SELECT confirmed_flush_lsn::text, wal_status, "
            "pg_wal_lsn_diff(pg_current_wal_insert_lsn(), restart_lsn)::bigint "
            "FROM pg_replication_slots WHERE slot_name = %s", [record.slot]).fetchone()
    if row is None:
        status.problem = f"the slot {record.slot} no longer exists on the source"
        return status
    status.slot_confirmed_lsn, status.wal_status = row[0], row[1]
    status.retained_wal_bytes = None if row[2] is None else int(row[2])
    if status.wal_status == "lost":
        status.problem = "the slot lost WAL it needed: syncs scan until `feed stop` and `start`"
    elif row[0] is not None and lsn_value(str(row[0])) > lsn_value(record.confirmed_lsn):
        status.problem = (f"the slot stands beyond {record.confirmed_lsn}, where the target "
                          "left it (a target restored from a backup, or another client "
                          "advanced it): syncs scan until `feed stop` and `start`")
    return status


def stop_feed(source_url: str, target_url: str, slot: str | None) -> str | None:
    """Drop the slot (the recorded one, or `slot`) from the source and the record from the
    target. The slot's name, or None when there was neither."""
    with connect(target_url, purpose="target") as target:
        record = feed_record(target)
        name = slot or (record.slot if record else None)
        if name is None:
            return None
        _drop_slot(source_url, name)
        target.execute("DELETE FROM migration.change_feed WHERE slot_name = %s", [name])
        target.commit()
    return name


def _drop_slot(source_url: str, slot: str) -> None:
    with connect(source_url, purpose="source", autocommit=True) as source:
        source.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                       "WHERE slot_name = %s", [slot])


def _require_decodable(source_url: str) -> None:
    with connect(source_url, purpose="source", read_only=True) as source:
        row = source.execute(
            "SELECT current_setting('wal_level'), current_setting('max_replication_slots')::int, "
            "(SELECT rolsuper OR rolreplication FROM pg_roles WHERE rolname = current_user), "
            "pg_is_in_recovery()").fetchone()
    assert row is not None
    wal_level, slots, may, standby = row
    if standby:
        raise PreconditionFailed("the source is a standby: its changes cannot be decoded there "
                                 "(PostgreSQL 15)", "point --source at the primary")
    if wal_level != "logical":
        raise PreconditionFailed(
            f"the source's wal_level is {wal_level}, and a change feed needs logical",
            "set wal_level = logical on the source and restart it, or go on without a feed "
            "(sync scans the tables)")
    if slots < 1:
        raise PreconditionFailed("the source allows no replication slot",
                                 "raise max_replication_slots on the source and restart it")
    if not may:
        raise PreconditionFailed("the source role lacks the REPLICATION attribute",
                                 "ALTER ROLE … REPLICATION for the role in the source URL")
