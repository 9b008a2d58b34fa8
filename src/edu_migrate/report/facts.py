"""Everything the sign-off report shows, read from the source snapshot and the target in one go.

Nothing here prints or renders; `ReportData` is plain data that the HTML, Markdown and JSON
renderings share. No password hash is ever read: rows set aside and repairs are reported by
legacy id, reason and rule only, never by value.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg import sql

from edu_migrate import __version__, direction
from edu_migrate.checks.validation import (
    ACCOUNTING_NAMES,
    COUNT_CHECKS,
    ValidationReport,
)
from edu_migrate.checks.validation import validate as run_validation
from edu_migrate.errors import PreconditionFailed
from edu_migrate.pg.connect import connect
from edu_migrate.phases.as_of import recorded_as_of
from edu_migrate.phases.runner import PHASES, RUN_ORDER
from edu_migrate.phases.staging import SourceSnapshot

SAMPLE_IDS = 5

# The business tables of edu_v2, in the order the phases fill them.
TARGET_TABLES = ("users", "persons", "organization_units", "academic_terms", "students",
                 "staff_members", "courses", "course_offerings", "course_enrollments",
                 "assessments", "grades")

# The legacy mark types (legacy-edu.md): grade_type → (assessment type, maximum mark).
MARK_TYPES: dict[int, tuple[str, int]] = {
    1: ("attendance", 1), 2: ("seminar", 10), 3: ("colloquium", 10),
    4: ("independent_work", 10), 5: ("midterm", 20), 6: ("final_exam", 50),
}
MARK_BINS = 20

# The guide's names of the phases (its migration timeline).
PHASE_NAMES = {1: "Users and persons", 2: "Students and staff", 3: "Organizations and terms",
               4: "Courses and offerings", 5: "Enrollments and marks"}

# --- SQL -----------------------------------------------------------------------------------
# Checksums are order-independent and set-based: the row count and the sum of a 64-bit hash of
# every row's text. The session fixes the settings that shape a row's text, so the same rows
# give the same checksum on any server and in any session.
CHECKSUM_SESSION = ("SET LOCAL TimeZone = 'UTC'", "SET LOCAL DateStyle = 'ISO, YMD'",
                    "SET LOCAL IntervalStyle = 'postgres'", "SET LOCAL extra_float_digits = 1")
CHECKSUM_QUERY = ("SELECT count(*), md5(count(*) || '/' "
                  "|| coalesce(sum(hashtextextended(t::text, 0)), 0)) FROM {} t")

PHASE_RUNS_QUERY = """
    SELECT phase, status, started_at, finished_at, seconds, row_counts, last_error
    FROM migration.phase_runs ORDER BY phase"""
RUN_LOG_QUERY = "SELECT at, phase, event, detail FROM migration.run_log ORDER BY id"
REJECTED_QUERY = f"""
    SELECT source_table, reason, count(*),
           (array_agg(source_id ORDER BY source_id))[1:{SAMPLE_IDS}]
    FROM migration.rejected_rows GROUP BY source_table, reason
    ORDER BY source_table, count(*) DESC, reason"""
REPAIRS_QUERY = f"""
    SELECT source_table, column_name, rule, count(*),
           (array_agg(source_id ORDER BY source_id))[1:{SAMPLE_IDS}]
    FROM migration.repairs GROUP BY source_table, column_name, rule
    ORDER BY source_table, count(*) DESC, rule"""
# {grades}: the legacy marks as the mapping reads them.
LEGACY_MARK_VALUES_QUERY = ("SELECT grade_type, value, count(*) FROM {grades} grades "
                            "GROUP BY grade_type, value")
# Legacy marks are parsed by the target's own migration.parse_decimal, as phase 5 parses them;
# 'q/b' (qayıb) is an absence, as in phase 5.
LEGACY_MARKS_QUERY = f"""
    WITH parsed AS (
        SELECT grade_type, n, max_score,
               migration.parse_decimal(value) AS score,
               lower(migration.clean_text(value)) IN ('q/b', 'qb', 'q/b.') AS is_absent
        FROM legacy_mark_values JOIN mark_types USING (grade_type))
    SELECT grade_type,
           CASE WHEN score BETWEEN 0 AND max_score
                THEN least(width_bucket(score / max_score, 0, 1, {MARK_BINS}), {MARK_BINS}) END,
           sum(n) FILTER (WHERE score BETWEEN 0 AND max_score),
           sum(n) FILTER (WHERE is_absent AND score IS NULL),
           sum(n) FILTER (WHERE NOT is_absent AND score IS NULL OR score < 0 OR score > max_score),
           sum(n * score) FILTER (WHERE score BETWEEN 0 AND max_score)
    FROM parsed GROUP BY 1, 2"""
NEW_MARKS_QUERY = f"""
    WITH per_assessment AS (
        SELECT assessment_id, score, is_absent, count(*) AS n
        FROM grades GROUP BY assessment_id, score, is_absent)
    SELECT t.grade_type,
           CASE WHEN NOT p.is_absent
                THEN least(width_bucket(p.score / a.max_score, 0, 1, {MARK_BINS}), {MARK_BINS})
           END,
           sum(p.n) FILTER (WHERE NOT p.is_absent),
           sum(p.n) FILTER (WHERE p.is_absent),
           0,
           sum(p.n * p.score) FILTER (WHERE NOT p.is_absent)
    FROM per_assessment p
    JOIN assessments a ON a.id = p.assessment_id
    JOIN mark_types t ON t.assessment_type = a.assessment_type
    GROUP BY 1, 2"""


# --- data ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class ServerInfo:
    role: str
    url: str
    version: str
    database: str


@dataclass(frozen=True)
class PhaseTiming:
    number: int
    title: str
    status: str
    started_at: datetime | None
    finished_at: datetime | None
    seconds: float | None
    rows: dict[str, int]
    last_error: str | None

    @property
    def rows_written(self) -> int:
        return sum(self.rows.values())


@dataclass(frozen=True)
class RunEvent:
    at: datetime
    phase: int | None
    event: str
    detail: str


@dataclass(frozen=True)
class TableAccounting:
    label: str
    legacy_table: str
    target_table: str
    old: int
    migrated: int
    merged: int
    set_aside: int
    new_rows: int | None
    holds: bool
    source_table: str = ""  # the source's own table, when the mapping names another


@dataclass(frozen=True)
class RowGroup:
    """Rows set aside for one reason, or repaired by one rule: how many, and a few legacy ids."""
    source_table: str
    reason: str
    rows: int
    sample_ids: list[int]
    column: str | None = None


@dataclass(frozen=True)
class Checksum:
    side: str
    table: str
    rows: int
    digest: str


@dataclass
class MarkDistribution:
    """One mark type, old against new: counts per bin of the mark as a share of its maximum."""
    grade_type: int
    assessment_type: str
    max_score: int
    old_bins: list[int] = field(default_factory=lambda: [0] * MARK_BINS)
    new_bins: list[int] = field(default_factory=lambda: [0] * MARK_BINS)
    old_absent: int = 0
    new_absent: int = 0
    old_not_a_mark: int = 0
    old_total: float = 0.0
    new_total: float = 0.0

    @property
    def old_marks(self) -> int:
        return sum(self.old_bins)

    @property
    def new_marks(self) -> int:
        return sum(self.new_bins)

    @property
    def old_mean(self) -> float | None:
        return self.old_total / self.old_marks if self.old_marks else None

    @property
    def new_mean(self) -> float | None:
        return self.new_total / self.new_marks if self.new_marks else None

    @property
    def same(self) -> bool:
        return self.old_bins == self.new_bins and self.old_absent == self.new_absent


@dataclass
class ReportData:
    generated_at: datetime
    tool_version: str
    schema_version: int
    source: ServerInfo
    target: ServerInfo
    phases: list[PhaseTiming]
    run_log: list[RunEvent]
    validation: ValidationReport
    accounting: list[TableAccounting]
    set_aside: list[RowGroup]
    repairs: list[RowGroup]
    checksums: list[Checksum]
    marks: list[MarkDistribution]
    collect_seconds: float = 0.0
    # The catch-up: syncs after the migration, and the cutover's downtime window (run_log).
    syncs: int = 0
    last_sync: dict[str, Any] | None = None
    cutover: dict[str, Any] | None = None
    # Which database is the system of record (direction.py), and the last fallback.
    direction: dict[str, Any] | None = None
    last_fallback: dict[str, Any] | None = None
    # The run's as-of time (migration.state.as_of): the "now" of every rule.
    as_of: datetime | None = None

    @property
    def phases_done(self) -> list[int]:
        return [p.number for p in self.phases if p.status == "done"]

    @property
    def all_phases_done(self) -> bool:
        return len(self.phases_done) == len(PHASES)

    @property
    def passed(self) -> bool:
        return self.validation.passed and self.all_phases_done

    @property
    def verdict(self) -> str:
        return "PASS" if self.passed else "FAIL"

    @property
    def started_at(self) -> datetime | None:
        times = [p.started_at for p in self.phases if p.started_at]
        return min(times) if times else None

    @property
    def finished_at(self) -> datetime | None:
        times = [p.finished_at for p in self.phases if p.finished_at]
        return max(times) if times else None

    @property
    def phase_seconds(self) -> float:
        return sum(p.seconds or 0.0 for p in self.phases)

    @property
    def rows_set_aside(self) -> int:
        return sum(group.rows for group in self.set_aside)

    @property
    def rows_repaired(self) -> int:
        return sum(group.rows for group in self.repairs)

    @property
    def checks_failed(self) -> list[str]:
        return [check.name for check in self.validation.checks if not check.passed]

    def count_of(self, target_table: str) -> int | None:
        return next((c.rows for c in self.checksums
                     if c.side == "edu_v2" and c.table == target_table), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict,
            "generated_at": self.generated_at.isoformat(),
            "tool_version": self.tool_version,
            "schema_version": self.schema_version,
            "source": asdict(self.source),
            "target": asdict(self.target),
            "as_of": self.as_of.isoformat() if self.as_of else None,
            "started_at": self.started_at.isoformat() if self.started_at else None,
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
            "phases": [asdict(p) | {"rows_written": p.rows_written} for p in self.phases],
            "run_log": [asdict(e) for e in self.run_log],
            "syncs": self.syncs, "last_sync": self.last_sync, "cutover": self.cutover,
            "direction": self.direction, "last_fallback": self.last_fallback,
            "validation": self.validation.to_dict(),
            "accounting": [asdict(a) for a in self.accounting],
            "set_aside": [asdict(g) for g in self.set_aside],
            "repairs": [asdict(g) for g in self.repairs],
            "checksums": [asdict(c) for c in self.checksums],
            "marks": [asdict(m) | {"old_marks": m.old_marks, "new_marks": m.new_marks,
                                   "old_mean": m.old_mean, "new_mean": m.new_mean,
                                   "same": m.same} for m in self.marks],
        }


# --- collection ----------------------------------------------------------------------------
def require_a_run(target: psycopg.Connection, target_url_shown: str) -> None:
    """A report needs at least one phase done; before that there is nothing to sign."""
    row = target.execute("SELECT count(*) FROM migration.phase_runs "
                         "WHERE status = 'done'").fetchone()
    if not row or not row[0]:
        raise PreconditionFailed(f"no migration phase has run on {target_url_shown} yet",
                                 "run `edu-migrate migrate --all` first, then the report")


def _server(role: str, url: str, conn: psycopg.Connection) -> ServerInfo:
    version = conn.execute("SHOW server_version").fetchone()
    return ServerInfo(role, url, str(version[0]) if version else "?", conn.info.dbname)


def _phases(target: psycopg.Connection) -> list[PhaseTiming]:
    by_phase = {int(row[0]): row for row in target.execute(PHASE_RUNS_QUERY)}
    phases = []
    for number in RUN_ORDER:
        row = by_phase.get(number)
        title = PHASE_NAMES[number]
        if row is None:
            phases.append(PhaseTiming(number, title, "pending", None, None, None, {}, None))
            continue
        rows = {key.removeprefix("migrate_"): int(value)
                for key, value in (row[5] or {}).items() if key.startswith("migrate_")}
        phases.append(PhaseTiming(number, title, str(row[1]), row[2], row[3],
                                  float(row[4]) if row[4] is not None else None, rows, row[6]))
    return phases


def _run_log(target: psycopg.Connection) -> list[RunEvent]:
    events = []
    for at, phase, event, detail in target.execute(RUN_LOG_QUERY):
        detail = detail or {}
        migrated = {k: v for k, v in detail.items() if str(k).startswith("migrate_")}
        shown = ", ".join(f"{key.removeprefix('migrate_')} {value:,}"
                          if isinstance(value, int) else f"{key} {value}"
                          for key, value in (migrated or detail).items())
        events.append(RunEvent(at, phase, str(event), shown))
    return events


def _catch_up(target: psycopg.Connection) -> tuple[int, dict[str, Any] | None,
                                                   dict[str, Any] | None]:
    """How many syncs ran, the last one, and the last cutover's window."""
    syncs = target.execute("SELECT count(*), (array_agg(detail ORDER BY id DESC))[1] "
                           "FROM migration.run_log WHERE event = 'sync'").fetchone()
    cutover = target.execute("SELECT detail FROM migration.run_log WHERE event = 'cutover' "
                             "ORDER BY id DESC LIMIT 1").fetchone()
    # Which validation the window ran (full or incremental, and why full): the last one logged
    # by a window at or before the cutover's record.
    window = target.execute(
        "SELECT v.detail FROM migration.run_log v WHERE v.event = 'validation' "
        "AND (v.detail ->> 'window')::boolean AND v.id < coalesce((SELECT max(id) "
        "FROM migration.run_log WHERE event = 'cutover'), 0) "
        "ORDER BY v.id DESC LIMIT 1").fetchone()
    found = dict(cutover[0]) if cutover else None
    if found is not None:
        found["validation"] = window[0] if window else None
    return (int(syncs[0]) if syncs else 0, syncs[1] if syncs else None, found)


def _accounting(report: ValidationReport) -> list[TableAccounting]:
    checks = {check.name: check for check in report.checks}
    new_rows = {count.legacy_table: checks[count.name].new for count in COUNT_CHECKS
                if count.name in checks}
    targets = {count.legacy_table: count.target_table for count in COUNT_CHECKS}
    rows = []
    for table, label in ACCOUNTING_NAMES.items():
        check = checks.get(label)
        if check is None or check.old is None:
            continue
        rows.append(TableAccounting(
            label, table, targets.get(table, ""), check.old, check.detail.get("Migrated", 0),
            check.detail.get("Merged", 0), check.detail.get("Set aside", 0),
            new_rows.get(table), check.passed,
            report.source_tables.get(table, table)))
    return rows


def _groups(target: psycopg.Connection, query: str, with_column: bool) -> list[RowGroup]:
    groups = []
    for row in target.execute(query):
        if with_column:
            table, column, rule, rows, ids = row
            groups.append(RowGroup(table, rule, int(rows), [int(i) for i in ids], column))
        else:
            table, reason, rows, ids = row
            groups.append(RowGroup(table, reason, int(rows), [int(i) for i in ids]))
    return groups


def checksums(conn: psycopg.Connection, side: str,
              tables: Sequence[tuple[str, sql.Identifier]]) -> list[Checksum]:
    """Row count and content checksum of each (name, table), inside the connection's
    transaction."""
    for setting in CHECKSUM_SESSION:
        conn.execute(setting)
    found = []
    for table, relation in tables:
        row = conn.execute(sql.SQL(CHECKSUM_QUERY).format(relation)).fetchone()
        assert row is not None
        found.append(Checksum(side, table, int(row[0]), str(row[1])))
    return found


def _marks(snapshot: SourceSnapshot, target: psycopg.Connection) -> list[MarkDistribution]:
    target.execute("CREATE TEMP TABLE IF NOT EXISTS mark_types "
                   "(grade_type smallint, assessment_type text, max_score numeric)")
    target.execute("TRUNCATE mark_types")
    with target.cursor() as cur:
        cur.executemany("INSERT INTO mark_types VALUES (%s, %s, %s)",
                        [(n, kind, top) for n, (kind, top) in MARK_TYPES.items()])
    target.execute("CREATE TEMP TABLE IF NOT EXISTS legacy_mark_values "
                   "(grade_type smallint, value text, n bigint)")
    target.execute("TRUNCATE legacy_mark_values")
    with snapshot.conn.cursor() as out_cur, target.cursor() as in_cur, \
            out_cur.copy(sql.SQL(f"COPY ({LEGACY_MARK_VALUES_QUERY}) TO STDOUT").format(
                grades=snapshot.mapping["grades"].rows())) as out, \
            in_cur.copy("COPY legacy_mark_values FROM STDIN") as into:
        for chunk in out:
            into.write(chunk)
    marks = {n: MarkDistribution(n, kind, top) for n, (kind, top) in MARK_TYPES.items()}
    for grade_type, bucket, in_range, absent, not_a_mark, total in target.execute(
            LEGACY_MARKS_QUERY):
        mark = marks.get(int(grade_type)) if grade_type is not None else None
        if mark is None:
            continue
        if bucket is not None:
            mark.old_bins[int(bucket) - 1] += int(in_range or 0)
            mark.old_total += float(total or 0)
        mark.old_absent += int(absent or 0)
        mark.old_not_a_mark += int(not_a_mark or 0)
    for grade_type, bucket, in_range, absent, _, total in target.execute(NEW_MARKS_QUERY):
        mark = marks[int(grade_type)]
        if bucket is not None:
            mark.new_bins[int(bucket) - 1] += int(in_range or 0)
            mark.new_total += float(total or 0)
        mark.new_absent += int(absent or 0)
    return list(marks.values())


def collect(snapshot: SourceSnapshot, target: psycopg.Connection, target_url: str, *,
            source_url_shown: str, target_url_shown: str, schema_version: int,
            exclude: Sequence[str]) -> ReportData:
    """Run the validation (with the run's `exclude` patterns, as `validate` does) and gather the
    rest from one source snapshot. The checksums, which
    read every row of both sides, run meanwhile on sessions of their own: the source's in the
    same snapshot, the target's in a read-only transaction (the target is not written while no
    migration runs)."""
    started = datetime.now(UTC)
    sums: list[Checksum] = []
    failures: list[BaseException] = []

    def all_checksums() -> None:
        try:
            with snapshot.reader() as reader:
                sums.extend(checksums(reader, "legacy", [
                    (t.source_name, t.relation) for t in snapshot.mapping]))
            with connect(target_url, purpose="target", read_only=True) as own:
                sums.extend(checksums(own, "edu_v2", [
                    (t, sql.Identifier("public", t)) for t in TARGET_TABLES]))
                own.rollback()
        except BaseException as exc:  # re-raised below, in the caller's thread
            failures.append(exc)

    worker = threading.Thread(target=all_checksums, name="report-checksums")
    worker.start()
    try:
        validation = run_validation(snapshot, target, exclude)
        data = ReportData(
            generated_at=started, tool_version=__version__, schema_version=schema_version,
            source=_server("source", source_url_shown, snapshot.conn),
            target=_server("target", target_url_shown, target),
            phases=_phases(target), run_log=_run_log(target), validation=validation,
            accounting=_accounting(validation),
            set_aside=_groups(target, REJECTED_QUERY, with_column=False),
            repairs=_groups(target, REPAIRS_QUERY, with_column=True),
            checksums=[], marks=_marks(snapshot, target), as_of=recorded_as_of(target))
    finally:
        worker.join()
    if failures:
        raise failures[0]
    data.checksums = sums
    data.syncs, data.last_sync, data.cutover = _catch_up(target)
    data.direction = direction.current(target).to_dict()
    data.last_fallback = direction.last_fallback(target)
    data.collect_seconds = (datetime.now(UTC) - started).total_seconds()
    return data
