"""Property: whatever small legacy database hypothesis writes, with whatever dirt (digits of
other scripts, exponents, codes of spaces, units that are their own parent, dates that do not
exist, duplicates, orphans), the migration finishes (usernames and e-mails unique
case-insensitively, every foreign key in place), validate passes with every legacy row accounted
for, and the anomalies found name rows that exist."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from psycopg import sql

from edu_migrate import api
from edu_migrate.checks.anomalies import SAMPLE_SIZE
from edu_migrate.config import Settings
from edu_migrate.legacy.generator import MAPPED_TABLES, _ddl
from tests.conftest import make_settings

MD5 = "e10adc3949ba59abbe56e057f20f883e"
BCRYPT = "$2b$04$" + "a" * 53


def one_of(*values: Any) -> st.SearchStrategy[Any]:
    return st.sampled_from(values)


REF = st.integers(min_value=0, max_value=9)  # ids run 1..8: 0 and 9 point at nothing
TEXT = one_of("Əli", " Əli ", "\u00a0Vəli", "   ", "", None, "Ирина", "x" * 90)

ROWS: dict[str, tuple[tuple[str, ...], st.SearchStrategy[tuple[Any, ...]], int]] = {
    "users": (("username", "email", "password", "user_type", "is_active"), st.tuples(
        one_of("ali", "Ali", " ali ", "ali.2", "ALİ", "ali\u00a0", "", "  ", None, "vəli"),
        one_of("a@x.az", "A@X.AZ", " a@x.az", "", " ", None, "not-mail", "b@x.az"),
        one_of(MD5, MD5.upper(), BCRYPT, "plain", None),
        one_of(1, 2, 3, 4, 0, None), one_of(0, 1, 1, None, 7)), 8),
    "persons": (("user_id", "firstname", "lastname", "birthdate", "gender", "pin", "phone"),
                st.tuples(REF, TEXT, TEXT,
                          one_of("31.02.1990", "1990-02-28", "٣/٤/١٩٩٩", "12.05.2205", "abc",
                                 None, "29.02.2000", "29.02.2001", "00.00.0000", "1e1"),
                          one_of("M", "k", "X", "Ж", None, " "),
                          one_of("1AB2C3D", "1ab2c3d", "12", None),
                          one_of("0501234567", "yox", None, "+994 50 123 45 67",
                                 "٠٥٠١٢٣٤٥٦٧", "")), 8),
    "organizations": (("parent_id", "type_id", "code", "name_az"), st.tuples(
        one_of(None, 0, 1, 2, 3, 4, 5, 6, 7, 8, 99), one_of(1, 2, 3, 4, 4, 0, None),
        one_of("F1", "  ", None), one_of("Fakültə", " ", None, "Proqram")), 8),
    "students": (("user_id", "person_id", "org_id", "student_no", "status", "gpa",
                  "admission_year", "education_form"), st.tuples(
        REF, REF, REF, one_of("S1", "s1", "S1-2", " ", None, "S2"),
        one_of("active", "AKTİV", "məzun", "akademik məzuniyyət", "??", None, "academic leave"),
        one_of("78,5", "1e1", "٨٧", "  ", "８０", "101", None, "-0", "NaN", "Infinity"),
        one_of(2020, 1900, None, -1), one_of("əyani", "QİYABİ", "x", None)), 8),
    "teachers": (("user_id", "person_id", "org_id", "position", "hire_date"), st.tuples(
        REF, REF, REF, one_of("Professor", "DOSENT", "baş  müəllim", "janitor", None),
        one_of(date(2015, 1, 1), date(2205, 1, 1), None)), 4),
    "courses": (("code", "name_az", "credits", "org_id", "teacher_id", "edu_year", "semester",
                 "section", "max_students"), st.tuples(
        one_of("MAT101", "mat 101", "   ", "-", "ＭＡＴ１０１", None, "MAT-101", "FİZ1"),
        one_of("Riyaziyyat", "Riyaziyyat ", "Fizika", None, " "),
        one_of("5", "5,0", "1e1", "٥", "", "0", "99", None),
        REF, REF, one_of("2022-2023", "2022/2023", "2023-2022", "", None, "2099-2100"),
        one_of(1, 2, 3, None), one_of("A", None, " "), one_of(30, 0, -1, None)), 8),
    "course_students": (("course_id", "student_id", "status", "final_score", "letter"),
                        st.tuples(REF, REF, one_of("enrolled", "COMPLETED", "failed", "x", None),
                                  one_of(None, 55, 100, 150, -5), one_of("A", "z", None, "")),
                        10),
    "grades": (("course_student_id", "grade_type", "value", "lesson_date", "teacher_id"),
               st.tuples(st.integers(min_value=0, max_value=11), one_of(0, 1, 2, 5, 6, 7, None),
                         one_of("8", "8,5", "q/b", "٣", "1e1", "  ", "８", "-1", "99", None,
                                "Q/B", "1", "0", "10.", ".5", "٫٥"),
                         one_of(date(2023, 1, 1), date(2205, 1, 1), None), REF), 20),
}


@st.composite
def legacy_database(draw: st.DrawFn) -> dict[str, list[tuple[Any, ...]]]:
    data: dict[str, list[tuple[Any, ...]]] = {}
    for table, (_, row, most) in ROWS.items():
        rows = draw(st.lists(row, max_size=most))
        data[table] = [(number, *values) for number, values in enumerate(rows, start=1)]
    return data


@pytest.fixture(scope="module")
def legacy_settings(admin_url: str,
                    tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    for settings in make_settings(admin_url, tmp_path_factory.mktemp("props")):
        tables, keys = _ddl()
        with psycopg.connect(str(settings.source_url), autocommit=True) as conn:
            conn.execute(tables)
            conn.execute(keys)
        api.schema_apply(settings)
        yield settings


def _load(source_url: str, data: dict[str, list[tuple[Any, ...]]]) -> None:
    with psycopg.connect(source_url) as conn:
        conn.execute(sql.SQL("TRUNCATE {}").format(
            sql.SQL(", ").join(sql.Identifier(t) for t in MAPPED_TABLES)))
        for table, rows in data.items():
            columns = ("id", *ROWS[table][0])
            statement = sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
                sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, columns)),
                sql.SQL(", ").join(sql.Placeholder() * len(columns)))
            with conn.cursor() as cur:
                cur.executemany(statement, rows)


@hypothesis_settings(max_examples=20, deadline=None,
                     suppress_health_check=[HealthCheck.function_scoped_fixture,
                                            HealthCheck.too_slow])
@given(data=legacy_database())
def test_any_dirty_database_migrates_and_accounts(legacy_settings: Settings,
                                                  data: dict[str, list[tuple[Any, ...]]]) -> None:
    settings = legacy_settings
    _load(str(settings.source_url), data)
    api.rollback(settings, None)
    api.migrate(settings)
    report = api.validate(settings)
    assert report.passed, [c.line() for c in report.checks if not c.passed]
    # Each anomaly found names rows that are there: as many sample ids as it counts (up to
    # the sample's size), every one an id of the table it names.
    for finding in api.anomalies(settings):
        assert len(finding.sample_ids) == min(finding.count, SAMPLE_SIZE), finding
        if finding.table in data:
            ids = {row[0] for row in data[finding.table]}
            assert set(finding.sample_ids) <= ids, finding
