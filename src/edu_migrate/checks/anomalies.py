"""Anomalies of the legacy source, found before anything is migrated.

The guide's two troubleshooting queries (duplicate usernames, orphaned students), generalised:
duplicates that end in a rename or a merge, an orphan check for every reference between the
mapped tables, and every value the phases read that is not in one of its documented formats.
Each finding has a count, a few sample ids, and what the migration will do with such rows (the
rules are in docs/dirty-data.md and the phase files).

Everything here reads the source in one read-only transaction, with plain SQL the source
already understands (the migration's parsing functions live in the target). Per table, the
row-level checks share one scan: one aggregate per check, filtered by its condition. The checks
name the legacy tables as legacy-edu.md does; each statement defines those names (a WITH query
per table) as the legacy mapping reads them, so they run unchanged on a source that names its
tables and columns otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import psycopg
from psycopg import sql

from edu_migrate.mapping import DEFAULT_MAPPING, LegacyMapping
from edu_migrate.phases.phones import to_e164

SAMPLE_SIZE = 5

# Collapse white space of every kind, trim; blank becomes NULL (migration.clean_text's rule).
_CLEAN = ("nullif(btrim(regexp_replace({x}, "
          "'[[:space:]\u00a0\u1680\u2000-\u200b\u2028\u2029\u202f\u205f\u3000\ufeff]+', "
          "' ', 'g')), '')")
# Digits of other scripts as ASCII digits (migration.ascii_digits's rule).
_DIGITS = ("translate({x}, '٠١٢٣٤٥٦٧٨٩۰۱۲۳۴۵۶۷۸۹０１２３４５６７８９，．٫', "
           "'012345678901234567890123456789,..')")


def clean(column: str) -> str:
    return _CLEAN.format(x=column)


def decimal_text(column: str) -> str:
    """The value as a plain decimal with a point, when it is one (else it will not match)."""
    return f"replace({clean(_DIGITS.format(x=column))}, ',', '.')"


def is_decimal(column: str) -> str:
    return f"({decimal_text(column)} ~ '^[+-]?[0-9]{{1,9}}(\\.[0-9]{{1,6}})?$')"


def as_decimal(column: str) -> str:
    return f"(CASE WHEN {is_decimal(column)} THEN {decimal_text(column)}::numeric END)"


def _safe_date(y: str, m: str, d: str) -> str:
    return (f"CASE WHEN {y} BETWEEN 1 AND 9999 AND {m} BETWEEN 1 AND 12 AND {d} >= 1 "
            f"AND {d} <= extract(day FROM make_date({y}, {m}, 1) + interval '1 month - 1 day') "
            f"THEN make_date({y}, {m}, {d}) END")


def legacy_date(column: str) -> str:
    """The date of a legacy text date (DD.MM.YYYY, YYYY-MM-DD, D/M/YYYY), NULL when it is not
    one or does not exist (31.02): migration.parse_legacy_date's rule."""
    value = clean(_DIGITS.format(x=column))
    dotted = f"translate({value}, '/', '.')"
    day_first = [f"split_part({dotted}, '.', {n})::int" for n in (3, 2, 1)]
    year_first = [f"split_part({value}, '-', {n})::int" for n in (1, 2, 3)]
    return (f"(CASE WHEN {value} ~ '^[0-9]{{1,2}}[./][0-9]{{1,2}}[./][0-9]{{4}}$' "
            f"THEN {_safe_date(*day_first)} "
            f"WHEN {value} ~ '^[0-9]{{4}}-[0-9]{{1,2}}-[0-9]{{1,2}}$' "
            f"THEN {_safe_date(*year_first)} END)")


def fold(column: str) -> str:
    return f"lower(translate({clean(column)}, 'İI_', 'ii '))"


def code_key(column: str) -> str:
    return f"nullif(upper(regexp_replace(coalesce({column}, ''), '[^[:alnum:]]', '', 'g')), '')"


@dataclass(frozen=True)
class Finding:
    """One kind of anomaly: how many rows have it, a few of their ids, and the rule."""

    table: str
    kind: str
    count: int
    sample_ids: list[int]
    rule: str

    @property
    def found(self) -> bool:
        return self.count > 0

    def line(self) -> str:
        if not self.found:
            return f"✓ {self.table}: no {self.kind}"
        sample = ", ".join(map(str, self.sample_ids))
        more = ", …" if self.count > len(self.sample_ids) else ""
        return (f"! {self.table}: {self.count:,} {self.kind} (ids {sample}{more}) "
                f"→ {self.rule}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"line": self.line()}


@dataclass(frozen=True)
class RowCheck:
    """A condition on one row `t` of `table`."""

    table: str
    kind: str
    condition: str
    rule: str


@dataclass(frozen=True)
class QueryCheck:
    """A query returning the ids of `table` that have the anomaly (duplicates, cycles)."""

    table: str
    kind: str
    query: str
    rule: str


# Every reference between the mapped tables: (table, column, referenced table, nullable, rule).
REFERENCES: tuple[tuple[str, str, str, bool, str], ...] = (
    ("persons", "user_id", "users", False, "set aside: 'user missing'"),
    ("students", "user_id", "users", False, "set aside: 'user missing'"),
    ("students", "person_id", "persons", False, "repaired: the person of the same user"),
    ("students", "org_id", "organizations", False, "set aside: 'program missing'"),
    ("teachers", "user_id", "users", False, "set aside: 'user missing'"),
    ("teachers", "person_id", "persons", False, "repaired: the person of the same user"),
    ("teachers", "org_id", "organizations", False, "set aside: 'department missing'"),
    ("organizations", "parent_id", "organizations", True, "set aside: 'parent missing'"),
    ("courses", "teacher_id", "teachers", True, "repaired: offering without instructor"),
    ("courses", "org_id", "organizations", True, "repaired: course without department"),
    ("course_students", "course_id", "courses", False, "set aside: 'course run missing'"),
    ("course_students", "student_id", "students", False, "set aside: 'student missing'"),
    ("grades", "course_student_id", "course_students", False,
     "set aside: 'enrollment missing'"),
    ("grades", "teacher_id", "teachers", True, "kept without grader"),
)


def _orphan_checks() -> list[RowCheck]:
    checks = []
    for table, column, parent, nullable, rule in REFERENCES:
        missing = f"t.{column} NOT IN (SELECT id FROM {parent})"
        if table == "organizations":
            missing = f"nullif(t.{column}, 0) NOT IN (SELECT id FROM {parent})"
        condition = missing if nullable else f"(t.{column} IS NULL OR {missing})"
        checks.append(RowCheck(table, f"{column} pointing at no {parent} row", condition, rule))
    return checks


STUDENT_STATUSES = ("'active', 'aktiv', 'graduated', 'məzun', 'expelled', 'xaric edilib', "
                    "'academic leave', 'akademik məzuniyyət'")
POSITIONS = "'professor', 'dosent', 'baş müəllim', 'müəllim', 'assistent'"
MARK_MAXIMUM = "CASE t.grade_type WHEN 1 THEN 1 WHEN 5 THEN 20 WHEN 6 THEN 50 ELSE 10 END"
TERM = ("({year} ~ '^(19|20)[0-9]{{2}} ?[-/] ?(19|20)[0-9]{{2}}$' "
        "AND substring({year} FROM '[0-9]{{4}}$')::int = substring({year} FROM '^[0-9]{{4}}')::int"
        " + 1 AND t.semester IN (1, 2))").format(year=clean("t.edu_year"))

# Per-row values several checks share, computed once. A mark in its everyday form ('8', '8,5',
# 'q/b') takes one cheap test; only the rest go through the full parse.
PLAIN_MARK = "t.value ~ '^[0-9]{1,2}([.,][0-9]{1,2})?$'"
DERIVED: dict[str, str] = {
    "grades": (f"coalesce({PLAIN_MARK} OR t.value = 'q/b', false) AS plain, "
               f"CASE WHEN {PLAIN_MARK} THEN replace(t.value, ',', '.')::numeric "
               f"WHEN t.value = 'q/b' THEN NULL ELSE {as_decimal('t.value')} END AS score"),
    "persons": f"{legacy_date('t.birthdate')} AS birth",
}

VALUE_CHECKS: tuple[RowCheck, ...] = (
    RowCheck("users", "usernames with surrounding or no-break spaces",
             f"t.username <> {clean('t.username')}", "repaired: trimmed"),
    RowCheck("users", "blank usernames", f"{clean('t.username')} IS NULL",
             "set aside: 'blank username'"),
    RowCheck("users", "blank e-mails", f"t.email IS NOT NULL AND {clean('t.email')} IS NULL",
             "repaired: stored as no e-mail"),
    RowCheck("users", "e-mails not in lower case or with spaces",
             f"t.email <> lower({clean('t.email')})", "repaired: trimmed and lower-cased"),
    RowCheck("users", "e-mails that are not addresses",
             f"lower({clean('t.email')}) !~ '^[^@[:space:]]+@[^@[:space:]]+\\.[^@[:space:]]+$'",
             "repaired: dropped"),
    RowCheck("users", "passwords that are neither MD5 nor bcrypt",
             "t.password IS NULL OR NOT (btrim(t.password) ~ "
             "'^\\$2[abxy]\\$[0-9]{2}\\$[./A-Za-z0-9]{53}$' OR btrim(t.password) ~ "
             "'^[0-9a-fA-F]{32}$')", "set aside: 'unrecognised value: password …'"),
    RowCheck("users", "user_type values outside 1–4",
             "t.user_type IS NULL OR t.user_type NOT BETWEEN 1 AND 4",
             "set aside: 'unrecognised value: user_type'"),
    RowCheck("persons", "birthdates that are not dates (or do not exist)",
             f"{clean('t.birthdate')} IS NOT NULL AND t.birth IS NULL", "repaired: dropped"),
    RowCheck("persons", "birthdates in the future", "t.birth > current_date",
             "repaired: dropped"),
    RowCheck("persons", "genders outside M/F/K/Q",
             f"upper({clean('t.gender')}) NOT IN ('M', 'F', 'K', 'Q', 'М', 'Ж')",
             "repaired: dropped"),
    RowCheck("persons", "names with surrounding or no-break spaces",
             f"t.firstname <> {clean('t.firstname')} OR t.lastname <> {clean('t.lastname')}",
             "repaired: trimmed"),
    RowCheck("persons", "blank first or last names",
             f"{clean('t.firstname')} IS NULL OR {clean('t.lastname')} IS NULL",
             "set aside: 'blank name'"),
    RowCheck("organizations", "units that are their own parent", "t.parent_id = t.id",
             "set aside: 'unit is its own parent'"),
    RowCheck("organizations", "type_id values outside 1–4",
             "t.type_id IS NULL OR t.type_id NOT BETWEEN 1 AND 4",
             "set aside: 'unrecognised value: type_id'"),
    RowCheck("students", "gpa values that are not numbers",
             f"{clean('t.gpa')} IS NOT NULL AND NOT {is_decimal('t.gpa')}", "repaired: dropped"),
    RowCheck("students", "gpa values outside 0–100",
             f"{as_decimal('t.gpa')} NOT BETWEEN 0 AND 100", "repaired: dropped"),
    RowCheck("students", "statuses outside the list",
             f"{fold('t.status')} IS NULL OR {fold('t.status')} NOT IN ({STUDENT_STATUSES})",
             "set aside: 'unrecognised value: status'"),
    RowCheck("students", "org_id pointing at a unit that is not a program",
             "t.org_id IN (SELECT id FROM organizations WHERE type_id <> 4)",
             "set aside: 'org_id is a …, not a program'"),
    RowCheck("teachers", "positions outside the list",
             f"{fold('t.position')} IS NULL OR {fold('t.position')} NOT IN ({POSITIONS})",
             "set aside: 'unrecognised value: position'"),
    RowCheck("teachers", "hire dates in the future", "t.hire_date > current_date",
             "repaired: dropped"),
    RowCheck("courses", "codes that are blank or only spaces and punctuation",
             f"{code_key('t.code')} IS NULL", "set aside: 'blank course code'"),
    RowCheck("courses", "credits that are not numbers in 0.5–60",
             f"coalesce({as_decimal('t.credits')} NOT BETWEEN 0.5 AND 60, true)",
             "set aside: 'unrecognised value: credits'"),
    RowCheck("courses", "edu_year/semester naming no known term", f"NOT coalesce({TERM}, false)",
             "set aside: 'edu_year/semester name no known term'"),
    RowCheck("course_students", "statuses outside the list",
             f"{fold('t.status')} IS NULL OR {fold('t.status')} NOT IN "
             "('enrolled', 'completed', 'failed', 'dropped')",
             "set aside: 'unrecognised value: status'"),
    RowCheck("course_students", "final scores outside 0–100",
             "t.final_score NOT BETWEEN 0 AND 100", "repaired: dropped"),
    RowCheck("grades", "grade_type values outside 1–6",
             "t.grade_type IS NULL OR t.grade_type NOT BETWEEN 1 AND 6",
             "set aside: 'unrecognised value: grade_type'"),
    RowCheck("grades", "marks that are not numbers",
             f"NOT t.plain AND t.score IS NULL "
             f"AND coalesce(lower({clean('t.value')}), '') NOT IN ('q/b', 'qb', 'q/b.')",
             "set aside: 'unrecognised value: mark is not a number'"),
    RowCheck("grades", "marks above their type's maximum",
             f"t.grade_type BETWEEN 1 AND 6 AND t.score > {MARK_MAXIMUM}",
             "set aside: 'mark exceeds the maximum of its type'"),
    RowCheck("grades", "negative marks", "t.score < 0", "set aside: 'mark is negative'"),
    RowCheck("grades", "lesson dates in the future", "t.lesson_date > current_date",
             "set aside: 'lesson_date in the future'"),
    RowCheck("grades", "marks written with digits of another script",
             f"NOT t.plain AND t.value <> {_DIGITS.format(x='t.value')}",
             "repaired: read as digits"),
)


def _later_duplicates(table: str, key: str, where: str = "true") -> str:
    return (f"SELECT id FROM (SELECT t.id, row_number() OVER (PARTITION BY {key} ORDER BY t.id) "
            f"AS n FROM {table} t WHERE {where}) d WHERE n > 1")


QUERY_CHECKS: tuple[QueryCheck, ...] = (
    QueryCheck("users", "usernames taken by an older account (ignoring case and spaces)",
               _later_duplicates("users", f"lower({clean('t.username')})",
                                 f"{clean('t.username')} IS NOT NULL"),
               "repaired: renamed '<name>.<legacy id>'"),
    QueryCheck("users", "e-mails used by an older account (ignoring case)",
               _later_duplicates("users", f"lower({clean('t.email')})",
                                 f"{clean('t.email')} IS NOT NULL"),
               "repaired: e-mail dropped"),
    QueryCheck("persons", "second persons of one user",
               _later_duplicates("persons", "t.user_id"),
               "set aside: 'second person for the same user'"),
    QueryCheck("students", "student numbers used by an older student",
               _later_duplicates("students", f"upper({clean('t.student_no')})",
                                 f"{clean('t.student_no')} IS NOT NULL"),
               "repaired: renamed '<number>-<legacy id>'"),
    QueryCheck("organizations", "units whose parent chain never reaches a university (cycles)",
               """WITH RECURSIVE placed AS (
                      SELECT id FROM organizations
                      WHERE type_id = 1 AND coalesce(parent_id, 0) = 0
                      UNION
                      SELECT o.id FROM organizations o JOIN placed p ON o.parent_id = p.id
                      WHERE o.type_id <> 1 AND o.parent_id <> o.id)
                  SELECT o.id FROM organizations o
                  WHERE o.id NOT IN (SELECT id FROM placed) AND coalesce(o.parent_id, 0) <> 0
                    AND o.parent_id IN (SELECT id FROM organizations)
                    AND o.parent_id <> o.id""",
               "set aside: 'parent chain does not reach a university (cycle)'"),
    QueryCheck("courses", "runs whose code is written differently from other runs of its course",
               f"""SELECT t.id FROM courses t
                   JOIN (SELECT {code_key('code')} AS k, mode() WITHIN GROUP (ORDER BY code) AS c
                         FROM courses GROUP BY 1 HAVING count(DISTINCT code) > 1) v
                     ON v.k = {code_key('t.code')}
                   WHERE t.code <> v.c""",
               "merged: one catalogue course per normalised code"),
    QueryCheck("courses", "runs whose names or credits disagree with other runs of their course",
               f"""SELECT t.id FROM courses t
                   JOIN (SELECT {code_key('code')} AS k,
                                mode() WITHIN GROUP (ORDER BY ({clean('name_az')},
                                    {clean('name_ru')}, {clean('name_en')},
                                    {as_decimal('credits')})::text) AS majority
                         FROM courses t GROUP BY 1) v ON v.k = {code_key('t.code')}
                   WHERE ({clean('t.name_az')}, {clean('t.name_ru')}, {clean('t.name_en')},
                          {as_decimal('t.credits')})::text <> v.majority""",
               "merged: the value most runs agree on is kept, each disagreement recorded"),
    QueryCheck("course_students", "second enrollments of one student in one run",
               _later_duplicates("course_students", "t.student_id, t.course_id"),
               "merged into one enrollment, both ids in the crosswalk"),
)


def _row_checks() -> list[RowCheck]:
    return [*_orphan_checks(), *VALUE_CHECKS]


def _legacy_names(mapping: LegacyMapping, statement: sql.Composed) -> sql.Composed:
    """The statement, with each legacy table's name standing for its rows as the mapping reads
    them (a WITH query that is not referenced is not run)."""
    return sql.SQL("WITH {} {}").format(sql.SQL(", ").join(
        sql.SQL("{} AS ({})").format(sql.Identifier(t.legacy), t.as_select()) for t in mapping),
        statement)


def _run_row_checks(source: psycopg.Connection, mapping: LegacyMapping, table: str,
                    checks: Sequence[RowCheck]) -> list[Finding]:
    aggregates = sql.SQL(", ").join(
        sql.SQL("count(*) FILTER (WHERE coalesce({c}, false)), "
                "(array_agg(t.id ORDER BY t.id) FILTER (WHERE coalesce({c}, false)))[1:{n}]")
        .format(c=sql.SQL(check.condition), n=sql.Literal(SAMPLE_SIZE)) for check in checks)
    derived = sql.SQL(DERIVED.get(table, "true AS plain"))
    # OFFSET 0 keeps the derived columns computed once per row, however often the checks use them.
    row = source.execute(_legacy_names(mapping, sql.SQL(
        "SELECT {} FROM (SELECT t.*, {} FROM {} t OFFSET 0) t").format(
            aggregates, derived, sql.Identifier(table)))).fetchone()
    assert row is not None
    return [Finding(check.table, check.kind, int(row[2 * i]), list(row[2 * i + 1] or []),
                    check.rule) for i, check in enumerate(checks)]


def _run_query_check(source: psycopg.Connection, mapping: LegacyMapping,
                     check: QueryCheck) -> Finding:
    row = source.execute(_legacy_names(mapping, sql.SQL(
        "SELECT count(*), (array_agg(id ORDER BY id))[1:{n}] FROM ({q}) f").format(
            n=sql.Literal(SAMPLE_SIZE), q=sql.SQL(check.query)))).fetchone()
    assert row is not None
    return Finding(check.table, check.kind, int(row[0]), list(row[1] or []), check.rule)


def _phone_finding(source: psycopg.Connection, mapping: LegacyMapping) -> Finding:
    """Phones are judged by the phonenumbers library, as the migration does: one call per
    distinct spelling of a small table."""
    bad: list[int] = []
    valid: dict[str, bool] = {}
    for person_id, phone in source.execute(_legacy_names(mapping, sql.SQL(
            "SELECT id, phone FROM persons WHERE nullif(btrim(phone), '') IS NOT NULL "
            "ORDER BY id").format())):
        if phone not in valid:
            valid[phone] = to_e164(phone) is not None
        if not valid[phone]:
            bad.append(int(person_id))
    return Finding("persons", "phone numbers that are not valid numbers", len(bad),
                   bad[:SAMPLE_SIZE], "repaired: dropped")


def find_anomalies(source: psycopg.Connection,
                   mapping: LegacyMapping = DEFAULT_MAPPING) -> list[Finding]:
    """Every finding, table by table in the order the phases read them."""
    by_table: dict[str, list[RowCheck]] = {}
    for check in _row_checks():
        by_table.setdefault(check.table, []).append(check)
    findings: list[Finding] = []
    for table in ("users", "persons", "organizations", "students", "teachers", "courses",
                  "course_students", "grades"):
        findings.extend(_run_row_checks(source, mapping, table, by_table.get(table, [])))
        findings.extend(_run_query_check(source, mapping, check) for check in QUERY_CHECKS
                        if check.table == table)
        if table == "persons":
            findings.append(_phone_finding(source, mapping))
    return findings
