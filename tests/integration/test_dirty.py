"""The dirty profile, migrated: every injected row ends where its kind's rule says, with the
reason or repair the manifest expects, and validate's accounting holds."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest

from edu_migrate import api
from edu_migrate.config import Settings
from edu_migrate.legacy.dirt import KINDS, MERGE, REPAIR, SET_ASIDE
from tests.conftest import make_settings

SCALE = 0.03
SEED = 11

# Kinds whose repair normalises a value without a row in migration.repairs: the test checks
# the migrated value instead.
UNRECORDED = {"student_status_case"}


@dataclass
class DirtyRun:
    settings: Settings
    manifest: dict[str, dict[str, Any]]
    target: psycopg.Connection

    def rows(self, query: str, params: Any = None) -> list[tuple[Any, ...]]:
        return self.target.execute(query, params).fetchall()


@pytest.fixture(scope="module")
def dirty_run(admin_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DirtyRun]:
    for settings in make_settings(admin_url, tmp_path_factory.mktemp("dirty")):
        api.generate(settings, scale=SCALE, profile="dirty", seed=SEED)
        api.schema_apply(settings)
        api.migrate(settings)
        manifest = json.loads(api.dirt_manifest_path(settings, SEED).read_text("utf-8"))
        with psycopg.connect(str(settings.target_url), autocommit=True) as target:
            yield DirtyRun(settings, {k["kind"]: k for k in manifest["kinds"]}, target)


def test_manifest_names_every_kind_with_ids(dirty_run: DirtyRun) -> None:
    assert set(dirty_run.manifest) == {kind.name for kind in KINDS}
    assert all(entry["ids"] for entry in dirty_run.manifest.values())


def test_dirty_data_validates_with_accounting(dirty_run: DirtyRun) -> None:
    report = api.validate(dirty_run.settings)
    assert report.passed, [c.line() for c in report.checks if not c.passed]
    lines = {c.name: c.line() for c in report.checks}
    assert lines["Grades"].startswith("✓ PASS | Grades: Old=")
    assert "Set aside=" in lines["Grades"] and "Merged=" in lines["Enrollments"]
    merged = next(c for c in report.checks if c.name == "Enrollments").detail["Merged"]
    assert merged >= len(dirty_run.manifest["enrollment_duplicate"]["ids"])


def test_usernames_equal_but_for_case_are_all_migrated(dirty_run: DirtyRun) -> None:
    # edu_v2's unique index on lower(username) keeps them apart; the migration must rename
    # them, not set them aside.
    duplicates = dirty_run.manifest["username_case_duplicate"]["ids"]
    migrated = dirty_run.rows("SELECT count(*) FROM migration.crosswalk_users "
                              "WHERE source_id = ANY(%s)", [duplicates])
    assert migrated == [(len(duplicates),)]


def _rejections(run: DirtyRun, table: str, ids: list[int]) -> dict[int, tuple[str, Any]]:
    return {int(r[0]): (r[1], r[2]) for r in run.rows(
        "SELECT source_id, reason, detail FROM migration.rejected_rows "
        "WHERE source_table = %s AND source_id = ANY(%s)", [table, ids])}


def _migrated(run: DirtyRun, table: str, ids: list[int]) -> set[int]:
    return {int(r[0]) for r in run.rows(
        "SELECT source_id FROM migration.crosswalk WHERE source_table = %s "
        "AND source_id = ANY(%s)", [table, ids])}


def _repairs(run: DirtyRun, table: str, ids: list[int]) -> dict[int, set[str]]:
    found: dict[int, set[str]] = {}
    for source_id, rule in run.rows(
            "SELECT source_id, rule FROM migration.repairs WHERE source_table = %s "
            "AND source_id = ANY(%s)", [table, ids]):
        found.setdefault(int(source_id), set()).add(rule)
    return found


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.name)
def test_each_kind_of_dirt_follows_its_rule(dirty_run: DirtyRun, kind: Any) -> None:
    entry = dirty_run.manifest[kind.name]
    ids: list[int] = entry["ids"]
    assert ids
    rejected = _rejections(dirty_run, kind.table, ids)
    migrated = _migrated(dirty_run, kind.table, ids)
    assert not set(rejected) & migrated
    assert set(rejected) | migrated == set(ids), "an injected row is unaccounted for"
    if kind.rule == SET_ASIDE:
        assert set(rejected) == set(ids)
        for source_id, (reason, detail) in rejected.items():
            assert reason == kind.outcome, (source_id, reason)
            assert int(detail["id"]) == source_id and "password" not in detail
        return
    assert migrated == set(ids), {i: rejected[i][0] for i in rejected}
    if kind.name in UNRECORDED:
        statuses = dirty_run.rows(
            "SELECT DISTINCT s.status FROM students s JOIN migration.crosswalk_students x "
            "ON x.target_id = s.id WHERE x.source_id = ANY(%s)", [ids])
        assert {s for (s,) in statuses} <= {"active", "graduated", "expelled"}
        return
    repairs = _repairs(dirty_run, kind.table, ids)
    if kind.rule in (REPAIR, MERGE) and kind.name != "course_code_variant":
        assert {i for i, rules in repairs.items() if kind.outcome in rules} == set(ids), repairs


def test_duplicate_enrollments_map_to_the_survivor(dirty_run: DirtyRun) -> None:
    ids = dirty_run.manifest["enrollment_duplicate"]["ids"]
    pairs = dirty_run.rows(
        "SELECT x.source_id, (SELECT count(*) FROM migration.crosswalk_course_students o "
        "WHERE o.target_id = x.target_id) FROM migration.crosswalk_course_students x "
        "WHERE x.source_id = ANY(%s)", [ids])
    assert len(pairs) == len(ids) and all(n == 2 for _, n in pairs)


def test_code_variants_merge_into_one_course(dirty_run: DirtyRun) -> None:
    ids = dirty_run.manifest["course_code_variant"]["ids"]
    with psycopg.connect(str(dirty_run.settings.source_url)) as source:
        codes = dict(source.execute(
            "SELECT id, upper(regexp_replace(code, '[^[:alnum:]]', '', 'g')) FROM courses "
            "WHERE id = ANY(%s)", [ids]).fetchall())
    merged = dict(dirty_run.rows(
        "SELECT x.source_id, c.code FROM migration.crosswalk_courses x JOIN courses c "
        "ON c.id = x.target_id WHERE x.target_table = 'courses' AND x.source_id = ANY(%s)",
        [ids]))
    assert merged == codes


def test_catalogue_disagreements_are_reported(dirty_run: DirtyRun) -> None:
    ids = dirty_run.manifest["course_credits_disagree"]["ids"]
    rows = dirty_run.rows("SELECT column_name, old_value <> new_value FROM migration.repairs "
                          "WHERE source_table = 'courses' AND source_id = ANY(%s) "
                          "AND rule LIKE 'catalogue field differs%%'", [ids])
    assert rows and all(column == "credits" and differs for column, differs in rows)


# What preflight calls each injected kind: (table, finding). Kinds absent here are not
# anomalies of a single row in the source (a status in another case, a student whose program
# is itself set aside).
PREFLIGHT_NAMES = {
    "username_case_duplicate": ("users",
                                "usernames taken by an older account (ignoring case and spaces)"),
    "username_spaces": ("users", "usernames with surrounding or no-break spaces"),
    "email_shared": ("users", "e-mails used by an older account (ignoring case)"),
    "email_blank": ("users", "blank e-mails"),
    "email_case": ("users", "e-mails not in lower case or with spaces"),
    "person_user_missing": ("persons", "user_id pointing at no users row"),
    "person_name_spaces": ("persons", "names with surrounding or no-break spaces"),
    "birthdate_not_a_date": ("persons", "birthdates that are not dates (or do not exist)"),
    "birthdate_future": ("persons", "birthdates in the future"),
    "gender_unknown": ("persons", "genders outside M/F/K/Q"),
    "phone_invalid": ("persons", "phone numbers that are not valid numbers"),
    "org_parent_missing": ("organizations", "parent_id pointing at no organizations row"),
    "org_cycle": ("organizations",
                  "units whose parent chain never reaches a university (cycles)"),
    "teacher_user_missing": ("teachers", "user_id pointing at no users row"),
    "teacher_person_missing": ("teachers", "person_id pointing at no persons row"),
    "hire_date_future": ("teachers", "hire dates in the future"),
    "student_user_missing": ("students", "user_id pointing at no users row"),
    "student_person_missing": ("students", "person_id pointing at no persons row"),
    "student_program_missing": ("students", "org_id pointing at no organizations row"),
    "student_org_not_program": ("students", "org_id pointing at a unit that is not a program"),
    "gpa_out_of_range": ("students", "gpa values outside 0–100"),
    "gpa_not_a_number": ("students", "gpa values that are not numbers"),
    "student_status_unknown": ("students", "statuses outside the list"),
    "course_code_variant": ("courses",
                            "runs whose code is written differently from other runs of its course"),
    "course_credits_disagree": (
        "courses", "runs whose names or credits disagree with other runs of their course"),
    "course_name_disagree": (
        "courses", "runs whose names or credits disagree with other runs of their course"),
    "course_teacher_missing": ("courses", "teacher_id pointing at no teachers row"),
    "course_term_unknown": ("courses", "edu_year/semester naming no known term"),
    "enrollment_duplicate": ("course_students", "second enrollments of one student in one run"),
    "enrollment_student_missing": ("course_students", "student_id pointing at no students row"),
    "enrollment_run_missing": ("course_students", "course_id pointing at no courses row"),
    "enrollment_status_unknown": ("course_students", "statuses outside the list"),
    "mark_enrollment_missing": ("grades", "course_student_id pointing at no course_students row"),
    "mark_not_a_number": ("grades", "marks that are not numbers"),
    "mark_above_maximum": ("grades", "marks above their type's maximum"),
    "mark_type_unknown": ("grades", "grade_type values outside 1–6"),
    "mark_date_future": ("grades", "lesson dates in the future"),
}


def test_preflight_finds_every_injected_kind(dirty_run: DirtyRun) -> None:
    findings = {(f.table, f.kind): f for f in api.anomalies(dirty_run.settings)}
    for kind, key in PREFLIGHT_NAMES.items():
        ids = dirty_run.manifest[kind]["ids"]
        finding = findings[key]
        assert finding.count >= (1 if kind == "course_code_variant" else len(ids)), kind
        assert finding.sample_ids and finding.line().startswith("! "), kind
    assert not findings[("organizations", "units that are their own parent")].found
