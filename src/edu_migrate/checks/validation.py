"""Phase 6 of the guide: counts old against new, orphans, referential integrity, and the
accounting of every legacy row (migrated, merged or set aside; never both, never neither)."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field
from functools import cache
from importlib import resources
from typing import Any

import psycopg
from psycopg import sql

from edu_migrate.checks.anomalies import code_key
from edu_migrate.mapping import LegacyMapping
from edu_migrate.phases.archive import (
    ARCHIVED,
    EXCLUDED,
    TableEntry,
    archived_counts,
    last_archive,
    source_inventory,
)
from edu_migrate.phases.staging import SourceSnapshot
from edu_migrate.schema import versions


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    old: int | None = None
    new: int | None = None
    detail: dict[str, int] = field(default_factory=dict)
    # What exactly is wrong, by name (a foreign key, a table), when counts alone do not say.
    notes: tuple[str, ...] = ()

    def line(self) -> str:
        mark = "✓ PASS" if self.passed else "✗ FAIL"
        parts = []
        if self.old is not None:
            parts.append(f"Old={self.old}")
        if self.new is not None:
            parts.append(f"New={self.new}")
        parts.extend(f"{key}={value}" for key, value in self.detail.items())
        notes = f" — {'; '.join(self.notes)}" if self.notes else ""
        return f"{mark} | {self.name}: {', '.join(parts)}{notes}"


@dataclass(frozen=True)
class Disposition:
    """How many rows of a legacy table one rule repaired, merged or set aside."""
    table: str
    outcome: str
    column: str | None
    rule: str
    rows: int

    def line(self) -> str:
        where = f"{self.table}.{self.column}" if self.column else self.table
        return f"  {self.outcome:<9} | {where}: {self.rule} ({self.rows:,})"


@dataclass
class ValidationReport:
    checks: list[Check]
    dispositions: list[Disposition] = field(default_factory=list)
    # Each legacy table and the source table it was read from (legacy-edu.md's or the mapping's).
    source_tables: dict[str, str] = field(default_factory=dict)
    # 'full' (every row read) or 'incremental' (checks/incremental.py: what was written since
    # the baseline a full validation established, added to it); why a full one ran instead.
    method: str = "full"
    fallback: str | None = None
    # an incremental validation: the legacy ranges, id buckets and ids it read again
    recomputed: dict[str, int] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return all(check.passed for check in self.checks)

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "checks": [asdict(c) | {"line": c.line()}
                                                   for c in self.checks],
                "dispositions": [asdict(d) for d in self.dispositions],
                "source_tables": self.source_tables, "method": self.method,
                "fallback": self.fallback, "recomputed": self.recomputed}


DISPOSITIONS = """
SELECT source_table, CASE WHEN rule LIKE '%merged%' OR rule LIKE 'catalogue field%'
                          THEN 'merged' ELSE 'repaired' END,
       column_name, rule, count(*)
FROM migration.repairs GROUP BY 1, 2, 3, 4
UNION ALL
SELECT source_table, 'set aside', NULL, reason, count(*)
FROM migration.rejected_rows GROUP BY 1, 2, 3, 4
ORDER BY 1, 2, 3, 4
"""


def dispositions(target: psycopg.Connection) -> list[Disposition]:
    """Every rule that changed, merged or set aside legacy rows, with its row count."""
    return [Disposition(str(t), str(o), c, str(r), int(n))
            for t, o, c, r, n in target.execute(DISPOSITIONS).fetchall()]


@dataclass(frozen=True)
class CountCheck:
    """A legacy table against the edu_v2 table that holds its rows."""
    name: str
    legacy_table: str
    target_table: str


COUNT_CHECKS = (
    CountCheck("User Count", "users", "users"),
    CountCheck("Person Count", "persons", "persons"),
    CountCheck("Student Count", "students", "students"),
    CountCheck("Staff Count", "teachers", "staff_members"),
    CountCheck("Organization Count", "organizations", "organization_units"),
    CountCheck("Course Offering Count", "courses", "course_offerings"),
    CountCheck("Enrollment Count", "course_students", "course_enrollments"),
    CountCheck("Grade Count", "grades", "grades"),
)

ACCOUNTING_NAMES = {
    "users": "Users", "persons": "Persons", "students": "Students", "teachers": "Teachers",
    "organizations": "Organizations", "courses": "Course runs",
    "course_students": "Enrollments", "grades": "Grades",
}

# The guide's referential-integrity queries, plus one per foreign key of edu_v2.
ORPHAN_QUERIES: dict[str, str] = {
    "Students without users":
        "SELECT count(*) FROM students s LEFT JOIN users u ON s.user_id = u.id WHERE u.id IS NULL",
    "Persons without users":
        "SELECT count(*) FROM persons p LEFT JOIN users u ON p.user_id = u.id WHERE u.id IS NULL",
    "Enrollments without students":
        "SELECT count(*) FROM course_enrollments ce LEFT JOIN students s ON ce.student_id = s.id "
        "WHERE s.id IS NULL",
    "Enrollments without courses":
        "SELECT count(*) FROM course_enrollments ce LEFT JOIN course_offerings co "
        "ON ce.course_offering_id = co.id WHERE co.id IS NULL",
    "Grades without enrollments":
        "SELECT count(*) FROM grades g LEFT JOIN course_enrollments ce ON g.enrollment_id = ce.id "
        "WHERE ce.id IS NULL",
    "Grades without assessments":
        "SELECT count(*) FROM grades g LEFT JOIN assessments a ON g.assessment_id = a.id "
        "WHERE a.id IS NULL",
}

# The legacy side reads each legacy table as the mapping gives it ({students}: its rows).
LEGACY_ORPHAN_QUERIES: dict[str, tuple[str, str]] = {
    "Orphaned Students": (
        "SELECT count(*) FROM {students} s LEFT JOIN {users} u ON s.user_id = u.id "
        "WHERE u.id IS NULL",
        "SELECT count(*) FROM students s LEFT JOIN users u ON s.user_id = u.id WHERE u.id IS NULL"),
    "Orphaned Enrollments": (
        "SELECT count(*) FROM {course_students} e LEFT JOIN {students} s ON e.student_id = s.id "
        "WHERE s.id IS NULL",
        "SELECT count(*) FROM course_enrollments ce LEFT JOIN students s ON ce.student_id = s.id "
        "WHERE s.id IS NULL"),
}


@dataclass(frozen=True)
class ForeignKey:
    """A foreign key as the schema files declare it."""
    table: str
    columns: tuple[str, ...]
    referenced_table: str
    referenced_columns: tuple[str, ...]

    @property
    def label(self) -> str:
        return (f"{self.table}.{', '.join(self.columns)} → "
                f"{self.referenced_table}.{', '.join(self.referenced_columns)}")


_CREATE_TABLE = re.compile(r"^CREATE TABLE (\w+) \((.*?)^\);", re.MULTILINE | re.DOTALL)
_COLUMN_REFERENCES = re.compile(r"^\s*(\w+)\s[^,]*?\bREFERENCES\s+(\w+)\s*\(\s*(\w+)\s*\)",
                                re.MULTILINE)
_TABLE_FOREIGN_KEY = re.compile(
    r"FOREIGN KEY\s*\(([^)]*)\)\s*REFERENCES\s+(\w+)\s*\(([^)]*)\)")


def _names(listed: str) -> tuple[str, ...]:
    return tuple(name.strip() for name in listed.split(","))


@cache
def declared_foreign_keys() -> tuple[ForeignKey, ...]:
    """The foreign keys of edu_v2's schema public, read from the schema files: each column's
    `REFERENCES t (c)` and each table's `FOREIGN KEY (…) REFERENCES t (…)`."""
    found: list[ForeignKey] = []
    for version in versions():
        for table, body in _CREATE_TABLE.findall(version.text):
            for column, referenced, referenced_column in _COLUMN_REFERENCES.findall(body):
                if column.upper() not in ("FOREIGN", "CONSTRAINT"):  # a table constraint
                    found.append(ForeignKey(table, (column,), referenced, (referenced_column,)))
            for columns, referenced, referenced_columns in _TABLE_FOREIGN_KEY.findall(body):
                found.append(ForeignKey(table, _names(columns), referenced,
                                        _names(referenced_columns)))
    return tuple(found)


def foreign_key_check(target: psycopg.Connection) -> Check:
    """Each declared foreign key exists on its table and is validated (a NOT VALID key has not
    checked the rows that were there before it)."""
    query = resources.files("edu_migrate.checks").joinpath("foreign_keys.sql").read_text("utf-8")
    validated: dict[ForeignKey, bool] = {}
    for table, columns, referenced, referenced_columns, _, is_valid in target.execute(
            query.encode()).fetchall():
        key = ForeignKey(table, tuple(columns), referenced, tuple(referenced_columns))
        validated[key] = validated.get(key, False) or bool(is_valid)
    declared = declared_foreign_keys()
    missing = [key.label for key in declared if key not in validated]
    not_valid = [key.label for key in declared if validated.get(key) is False]
    notes = ((f"missing: {', '.join(missing)}",) if missing else ()) + \
        ((f"not validated: {', '.join(not_valid)}",) if not_valid else ())
    return Check("Foreign Keys Valid", bool(declared) and not missing and not not_valid, None,
                 len(declared) - len(missing) - len(not_valid),
                 {"Declared": len(declared), "Missing": len(missing),
                  "Not validated": len(not_valid)}, notes)


def _scalar(conn: psycopg.Connection, query: str | sql.Composed,
            params: list[Any] | None = None) -> int:
    row = conn.execute(query, params).fetchone()
    return int(row[0]) if row and row[0] is not None else 0


@dataclass(frozen=True)
class Accounting:
    old: int
    migrated: int
    merged: int
    set_aside: int
    unaccounted: int
    both: int
    unknown: int

    @property
    def holds(self) -> bool:
        return self.unaccounted == 0 and self.both == 0 and self.unknown == 0


# A fingerprint of a set of ids: its size, its sum and the sum of a 64-bit hash of each id. Two
# sets with equal fingerprints are equal but for a chance of about 2^-64; every id is read.
FINGERPRINT = "count(*), coalesce(sum(id), 0), coalesce(sum(hashint8extended(id, 0)), 0)"


def _legacy_ids(mapping: LegacyMapping, table: str) -> sql.Composed:
    source = mapping[table]
    return sql.SQL("SELECT {}::bigint AS id FROM {}").format(source.id.expression,
                                                              source.relation)


def _fingerprint_of_legacy(snapshot: SourceSnapshot, table: str) -> tuple[int, ...]:
    row = snapshot.conn.execute(sql.SQL("SELECT " + FINGERPRINT + " FROM ({}) t").format(
        _legacy_ids(snapshot.mapping, table))).fetchone()
    assert row is not None
    return tuple(int(value) for value in row)


@dataclass(frozen=True)
class SourceFacts:
    """All that validation reads of the source. Computed in a session of its own while the
    target's side is queried; in a cutover, while the last sync runs (the source is frozen)."""
    # per legacy table: the fingerprint of its ids (its first number is the row count)
    fingerprints: dict[str, tuple[int, ...]]
    catalogue: int
    orphans: dict[str, int]
    inventory: list[TableEntry]


def source_facts(snapshot: SourceSnapshot, exclude: Sequence[str]) -> SourceFacts:
    legacy_rows = {t.legacy: t.rows() for t in snapshot.mapping}
    source = snapshot.conn
    fingerprints = {table: _fingerprint_of_legacy(snapshot, table) for table in ACCOUNTING_NAMES}
    # A fingerprint's first number counts every row of its relation (no filter): the inventory
    # takes it rather than reading the marks' 32 million rows (scale 10) a second time in the
    # window, where the source's side is read while the last sync runs.
    counted = {(snapshot.mapping[table].schema, snapshot.mapping[table].name): fingerprint[0]
               for table, fingerprint in fingerprints.items()}
    return SourceFacts(
        fingerprints=fingerprints,
        catalogue=_scalar(source, sql.SQL(
            f"SELECT count(DISTINCT {code_key('code')}) FROM {{}} courses").format(
                legacy_rows["courses"])),
        orphans={name: _scalar(source, sql.SQL(old_query).format(**legacy_rows))
                 for name, (old_query, _) in LEGACY_ORPHAN_QUERIES.items()},
        inventory=source_inventory(source, exclude, snapshot.mapping, counted))


@dataclass(frozen=True)
class Accounted:
    """The target's side of one legacy table's accounting."""
    migrated: int
    set_aside: int
    both: int
    merged: int
    fingerprint: tuple[int, ...]


def accounted_ids(target: psycopg.Connection, table: str) -> Accounted:
    """The ids of `table` migrated or set aside, fingerprinted in the target."""
    partition = sql.Identifier("migration", f"crosswalk_{table}")
    row = target.execute(sql.SQL("""
        WITH migrated AS (SELECT DISTINCT source_id FROM {partition}),
             rejected AS (SELECT source_id FROM migration.rejected_rows WHERE source_table = %(t)s)
        SELECT
            (SELECT count(*) FROM migrated),
            (SELECT count(*) FROM rejected),
            (SELECT count(*) FROM migrated m JOIN rejected r USING (source_id)),
            (SELECT count(*) FROM migration.repairs WHERE source_table = %(t)s AND rule LIKE
               '%%merged%%'),
            f.*
        FROM (SELECT """ + FINGERPRINT + """ FROM (SELECT source_id AS id FROM migrated
              UNION ALL SELECT source_id FROM rejected) a) f
    """).format(partition=partition), {"t": table}).fetchone()
    assert row is not None
    migrated, set_aside, both, merged = (int(value) for value in row[:4])
    return Accounted(migrated, set_aside, both, merged, tuple(int(value) for value in row[4:]))


def account_for(snapshot: SourceSnapshot, target: psycopg.Connection, table: str,
                legacy: tuple[int, ...], accounted: Accounted) -> Accounting:
    """Every legacy id of `table` against the crosswalk and the rows set aside.

    The ids migrated or set aside are fingerprinted in the target (`accounted`) and the legacy
    ids in the source (`legacy`), where they are: when the fingerprints agree (and no id is both
    migrated and set aside), every legacy id is accounted for and no other. Only when they
    differ are the legacy ids streamed over, to count exactly which are unaccounted for and
    which are unknown."""
    migrated, merged, set_aside, both = (accounted.migrated, accounted.merged,
                                         accounted.set_aside, accounted.both)
    if accounted.fingerprint == legacy and both == 0:
        return Accounting(legacy[0], migrated - merged, merged, set_aside, 0, 0, 0)
    old, unaccounted, unknown = _stream_and_compare(snapshot, target, table)
    return Accounting(old, migrated - merged, merged, set_aside, unaccounted, both, unknown)


def _stream_and_compare(snapshot: SourceSnapshot, target: psycopg.Connection,
                        table: str) -> tuple[int, int, int]:
    """The legacy ids, streamed into the target: how many, how many are neither migrated nor
    set aside, and how many migrated or set-aside ids the legacy table does not have."""
    target.execute("CREATE TEMP TABLE IF NOT EXISTS legacy_ids (id bigint)")
    target.execute("TRUNCATE legacy_ids")
    with snapshot.conn.cursor() as out_cur, target.cursor() as in_cur:
        query = sql.SQL("COPY ({}) TO STDOUT (FORMAT binary)")
        with out_cur.copy(query.format(_legacy_ids(snapshot.mapping, table))) as out, \
                in_cur.copy("COPY legacy_ids (id) FROM STDIN (FORMAT binary)") as into:
            for chunk in out:
                into.write(chunk)
    target.execute("ANALYZE legacy_ids")
    partition = sql.Identifier("migration", f"crosswalk_{table}")
    counts = target.execute(sql.SQL("""
        WITH migrated AS (SELECT DISTINCT source_id FROM {partition}),
             rejected AS (SELECT source_id FROM migration.rejected_rows WHERE source_table = %(t)s)
        SELECT
            (SELECT count(*) FROM legacy_ids),
            (SELECT count(*) FROM legacy_ids l WHERE NOT EXISTS (
                 SELECT 1 FROM migrated m WHERE m.source_id = l.id)
               AND NOT EXISTS (SELECT 1 FROM rejected r WHERE r.source_id = l.id)),
            (SELECT count(*) FROM (SELECT source_id FROM migrated UNION SELECT source_id
               FROM rejected) a WHERE NOT EXISTS (SELECT 1 FROM legacy_ids l
               WHERE l.id = a.source_id))
    """).format(partition=partition), {"t": table}).fetchone()
    assert counts is not None
    old, unaccounted, unknown = (int(c) for c in counts)
    return old, unaccounted, unknown


def archive_checks(target: psycopg.Connection, entries: Sequence[TableEntry]) -> list[Check]:
    """Every unmapped table of the source is either excluded (`exclude`) or in legacy_archive
    with as many rows as the source has. Before the archive step has run they are not, and
    the check fails: no legacy table may be left behind unnoticed."""
    archived = archived_counts(target)
    wanted = [e for e in entries if e.status == ARCHIVED]
    checks = [Check(f"Archived {e.table}", archived.get(e.table) == e.rows, e.rows,
                    archived.get(e.table, 0)) for e in wanted]
    excluded = sum(1 for e in entries if e.status == EXCLUDED)
    absent = [e.table for e in wanted if e.table not in archived]
    notes: tuple[str, ...] = ()
    if absent:
        step = ("" if last_archive(target) is None else "gone since the last archive step; ")
        notes = (f"not archived: {', '.join(absent)} ({step}`edu-migrate migrate --all` "
                 "archives them once every phase is done, or exclude them)",)
    checks.append(Check("Unmapped Tables Archived", all(c.passed for c in checks),
                        len(wanted) + excluded, len(archived), {"Excluded": excluded}, notes))
    return checks


@dataclass(frozen=True)
class TargetCounts:
    """The target's side of the counts and the orphan checks."""
    rows: dict[str, int]
    catalogue: int
    catalogue_aside: int
    legacy_orphans: dict[str, int]
    orphans: dict[str, int]
    keys: Check


    # a full validation establishing the baseline: the large tables' orphans per id bucket
    orphan_buckets: dict[str, list[tuple[int, int]]] = field(default_factory=dict)
    bits: dict[str, int] = field(default_factory=dict)


CATALOGUE_ASIDE = ("SELECT count(DISTINCT migration.normalise_course_code(detail ->> 'code')) "
                   "FROM migration.rejected_rows r WHERE source_table = 'courses' AND NOT EXISTS "
                   "(SELECT 1 FROM courses c WHERE c.code = "
                   "migration.normalise_course_code(r.detail ->> 'code'))")


def target_counts(target: psycopg.Connection, *, by_bucket: bool = False,
                  counted: Callable[[psycopg.Connection, str], int] | None = None,
                  orphans: Callable[[psycopg.Connection, str], int] | None = None
                  ) -> TargetCounts:
    """The target's counts and orphans. `by_bucket`: the large tables' orphans counted per
    bucket of ids as well (a baseline stores them). `counted`, `orphans`: how an incremental
    validation gets a large table's count and an orphan check's number instead."""
    from edu_migrate.checks import incremental

    rows = {count.target_table: (counted(target, count.target_table)
                                 if counted and count.target_table in incremental.KEYED_COUNTS
                                 else _scalar(target, sql.SQL("SELECT count(*) FROM {}").format(
                                     sql.Identifier(count.target_table))))
            for count in COUNT_CHECKS}
    found: dict[str, int] = {}
    buckets: dict[str, list[tuple[int, int]]] = {}
    bits = incremental.bucket_bits(rows) if by_bucket else {}
    for name, query in ORPHAN_QUERIES.items():
        if name in incremental.ORPHAN_PARTS and orphans is not None:
            found[name] = orphans(target, name)
        elif name in incremental.ORPHAN_PARTS and by_bucket:
            buckets[name] = incremental.orphan_buckets(target, name, bits)
            found[name] = sum(n for _, n in buckets[name])
        else:
            found[name] = _scalar(target, query)
    return TargetCounts(
        rows=rows,
        catalogue=_scalar(target, "SELECT count(*) FROM courses"),
        catalogue_aside=_scalar(target, CATALOGUE_ASIDE),
        # the same queries as two of the orphan checks: their numbers, not read twice
        legacy_orphans={name: found[incremental.SAME_AS[name]] if name in incremental.SAME_AS
                        else _scalar(target, new_query)
                        for name, (_, new_query) in LEGACY_ORPHAN_QUERIES.items()},
        orphans=found,
        keys=foreign_key_check(target), orphan_buckets=buckets, bits=bits)


def validate(snapshot: SourceSnapshot, target: psycopg.Connection,
             exclude: Sequence[str] = (), facts: SourceFacts | None = None,
             second_target: Callable[[], AbstractContextManager[psycopg.Connection]] | None = None,
             *, baseline: bool = False) -> ValidationReport:
    """The checks, each the source's side against the target's, read at once: the source's
    side (`facts`, or read here on the snapshot's session), the target's counts and orphans
    (on `second_target`, a further session of the target, when given) and the accounting of
    every legacy id (on `target`), each in a thread of its own.

    `baseline`: also keep what the cutover's window validates against (checks/incremental.py),
    committed on `target` with the numbers read; the target's writers wait meanwhile."""
    from edu_migrate.checks import incremental

    establishing = baseline and incremental.begin_baseline(target)

    def counted() -> TargetCounts:
        if second_target is None:
            return target_counts(target, by_bucket=establishing)
        with second_target() as conn:
            return target_counts(conn, by_bucket=establishing)

    with ThreadPoolExecutor(max_workers=2) as pool:
        reading = pool.submit(source_facts, snapshot, exclude) if facts is None else None
        counting = pool.submit(counted) if second_target is not None else None
        accounted = {table: incremental.accounted_ranges(target, table) if establishing
                     and table in incremental.RANGE_TABLES else accounted_ids(target, table)
                     for table in ACCOUNTING_NAMES}
        counts = counting.result() if counting else counted()
        facts = facts or (reading.result() if reading else None)
    assert facts is not None
    report = assemble(snapshot, target, facts, counts, accounted)
    if establishing:
        incremental.finish_baseline(target, counts, accounted)
    return report


def assemble(snapshot: SourceSnapshot, target: psycopg.Connection, facts: SourceFacts,
             counts: TargetCounts, accounted: dict[str, Accounted]) -> ValidationReport:
    """The checks from the numbers read, whichever way they were read (full or incremental)."""
    accounting = {table: account_for(snapshot, target, table, facts.fingerprints[table],
                                     accounted[table]) for table in ACCOUNTING_NAMES}
    checks: list[Check] = []
    for count in COUNT_CHECKS:
        old = facts.fingerprints[count.legacy_table][0]
        new = counts.rows[count.target_table]
        acc = accounting[count.legacy_table]
        detail = {}
        if acc.set_aside:
            detail["Set aside"] = acc.set_aside
        if acc.merged:
            detail["Merged"] = acc.merged
        checks.append(Check(count.name, new == old - acc.set_aside - acc.merged, old, new, detail))
    catalogue_passed = counts.catalogue == facts.catalogue - counts.catalogue_aside
    checks.append(Check("Course Count", catalogue_passed, facts.catalogue, counts.catalogue))
    for name, old in facts.orphans.items():
        found = counts.legacy_orphans[name]
        checks.append(Check(name, found == 0, old, found))
    for name, found in counts.orphans.items():
        checks.append(Check(name, found == 0, None, found))
    checks.append(counts.keys)
    for table, acc in accounting.items():
        detail = {"Migrated": acc.migrated, "Merged": acc.merged, "Set aside": acc.set_aside}
        if acc.unaccounted:
            detail["Unaccounted"] = acc.unaccounted
        if acc.both:
            detail["Both"] = acc.both
        if acc.unknown:
            detail["Unknown"] = acc.unknown
        checks.append(Check(ACCOUNTING_NAMES[table], acc.holds, acc.old, None, detail))
    checks.extend(archive_checks(target, facts.inventory))
    return ValidationReport(checks, dispositions(target),
                            {t.legacy: t.source_name for t in snapshot.mapping})
