"""The rules of docs/dirty-data.md on a small legacy database whose every row is there for one
rule (tests/integration/small_legacy.py): the outcome of each row is known in advance."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest

from edu_migrate import api
from edu_migrate.config import Settings
from tests.conftest import make_settings
from tests.integration.small_legacy import write_small_legacy

# Marks for which more than one rule leaves a record: phase 5 records its marks from the few it
# flags in one pass (flag_marks), and each record must survive whatever else the mark needs.
# (id, course_student_id, grade_type, value, lesson_date, teacher_id, created_at)
FLAGGED_MARKS = [
    # Arabic-Indic 8, teacher 99 missing, no created_at: three repairs, and migrated.
    (6, 2, 2, "٨", date(2019, 10, 9), 99, None),
    # Fullwidth 8 with a missing teacher and no created_at, but its enrollment 99 is missing:
    # set aside with the legacy row, and no repair (a mark set aside is not repaired).
    (7, 99, 2, "８", date(2019, 10, 9), 99, None),
    # Above the maximum of a seminar (10), teacher missing: set aside, no repair.
    (8, 2, 2, "11", date(2019, 10, 9), 99, datetime(2019, 10, 9, 12)),
    # Fullwidth digits, nothing else: one repair.
    (9, 2, 2, "８，５", date(2019, 10, 9), 1, datetime(2019, 10, 9, 12)),
]


@pytest.fixture(scope="module")
def migrated(admin_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    for settings in make_settings(admin_url, tmp_path_factory.mktemp("rules")):
        write_small_legacy(str(settings.source_url))
        with psycopg.connect(str(settings.source_url), autocommit=True) as source:
            source.cursor().executemany(
                "INSERT INTO grades (id, course_student_id, grade_type, value, lesson_date, "
                "teacher_id, created_at) VALUES (%s, %s, %s, %s, %s, %s, %s)", FLAGGED_MARKS)
        api.schema_apply(settings)
        api.migrate(settings)
        yield settings


def _rows(settings: Settings, query: str, params: Any = None) -> list[tuple[Any, ...]]:
    with psycopg.connect(str(settings.target_url)) as conn:
        return conn.execute(query.encode(), params).fetchall()


def _fate(settings: Settings, table: str, source_id: int) -> str:
    """'migrated', or the reason the row was set aside."""
    found = _rows(settings, "SELECT 'migrated' FROM migration.crosswalk WHERE source_table = %s "
                  "AND source_id = %s UNION ALL SELECT reason FROM migration.rejected_rows "
                  "WHERE source_table = %s AND source_id = %s",
                  [table, source_id, table, source_id])
    assert len(found) == 1, found
    return str(found[0][0])


def _repairs(settings: Settings) -> set[tuple[str, int, str, str | None, str | None, str]]:
    return {(r[0], int(r[1]), r[2], r[3], r[4], r[5]) for r in _rows(
        settings, "SELECT source_table, source_id, column_name, old_value, new_value, rule "
        "FROM migration.repairs")}


def test_small_legacy_database_validates(migrated: Settings) -> None:
    report = api.validate(migrated)
    assert report.passed, [c.line() for c in report.checks if not c.passed]


def test_a_rejected_person_does_not_push_out_the_valid_one(migrated: Settings) -> None:
    assert _fate(migrated, "persons", 10) == "blank name"
    assert _fate(migrated, "persons", 11) == "migrated"
    # and so the user's student row, its enrollment and its mark are migrated too
    assert _fate(migrated, "students", 1) == "migrated"
    assert _fate(migrated, "course_students", 1) == "migrated"
    assert _fate(migrated, "grades", 1) == "migrated"
    person = _rows(migrated, "SELECT p.first_name FROM students s JOIN persons p "
                   "ON p.id = s.person_id JOIN migration.crosswalk_students x "
                   "ON x.target_id = s.id WHERE x.source_id = 1")
    assert person == [("Ali",)]


def test_every_changed_or_dropped_value_is_recorded(migrated: Settings) -> None:
    expected = {
        ("students", 1, "admission_year", "1900", None, "outside 1950–2100: dropped"),
        ("courses", 1, "max_students", "0", None, "not a positive number: dropped"),
        ("course_students", 2, "letter", "Z", "B",
         "not a letter A–F: replaced by the letter of the final score"),
        ("course_students", 3, "letter", "X", None, "not a letter A–F: dropped"),
        ("course_students", 4, "letter", " b", "B", "trimmed and upper-cased"),
        ("organizations", 2, "is_active", None, "true", "blank: taken as active"),
        ("organizations", 3, "is_active", "2", "false", "not 0 or 1: taken as inactive"),
        ("teachers", 1, "is_active", None, "true", "blank: taken as active"),
        ("teachers", 2, "is_active", "2", "false", "not 0 or 1: taken as inactive"),
        ("grades", 3, "teacher_id", "99", None,
         "teacher missing or set aside: mark kept without grader"),
        ("courses", 2, "org_id", "5", "3",
         "department differs from the catalogue course's: catalogue value kept"),
        ("persons", 50, "birthdate", "01.01.1850", None, "on or before 1900-01-01: dropped"),
    }
    assert expected - _repairs(migrated) == set()


def test_a_mark_flagged_by_several_rules_keeps_every_record(migrated: Settings) -> None:
    marks = [mark[0] for mark in FLAGGED_MARKS]
    repairs = {r for r in _repairs(migrated) if r[0] == "grades" and r[1] in marks}
    assert repairs == {
        ("grades", 6, "value", "٨", "8", "digits of another script read as digits"),
        ("grades", 6, "teacher_id", "99", None,
         "teacher missing or set aside: mark kept without grader"),
        ("grades", 6, "created_at", None, "2019-10-09 00:00:00", "missing: taken from lesson_date"),
        ("grades", 9, "value", "８，５", "8.5", "digits of another script read as digits"),
    }
    # and a mark that one rule alone flags: the teacher (3), the time (5)
    alone = [(r[1], r[2], r[5]) for r in _repairs(migrated) if r[0] == "grades" and r[1] in (3, 5)]
    assert sorted(alone) == [
        (3, "teacher_id", "teacher missing or set aside: mark kept without grader"),
        (5, "created_at", "missing: filled with the as-of time")]
    assert [_fate(migrated, "grades", n) for n in marks] == [
        "migrated", "enrollment missing", "mark exceeds the maximum of its type", "migrated"]
    detail = _rows(migrated, "SELECT detail FROM migration.rejected_rows "
                   "WHERE source_table = 'grades' AND source_id = 7")
    assert detail == [({"id": 7, "course_student_id": 99, "grade_type": 2, "value": "８",
                        "lesson_date": "2019-10-09", "teacher_id": 99, "created_at": None},)]
    graded = _rows(migrated, "SELECT g.score, g.graded_by, "
                   "(g.created_at AT TIME ZONE 'Asia/Baku')::text FROM grades g "
                   "JOIN migration.crosswalk_grades x ON x.target_id = g.id "
                   "WHERE x.source_id = 6")
    assert graded == [(Decimal(8), None, "2019-10-09 00:00:00")]


def test_credits_written_differently_are_the_same_number(migrated: Settings) -> None:
    assert [r for r in _repairs(migrated) if r[0] == "courses" and r[2] == "credits"] == []


def test_numbers_are_kept_exactly(migrated: Settings) -> None:
    assert _rows(migrated, "SELECT s.gpa FROM students s JOIN migration.crosswalk_students x "
                 "ON x.target_id = s.id WHERE x.source_id = 1") == [(Decimal("78.456"),)]
    assert _rows(migrated, "SELECT credit_hours FROM courses WHERE code = 'FIZ101'") \
        == [(Decimal("3.25"),)]
    assert _rows(migrated, "SELECT g.score FROM grades g JOIN migration.crosswalk_grades x "
                 "ON x.target_id = g.id WHERE x.source_id = 2") == [(Decimal("8.125"),)]


def test_a_deep_hierarchy_is_not_a_cycle(migrated: Settings) -> None:
    assert {_fate(migrated, "organizations", 300 + n) for n in range(60)} == {"migrated"}
    assert _fate(migrated, "organizations", 400) \
        == "parent chain does not reach a university (cycle)"
    assert _fate(migrated, "organizations", 401) \
        == "parent chain does not reach a university (cycle)"


def test_descendants_of_a_unit_set_aside_are_set_aside_for_it(migrated: Settings) -> None:
    assert _fate(migrated, "organizations", 200) == "parent missing"
    assert _fate(migrated, "organizations", 201) == "parent set aside"
    assert _fate(migrated, "organizations", 202) == "parent set aside"


def test_phase_2_does_not_rely_on_stage_tables_of_phase_1(admin_url: str,
                                                         tmp_path: Path) -> None:
    # Stage tables are UNLOGGED: a server crash empties them. Phase 2 must not depend on what
    # phase 1 staged.
    for settings in make_settings(admin_url, tmp_path):
        write_small_legacy(str(settings.source_url))
        api.schema_apply(settings)
        api.migrate(settings, [1, 3])
        with psycopg.connect(str(settings.target_url)) as conn:
            conn.execute("TRUNCATE stage.persons")
        api.migrate(settings, [2])
        assert _fate(settings, "teachers", 2) == "migrated"
        assert _rows(settings, "SELECT p.first_name FROM staff_members s JOIN persons p "
                     "ON p.id = s.person_id JOIN migration.crosswalk_teachers x "
                     "ON x.target_id = s.id WHERE x.source_id = 2") == [("Nigar",)]
