"""Validation that grows with the delta: the cutover's window checks what was written since a
full validation, against what that validation stored (migration.validation_*, schema V023).

What a full validation reads of the target is, for its large part, sums over rows: the
accounting of the marks and enrollments (per legacy id: migrated, set aside, both, merged, its
fingerprint), the orphans of `grades` and `course_enrollments` (per row) and their row counts.
Sums split by key: a full validation run as the baseline (`validate`, or the cutover before its
freeze) stores them per range of 64 legacy ids and per bucket of edu_v2 ids, and from then on
statement triggers note every id written in the tables those sums read. In the window, only the
noted ranges and buckets are read again, and the rest is taken from the baseline: the same
checks with the same numbers, hence the same verdict, as a full `validate` of the same data.

The rest is read whole, as a full validation reads it: the source's side (while the last sync
runs, on the other core), the small tables (phases 1–4 derive them again whole), the catalogue,
the foreign keys, the archive and the dispositions.

The baseline is trusted only as it claims to be: marked ready, with the very triggers it
recorded (same oid, same catalogue row: a trigger dropped, replaced or disabled since shows), on
the same schema version and the same direction of truth. A TRUNCATE (a full run, a rollback)
marks it invalid. Otherwise the window runs the full validation and says why.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from edu_migrate import direction
from edu_migrate.checks.validation import (
    ACCOUNTING_NAMES,
    LEGACY_ORPHAN_QUERIES,
    ORPHAN_QUERIES,
    Accounted,
    SourceFacts,
    TargetCounts,
    ValidationReport,
    accounted_ids,
    assemble,
    source_facts,
    target_counts,
    validate,
)
from edu_migrate.phases import sqlfile
from edu_migrate.phases.staging import SourceSnapshot
from edu_migrate.schema import LATEST_VERSION

# The legacy tables whose accounting is kept per range of ids (the rest are read whole: phases
# 1–4 derive them again whole anyway, and they are small).
RANGE_TABLES = ("course_students", "grades")
RANGE_BITS = 6  # a range: 64 consecutive legacy ids (as in incremental.sql: source_id >> 6)
# edu_v2 tables whose rows are counted by the ids written since the baseline.
KEYED_COUNTS = ("course_enrollments", "grades")


@dataclass(frozen=True)
class OrphanPart:
    child: str
    fk: str
    parent: str


# The orphan checks of the large tables, kept per bucket of the child's ids.
ORPHAN_PARTS = {
    "Enrollments without students": OrphanPart("course_enrollments", "student_id", "students"),
    "Enrollments without courses": OrphanPart("course_enrollments", "course_offering_id",
                                              "course_offerings"),
    "Grades without enrollments": OrphanPart("grades", "enrollment_id", "course_enrollments"),
    "Grades without assessments": OrphanPart("grades", "assessment_id", "assessments"),
}
# The legacy-side orphan checks whose target query is one of ORPHAN_QUERIES, word for word.
SAME_AS = {name: other for name, (_, query) in LEGACY_ORPHAN_QUERIES.items()
           for other, same in ORPHAN_QUERIES.items() if same == query}

# The tables whose writes are noted: by legacy range, by edu_v2 id.
# (The partitioned crosswalk's own triggers see only the writes through it; the phases write
# straight into the partitions, hence the enrollments' partition too. The marks' crosswalk is
# derived from grades.legacy_id: their writes are noted on grades, by that legacy id.)
RANGE_NOTED = ("migration.crosswalk_rows", "migration.crosswalk_course_students",
               "migration.crosswalk_grades_deleted", "migration.rejected_rows",
               "migration.repairs")
MARK_RANGES_NOTED = ("public.grades",)
KEY_NOTED = tuple(dict.fromkeys([*KEYED_COUNTS, *(p.parent for p in ORPHAN_PARTS.values())]))
TRIGGER_PREFIX = "validation_note"
# A baseline older than this share of its table written since is established again before the
# freeze (it costs a full validation, outside the window).
STALE_SHARE = 0.10

_EVENTS = {
    "insert": ("INSERT", "NEW TABLE AS new_rows"),
    "update": ("UPDATE", "OLD TABLE AS old_rows NEW TABLE AS new_rows"),
    "delete": ("DELETE", "OLD TABLE AS old_rows"),
}


def _statements() -> dict[str, str]:
    return {s.name: s.text for s in sqlfile.load("incremental.sql", "edu_migrate.checks", "")}


def _relation(name: str) -> sql.Identifier:
    return sql.Identifier(*name.split("."))


def bucket_bits(rows: dict[str, int]) -> dict[str, int]:
    """Bits of the id buckets per large edu_v2 table: about 2 rows a bucket. Only buckets with
    orphans are stored, so small buckets cost nothing to keep; and since ids are spread at
    random over the table, a written id costs reading its bucket's rows again."""
    return {table: max(0, min(32, math.ceil(math.log2(max(rows.get(table, 0), 1) / 2))))
            for table in KEYED_COUNTS}


def _bucket(alias: str, bits: int) -> sql.Composable:
    """The bucket of a uuid: its first `bits` bits."""
    return sql.SQL("((('x' || left({}.id::text, 8))::bit(32)::bigint) >> {})").format(
        sql.Identifier(alias), sql.Literal(32 - bits))


def _buckets_now(conn: psycopg.Connection, buckets: Sequence[int], bits: int) -> None:
    """pg_temp.buckets_now: the buckets to read again, with their first and last uuid."""
    conn.execute("CREATE TEMP TABLE IF NOT EXISTS buckets_now (bucket bigint, lo uuid, hi uuid)")
    conn.execute("TRUNCATE buckets_now")
    shift = 32 - bits
    with conn.cursor() as cur, cur.copy("COPY buckets_now (bucket, lo, hi) FROM STDIN") as copy:
        for bucket in buckets:
            low, high = bucket << shift, ((bucket + 1) << shift) - 1
            copy.write_row((bucket, f"{low:08x}-0000-0000-0000-000000000000",
                            f"{high:08x}-ffff-ffff-ffff-ffffffffffff"))
    conn.execute("ANALYZE buckets_now")


def orphan_buckets(conn: psycopg.Connection, name: str, bits: dict[str, int],
                   only: Sequence[int] | None = None) -> list[tuple[int, int]]:
    """An orphan check's rows per bucket of the child's ids (buckets with none left out): every
    bucket, or `only` those."""
    if only is not None:
        _buckets_now(conn, only, bits[ORPHAN_PARTS[name].child])
    query = orphan_query(name, bits, every_bucket=only is None)
    return [(int(b), int(n)) for b, n in conn.execute(query).fetchall()]


def _orphan_statement(statement: str, name: str, bits: dict[str, int]) -> sql.Composed:
    """incremental.sql's `statement` for orphan check `name`: its child, parent, foreign key
    and the bucket of a child row `c`."""
    part = ORPHAN_PARTS[name]
    return sql.SQL(_statements()[statement]).format(
        bucket=_bucket("c", bits[part.child]), child=sql.Identifier(part.child),
        parent=sql.Identifier(part.parent), fk=sql.Identifier(part.fk))


def orphan_query(name: str, bits: dict[str, int], *, every_bucket: bool) -> sql.Composed:
    """The orphan check `name` per bucket: of every bucket, or of those in pg_temp.buckets_now."""
    return _orphan_statement("orphan_buckets" if every_bucket else "orphan_buckets_now", name,
                             bits)


def affected_query(name: str, bits: dict[str, int]) -> sql.Composed:
    """The buckets of the child of orphan check `name` to read again: those its writes and its
    parents' writes since the baseline touched (parameters `child` and `parent`)."""
    return _orphan_statement("affected_buckets", name, bits)


_RANGE_VALUES = ("migrated", "set_aside", "both_ways", "merged", "ids", "id_sum", "id_hash_sum")


def _range_rows(conn: psycopg.Connection, table: str,
                only: bool) -> list[tuple[int, tuple[int, ...]]]:
    """The accounting per range of legacy ids: every range, or (`only`) those in
    pg_temp.ranges_now."""
    def rows(table: sql.Identifier, by_table: bool) -> sql.Composable:
        if not only:
            return table
        return sql.SQL(_statements()["rows_in_ranges"]).format(
            table=table, filter=sql.SQL("y.source_table = %(t)s AND") if by_table
            else sql.SQL(""))
    query = sql.SQL(_statements()["accounting_ranges"]).format(
        crosswalk=rows(sql.Identifier("migration", f"crosswalk_{table}"), False),
        rejected=rows(sql.Identifier("migration", "rejected_rows"), True),
        repairs=rows(sql.Identifier("migration", "repairs"), True))
    return [(int(row[0]), tuple(int(v) for v in row[1:]))
            for row in conn.execute(query, {"t": table}).fetchall()]


def _accounted(values: Sequence[int]) -> Accounted:
    migrated, set_aside, both, merged, ids, id_sum, id_hash_sum = values
    return Accounted(migrated, set_aside, both, merged, (ids, id_sum, id_hash_sum))


def accounted_ranges(conn: psycopg.Connection, table: str) -> Accounted:
    """The whole table's accounting, summed from its ranges, which are stored as the baseline
    (in the establishing transaction)."""
    ranges = _range_rows(conn, table, only=False)
    conn.execute("DELETE FROM migration.validation_ranges WHERE legacy_table = %s", [table])
    with conn.cursor() as cur, cur.copy(sql.SQL(
            "COPY migration.validation_ranges (legacy_table, bucket, {}) FROM STDIN").format(
                sql.SQL(", ").join(map(sql.Identifier, _RANGE_VALUES)))) as copy:
        for bucket, values in ranges:
            copy.write_row((table, bucket, *values))
    return _accounted([sum(values[i] for _, values in ranges) for i in range(7)])


# -- the baseline ------------------------------------------------------------------------------


def begin_baseline(conn: psycopg.Connection) -> bool:
    """Start establishing the baseline in `conn`'s transaction: the noted tables locked against
    writes (a writer waits until it is stored), their triggers put in place, the notes cleared.
    False when no baseline can be kept: a read-only target, or edu_v2 already the system of
    record (then the triggers are removed: nothing will validate against them)."""
    row = conn.execute("SELECT current_setting('transaction_read_only') = 'on', "
                       "to_regclass('migration.validation_baseline') IS NOT NULL").fetchone()
    if row is None or row[0] or not row[1]:
        return False
    if direction.current(conn).cut_over:
        drop_triggers(conn)
        conn.execute("DELETE FROM migration.validation_baseline")
        conn.commit()
        return False
    conn.execute(sql.SQL("LOCK TABLE {} IN SHARE MODE").format(sql.SQL(", ").join(
        _relation(name) for name in dict.fromkeys((*RANGE_NOTED, *MARK_RANGES_NOTED,
                                                    *KEY_NOTED)))))
    statements = _statements()
    # (table, function, its argument: the legacy table whose ids are the rows' legacy_id)
    for table, function, argument in [
            *((t, "note_legacy_ranges", None) for t in RANGE_NOTED),
            *((t, "note_legacy_ranges", "grades") for t in MARK_RANGES_NOTED),
            *((t, "note_keys", None) for t in KEY_NOTED)]:
        short = table.split(".")[-1] + ("" if argument is None else "_ranges")
        arguments = sql.SQL("") if argument is None else sql.Literal(argument)
        for kind, (event, transition) in _EVENTS.items():
            name = f"{TRIGGER_PREFIX}_{kind}_{short}"
            conn.execute(sql.SQL(statements["note_ranges_trigger"]).format(
                name=sql.Identifier(name), event=sql.SQL(event), table=_relation(table),
                transition=sql.SQL(transition), function=sql.Identifier(function),
                arguments=arguments))
            conn.execute(sql.SQL("ALTER TABLE {} ENABLE ALWAYS TRIGGER {}").format(
                _relation(table), sql.Identifier(name)))
        name = f"{TRIGGER_PREFIX}_truncate_{short}"
        conn.execute(sql.SQL(
            "CREATE OR REPLACE TRIGGER {} AFTER TRUNCATE ON {} FOR EACH STATEMENT "
            "EXECUTE FUNCTION migration.{}({})").format(
                sql.Identifier(name), _relation(table), sql.Identifier(function), arguments))
        conn.execute(sql.SQL("ALTER TABLE {} ENABLE ALWAYS TRIGGER {}").format(
            _relation(table), sql.Identifier(name)))
    conn.execute("TRUNCATE migration.validation_touched_ranges, "
                 "migration.validation_touched_keys, migration.validation_orphans")
    conn.execute("DELETE FROM migration.validation_baseline")
    return True


def drop_triggers(conn: psycopg.Connection) -> None:
    for table, name in conn.execute(
            "SELECT t.tgrelid::regclass::text, t.tgname FROM pg_trigger t "
            "WHERE t.tgname LIKE %s", [TRIGGER_PREFIX + "%"]).fetchall():
        conn.execute(sql.SQL("DROP TRIGGER IF EXISTS {} ON {}").format(
            sql.Identifier(name), sql.SQL(table)))


def _triggers(conn: psycopg.Connection) -> dict[str, list[str]]:
    """The noting triggers as the catalogue holds them: oid, row version, enabled mode."""
    return {f"{table}.{name}": [str(oid), str(xmin), str(enabled)]
            for table, name, oid, xmin, enabled in conn.execute(
                "SELECT t.tgrelid::regclass::text, t.tgname, t.oid, t.xmin, t.tgenabled "
                "FROM pg_trigger t WHERE t.tgname LIKE %s", [TRIGGER_PREFIX + "%"]).fetchall()}


def finish_baseline(conn: psycopg.Connection, counts: TargetCounts,
                    accounted: dict[str, Accounted]) -> None:
    """Store the baseline read in this transaction (the ranges are stored already) and commit:
    the tables' writers go on, and each of their writes is noted from here."""
    with conn.cursor() as cur, cur.copy(
            "COPY migration.validation_orphans (check_name, bucket, orphans) FROM STDIN") as copy:
        for name, buckets in counts.orphan_buckets.items():
            for bucket, orphans in buckets:
                copy.write_row((name, bucket, orphans))
    detail = {
        "schema_version": LATEST_VERSION,
        "bits": counts.bits,
        "rows": {table: counts.rows[table] for table in KEYED_COUNTS},
        "orphans": {name: counts.orphans[name] for name in ORPHAN_PARTS},
        "accounting": {table: [accounted[table].migrated, accounted[table].set_aside,
                               accounted[table].both, accounted[table].merged,
                               *accounted[table].fingerprint] for table in RANGE_TABLES},
        "triggers": _triggers(conn),
    }
    conn.execute("INSERT INTO migration.validation_baseline (state, detail) "
                 "VALUES ('ready', %s)", [Jsonb(detail)])
    conn.commit()


def unusable(conn: psycopg.Connection) -> tuple[str | None, dict[str, Any]]:
    """Why the stored baseline cannot be validated against (None: it can), and its detail."""
    row = conn.execute("SELECT to_regclass('migration.validation_baseline') IS NOT NULL"
                       ).fetchone()
    if not row or not row[0]:
        return "the target's schema keeps no baseline", {}
    row = conn.execute("SELECT state, reason, detail FROM migration.validation_baseline"
                       ).fetchone()
    if row is None:
        return "no full validation has established a baseline (run `edu-migrate validate`)", {}
    state, reason, detail = row
    if state != "ready":
        return f"the baseline is invalid: {reason}", {}
    if detail.get("schema_version") != LATEST_VERSION:
        return "the baseline was established on another schema version", {}
    if direction.current(conn).cut_over:
        return "edu_v2 is the system of record", {}
    now = _triggers(conn)
    if now != detail.get("triggers"):
        recorded = detail.get("triggers", {})
        changed = sorted(k for k in set(now) | set(recorded) if now.get(k) != recorded.get(k))
        return ("the triggers that note writes since the baseline were dropped, replaced or "
                f"disabled ({', '.join(changed[:3])})"), {}
    return None, detail


def stale(conn: psycopg.Connection) -> str | None:
    """Why a new baseline should be established before the freeze (None: the stored one is
    good): it is unusable, or a large share of what it covers was written since."""
    reason, detail = unusable(conn)
    if reason:
        return reason
    for table in RANGE_TABLES:
        row = conn.execute(
            "SELECT (SELECT count(*) FROM migration.validation_touched_ranges "
            "WHERE legacy_table = %(t)s), (SELECT count(*) FROM migration.validation_ranges "
            "WHERE legacy_table = %(t)s)", {"t": table}).fetchone()
        if row and row[0] > STALE_SHARE * max(row[1], 1):
            return f"{row[0]:,} of {row[1]:,} ranges of {table} written since the baseline"
    for table in KEYED_COUNTS:
        row = conn.execute("SELECT count(*) FROM migration.validation_touched_keys "
                           "WHERE relation = %s", [table]).fetchone()
        rows = int(detail["rows"][table])
        if row and row[0] > STALE_SHARE * max(rows, 1):
            return f"{row[0]:,} of {rows:,} rows of {table} written since the baseline"
    return None


# -- the window's validation --------------------------------------------------------------------


def _incremental_accounting(conn: psycopg.Connection, table: str, detail: dict[str, Any],
                            recomputed: dict[str, int]) -> Accounted:
    """A range table's accounting: the baseline's totals, less the stored numbers of the ranges
    written since, plus those ranges read again."""
    conn.execute("CREATE TEMP TABLE IF NOT EXISTS ranges_now (bucket bigint PRIMARY KEY, "
                 "lo bigint, hi bigint)")
    conn.execute("TRUNCATE ranges_now")
    conn.execute(f"INSERT INTO ranges_now SELECT bucket, bucket << {RANGE_BITS}, "
                 f"(bucket << {RANGE_BITS}) + {2 ** RANGE_BITS - 1} "
                 "FROM migration.validation_touched_ranges WHERE legacy_table = %s", [table])
    conn.execute("ANALYZE ranges_now")
    now = _range_rows(conn, table, only=True)
    stored = conn.execute(sql.SQL(
        "SELECT {} FROM migration.validation_ranges v JOIN ranges_now k USING (bucket) "
        "WHERE v.legacy_table = %s").format(sql.SQL(", ").join(
            sql.SQL("coalesce(sum({}), 0)").format(sql.Identifier(c)) for c in _RANGE_VALUES)),
        [table]).fetchone()
    assert stored is not None
    row = conn.execute("SELECT count(*) FROM ranges_now").fetchone()
    recomputed[f"{table}: legacy id ranges"] = int(row[0]) if row else 0
    base = [int(v) for v in detail["accounting"][table]]
    return _accounted([base[i] - int(stored[i]) + sum(values[i] for _, values in now)
                       for i in range(7)])


def _incremental_orphans(conn: psycopg.Connection, name: str, detail: dict[str, Any],
                         recomputed: dict[str, int]) -> int:
    part = ORPHAN_PARTS[name]
    bits = {table: int(b) for table, b in detail["bits"].items()}
    affected = [int(r[0]) for r in conn.execute(
        affected_query(name, bits), {"child": part.child, "parent": part.parent}).fetchall()]
    recomputed[f"{name}: id buckets"] = len(affected)
    if not affected:
        return int(detail["orphans"][name])
    now = orphan_buckets(conn, name, bits, only=affected)
    row = conn.execute("SELECT coalesce(sum(orphans), 0) FROM migration.validation_orphans "
                       "WHERE check_name = %s AND bucket = ANY(%s)", [name, affected]).fetchone()
    stored = int(row[0]) if row else 0
    return int(detail["orphans"][name]) - stored + sum(n for _, n in now)


def _incremental_count(conn: psycopg.Connection, table: str, detail: dict[str, Any],
                       recomputed: dict[str, int]) -> int:
    row = conn.execute("SELECT count(*) FROM migration.validation_touched_keys "
                       "WHERE relation = %s", [table]).fetchone()
    recomputed[f"{table}: ids"] = int(row[0]) if row else 0
    moved = conn.execute(sql.SQL(_statements()["count_moved"]).format(
        table=sql.Identifier(table)), {"table": table}).fetchone()
    return int(detail["rows"][table]) + (int(moved[0]) if moved else 0)


# The look-ups per range and bucket are estimated as if each read a whole table (a parameter's
# range is priced at a default share): JIT compilation would cost more than the reads.
_NO_JIT = "SET jit = off"


def validate_incremental(
        snapshot: SourceSnapshot, target: psycopg.Connection, exclude: Sequence[str] = (),
        facts: SourceFacts | None = None,
        second_target: Callable[[], AbstractContextManager[psycopg.Connection]] | None = None
) -> ValidationReport:
    """The window's validation: incremental against the stored baseline, or, when the baseline
    cannot be trusted, the full one (the report says which, and why)."""
    reason, detail = unusable(target)
    target.commit()
    if reason:
        report = validate(snapshot, target, exclude, facts, second_target)
        report.method, report.fallback = "full", reason
        return report
    recomputed: dict[str, int] = {}
    counted_here: dict[str, int] = {}
    target.execute(_NO_JIT)

    def counted() -> TargetCounts:
        def count(conn: psycopg.Connection, table: str) -> int:
            return _incremental_count(conn, table, detail, counted_here)

        def orphans(conn: psycopg.Connection, name: str) -> int:
            return _incremental_orphans(conn, name, detail, counted_here)

        if second_target is None:
            return target_counts(target, counted=count, orphans=orphans)
        with second_target() as conn:
            conn.execute(_NO_JIT)
            return target_counts(conn, counted=count, orphans=orphans)

    with ThreadPoolExecutor(max_workers=2) as pool:
        reading = pool.submit(source_facts, snapshot, exclude) if facts is None else None
        counting = pool.submit(counted) if second_target is not None else None
        accounted = {table: _incremental_accounting(target, table, detail, recomputed)
                     if table in RANGE_TABLES else accounted_ids(target, table)
                     for table in ACCOUNTING_NAMES}
        counts = counting.result() if counting else counted()
        facts = facts or (reading.result() if reading else None)
    assert facts is not None
    report = assemble(snapshot, target, facts, counts, accounted)
    report.method, report.recomputed = "incremental", recomputed | counted_here
    return report
