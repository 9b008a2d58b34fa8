"""The dirty profile: what fifteen years without a foreign key leave in a database.

Runs after the clean fill, in the same transaction, and injects every kind of dirt that
legacy-edu.md lists ("Dirty data"), each at its own realistic rate. Rows are chosen by md5 of
(seed, kind, id), so the same seed dirties the same rows; each legacy row receives at most one
kind, and rows that hang off a dirtied row are not chosen again, so every injected id has one
expected outcome. The returned manifest says, per kind, which table and ids were touched, the
migration's rule (repair, merge or set aside) and the reason or repair rule expected for them.

Ids far above any real id (``MISSING``) stand for references to rows that do not exist.
Inserted rows (duplicates, stale rows) take ids above the table's largest.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import psycopg

# A reference to nothing: beyond every id the generator writes.
MISSING = 900_000_000

REPAIR, MERGE, SET_ASIDE = "repair", "merge", "set aside"


@dataclass(frozen=True)
class DirtKind:
    """One kind of dirt: where, how often, what the migration must make of it, and the SQL."""

    name: str
    table: str
    rule: str
    outcome: str
    rate: float
    apply: str
    candidates: str | None = None


@dataclass(frozen=True)
class InjectedDirt:
    kind: str
    table: str
    rule: str
    outcome: str
    ids: list[int]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


CREATE_WORK_TABLES = """
CREATE TEMP TABLE dirt_pick (kind text, tbl text, id bigint, ordinal integer,
                             PRIMARY KEY (tbl, id)) ON COMMIT DROP;
CREATE TEMP TABLE dirt_manifest (kind text, tbl text, id bigint) ON COMMIT DROP;
"""

PICK = """
INSERT INTO pg_temp.dirt_pick (kind, tbl, id, ordinal)
SELECT %(kind)s, %(table)s, c.id,
       row_number() OVER (ORDER BY md5(%(seed)s || ':' || %(kind)s || ':' || c.id), c.id)
FROM ({candidates}) c
WHERE NOT EXISTS (SELECT 1 FROM pg_temp.dirt_pick p WHERE p.tbl = %(table)s AND p.id = c.id)
ORDER BY md5(%(seed)s || ':' || %(kind)s || ':' || c.id), c.id
LIMIT %(n)s
"""

RECORD = """
WITH changed AS ({apply})
INSERT INTO pg_temp.dirt_manifest (kind, tbl, id) SELECT %(kind)s, %(table)s, id FROM changed
"""

# Rows of a child table whose parent row was dirtied are left alone: their outcome is the
# parent's (a dependant set aside), not a kind of their own.
NOT_PICKED = ("NOT EXISTS (SELECT 1 FROM pg_temp.dirt_pick p "
              "WHERE p.tbl = '{table}' AND p.id = {ref})")

_PICKED = "FROM pg_temp.dirt_pick p WHERE p.kind = %(kind)s AND t.id = p.id"


def _update(table: str, assignments: str) -> str:
    return f"UPDATE public.{table} t SET {assignments} {_PICKED} RETURNING t.id"


def _one_of(values: list[str]) -> str:
    """A value chosen per row from `values` (SQL literals), by the row's id."""
    return f"(ARRAY[{', '.join(values)}])[1 + mod(t.id, {len(values)})]"


KINDS: tuple[DirtKind, ...] = (
    # --- users ----------------------------------------------------------------------------
    DirtKind(
        "username_case_duplicate", "users", REPAIR,
        "username taken by an older account: renamed", 0.01,
        """INSERT INTO public.users (id, username, email, password, user_type, is_active,
                                     last_login, created_at, updated_at)
           SELECT (SELECT max(id) FROM public.users) + p.ordinal,
                  """ + _one_of(["upper(t.username)", "' ' || t.username || ' '",
                                 "initcap(t.username) || chr(160)"]) + """,
                  NULL, t.password, t.user_type, 0, NULL,
                  t.created_at + interval '400 days', t.updated_at + interval '400 days'
           FROM public.users t JOIN pg_temp.dirt_pick p ON p.kind = %(kind)s AND p.id = t.id
           RETURNING id"""),
    DirtKind("username_spaces", "users", REPAIR, "white space trimmed", 0.01,
             _update("users", "username = " + _one_of(
                 ["' ' || username", "username || '  '", "chr(160) || username || chr(160)"]))),
    DirtKind(
        "email_shared", "users", REPAIR, "e-mail used by an older account: dropped", 0.01,
        _update("users", """email = (
            SELECT CASE WHEN mod(t.id, 2) = 0 THEN upper(o.email) ELSE o.email END
            FROM public.users o WHERE o.id < t.id AND o.email LIKE '%%@%%'
              AND NOT EXISTS (SELECT 1 FROM pg_temp.dirt_pick q
                              WHERE q.tbl = 'users' AND q.id = o.id)
            ORDER BY o.id DESC LIMIT 1)"""),
        "SELECT id FROM public.users WHERE id > (SELECT min(id) + 10 FROM public.users)"),
    DirtKind("email_blank", "users", REPAIR, "blank: stored as no e-mail", 0.01,
             _update("users", "email = " + _one_of(["''", "'   '", "chr(160)"]))),
    DirtKind("email_case", "users", REPAIR, "trimmed and lower-cased", 0.01,
             _update("users", "email = " + _one_of(["upper(email)", "' ' || initcap(email)"])),
             "SELECT id FROM public.users WHERE email LIKE '%%@%%'"),
    # --- persons --------------------------------------------------------------------------
    DirtKind(
        "person_user_missing", "persons", SET_ASIDE, "user missing", 0.005,
        """INSERT INTO public.persons (id, user_id, firstname, lastname, patronymic, birthdate,
                                       gender, pin, phone, address, created_at)
           SELECT (SELECT max(id) FROM public.persons) + p.ordinal, """ + str(MISSING) + """ + t.id,
                  t.firstname, t.lastname, t.patronymic, t.birthdate, t.gender, t.pin, t.phone,
                  t.address, t.created_at
           FROM public.persons t JOIN pg_temp.dirt_pick p ON p.kind = %(kind)s AND p.id = t.id
           RETURNING id"""),
    DirtKind("person_name_spaces", "persons", REPAIR, "white space trimmed", 0.02,
             _update("persons", "firstname = ' ' || firstname || chr(160), "
                                "lastname = lastname || '  '")),
    DirtKind("birthdate_not_a_date", "persons", REPAIR, "not a date: dropped", 0.01,
             _update("persons", "birthdate = " + _one_of(
                 ["'31.02.1990'", "'1988-13-05'", "'30/2/1985'", "'bilinmir'", "'00.00.0000'"]))),
    DirtKind("birthdate_future", "persons", REPAIR, "in the future: dropped", 0.005,
             _update("persons", "birthdate = " + _one_of(["'12.05.2205'", "'2099-01-17'"]))),
    DirtKind("gender_unknown", "persons", REPAIR, "unrecognised value: dropped", 0.005,
             _update("persons", "gender = " + _one_of(["'X'", "'?'", "'0'"]))),
    DirtKind("phone_invalid", "persons", REPAIR, "not a valid phone number: dropped", 0.01,
             _update("persons", "phone = " + _one_of(["'12345'", "'yoxdur'", "'+994 00 000'"]))),
    # --- organizations (new units: the tree the real data hangs from stays whole) --------
    DirtKind(
        "org_parent_missing", "organizations", SET_ASIDE, "parent missing", 0.005,
        """INSERT INTO public.organizations (id, parent_id, type_id, code, name_az, name_ru,
                                             name_en, is_active)
           SELECT (SELECT max(id) FROM public.organizations) + p.ordinal,
                  """ + str(MISSING) + """ + t.id, t.type_id, t.code, t.name_az || ' (köhnə)',
                  t.name_ru, t.name_en, 0
           FROM public.organizations t
           JOIN pg_temp.dirt_pick p ON p.kind = %(kind)s AND p.id = t.id
           RETURNING id""",
        "SELECT id FROM public.organizations WHERE type_id = 4"),
    DirtKind(
        "org_cycle", "organizations", SET_ASIDE,
        "parent chain does not reach a university (cycle)", 0.005,
        """INSERT INTO public.organizations (id, parent_id, type_id, code, name_az, name_ru,
                                             name_en, is_active)
           SELECT base + pair.side, base + 1 - pair.side, 3, t.code || '-' || pair.side,
                  t.name_az || ' ' || (pair.side + 1), t.name_ru, t.name_en, 1
           FROM public.organizations t
           JOIN pg_temp.dirt_pick p ON p.kind = %(kind)s AND p.id = t.id
           CROSS JOIN LATERAL (SELECT (SELECT max(id) FROM public.organizations) + 2 * p.ordinal
                                      + 100 AS base) b
           CROSS JOIN (VALUES (0), (1)) pair (side)
           RETURNING id""",
        "SELECT id FROM public.organizations WHERE type_id = 3"),
    # --- teachers -------------------------------------------------------------------------
    DirtKind("teacher_user_missing", "teachers", SET_ASIDE, "user missing", 0.005,
             _update("teachers", f"user_id = {MISSING} + t.id")),
    DirtKind("teacher_person_missing", "teachers", REPAIR,
             "person missing: replaced by the person of the same user", 0.005,
             _update("teachers", f"person_id = {MISSING} + t.id")),
    DirtKind("hire_date_future", "teachers", REPAIR, "in the future: dropped", 0.005,
             _update("teachers", "hire_date = DATE '2205-09-01' + mod(t.id, 30)::integer")),
    # --- students -------------------------------------------------------------------------
    DirtKind("student_user_missing", "students", SET_ASIDE, "user missing", 0.003,
             _update("students", f"user_id = {MISSING} + t.id")),
    DirtKind("student_person_missing", "students", REPAIR,
             "person missing: replaced by the person of the same user", 0.005,
             _update("students", f"person_id = {MISSING} + t.id")),
    DirtKind("student_program_missing", "students", SET_ASIDE, "program missing", 0.002,
             _update("students", f"org_id = {MISSING} + t.id")),
    DirtKind(
        "student_org_not_program", "students", SET_ASIDE,
        "org_id is a department, not a program", 0.002,
        _update("students", "org_id = (SELECT min(id) FROM public.organizations o "
                            "WHERE o.type_id = 3 AND o.parent_id < " + str(MISSING) + ")")),
    DirtKind(
        "student_program_set_aside", "students", SET_ASIDE, "program set aside", 0.001,
        _update("students", "org_id = (SELECT min(id) FROM pg_temp.dirt_manifest "
                            "WHERE kind = 'org_parent_missing')")),
    DirtKind("gpa_out_of_range", "students", REPAIR, "outside 0–100: dropped", 0.01,
             _update("students", "gpa = " + _one_of(["'123.5'", "'-4'", "'1000'", "'101,2'"]))),
    DirtKind("gpa_not_a_number", "students", REPAIR, "not a number: dropped", 0.01,
             _update("students", "gpa = " + _one_of(["'N/A'", "'yox'", "'8O.5'", "'--'"]))),
    DirtKind("student_status_unknown", "students", SET_ASIDE, "unrecognised value: status",
             0.002, _update("students", "status = " + _one_of(
                 ["'pending'", "'bərpa'", "'transferred'", "'?'"]))),
    DirtKind("student_status_case", "students", REPAIR, "status word mapped", 0.01,
             _update("students", "status = " + _one_of(
                 ["'AKTİV'", "'Məzun'", "' Graduated '", "'Xaric edilib'"]))),
    # --- courses (runs) -------------------------------------------------------------------
    DirtKind(
        "course_code_variant", "courses", MERGE, "runs of one course written differently",
        0.01, _update("courses", "code = " + _one_of(
            ["lower(code) || chr(160)", "' ' || replace(code, ' ', '-')",
             "replace(lower(code), ' ', '')"])),
        "SELECT id FROM public.courses WHERE length(code) <= 16"),
    DirtKind(
        "course_credits_disagree", "courses", MERGE,
        "catalogue field differs from the value most runs agree on: catalogue value kept",
        0.005, _update("courses",
                       "credits = (replace(credits, ',', '.')::numeric + 1)::text"),
        """SELECT max(id) AS id FROM public.courses
           GROUP BY upper(regexp_replace(code, '[^[:alnum:]]', '', 'g'))
           HAVING count(*) >= 4"""),
    DirtKind(
        "course_name_disagree", "courses", MERGE,
        "catalogue field differs from the value most runs agree on: catalogue value kept",
        0.005, _update("courses", "name_az = name_az || ' (seçmə)'"),
        """SELECT max(id) AS id FROM public.courses
           GROUP BY upper(regexp_replace(code, '[^[:alnum:]]', '', 'g'))
           HAVING count(*) >= 4"""),
    DirtKind("course_teacher_missing", "courses", REPAIR,
             "teacher missing or set aside: offering kept without instructor", 0.005,
             _update("courses", f"teacher_id = {MISSING} + t.id")),
    DirtKind(
        "course_term_unknown", "courses", SET_ASIDE, "edu_year/semester name no known term",
        0.002, _update("courses", "edu_year = " + _one_of(["'2019-2021'", "edu_year", "''"])
                       + ", semester = CASE WHEN mod(t.id, 3) = 1 THEN 3 ELSE semester END")),
    # --- course_students ------------------------------------------------------------------
    DirtKind(
        "enrollment_duplicate", "course_students", MERGE,
        "same student enrolled twice in one run: merged", 0.003,
        """INSERT INTO public.course_students (id, course_id, student_id, status, final_score,
                                               letter, enrolled_at)
           SELECT (SELECT max(id) FROM public.course_students) + p.ordinal, t.course_id,
                  t.student_id, t.status, t.final_score, t.letter,
                  t.enrolled_at + interval '1 day'
           FROM public.course_students t
           JOIN pg_temp.dirt_pick p ON p.kind = %(kind)s AND p.id = t.id
           RETURNING id"""),
    DirtKind("enrollment_student_missing", "course_students", SET_ASIDE, "student missing",
             0.001, _update("course_students", f"student_id = {MISSING} + t.id")),
    DirtKind("enrollment_run_missing", "course_students", SET_ASIDE, "course run missing",
             0.001, _update("course_students", f"course_id = {MISSING} + t.id")),
    DirtKind("enrollment_status_unknown", "course_students", SET_ASIDE,
             "unrecognised value: status", 0.001,
             _update("course_students", "status = " + _one_of(
                 ["'passed'", "'aktiv'", "'?'"]))),
    # --- grades ---------------------------------------------------------------------------
    DirtKind("mark_enrollment_missing", "grades", SET_ASIDE, "enrollment missing", 0.001,
             _update("grades", f"course_student_id = {MISSING} + t.id")),
    DirtKind("mark_not_a_number", "grades", SET_ASIDE,
             "unrecognised value: mark is not a number", 0.002,
             _update("grades", "value = " + _one_of(
                 ["'abc'", "'5+'", "'-'", "'yox'", "'7..5'", "'10/10'"]))),
    DirtKind("mark_above_maximum", "grades", SET_ASIDE, "mark exceeds the maximum of its type",
             0.002, _update("grades", """value = (CASE grade_type WHEN 1 THEN 1 WHEN 5 THEN 20
                                             WHEN 6 THEN 50 ELSE 10 END
                                         + 1 + mod(t.id, 5))::text""")),
    DirtKind("mark_type_unknown", "grades", SET_ASIDE, "unrecognised value: grade_type", 0.001,
             _update("grades", "grade_type = " + _one_of(["0", "7", "9"]))),
    DirtKind("mark_date_future", "grades", SET_ASIDE, "lesson_date in the future", 0.001,
             _update("grades", "lesson_date = lesson_date + interval '180 years'")),
)

# Candidates per table when a kind names none: every row, less those that hang off a dirtied
# parent. Marks are sampled from a fixed twentieth of the table first, to keep the choice cheap.
DEFAULT_CANDIDATES: dict[str, str] = {
    "users": "SELECT id FROM public.users",
    "persons": "SELECT id FROM public.persons",
    "organizations": "SELECT id FROM public.organizations",
    "teachers": "SELECT id FROM public.teachers",
    "students": "SELECT id FROM public.students",
    "courses": "SELECT id FROM public.courses",
    "course_students": (
        "SELECT e.id FROM public.course_students e WHERE "
        + NOT_PICKED.format(table="students", ref="e.student_id") + " AND "
        + NOT_PICKED.format(table="courses", ref="e.course_id")),
    "grades": (
        "SELECT g.id FROM public.grades g JOIN public.course_students e "
        "ON e.id = g.course_student_id WHERE mod(g.id + %(seed)s, 20) = 0 AND "
        + NOT_PICKED.format(table="course_students", ref="e.id") + " AND "
        + NOT_PICKED.format(table="students", ref="e.student_id") + " AND "
        + NOT_PICKED.format(table="courses", ref="e.course_id")),
}


def inject(cur: psycopg.Cursor[Any], seed: int, row_counts: dict[str, int]) -> list[InjectedDirt]:
    """Dirty the freshly generated legacy tables; returns what was injected, kind by kind."""
    cur.execute(CREATE_WORK_TABLES)
    for kind in KINDS:
        wanted = max(1, round(row_counts[kind.table] * kind.rate))
        candidates = kind.candidates or DEFAULT_CANDIDATES[kind.table]
        cur.execute(PICK.format(candidates=candidates),
                    {"kind": kind.name, "table": kind.table, "seed": seed, "n": wanted})
    for kind in KINDS:
        cur.execute(RECORD.format(apply=kind.apply), {"kind": kind.name, "table": kind.table})
    cur.execute("SELECT kind, array_agg(id ORDER BY id) FROM pg_temp.dirt_manifest GROUP BY kind")
    ids = {str(kind): [int(i) for i in found] for kind, found in cur.fetchall()}
    return [InjectedDirt(k.name, k.table, k.rule, k.outcome, ids.get(k.name, [])) for k in KINDS]
