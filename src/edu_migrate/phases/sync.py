"""The catch-up: bring a migrated edu_v2 up to date with the source as it is now.

The source is only read, from one new snapshot; nothing is installed there and no replication is
needed (an opt-in change feed, phases/feed.py, replaces the scans where the source allows it).
The stage schema of the target keeps the legacy rows the target was last derived from (the
mirror). A sync:

1. finds the rows inserted, changed and deleted since: the source hashes every row of a table
   (id, 64-bit hash of its staged columns) and the target compares them with the mirror's own
   hashes, then fetches only the rows that differ and updates the mirror;
2. derives again, with the phases' own SQL, what those rows decide. Phases 2–4 (small tables, with
   group rules throughout) are derived again whole when anything they read changed. Phase 1 only
   for the users and persons in scope (phases/sql/phase1_scope.sql: rows that changed, rows the
   as-of time reaches, and their username, e-mail and person groups), and phase 5 for its rows
   in scope (phases/sql/sync.sql): rows that changed, rows whose student, course run, teacher or
   enrollment came out differently, rows whose dates the as-of time moved across, and the rest
   of their duplicate groups;
3. commits all of it, mirror included, in one transaction: a killed sync leaves edu_v2 and the
   mirror as the last sync left them, and the same command starts over.

Derived ids come from legacy ids, so a row derived again keeps its UUID; foreign keys are checked
at commit. The result equals a full migration of the source as it is now, at the same as-of time.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from edu_migrate.errors import PreconditionFailed
from edu_migrate.mapping import LEGACY_COLUMNS, LegacyMapping
from edu_migrate.pg.connect import connect
from edu_migrate.phases import sqlfile
from edu_migrate.phases.changes import (
    MirrorRecord,
    TableChanges,
    mirror_records,
    quiet_tables,
    snapshot_older_than_mirror,
    source_went_back,
    take_changes,
    untouched_since,
    usable_horizon,
)
from edu_migrate.phases.feed import OpenFeed, advance_slot, open_feed, record_advance
from edu_migrate.phases.marks import parse_in_transaction
from edu_migrate.phases.mirror_index import index_mirror
from edu_migrate.phases.runner import (
    PHASES,
    RUN_ORDER,
    SCOPED_PHASE,
    Phase,
    define_scope,
    phase_states,
    record_source_tables,
    run_statements,
    set_session,
    source_relation_followed,
)
from edu_migrate.phases.staging import (
    MIRROR_SOURCE_COLUMNS,
    MIRROR_SOURCE_UPDATE,
    STAGE_SCHEMA,
    MirrorSource,
    SourceSnapshot,
    definitions_fingerprint,
    mirror_source_values,
)
from edu_migrate.runlog import Reporter
from edu_migrate.security.audit import record_bulk_event, row_audit_paused

SYNC_SQL = "sync.sql"
# sync.sql's statements run before phases 1-4 are derived again (the outcomes they start from);
# the rest run after them.
BEFORE_THE_PHASES = ("dependency_outcomes", "dependencies_before", "dependencies_changed")
# How phases 1–4 derived again reach their tables: only the rows that came out differently.
APPLY_SQL = "derived_apply.sql"
# The tables a sync derives in part and writes in place (derived_apply.sql says when that may
# be): the marks. sync.sql's statements that run just before their apply.
IN_PLACE = ("grades",)
AT_THE_MARKS_APPLY = ("assessments_left_by_marks",)
# What later phases read of phases 1–3, one digest each: a phase is derived again when one it
# needs came out differently.
OUTCOMES_SQL = "outcomes.sql"

@dataclass
class SyncResult:
    as_of: datetime
    previous_as_of: datetime | None
    snapshot_at: datetime
    seconds: float = 0.0
    whole: bool = False
    changes: dict[str, TableChanges] = field(default_factory=dict)
    # What was derived again: "phase N": 1 for phases 1–4, and the legacy rows in scope of each
    # table a phase derived in part (phase 1's users and persons, phase 5's).
    recomputed: dict[str, int] = field(default_factory=dict)

    @property
    def changed_rows(self) -> int:
        return sum(c.total for c in self.changes.values())

    def to_dict(self) -> dict[str, Any]:
        return {"as_of": self.as_of.isoformat(),
                "previous_as_of": self.previous_as_of.isoformat() if self.previous_as_of
                else None,
                "snapshot_at": self.snapshot_at.isoformat(),
                "seconds": round(self.seconds, 3), "whole": self.whole,
                "changed_rows": self.changed_rows,
                "changes": {t: asdict(c) for t, c in self.changes.items()},
                "recomputed": self.recomputed}


def sync(snapshot: SourceSnapshot, target_url: str, *, as_of: datetime | None,
         batch_size: int, reporter: Reporter) -> SyncResult:
    started = time.perf_counter()
    with connect(target_url, purpose="target") as conn:
        previous = _require_synchronisable(conn, snapshot)
        records = mirror_records(conn)
        went_back = source_went_back(snapshot, records)
        _require_not_older(snapshot, records, went_back)
        conn.commit()
        # Built by the full run once each table was staged; here only what is missing (a
        # mirror staged by an older version, or staged again after a crash), committed.
        index_mirror(conn, tuple(LEGACY_COLUMNS), reporter)
        conn.commit()
        result = SyncResult(as_of=as_of or snapshot.taken_at, previous_as_of=previous,
                            snapshot_at=snapshot.taken_at)
        # The sync moves the as-of time; set_session hands it to migration.as_of().
        conn.execute("UPDATE migration.state SET as_of = %s", [result.as_of])
        set_session(conn)
        # A sync reads and rewrites a few rows of tables of millions, all just loaded and in
        # memory: index look-ups, which the stock cost of a random read (4) prices as disk
        # seeks, are what it needs. For this transaction only.
        conn.execute("SET LOCAL random_page_cost = 1.1")
        conn.execute("SELECT set_config('edu_migrate.previous_as_of', %s, true)",
                     [previous.isoformat() if previous else ""])
        conn.execute("SET CONSTRAINTS ALL DEFERRED")
        result.whole = _mirror_lost(conn)
        if result.whole:
            reporter.warn("the staged copy of the source is gone (the target server restarted "
                          "after a crash): this sync reads every row and derives all again")
        fingerprints = _fingerprints(snapshot)
        # A source that committed nothing since the mirror's snapshot needs no scan.
        quiet = set() if result.whole else quiet_tables(snapshot, records, went_back)
        feed, feed_reason = _read_feed(conn, snapshot, records, went_back, reporter)
        for table in LEGACY_COLUMNS:
            table_started = time.perf_counter()
            horizon, reason = usable_horizon(snapshot, table, records.get(table),
                                             fingerprints[table], went_back)
            with reporter.progress(f"changes in {table}", None) as advance:
                result.changes[table] = take_changes(
                    conn, snapshot, table, whole=result.whole, horizon=horizon,
                    batch_size=batch_size, reason=reason, quiet_since=table in quiet,
                    feed=feed, feed_reason=feed_reason)
                advance(result.changes[table].total)
            reporter.step(f"sync: changes in {table} ({result.changes[table].method})",
                          time.perf_counter() - table_started, result.changes[table].total)
        stale = {n for record in records.values() for n in record.stale_phases}
        for table in LEGACY_COLUMNS:
            record = records.get(table)
            if record is None or record.fingerprint != fingerprints[table]:
                # before the phases are derived again: the rows they write take the default
                for statement in source_relation_followed(table, snapshot.mapping):
                    conn.execute(statement)
        result.recomputed = _derive_again(conn, result, snapshot.mapping, reporter, stale)
        _record(conn, result, snapshot, fingerprints, time.perf_counter() - started)
        if feed is not None:
            record_advance(conn, snapshot, feed)
        conn.commit()
    if feed is not None:
        failed = advance_slot(snapshot, feed)
        if failed:
            reporter.warn(f"the change feed's slot was not advanced ({failed}): the next sync "
                          "decodes those transactions again")
    result.seconds = time.perf_counter() - started
    return result


def _read_feed(conn: psycopg.Connection, snapshot: SourceSnapshot,
               records: dict[str, MirrorRecord], went_back: str | None,
               reporter: Reporter | None) -> tuple[OpenFeed | None, str]:
    """The change feed's ids for this sync (phases/feed.py), when one was started; a feed that
    cannot be used is said once, and the tables are scanned."""
    started = time.perf_counter()
    feed, reason = open_feed(snapshot, conn, {t: r.snapshot for t, r in records.items()},
                             went_back)
    if reporter is not None and (feed is not None or reason):
        if reason:
            reporter.warn(f"{reason}; this sync scans the tables instead (`edu-migrate feed "
                          "status`; `feed stop` then `feed start` begin a new feed)")
        reporter.step("sync: change feed read", time.perf_counter() - started,
                      feed.transactions if feed else 0)
    return feed, reason


def unsynced_changes(snapshot: SourceSnapshot, target_url: str, *,
                     batch_size: int) -> dict[str, TableChanges]:
    """The legacy tables with rows written since the last sync's snapshot, as `snapshot` sees
    them, and how many: the sync's own test (the rows whose xmin is at or after the horizon
    recorded in migration.mirror_state, compared with the mirror; deletions from the row counts
    and buckets), run once more and applied to nothing (its transaction is rolled back). Empty
    when edu_v2 holds the source exactly as `snapshot` sees it."""
    found: dict[str, TableChanges] = {}
    with connect(target_url, purpose="target") as conn:
        records = mirror_records(conn)
        went_back = source_went_back(snapshot, records)
        fingerprints = _fingerprints(snapshot)
        quiet = quiet_tables(snapshot, records, went_back)
        # Peeked, never advanced: this transaction is rolled back.
        feed, feed_reason = _read_feed(conn, snapshot, records, went_back, None)
        for table in LEGACY_COLUMNS:
            horizon, reason = usable_horizon(snapshot, table, records.get(table),
                                             fingerprints[table], went_back)
            # Nothing to report is the usual answer: counted in one pass where that can tell.
            if horizon is not None and table not in quiet and (
                    feed is None or feed.reason(table) is not None) and untouched_since(
                    conn, snapshot, table, horizon):
                continue
            changes = take_changes(conn, snapshot, table, whole=False, horizon=horizon,
                                   batch_size=batch_size, reason=reason,
                                   quiet_since=table in quiet, feed=feed,
                                   feed_reason=feed_reason)
            if changes.total:
                found[table] = changes
        conn.rollback()
    return found


def last_sync(conn: psycopg.Connection) -> dict[str, Any] | None:
    """The last sync: when, as of when, from which snapshot, the rows it applied per table."""
    row = conn.execute(
        "SELECT finished_at, seconds, as_of, snapshot_at, changed_rows, "
        "clock_timestamp() - snapshot_at FROM migration.sync_runs "
        "ORDER BY id DESC LIMIT 1").fetchone()
    if row is None:
        return None
    applied = {table: total for table, total in
               ((t, sum(changes.get(k, 0) for k in ("inserted", "updated", "deleted")))
                for t, changes in row[4].items()) if total}
    return {"finished_at": row[0].isoformat(), "seconds": round(row[1], 2),
            "as_of": row[2].isoformat() if row[2] else None,
            "snapshot_at": row[3].isoformat(), "rows_applied": applied,
            # edu_v2 holds the source as it was at the snapshot: that long ago at most
            "behind_seconds": round(row[5].total_seconds())}


def _require_synchronisable(conn: psycopg.Connection,
                            snapshot: SourceSnapshot) -> datetime | None:
    """Refuse a target that no completed migration of this source produced; return its as-of."""
    states = phase_states(conn)
    pending = [n for n in RUN_ORDER if states.get(n) != "done"]
    if pending:
        raise PreconditionFailed(
            f"sync needs a completed migration, and phase {pending[0]} is not done",
            "run `edu-migrate migrate --all` first; sync then brings it up to date")
    row = conn.execute("SELECT source_system_id, source_database, as_of "
                       "FROM migration.state").fetchone()
    assert row is not None
    recorded_system, recorded_database, previous = row
    system_id, database = snapshot.identity()
    other_system = None not in (recorded_system, system_id) and recorded_system != system_id
    if other_system or (recorded_database is not None and recorded_database != database):
        raise PreconditionFailed(
            f"the target was migrated from database {recorded_database} (system "
            f"{recorded_system or 'unknown'}), not from this source's {database} (system "
            f"{system_id or 'unknown'})",
            "point --source at the database the target was migrated from, or start over with "
            "`edu-migrate rollback --all` and `migrate --all`")
    return previous  # type: ignore[no-any-return]


def _fingerprints(snapshot: SourceSnapshot) -> dict[str, str]:
    """Per legacy table, what its rows are read through now (staging.definitions_fingerprint)."""
    return {table: definitions_fingerprint(snapshot.conn, snapshot.mapping[table])
            for table in LEGACY_COLUMNS}


def _require_not_older(snapshot: SourceSnapshot, records: dict[str, MirrorRecord],
                       went_back: str | None) -> None:
    """Refuse a snapshot older than the mirror: a sync that took it, then waited (for the
    migration lock, a slow network) while another sync brought the mirror further, would put
    the older rows over the newer. Where the source itself went back, the mirror is compared
    instead (its snapshots are of another history)."""
    if went_back is not None:
        return
    table = snapshot_older_than_mirror(snapshot, records)
    if table is not None:
        raise PreconditionFailed(
            f"this sync's snapshot of the source ({snapshot.taken_at.isoformat()}) is older "
            f"than the one the mirror of {table} was brought to: applying it would put older "
            "rows over newer (nothing was applied)",
            "run `edu-migrate sync` again: it reads a new snapshot")


def _mirror_lost(conn: psycopg.Connection) -> bool:
    """True when a stage table that held rows is empty now: a crash emptied the UNLOGGED mirror."""
    recorded: dict[str, int] = {str(r[0]): int(r[1]) for r in conn.execute(
        "SELECT table_name, rows FROM migration.mirror_state").fetchall()}
    for table in LEGACY_COLUMNS:
        rows = recorded.get(table)
        if rows is None:
            return True
        if rows > 0:
            row = conn.execute(sql.SQL("SELECT NOT EXISTS (SELECT 1 FROM {}.{})").format(
                sql.Identifier(STAGE_SCHEMA), sql.Identifier(table))).fetchone()
            if row and row[0]:
                return True
    return False


def _derive_again(conn: psycopg.Connection, result: SyncResult, mapping: LegacyMapping,
                  reporter: Reporter, stale: set[int]) -> dict[str, int]:
    quiet = Reporter()  # the phases' own lines describe a full run; a sync reports its totals
    statements = {s.name: s for s in sqlfile.load(SYNC_SQL)}
    moved = result.previous_as_of != result.as_of
    recomputed: dict[str, int] = {}
    writes = [t for n in RUN_ORDER for t in PHASES[n].writes]
    with row_audit_paused(conn, writes):
        for name in BEFORE_THE_PHASES:
            conn.execute(statements[name].text)
        outcomes = {int(s.name.removeprefix("phase_")): s.text
                    for s in sqlfile.load(OUTCOMES_SQL)}
        before = {number: _digest(conn, query) for number, query in outcomes.items()}
        came_out_differently: set[int] = set()
        for number in RUN_ORDER:
            phase = PHASES[number]
            if number == SCOPED_PHASE:
                continue
            # `stale`: the phase read an earlier copy of a table than the mirror holds
            if not (result.whole or moved or number in stale
                    or came_out_differently.intersection(phase.needs)
                    or any(result.changes[t].total for t in phase.reads)):
                continue
            started = time.perf_counter()
            in_part = phase.scope_file is not None and not (
                result.whole or number in stale
                or came_out_differently.intersection(
                    set(phase.needs) - set(phase.needs_followed))
                or any(lookup_starts_over(conn) for lookup_starts_over in phase.lookups_anew))
            keys: dict[str, str] | None = None
            if in_part:
                # Only the rows in scope, each with its groups (phase1_scope.sql,
                # phase4_scope.sql).
                recomputed.update(_scope_of(conn, phase))
                keys = {table: f"scope_keys_{table}" for table in phase.writes}
            else:
                _delete_records(conn, number)
            with derived_in_shadows(conn, phase.writes, keys):
                for build_lookup in phase.lookups:
                    build_lookup(conn)
                define_scope(conn, phase, scoped=in_part)
                run_statements(conn, phase.sql_file, quiet)
            record_source_tables(conn, phase, mapping)
            if number in outcomes and _digest(conn, outcomes[number]) != before[number]:
                came_out_differently.add(number)
            recomputed[f"phase {number}"] = 1
            reporter.step(f"sync: phase {number} derived again"
                          + (" for the rows in scope" if in_part else ""),
                          time.perf_counter() - started, 0)
        phase = PHASES[SCOPED_PHASE]
        for name, statement in statements.items():
            if name in BEFORE_THE_PHASES or name in AT_THE_MARKS_APPLY:
                continue
            if name == "clear_enrollments_in_scope":
                define_scope(conn, phase, scoped=True)
            started = time.perf_counter()
            cursor = conn.execute(statement.text)
            reporter.step(f"sync: {name}", time.perf_counter() - started,
                          max(cursor.rowcount, 0))
        for table in phase.reads:
            row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(
                sql.Identifier(f"scope_{table}"))).fetchone()
            recomputed[table] = int(row[0]) if row else 0
        parse_in_transaction(conn, reporter)
        rules = sqlfile.load(phase.sql_file)

        def before_the_marks_apply() -> None:
            for name in AT_THE_MARKS_APPLY:
                started = time.perf_counter()
                cursor = conn.execute(statements[name].text)
                reporter.step(f"sync: {name}", time.perf_counter() - started,
                              max(cursor.rowcount, 0))

        # The marks in scope are derived into a twin of grades and reach it in place; the rules
        # a full run sends after its indexes read grades itself, so they run after the apply.
        with derived_in_shadows(conn, IN_PLACE, {"grades": "scope_keys_grades"},
                                in_place=IN_PLACE, before_apply=before_the_marks_apply,
                                reporter=reporter):
            run_statements(conn, phase.sql_file, quiet,
                           [s for s in rules if not s.after_indexes])
        run_statements(conn, phase.sql_file, quiet, [s for s in rules if s.after_indexes])
        record_source_tables(conn, phase, mapping)
        # Check the foreign keys now, while every row is back: the audit triggers can only be
        # switched on again when no check is pending. One check per row written and key: a
        # step of its own in the profile (seconds at scale 1, where nothing else shows them).
        started = time.perf_counter()
        conn.execute("SET CONSTRAINTS ALL IMMEDIATE")
        reporter.step("sync: deferred foreign-key checks", time.perf_counter() - started, 0)
    return recomputed


def _scope_of(conn: psycopg.Connection, phase: Phase) -> dict[str, int]:
    """The legacy rows of `phase` a sync derives again (its scope_file): the seeds, then the
    grow_* statements in turn until none adds a row (a group brings its members, a member its
    other groups); then the edu_v2 keys of the scope and the records of those rows cleared. How
    many legacy rows of each table are in scope."""
    assert phase.scope_file is not None
    statements = sqlfile.load(phase.scope_file)
    grow = [s for s in statements if s.name.startswith("grow_")]
    first_grow = statements.index(grow[0])
    for statement in statements[:first_grow]:
        conn.execute(statement.text.encode())
    added = True
    while added:
        added = False
        for statement in grow:
            added = conn.execute(statement.text.encode()).rowcount > 0 or added
    for statement in statements[first_grow + len(grow):]:
        conn.execute(statement.text.encode())
    counts: dict[str, int] = {}
    for table in phase.reads:
        row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(
            sql.Identifier(f"scope_{table}"))).fetchone()
        counts[table] = int(row[0]) if row else 0
    return counts


def _digest(conn: psycopg.Connection, query: str) -> str | None:
    row = conn.execute(query.encode()).fetchone()
    return None if row is None else row[0]


def _delete_records(conn: psycopg.Connection, number: int) -> None:
    """The records of what phase `number` decided (crosswalk, rows set aside, repairs), gone,
    so that it can decide them again in this transaction; its tables are written through
    derived_in_shadows."""
    phase = PHASES[number]
    for table in phase.crosswalk_tables:
        conn.execute(sql.SQL("DELETE FROM {}").format(table))
    conn.execute("DELETE FROM migration.rejected_rows WHERE phase = %s", [number])
    conn.execute("DELETE FROM migration.repairs WHERE phase = %s", [number])


@dataclass(frozen=True)
class _Shadowed:
    table: sql.Identifier  # the real table, schema-qualified
    shadow: sql.Identifier
    columns: sql.Composed
    values: sql.Composed  # the twin's columns, s.<column> each
    key_s: sql.Composed
    key_t: sql.Composed


def _shadowed(conn: psycopg.Connection, name: str) -> _Shadowed:
    row = conn.execute(
        "SELECT n.nspname, c.relname, "
        "  (SELECT array_agg(a.attname ORDER BY a.attnum) FROM pg_attribute a "
        "   WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped "
        "   AND a.attgenerated = ''), "
        "  (SELECT array_agg(a.attname ORDER BY k.n) FROM pg_index i "
        "   CROSS JOIN unnest(i.indkey) WITH ORDINALITY k (attnum, n) "
        "   JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum "
        "   WHERE i.indrelid = c.oid AND i.indisprimary) "
        "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE c.oid = %s::regclass", [name]).fetchone()
    if row is None or not row[3]:
        raise PreconditionFailed(f"table {name} has no primary key, which a sync needs to "
                                 "write only the rows that changed",
                                 "apply edu-migrate's schema (`edu-migrate schema apply`)")
    schema, relname, columns, key = row

    def keyed(alias: str) -> sql.Composed:
        return sql.SQL(", ").join(sql.Identifier(alias, k) for k in key)

    # The twin is always named with its schema: after the block the path no longer finds it
    # first, and a bare name would be the real table.
    return _Shadowed(sql.Identifier(schema, relname), sql.Identifier("pg_temp", relname),
                     sql.SQL(", ").join(map(sql.Identifier, columns)),
                     sql.SQL(", ").join(sql.Identifier("s", c) for c in columns),
                     keyed("s"), keyed("t"))


@contextmanager
def derived_in_shadows(conn: psycopg.Connection, tables: tuple[str, ...],
                       scope_keys: dict[str, str] | None = None, *,
                       in_place: tuple[str, ...] = (),
                       before_apply: Callable[[], None] | None = None,
                       reporter: Reporter | None = None) -> Iterator[None]:
    """Inside the block, the phase's rules write `tables` into temporary twins of the same
    names; after it, only the rows that came out differently are written to the real tables
    (phases/sql/derived_apply.sql says why). The real tables end holding exactly what the rules
    derived. With `scope_keys` (table: a temporary table of the ids in scope), the rules derived
    only the rows in scope: only those real rows are compared, and left, changed or deleted.
    A table of `in_place` (which needs its scope keys) keeps the rows whose key stays and
    updates those that differ; `before_apply` runs when the twins are filled and the real tables
    not yet written."""
    statements = {s.name: sql.SQL(s.text) for s in sqlfile.load(APPLY_SQL)}
    shadowed = [_shadowed(conn, table) for table in tables]
    for item in shadowed:
        conn.execute(statements["shadow"].format(shadow=item.shadow, table=item.table))
    # Unqualified names reach the twins only while the temporary schema is searched first. It
    # is by default; a search_path that names pg_temp later would send the rules to the real
    # tables while the twins stay empty, and the apply below would then empty the real ones.
    row = conn.execute("SELECT current_setting('search_path')").fetchone()
    path = str(row[0]) if row and row[0] else ""
    conn.execute("SELECT set_config('search_path', %s, true)",
                 [f"pg_temp, {path}" if path.strip() else "pg_temp"])
    for table in tables:
        row = conn.execute("SELECT relnamespace = pg_my_temp_schema() FROM pg_class "
                           "WHERE oid = %s::regclass", [table]).fetchone()
        if not (row and row[0]):  # pragma: no cover - the search_path above makes it so
            raise PreconditionFailed(f"{table} does not resolve to its temporary twin",
                                     "report this: the sync wrote nothing")
    yield
    conn.execute("SELECT set_config('search_path', %s, true)", [path])
    if before_apply is not None:
        before_apply()
    for step in ("drop", "add"):
        for name, item in zip(tables, shadowed, strict=True):
            keys = (scope_keys or {}).get(name)
            if name in in_place:
                if keys is None:
                    raise ValueError(f"{name}: written in place only with its scope keys")
                statement = statements["drop_gone_in_place" if step == "drop" else
                                       "merge_in_place"]
            else:
                statement = statements["add_differing"] if step == "add" else \
                    statements["drop_differing"] if keys is None else \
                    statements["drop_differing_in_scope"]
            started = time.perf_counter()
            with _nested_loop_only(conn, name in in_place and step == "add"
                                   and _few_of(conn, item)):
                cursor = conn.execute(statement.format(
                    table=item.table, shadow=item.shadow, columns=item.columns,
                    values=item.values, key_s=item.key_s, key_t=item.key_t,
                    keys=sql.Identifier(keys or "unused")))
            if reporter is not None and name in in_place:
                done = "gone deleted" if step == "drop" else "merged"
                reporter.step(f"sync: {name} in place, {done}", time.perf_counter() - started,
                              max(cursor.rowcount, 0))
    for item in shadowed:
        conn.execute(statements["drop_shadow"].format(shadow=item.shadow))


# Up to what share of the real table's rows the twin is merged by key probes (measured at scale
# 1: a probe about 9 µs, the hash join's pass over the 3.2 million marks about 1.2 s, so they
# break even near 130,000 rows, 4 %). A sync of a day is about 1 %; a sync that derives every
# mark (a mirror lost to a crash) is left to the planner's hash join.
PROBED_SHARE = 0.04


def _few_of(conn: psycopg.Connection, item: _Shadowed) -> bool:
    """Whether the twin holds few enough rows of its table to be merged by key probes."""
    row = conn.execute(sql.SQL(
        "SELECT (SELECT count(*) FROM {shadow}) <= %s * greatest(c.reltuples, 0) "
        "FROM pg_class c WHERE c.oid = %s::regclass").format(shadow=item.shadow),
        [PROBED_SHARE, item.table.as_string(conn)]).fetchone()
    return bool(row and row[0])


@contextmanager
def _nested_loop_only(conn: psycopg.Connection, wanted: bool) -> Iterator[None]:
    """The MERGE of a twin into its table of millions of rows by key probes: the planner's cost
    of a probe (random_page_cost) prices the hash join over the whole table lower, which read
    3.2 million marks to apply 36,000 (2.3 s against 1.0 s at scale 1). For this transaction's
    one statement, then the settings as they were."""
    if not wanted:
        yield
        return
    names = ["enable_hashjoin", "enable_mergejoin"]
    row = conn.execute("SELECT array_agg(current_setting(n) ORDER BY o) "
                       "FROM unnest(%s::text[]) WITH ORDINALITY AS s (n, o)", [names]).fetchone()
    before: list[str] = list(row[0]) if row else []
    for name in names:
        conn.execute("SELECT set_config(%s, 'off', true)", [name])
    yield
    # Not after a failure: the transaction is then aborted and rolled back, which undoes these
    # settings too, and a statement sent now would only hide the failure behind its own.
    for name, value in zip(names, before, strict=True):
        conn.execute("SELECT set_config(%s, %s, true)", [name, value])


def _record(conn: psycopg.Connection, result: SyncResult, snapshot: SourceSnapshot,
            fingerprints: dict[str, str], seconds: float) -> None:
    for table, changes in result.changes.items():
        conn.execute(
            f"INSERT INTO migration.mirror_state (table_name, rows, {MIRROR_SOURCE_COLUMNS}) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (table_name) DO UPDATE SET "
            "rows = CASE WHEN %s THEN excluded.rows "
            "ELSE migration.mirror_state.rows + %s - %s END, "
            f"{MIRROR_SOURCE_UPDATE}, stale_phases = '{{}}', staged_at = clock_timestamp()",
            [table, changes.inserted,
             *mirror_source_values(MirrorSource.of(snapshot, fingerprints[table])),
             result.whole, changes.inserted, changes.deleted])
    changed = {t: asdict(c) for t, c in result.changes.items()}
    conn.execute(
        "INSERT INTO migration.sync_runs (started_at, seconds, as_of, snapshot_at, changed_rows, "
        "recomputed, whole) VALUES (clock_timestamp() - make_interval(secs => %s), %s, %s, %s, "
        "%s, %s, %s)",
        [seconds, seconds, result.as_of, result.snapshot_at, Jsonb(changed),
         Jsonb(result.recomputed), result.whole])
    conn.execute("INSERT INTO migration.run_log (event, detail) VALUES ('sync', %s)",
                 [Jsonb({"as_of": result.as_of.isoformat(), "changed_rows": result.changed_rows,
                         "seconds": round(seconds, 2), "whole": result.whole})])
    record_bulk_event(conn, "SYNC", [t for n in RUN_ORDER for t in PHASES[n].writes],
                      {"changed": changed, "recomputed": result.recomputed})

