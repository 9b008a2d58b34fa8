"""The mapping file: where it is read from, what it accepts, what it refuses, and the SQL the
staging reads with it."""

from __future__ import annotations

from pathlib import Path

import pytest

from edu_migrate import api
from edu_migrate.config import load_settings
from edu_migrate.errors import MappingError
from edu_migrate.mapping import DEFAULT_MAPPING, build_mapping, load_mapping
from edu_migrate.phases.staging import _select_from_source

ISSUE_EXAMPLE = """
[mapping.users]
table = "lms.auth_user"              # the source table, schema-qualified (default: public.users)
[mapping.users.columns]
password = "passwd"                  # a column of the source table
is_active = { sql = "CASE WHEN active THEN 1 ELSE 0 END" }   # an SQL expression over the source row
last_login = { value = "NULL" }      # a constant for a column the source lacks
"""


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("EDU_MAPPING", "EDU_MIGRATE_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)


def test_default_mapping_reads_todays_tables_and_columns() -> None:
    grades = DEFAULT_MAPPING["grades"]
    assert grades.canonical
    assert _select_from_source(grades, True).as_string(None) == (
        'COPY (SELECT "id"::bigint, "course_student_id"::bigint, "grade_type"::smallint, '
        '"value"::text, "lesson_date"::date, "teacher_id"::bigint, "created_at"::timestamp '
        'FROM "public"."grades" WHERE "id" >= %(low)s AND "id" < %(high)s) '
        "TO STDOUT (FORMAT binary)")


def test_the_issues_example_in_edu_migrate_toml(tmp_path: Path) -> None:
    (tmp_path / "edu-migrate.toml").write_text(
        '[edu-migrate]\nworkers = 3\n' + ISSUE_EXAMPLE, encoding="utf-8")
    settings = load_settings()
    assert settings.workers == 3
    users = api.legacy_mapping(settings)["users"]
    assert not users.canonical
    assert users.shown == "lms.auth_user"
    assert users.column("password").staged().as_string(None) == '"passwd"::text'
    assert users.column("is_active").staged().as_string(None) == \
        "(CASE WHEN active THEN 1 ELSE 0 END)::smallint"
    assert users.column("last_login").staged().as_string(None) == "NULL::timestamp"
    assert users.column("username").staged().as_string(None) == '"username"::text'
    assert users.id.expression.as_string(None) == '"id"'
    assert api.legacy_mapping(settings)["persons"].canonical


def test_a_mapping_file_replaces_the_section(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "edu-migrate.toml").write_text(ISSUE_EXAMPLE, encoding="utf-8")
    own = tmp_path / "own.toml"
    own.write_text('[grades]\ntable = "lms.qiymetler"\n[grades.columns]\nvalue = "qiymet"\n',
                   encoding="utf-8")
    monkeypatch.setenv("EDU_MAPPING", str(own))
    mapping = api.legacy_mapping(load_settings())
    assert mapping["grades"].shown == "lms.qiymetler"
    assert mapping["users"].canonical
    assert mapping.schemas() == ["public", "lms"]


@pytest.mark.parametrize(("text", "fragment"), [
    ('[users]\ntable = "a.b.c"\n', "is not a table name"),
    ('[user]\ntable = "lms.u"\n', "mapping.user is not a legacy table"),
    ('[users.columns]\npasword = "p"\n', "mapping.users.columns.pasword is not a column"),
    ('[users.columns]\nemail = { sql = "x", column = "y" }\n', "exactly one of"),
    ('[users.columns]\nemail = 3\n', "is not a column entry"),
    ('[grades]\ntable = "lms.x"\n[courses]\ntable = "lms.x"\n',
     "courses and grades are both mapped to lms.x"),
    ('[users]\ntable = lms.auth_user\n', "(at line 2, column 9)"),
])
def test_malformed_mapping_files_are_refused(tmp_path: Path, text: str, fragment: str) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(text, encoding="utf-8")
    with pytest.raises(MappingError) as caught:
        load_mapping(bad, {})
    assert fragment in caught.value.message


def test_users_and_persons_may_share_a_source_table() -> None:
    mapping = build_mapping({"users": {"table": "lms.people"},
                             "persons": {"table": "lms.people"}}, "test")
    assert mapping.legacy_tables_of("lms", "people") == ["users", "persons"]
