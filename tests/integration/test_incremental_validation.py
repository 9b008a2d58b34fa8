"""The cutover window's incremental validation equals a full `validate` of the same data: the
same checks, the same numbers, the same verdict, for any delta a sync applies and any breakage
of the target written after the baseline (an orphan, a missing mark, a crosswalk row too many,
a parent gone). When the baseline cannot be trusted, the window validates in full and says why.

A dirty legacy database is generated, migrated and validated once (the validation keeps the
baseline); each example clones the source and the target (the clone keeps the baseline and its
triggers), changes the source, syncs, breaks the target, and compares both validations.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, Phase, example, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from psycopg import sql

from edu_migrate import api
from edu_migrate.checks.validation import ValidationReport
from edu_migrate.config import Settings
from edu_migrate.errors import MigrationError
from edu_migrate.pg.urls import with_database
from edu_migrate.runlog import Reporter
from edu_migrate.switchover import Steps
from tests.integration.helpers import admin_sql, clone_database, drop_databases
from tests.integration.test_sync import CHANGES, Change, _apply

MIGRATED_AT = datetime(2026, 1, 15, 9, 0, tzinfo=UTC)


@dataclass(frozen=True)
class Base:
    admin_url: str
    source: str
    target: str


def _settings(base: Base, source: str, target: str, tmp: Path) -> Settings:
    return Settings(source_url=with_database(base.admin_url, source),
                    target_url=with_database(base.admin_url, target), home=tmp / "home",
                    log_dir=tmp / "logs", backup_dir=tmp / "backups", batch_size=5_000)


@pytest.fixture(scope="module")
def base(admin_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Base]:
    suffix = uuid.uuid4().hex[:6]
    made = Base(admin_url, f"inc_src_{suffix}", f"inc_dst_{suffix}")
    tmp = tmp_path_factory.mktemp("incremental")
    admin_sql(admin_url, sql.SQL("CREATE DATABASE {}").format(sql.Identifier(made.source)))
    try:
        settings = _settings(made, made.source, made.target, tmp)
        api.generate(settings, scale=0.005, profile="dirty", seed=11)
        api.schema_apply(settings)
        api.migrate(settings, force=True, as_of=MIGRATED_AT)
        api.validate(settings)  # the baseline
        yield made
    finally:
        drop_databases(admin_url, made.target, made.source)


@pytest.fixture
def pair(base: Base, tmp_path: Path) -> Iterator[Settings]:
    """A clone of the source and of the target (its baseline with it), the target reading the
    clone of its source."""
    source, target = clone_database(base.admin_url, base.source), \
        clone_database(base.admin_url, base.target)
    settings = _settings(base, source, target, tmp_path)
    with psycopg.connect(settings.target_url) as conn:
        conn.execute("UPDATE migration.state SET source_database = %s", [source])
    try:
        yield settings
    finally:
        drop_databases(base.admin_url, target, source)


# What breaks the target after the sync, written as a defect of the migration would leave it.
# Foreign keys would refuse the orphans: replication mode skips them (the noting triggers, set
# ENABLE ALWAYS, still fire). {pick} chooses the row.
BREAKAGES: dict[str, tuple[str, ...]] = {
    "nothing": (),
    "an orphan mark": (
        "SET session_replication_role = replica",
        "UPDATE grades SET enrollment_id = gen_random_uuid() "
        "WHERE id = (SELECT id FROM grades ORDER BY id OFFSET {pick} % (SELECT nullif(count(*), 0) "
        "FROM grades) LIMIT 1)"),
    "a mark missing": (
        "DELETE FROM grades WHERE id = (SELECT id FROM grades ORDER BY id OFFSET {pick} % "
        "(SELECT nullif(count(*), 0) FROM grades) LIMIT 1)",),
    # The marks' crosswalk is derived from grades.legacy_id and the marks deleted before
    # schema V026: a row too many is a legacy id there that no legacy mark has, or a mark's
    # legacy id moved to one; a row lost is a mark whose legacy id is gone.
    "a crosswalk row too many": (
        "INSERT INTO migration.crosswalk_grades_deleted (source_id, target_id) "
        "SELECT coalesce(max(source_id), 0) + 1 + {pick}, gen_random_uuid() "
        "FROM migration.crosswalk_grades",),
    "a mark's legacy id moved": (
        "UPDATE grades SET legacy_id = (SELECT max(legacy_id) + 1 + {pick} FROM grades) "
        "WHERE id = (SELECT id FROM grades ORDER BY id OFFSET {pick} % (SELECT nullif(count(*), 0) "
        "FROM grades) LIMIT 1)",),
    "a crosswalk row lost": (
        "UPDATE grades SET legacy_id = NULL WHERE id = (SELECT id FROM grades ORDER BY id "
        "OFFSET {pick} % (SELECT nullif(count(*), 0) FROM grades) LIMIT 1)",),
    "an enrollment gone under its marks": (
        "SET session_replication_role = replica",
        "DELETE FROM course_enrollments WHERE id = (SELECT enrollment_id FROM grades "
        "ORDER BY id OFFSET {pick} % (SELECT nullif(count(*), 0) FROM grades) LIMIT 1)"),
    "an assessment gone under its marks": (
        "SET session_replication_role = replica",
        "DELETE FROM assessments WHERE id = (SELECT assessment_id FROM grades "
        "ORDER BY id OFFSET {pick} % (SELECT nullif(count(*), 0) FROM grades) LIMIT 1)"),
    "a mark set aside as well": (
        "INSERT INTO migration.rejected_rows (source_table, source_id, reason, phase) "
        "SELECT 'grades', source_id, 'test', 5 FROM migration.crosswalk_grades "
        "ORDER BY source_id OFFSET {pick} % (SELECT nullif(count(*), 0) "
        "FROM migration.crosswalk_grades) LIMIT 1",),
}


def _break(url: str, breakage: str, pick: int) -> bool:
    """Whether the breakage found a row to break (a delta may have left no mark at all)."""
    rows = 0
    with psycopg.connect(url) as conn:
        for statement in BREAKAGES[breakage]:
            rows = conn.execute(statement.replace("{pick}", str(pick)).encode()).rowcount
    return rows > 0


def _numbers(report: ValidationReport) -> list[tuple[Any, ...]]:
    return [(c.name, c.passed, c.old, c.new, c.detail, c.notes) for c in report.checks]


def _assert_same_as_full(settings: Settings, method: str = "incremental") -> ValidationReport:
    window = api.validate_in_window(settings, Reporter())
    full = api.validate(settings, Reporter(), baseline=False)
    assert window.method == method, window.fallback
    assert _numbers(window) == _numbers(full)
    assert window.passed == full.passed
    return window


@hypothesis_settings(max_examples=3, deadline=None, phases=(Phase.explicit, Phase.generate),
                     suppress_health_check=[HealthCheck.function_scoped_fixture,
                                            HealthCheck.too_slow])
@given(changes=CHANGES, breakage=st.sampled_from(tuple(BREAKAGES)), pick=st.integers(0, 10**6))
@example(changes=[("delete", "course_students", 7, 0, 0, "null", 0),
                  ("update", "grades", 11, 0, 2, "junk", 3)],
         breakage="an orphan mark", pick=3)
@example(changes=[("insert", "grades", 9, 9, 1, "junk", 4)], breakage="a mark missing", pick=8)
@example(changes=[("delete", "grades", 5, 0, 0, "null", 0)],
         breakage="a crosswalk row too many", pick=0)
@example(changes=[("update", "users", 0, 1, 0, "copy", 0)],
         breakage="an enrollment gone under its marks", pick=5)
@example(changes=[("update", "grades", 3, 0, 1, "copy", 0)],
         breakage="a mark's legacy id moved", pick=2)
@example(changes=[], breakage="a crosswalk row lost", pick=4)
def test_the_incremental_validation_equals_a_full_one(
        base: Base, tmp_path: Path, changes: list[Change], breakage: str, pick: int) -> None:
    source, target = clone_database(base.admin_url, base.source), \
        clone_database(base.admin_url, base.target)
    try:
        settings = _settings(base, source, target, tmp_path)
        with psycopg.connect(settings.target_url) as conn:
            conn.execute("UPDATE migration.state SET source_database = %s", [source])
        with psycopg.connect(settings.source_url, autocommit=True) as conn:
            for change in changes:
                _apply(conn, change)
        api.sync(settings, as_of=MIGRATED_AT)
        broken = _break(settings.target_url, breakage, pick)
        window = _assert_same_as_full(settings)
        assert window.passed == (not broken), f"{changes} then {breakage}"
    finally:
        drop_databases(base.admin_url, target, source)


def test_only_what_was_written_is_read_again(pair: Settings) -> None:
    """With nothing written since the baseline, no range, bucket or id is read again; one mark
    changed in the source reads one range of marks and one id of grades."""
    window = _assert_same_as_full(pair)
    assert set(window.recomputed.values()) == {0}
    with psycopg.connect(pair.source_url) as conn:
        conn.execute("UPDATE grades SET value = '10' WHERE id = (SELECT min(id) FROM grades)")
    api.sync(pair, as_of=MIGRATED_AT)
    window = _assert_same_as_full(pair)
    assert window.recomputed["grades: legacy id ranges"] == 1
    assert window.recomputed["grades: ids"] == 1


@pytest.mark.parametrize("tampering, reason", [
    ("ALTER TABLE grades DISABLE TRIGGER validation_note_delete_grades", "disabled"),
    ("DROP TRIGGER validation_note_insert_crosswalk_rows ON migration.crosswalk_rows",
     "dropped"),
    ("DROP TRIGGER validation_note_update_grades_ranges ON grades", "dropped"),
    ("TRUNCATE migration.rejected_rows", "rejected_rows was truncated"),
    ("DELETE FROM migration.validation_baseline", "no full validation"),
])
def test_a_baseline_that_cannot_be_trusted_means_a_full_validation(
        pair: Settings, tampering: str, reason: str) -> None:
    """A trigger disabled (then a mark deleted unnoticed by it), dropped or a table truncated:
    the window validates in full, says why, and finds what the baseline would have missed."""
    with psycopg.connect(pair.target_url) as conn:
        conn.execute(tampering.encode())
        conn.execute("DELETE FROM grades WHERE id = (SELECT id FROM grades ORDER BY id LIMIT 1)")
    window = _assert_same_as_full(pair, method="full")
    assert window.fallback is not None and reason in window.fallback
    assert not window.passed


def test_the_cutover_validates_incrementally_and_fails_on_a_broken_delta(pair: Settings) -> None:
    """The window's validation is the incremental one (run_log says so); a mark lost by the
    last sync (here: deleted right after it, in the window) fails it, as a full validate fails,
    and the cutover is aborted."""
    steps = api.cutover_steps(pair)
    calls = []

    def broken_sync(moment: datetime | None) -> Any:
        result = steps.sync(moment)
        calls.append(moment)
        if len(calls) == 2:  # the last sync, in the window
            _break(pair.target_url, "a mark missing", 1)
        return result

    with psycopg.connect(pair.source_url) as conn:
        conn.execute("UPDATE grades SET value = '9' WHERE id = (SELECT max(id) FROM grades)")
    with pytest.raises(MigrationError, match="validation failed: Grade Count"):
        api.run_cutover(pair.source_url, pair.target_url,  # type: ignore[arg-type]
                        Steps(broken_sync, steps.source_facts, steps.validate, steps.unsynced,
                              steps.baseline), Reporter(), as_of=MIGRATED_AT, max_rounds=1,
                        settle_rows=1000, writer_timeout=10, terminate_writers=True)
    with psycopg.connect(pair.target_url) as conn:
        row = conn.execute("SELECT detail FROM migration.run_log WHERE event = 'validation' "
                           "ORDER BY id DESC LIMIT 1").fetchone()
    assert row is not None and row[0]["method"] == "incremental" and not row[0]["passed"]
    full = api.validate(pair, Reporter(), baseline=False)
    # the mark's crosswalk row went with it (derived from grades.legacy_id): its legacy mark is
    # accounted for no more
    assert [c.name for c in full.checks if not c.passed] == ["Grade Count", "Grades"]


def test_a_cutover_report_says_which_validation_the_window_ran(
        pair: Settings, tmp_path: Path) -> None:
    """A cutover with a mark changed validates incrementally in its window; the sign-off report
    says so, and that its own validation is a full one."""
    with psycopg.connect(pair.source_url) as conn:
        conn.execute("UPDATE grades SET value = '8' WHERE id = (SELECT min(id) FROM grades)")
    api.cutover(pair, as_of=MIGRATED_AT, terminate_writers=True)
    md = tmp_path / "report.md"
    api.report(pair, md=md)
    text = md.read_text(encoding="utf-8")
    assert "| Validation in the window | incremental: what was written since" in text
    assert "This report's own validation is full" in text


def test_validation_reads_each_large_legacy_table_once(base: Base, tmp_path: Path) -> None:
    """What validation reads of the source (in the window, while the last sync runs) is every
    legacy id fingerprinted and every table counted. The mapped tables' counts are the
    fingerprints' first numbers: the marks are scanned once, not once more for the inventory
    (at scale 10, 32 million rows read again in the window)."""
    from edu_migrate.checks.validation import source_facts
    from edu_migrate.phases.staging import SourceSnapshot

    settings = _settings(base, base.source, base.target, tmp_path)
    source = str(settings.source_url)
    # One process per scan, so that this transaction's counters see each one.
    admin_sql(base.admin_url, sql.SQL("ALTER DATABASE {} SET max_parallel_workers_per_gather "
                                      "= 0").format(sql.Identifier(base.source)))
    try:
        snapshot = SourceSnapshot(source)
        try:
            facts = source_facts(snapshot, ())
            scans = dict(snapshot.conn.execute(
                "SELECT relname, seq_scan FROM pg_stat_xact_user_tables "
                "WHERE relname IN ('grades', 'course_students')").fetchall())
        finally:
            snapshot.close()
    finally:
        admin_sql(base.admin_url, sql.SQL("ALTER DATABASE {} RESET "
                                          "max_parallel_workers_per_gather").format(
            sql.Identifier(base.source)))
    assert scans == {"grades": 1, "course_students": 2}, scans  # and its orphans' join
    with psycopg.connect(source) as conn:
        counts = dict(conn.execute("SELECT 'grades', count(*) FROM grades UNION ALL "
                                   "SELECT 'course_students', count(*) FROM course_students"))
    inventory = {entry.table: entry.rows for entry in facts.inventory}
    assert {name: inventory[name] for name in counts} == counts


@pytest.mark.parametrize("name", ["Grades without enrollments", "Grades without assessments",
                                  "Enrollments without students", "Enrollments without courses"])
def test_the_window_looks_up_each_parent_by_its_key_whatever_the_statistics(
        base: Base, name: str) -> None:
    """The window's orphan check of the buckets written looks up each child row's parent by its
    key. Written as a join (NOT EXISTS pulled up into an anti join), the plan follows the
    planner's estimate of a bucket's rows, which for a range of a parameter is half a percent of
    the child table: at scale 10 it hashed all 1.2 million enrollments once per bucket, and the
    window's validation took 44.8 s for a last delta of 153 marks (docs/benchmarks.md). The
    plan's shape, not its speed here, is what can be tested on a small database: no join to the
    parent, whatever the tables' statistics."""
    from edu_migrate.checks import incremental

    with psycopg.connect(with_database(base.admin_url, base.target)) as conn:
        detail = conn.execute("SELECT detail FROM migration.validation_baseline").fetchone()
        assert detail is not None
        bits = {table: int(b) for table, b in detail[0]["bits"].items()}
        incremental._buckets_now(conn, [0, 1, 2], bits[incremental.ORPHAN_PARTS[name].child])
        query = incremental.orphan_query(name, bits, every_bucket=False)
        plan = "\n".join(str(row[0]) for row in conn.execute(
            sql.SQL("EXPLAIN (COSTS OFF) {}").format(query)).fetchall())
        conn.rollback()
    parent = incremental.ORPHAN_PARTS[name].parent
    assert "Anti Join" not in plan, plan
    assert "SubPlan" in plan and parent in plan.split("SubPlan", 1)[1], plan


@pytest.mark.parametrize("name", ["Grades without enrollments", "Grades without assessments",
                                  "Enrollments without students", "Enrollments without courses"])
def test_the_children_of_a_parent_that_came_or_went_are_looked_up_by_its_key(
        base: Base, name: str) -> None:
    """The window finds the buckets of the children whose parent came or went since the
    baseline through the child's index on its foreign key, one look-up per such parent. Written
    as a join, the planner may hash every row of the child instead (as it did in the bucket
    orphan checks, for the 1.2 million enrollments at scale 10): here it does so once the notes
    hold many parents. Their statistics are made so in this transaction, rolled back."""
    from edu_migrate.checks import incremental

    part = incremental.ORPHAN_PARTS[name]
    with psycopg.connect(with_database(base.admin_url, base.target)) as conn:
        detail = conn.execute("SELECT detail FROM migration.validation_baseline").fetchone()
        assert detail is not None
        bits = {table: int(b) for table, b in detail[0]["bits"].items()}
        conn.execute("INSERT INTO migration.validation_touched_keys (relation, id, "
                     "existed_before) SELECT %s, gen_random_uuid(), true "
                     "FROM generate_series(1, 20000)", [part.parent])
        conn.execute("ANALYZE migration.validation_touched_keys")
        query = incremental.affected_query(name, bits)
        plan = "\n".join(str(row[0]) for row in conn.execute(
            sql.SQL("EXPLAIN (COSTS OFF) {}").format(query),
            {"child": part.child, "parent": part.parent}).fetchall())
        conn.rollback()
    children = [line for line in plan.splitlines() if f" on {part.child} " in line]
    assert children and not any("Seq Scan" in line for line in children), plan
