"""A source that differs from legacy-edu.md, described by a mapping: the same legacy data under a
second naming migrates to the same edu_v2, `mapping draft` proposes the renamed columns, and a
mapping that does not fit is refused in one line before anything is staged."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from edu_migrate import api
from edu_migrate.config import Settings
from edu_migrate.errors import MappingError
from tests.conftest import make_settings
from tests.integration.helpers import prepared, scalar
from tests.integration.test_cli_errors import assert_one_line_error, run_cli, urls
from tests.integration.test_migration import BUSINESS_TABLES

# The second naming: most tables renamed and moved to schema lms, columns renamed, the users'
# flag a boolean, the teachers' hire date kept as DD/MM/YYYY text; courses renamed in public.
# organizations keeps legacy-edu.md's name, so the mapping leaves it out.
SECOND_NAMING = """
CREATE SCHEMA lms;
ALTER TABLE public.users SET SCHEMA lms;
ALTER TABLE lms.users RENAME TO auth_user;
ALTER TABLE lms.auth_user RENAME COLUMN username TO user_name;
ALTER TABLE lms.auth_user RENAME COLUMN password TO passwd;
ALTER TABLE lms.auth_user ALTER COLUMN is_active TYPE boolean USING is_active <> 0;
ALTER TABLE lms.auth_user RENAME COLUMN is_active TO active;
ALTER TABLE public.persons SET SCHEMA lms;
ALTER TABLE lms.persons RENAME TO person;
ALTER TABLE lms.person RENAME COLUMN firstname TO first_name;
ALTER TABLE lms.person RENAME COLUMN lastname TO last_name;
ALTER TABLE lms.person RENAME COLUMN birthdate TO birth_date;
ALTER TABLE lms.person RENAME COLUMN patronymic TO ata_adi;
ALTER TABLE public.students SET SCHEMA lms;
ALTER TABLE lms.students RENAME TO student;
ALTER TABLE lms.student RENAME COLUMN student_no TO student_number;
ALTER TABLE public.teachers SET SCHEMA lms;
ALTER TABLE lms.teachers RENAME TO teacher;
ALTER TABLE lms.teacher ALTER COLUMN hire_date TYPE varchar(10)
    USING to_char(hire_date, 'DD/MM/YYYY');
ALTER TABLE public.course_students SET SCHEMA lms;
ALTER TABLE lms.course_students RENAME TO course_student;
ALTER TABLE public.grades SET SCHEMA lms;
ALTER TABLE lms.grades RENAME TO qiymetler;
ALTER TABLE lms.qiymetler RENAME COLUMN value TO qiymet;
ALTER TABLE public.courses RENAME TO course_runs;
"""

SECOND_MAPPING = """
[mapping.users]
table = "lms.auth_user"
[mapping.users.columns]
username = "user_name"
password = "passwd"
is_active = { sql = "CASE active WHEN true THEN 1 WHEN false THEN 0 END" }

[mapping.persons]
table = "lms.person"
[mapping.persons.columns]
firstname = "first_name"
lastname = "last_name"
patronymic = "ata_adi"
birthdate = "birth_date"

[mapping.students]
table = "lms.student"
[mapping.students.columns]
student_no = "student_number"

[mapping.teachers]
table = "lms.teacher"
[mapping.teachers.columns]
hire_date = { sql = "to_date(hire_date, 'DD/MM/YYYY')" }

[mapping.courses]
table = "course_runs"

[mapping.course_students]
table = "lms.course_student"

[mapping.grades]
table = "lms.qiymetler"
[mapping.grades.columns]
value = "qiymet"
"""


def _second_naming(settings: Settings) -> None:
    with psycopg.connect(str(settings.source_url), autocommit=True) as conn:
        conn.execute(SECOND_NAMING.encode())


@pytest.fixture
def renamed(admin_url: str, tmp_path: Path) -> Iterator[Settings]:
    """A source with generated legacy data under the second naming, its mapping file, and a
    target with the schema applied."""
    for settings in make_settings(admin_url, tmp_path / "renamed"):
        prepared(settings, scale=0.01)
        _second_naming(settings)
        mapping = tmp_path / "mapping.toml"
        mapping.write_text(SECOND_MAPPING, encoding="utf-8")
        yield settings.model_copy(update={"mapping_file": mapping})


def _business_rows(url: str, table: str) -> list[tuple[object, ...]]:
    """A table's rows without its uuid columns (the ids differ between two targets), sorted."""
    with psycopg.connect(url) as conn:
        columns = [r[0] for r in conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = 'public' "
            "AND table_name = %s AND data_type <> 'uuid' ORDER BY ordinal_position", [table])]
        rows = conn.execute(sql.SQL("SELECT {} FROM {}").format(
            sql.SQL(", ").join(map(sql.Identifier, columns)), sql.Identifier(table))).fetchall()
    return sorted(rows, key=repr)


def test_second_naming_migrates_to_the_same_edu_v2(settings: Settings,
                                                   renamed: Settings) -> None:
    prepared(settings, scale=0.01)
    api.migrate(settings)
    assert api.validate(settings).passed

    checked = api.mapping_check(renamed)
    assert {s.source for s in checked.samples if s.column == "password"} == {
        "lms.auth_user: passwd"}
    assert all(v.startswith("‹hidden") for s in checked.samples if s.column == "password"
               for v in s.values)
    assert api.anomalies(renamed) == api.anomalies(settings)
    api.migrate(renamed)
    report = api.validate(renamed)
    assert report.passed, [c.line() for c in report.checks if not c.passed]
    assert report.source_tables["users"] == "lms.auth_user"
    assert report.source_tables["courses"] == "public.course_runs"
    assert report.source_tables["organizations"] == "organizations"

    for table in BUSINESS_TABLES:
        canonical = _business_rows(str(settings.target_url), table)
        assert canonical, table
        assert _business_rows(str(renamed.target_url), table) == canonical, table

    target = str(renamed.target_url)
    assert scalar(target, "SELECT count(*) FROM migration.crosswalk WHERE source_table = 'grades' "
                          "AND source_relation = 'lms.qiymetler'") == scalar(
        target, "SELECT count(*) FROM migration.crosswalk_grades")
    assert scalar(target, "SELECT count(*) FROM migration.crosswalk "
                          "WHERE source_relation IS NULL") == 0
    assert scalar(target, "SELECT count(*) FROM migration.crosswalk WHERE source_table = "
                          "'organizations' AND source_relation = 'public.organizations'") > 0

    assert renamed.mapping_file is not None
    md = renamed.mapping_file.with_name("report.md")
    data = api.report(renamed, md=md)
    assert data.passed
    assert "`grades` (read from `lms.qiymetler`)" in md.read_text(encoding="utf-8")
    assert {c.table for c in data.checksums if c.side == "legacy"} >= {
        "lms.auth_user", "lms.qiymetler", "public.course_runs", "organizations"}

    inventory = {e.table: e for e in api.inventory(renamed)}
    assert inventory["lms.auth_user"].status == "mapped"
    assert inventory["lms.auth_user"].maps == "users"
    assert inventory["course_runs"].status == "mapped"
    assert inventory["rooms"].status == "archived"
    assert "users" not in inventory
    with psycopg.connect(target) as conn:
        archived = {r[0] for r in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'legacy_archive'")}
    assert "rooms" in archived
    assert not archived & {"course_runs", "lms.auth_user", "lms.qiymetler"}


def test_draft_proposes_the_renamed_columns(renamed: Settings, tmp_path: Path) -> None:
    out = tmp_path / "drafted.toml"
    drafted = api.mapping_draft(renamed, out)
    proposed = drafted.proposals()
    assert proposed["users"][0] == "lms.auth_user"
    assert proposed["persons"][0] == "lms.person"
    assert proposed["students"][0] == "lms.student"
    assert proposed["teachers"][0] == "lms.teacher"
    assert proposed["course_students"][0] == "lms.course_student"
    assert proposed["grades"][0] == "lms.qiymetler"
    assert proposed["organizations"][0] == "public.organizations"
    assert proposed["courses"][0] == "public.course_runs"
    assert proposed["users"][1]["username"] == "user_name"
    assert proposed["users"][1]["password"] == "passwd"
    assert proposed["users"][1]["is_active"] == "active"
    assert proposed["users"][1]["id"] == "id"
    assert proposed["persons"][1]["firstname"] == "first_name"
    assert proposed["persons"][1]["lastname"] == "last_name"
    assert proposed["persons"][1]["birthdate"] == "birth_date"
    assert proposed["persons"][1]["patronymic"] == "ata_adi"
    assert proposed["students"][1]["student_no"] == "student_number"
    assert proposed["grades"][1]["value"] == "qiymet"
    text = out.read_text(encoding="utf-8")
    assert ('is_active = { sql = "CASE WHEN \\"active\\" THEN 1 WHEN NOT \\"active\\" THEN 0 '
            'END" }') in text
    # A text date's format it cannot know: a TODO, which the check refuses.
    assert proposed["teachers"][1]["hire_date"] is None
    assert drafted.todo == ["teachers.hire_date"]
    assert "hire_date is a text date: give its format" in text
    with pytest.raises(MappingError, match=r"teachers\.hire_date as TODO"):
        api.mapping_check(renamed.model_copy(update={"mapping_file": out}))


def test_draft_marks_what_it_cannot_map_and_preflight_refuses_it(renamed: Settings,
                                                                  tmp_path: Path) -> None:
    with psycopg.connect(str(renamed.source_url), autocommit=True) as conn:
        conn.execute("ALTER TABLE lms.auth_user RENAME COLUMN passwd TO x17")
    out = tmp_path / "drafted.toml"
    drafted = api.mapping_draft(renamed, out)
    assert "users.password" in drafted.todo
    assert 'password = { todo = "no source column fits password' in out.read_text("utf-8")
    result = run_cli("preflight", *urls(renamed), "--mapping", str(out))
    assert result.returncode == 1
    assert "users.password" in result.stdout and "TODO" in result.stdout


def _staged(settings: Settings) -> int:
    with psycopg.connect(str(settings.target_url)) as conn:
        row = conn.execute("SELECT count(*) FROM information_schema.tables "
                           "WHERE table_schema = 'stage'").fetchone()
        runs = conn.execute("SELECT count(*) FROM migration.phase_runs").fetchone()
        assert row is not None and runs is not None
        return int(row[0]) + int(runs[0])


BAD_MAPPINGS = {
    "missing table": ('[mapping.grades]\ntable = "lms.marks"\n', ("lms.marks", "grades")),
    "missing column": ('[mapping.users]\ntable = "lms.auth_user"\n'
                       '[mapping.users.columns]\npassword = "pass"\n',
                       ("lms.auth_user.pass", "users.password")),
    "failing expression": (
        '[mapping.users]\ntable = "lms.auth_user"\n[mapping.users.columns]\n'
        'username = "user_name"\npassword = "passwd"\nis_active = { sql = "actve::int" }\n',
        ("users.is_active", "actve")),
    "value that does not cast": (
        '[mapping.users]\ntable = "lms.auth_user"\n[mapping.users.columns]\n'
        'username = "user_name"\npassword = "passwd"\nuser_type = "user_name"\n'
        'is_active = { sql = "active::int" }\n',
        ("users.user_type", "does not cast to smallint", "at id ", "found '")),
    "two tables on one": ('[mapping.grades]\ntable = "lms.course_student"\n',
                          ("course_students and grades", "lms.course_student")),
    "TOML syntax": ('[mapping.users]\ntable = lms.auth_user\n', ("not valid TOML", "line 2")),
}


@pytest.mark.parametrize("case", list(BAD_MAPPINGS))
def test_bad_mapping_is_one_line_and_stages_nothing(renamed: Settings, tmp_path: Path,
                                                    case: str) -> None:
    text, fragments = BAD_MAPPINGS[case]
    assert renamed.mapping_file is not None
    bad = tmp_path / "bad.toml"
    good = renamed.mapping_file.read_text(encoding="utf-8")
    # The case's tables replace the good mapping's; the rest of the good mapping stays.
    replaced = {line.split("]")[0] for line in text.splitlines() if line.startswith("[mapping.")}
    kept = "\n\n".join(block for block in good.split("\n\n")
                       if not any(name in block for name in replaced))
    bad.write_text(text if case == "TOML syntax" else kept + "\n\n" + text, encoding="utf-8")
    result = run_cli("migrate", "--all", *urls(renamed), "--mapping", str(bad))
    assert_one_line_error(result, *fragments)
    assert _staged(renamed) == 0
