"""The happy path: each phase, the whole run, the guide's own validation queries, reruns."""

from __future__ import annotations

import psycopg
import pytest
from psycopg import sql

from edu_migrate import api
from edu_migrate.config import Settings
from edu_migrate.errors import PreconditionFailed
from edu_migrate.legacy.generator import UNMAPPED_TABLES
from edu_migrate.pg.urls import database_name, with_database
from tests.integration.helpers import prepared, scalar, table_digest
from tests.integration.test_generator import GUIDE_COUNTS, SEED
from tests.integration.test_generator import _assert_guide_shape as assert_guide_shape

# The guide's validation queries, as written there (with edu_v2. dropped: we are connected to it).
# Their zero is the foreign keys' doing (validate checks each of them, `Foreign Keys Valid`);
# running them shows that the guide's table and column names are edu_v2's.
GUIDE_QUERIES = [
    """SELECT COUNT(*) as orphaned_persons
       FROM persons p LEFT JOIN users u ON p.user_id = u.id WHERE u.id IS NULL""",
    """SELECT COUNT(*) FROM students s LEFT JOIN users u ON s.user_id = u.id WHERE u.id IS NULL""",
    """SELECT COUNT(*) FROM course_enrollments ce LEFT JOIN students s ON ce.student_id = s.id
       WHERE s.id IS NULL""",
    """SELECT COUNT(*) FROM course_enrollments ce
       LEFT JOIN course_offerings co ON ce.course_offering_id = co.id WHERE co.id IS NULL""",
]

BUSINESS_TABLES = ("users", "persons", "organization_units", "academic_terms", "students",
                   "staff_members", "courses", "course_offerings", "course_enrollments",
                   "assessments", "grades")


def test_all_phases_then_validate(settings_any_server: Settings) -> None:
    settings = settings_any_server
    prepared(settings)
    result = api.migrate(settings)
    assert [p.number for p in result.phases] == [1, 3, 2, 4, 5]
    # The run vacuumed what it bulk-loaded, so autovacuum has nothing left to do there: its
    # first pass over millions of new rows would otherwise meet the validation or the first
    # sync that a person starts right after the run.
    assert settings.target_url
    with psycopg.connect(settings.target_url) as conn:
        unvacuumed = conn.execute(
            "SELECT schemaname || '.' || relname, n_ins_since_vacuum FROM pg_stat_all_tables "
            "WHERE (schemaname, relname) IN (('public', 'grades'), "
            "('public', 'course_enrollments'), "
            "('migration', 'crosswalk_course_students'), ('stage', 'grades'), "
            "('stage', 'course_students')) AND (n_ins_since_vacuum > 0 OR last_vacuum IS NULL) "
            "ORDER BY 1").fetchall()
    assert unvacuumed == []
    report = api.validate(settings)
    assert report.passed, [c.line() for c in report.checks if not c.passed]
    target, source = settings.target_url, settings.source_url
    assert target and source
    for query in GUIDE_QUERIES:
        scalar(target, query)
    assert scalar(target, "SELECT COUNT(*) FROM students s JOIN users u ON s.user_id = u.id") \
        == scalar(source, "SELECT count(*) FROM students")
    assert scalar(target, "SELECT count(*) FROM academic_terms") == 12
    assert scalar(target, "SELECT count(*) FROM academic_terms WHERE is_current") == 1
    assert scalar(target, "SELECT count(DISTINCT type) FROM organization_units") == 4


def test_each_phase_in_turn(settings: Settings) -> None:
    prepared(settings)
    target = settings.target_url
    assert target
    api.migrate(settings, [1])
    assert scalar(target, "SELECT count(*) FROM users") == scalar(
        str(settings.source_url), "SELECT count(*) FROM users")
    with pytest.raises(PreconditionFailed, match="needs phase 3"):
        api.migrate(settings, [2])
    api.migrate(settings, [3])
    api.migrate(settings, [2])
    with pytest.raises(PreconditionFailed, match="needs phase 4"):
        api.migrate(settings, [5])
    api.migrate(settings, [4])
    api.migrate(settings, [5])
    assert api.validate(settings).passed


def test_rerun_changes_nothing_and_rollback_restores(settings: Settings) -> None:
    prepared(settings)
    api.migrate(settings)
    target = str(settings.target_url)
    before = {t: table_digest(target, t) for t in BUSINESS_TABLES}
    again = api.migrate(settings)
    assert {p.status for p in again.phases} == {"skipped"}
    assert {t: table_digest(target, t) for t in BUSINESS_TABLES} == before

    undone = api.rollback(settings, 4)
    assert undone == [4, 5]
    assert scalar(target, "SELECT count(*) FROM grades") == 0
    assert scalar(target, "SELECT count(*) FROM course_offerings") == 0
    assert scalar(target, "SELECT count(*) FROM students") > 0
    api.migrate(settings)
    assert {t: table_digest(target, t) for t in BUSINESS_TABLES} == before

    api.rollback(settings, None)
    assert all(scalar(target, f"SELECT count(*) FROM {t}") == 0 for t in BUSINESS_TABLES)


def _user_ids(url: str) -> dict[int, str]:
    with psycopg.connect(url) as conn:
        return {int(source_id): str(target_id) for source_id, target_id in conn.execute(
            "SELECT source_id, target_id FROM migration.crosswalk_users")}


def test_ids_are_uuids_from_a_secret_not_legacy_ids(settings: Settings, admin_url: str) -> None:
    prepared(settings, scale=0.01)
    api.migrate(settings, [1])
    target = str(settings.target_url)
    assert scalar(target, "SELECT count(*) FROM information_schema.columns WHERE table_schema = "
                          "'public' AND column_name = 'id' AND data_type <> 'uuid'") == 0
    first = _user_ids(target)
    assert len(first) == scalar(str(settings.source_url), "SELECT count(*) FROM users")
    # The same target keeps its secret: a rerun gives every legacy user the same id.
    api.rollback(settings, 1)
    api.migrate(settings, [1])
    assert _user_ids(target) == first
    # Another target, another secret: the same legacy user gets another id.
    other_name = f"{database_name(target)}_other"
    other = settings.model_copy(update={"target_url": with_database(admin_url, other_name)})
    try:
        api.schema_apply(other)
        api.migrate(other, [1])
        second = _user_ids(str(other.target_url))
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(other_name)))
    assert second.keys() == first.keys()
    assert all(second[user] != first[user] for user in first)


@pytest.mark.fullscale
def test_guide_scale_exact_counts(settings: Settings) -> None:
    """The guide's full scale: the generator gives its exact counts, and they are migrated and
    validated. (The generator's full-scale checks live here, not in test_generator.py, so that
    the suite generates the 3.2 million marks once.)"""
    summary = api.generate(settings, scale=1.0, seed=SEED)
    with psycopg.connect(settings.source_url) as conn:
        assert_guide_shape(conn, GUIDE_COUNTS, 1_234)
        assert conn.execute("SELECT count(*) FROM login_logs").fetchone() == (187_412,)
    assert {table: summary.row_counts[table] for table in GUIDE_COUNTS} == GUIDE_COUNTS
    assert max(summary.row_counts[table] for table in UNMAPPED_TABLES) >= 100_000
    api.schema_apply(settings)
    api.migrate(settings)
    report = api.validate(settings)
    assert report.passed, [c.line() for c in report.checks if not c.passed]
    expected = {"User Count": 6987, "Student Count": 6344, "Staff Count": 424,
                "Organization Count": 419, "Course Offering Count": 6020,
                "Enrollment Count": 118477, "Grade Count": 3209747, "Course Count": 1234}
    got = {c.name: (c.old, c.new) for c in report.checks if c.name in expected}
    assert got == {name: (n, n) for name, n in expected.items()}
