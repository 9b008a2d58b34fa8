"""A small legacy database written row by row, each row there for one rule of
docs/dirty-data.md, so that a test can name the legacy id and the outcome its rule demands."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

import psycopg
from psycopg import sql

from edu_migrate.legacy.generator import _ddl

MD5 = "e10adc3949ba59abbe56e057f20f883e"

ROWS: dict[str, tuple[tuple[str, ...], list[tuple[Any, ...]]]] = {
    "users": (("id", "username", "email", "password", "user_type", "is_active", "created_at",
               "updated_at"), [
        (1, "ali", "ali@x.az", MD5, 1, 1, datetime(2018, 9, 1, 10), datetime(2019, 9, 1, 10)),
        (2, "tural", "tural@x.az", MD5, 2, 1, datetime(2010, 9, 1), datetime(2019, 9, 1)),
        (3, "vali", "vali@x.az", MD5, 1, 1, datetime(2018, 9, 1), datetime(2019, 9, 1)),
        (4, "nigar", "nigar@x.az", MD5, 2, 1, datetime(2011, 9, 1), datetime(2019, 9, 1)),
        # No timestamps at all: created_at and updated_at come from the as-of time.
        (5, "old", None, MD5, 4, 1, None, None),
        (6, "aysel", "aysel@x.az", MD5, 1, 1, datetime(2018, 9, 1), datetime(2019, 9, 1)),
    ]),
    "persons": (("id", "user_id", "firstname", "lastname", "birthdate", "created_at"), [
        # User 1 has two persons: the first, with a blank name, is set aside; the second is
        # the user's person.
        (10, 1, "  ", "Məmmədov", "01.02.2000", datetime(2018, 9, 1)),
        (11, 1, "Ali", "Məmmədov", "01.02.2000", datetime(2018, 9, 1)),
        (20, 2, "Tural", "Həsənov", "1975-03-04", datetime(2010, 9, 1)),
        (30, 3, "Vəli", "Əliyev", "2001-01-01", datetime(2018, 9, 1)),
        (40, 4, "Nigar", "Quliyeva", "1980-05-05", datetime(2011, 9, 1)),
        (50, 5, "Köhnə", "Adam", "01.01.1850", None),
        # Born after the as-of time of the as-of tests (2020-01-01), long before today.
        (60, 6, "Aysel", "Kərimova", "2021-05-05", datetime(2018, 9, 1)),
    ]),
    "organizations": (("id", "parent_id", "type_id", "code", "name_az", "is_active"), [
        (1, None, 1, "U", "Universitet", 1),
        (2, 1, 2, "F", "Fakültə", None),
        (3, 2, 3, "K", "Kafedra", 2),
        (4, 3, 4, "P", "Proqram", 1),
        (5, 2, 3, "K2", "Kafedra 2", 1),
        # A unit whose parent does not exist, its child and its grandchild.
        (200, 999, 2, "X", "Yetim", 1),
        (201, 200, 3, "XK", "Yetim kafedra", 1),
        (202, 201, 4, "XP", "Yetim proqram", 1),
        # A chain of 60 units below the faculty: deep, but no cycle.
        *[(300 + n, 2 if n == 0 else 299 + n, 3, None, f"Bölmə {n}", 1) for n in range(60)],
        # A true cycle.
        (400, 401, 3, None, "Dövr 1", 1),
        (401, 400, 3, None, "Dövr 2", 1),
    ]),
    "students": (("id", "user_id", "person_id", "org_id", "student_no", "admission_year",
                  "status", "gpa", "created_at"), [
        (1, 1, 11, 4, "2018001", 1900, "active", "78.456", datetime(2018, 9, 1)),
        (2, 3, 30, 4, "2018002", 2018, "active", "80", datetime(2018, 9, 1)),
        (3, 6, 60, 4, "2018003", 2018, "active", None, datetime(2018, 9, 1)),
    ]),
    "teachers": (("id", "user_id", "person_id", "org_id", "position", "hire_date",
                  "is_active"), [
        (1, 2, 20, 3, "Professor", date(2010, 9, 1), None),
        # person_id 41 does not exist: the person of the same user (40) stands in.
        (2, 4, 41, 5, "Dosent", date(2021, 6, 1), 2),
    ]),
    "courses": (("id", "code", "name_az", "credits", "org_id", "teacher_id", "edu_year",
                 "semester", "section", "max_students", "created_at"), [
        (1, "MAT101", "Riyaziyyat", "5", 3, 1, "2019-2020", 1, "A", 0, None),
        (2, "MAT101", "Riyaziyyat", "5.0", 5, 1, "2019-2020", 2, "A", 30,
         datetime(2020, 1, 20)),
        (3, "MAT101", "Riyaziyyat", "5", 3, 1, "2020-2021", 1, "A", 30, datetime(2020, 9, 1)),
        (4, "FIZ101", "Fizika", "3.25", 3, 99, "2019-2020", 1, "A", 30, datetime(2019, 9, 1)),
    ]),
    "course_students": (("id", "course_id", "student_id", "status", "final_score", "letter",
                         "enrolled_at"), [
        (1, 1, 1, "completed", 95, "A", datetime(2019, 9, 10)),
        (2, 1, 2, "completed", 85, "Z", datetime(2019, 9, 10)),
        (3, 2, 2, "failed", None, "X", datetime(2020, 2, 10)),
        (4, 4, 2, "completed", 88, " b", datetime(2019, 9, 10)),
        (5, 4, 3, "enrolled", None, None, None),
    ]),
    "grades": (("id", "course_student_id", "grade_type", "value", "lesson_date", "teacher_id",
                "created_at"), [
        (1, 1, 2, "8", date(2019, 10, 1), 1, datetime(2019, 10, 1, 12)),
        (2, 2, 2, "8.125", date(2019, 10, 1), 1, datetime(2019, 10, 1, 12)),
        (3, 2, 2, "7", date(2019, 10, 8), 99, datetime(2019, 10, 8, 12)),
        # Dated after the as-of time of the as-of tests, long before today.
        (4, 3, 2, "6", date(2020, 6, 1), 1, datetime(2020, 6, 1, 12)),
        (5, 2, 2, "9", None, 1, None),
    ]),
}


def write_small_legacy(source_url: str) -> None:
    """Create the legacy tables in the source and fill them with ROWS."""
    tables, keys = _ddl()
    with psycopg.connect(source_url, autocommit=True) as conn:
        conn.execute(tables.encode())
        conn.execute(keys.encode())
        for table, (columns, rows) in ROWS.items():
            statement = sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
                sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, columns)),
                sql.SQL(", ").join(sql.Placeholder() * len(columns)))
            with conn.cursor() as cur:
                cur.executemany(statement, rows)
