"""The LMS's everyday queries, written once against edu and once against edu_v2, timed on both.

Each pair answers the same question for the same subject: the subject is picked in edu (the
busiest student, teacher, term and course run: the worst case an LMS page meets) and carried
to edu_v2 through the crosswalk.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Any

import psycopg


@dataclass(frozen=True)
class EverydayQuery:
    name: str
    legacy: str
    v2: str


QUERIES: tuple[EverydayQuery, ...] = (
    EverydayQuery(
        "student transcript with marks",
        """SELECT c.code, c.name_az, c.edu_year, c.semester, cs.final_score, cs.letter,
                  g.grade_type, g.value, g.lesson_date
           FROM course_students cs
           JOIN courses c ON c.id = cs.course_id
           LEFT JOIN grades g ON g.course_student_id = cs.id
           WHERE cs.student_id = %(student)s
           ORDER BY c.edu_year, c.semester, c.code, g.lesson_date""",
        """SELECT co.code, co.name ->> 'az', t.academic_year, t.term_type, e.final_score,
                  e.grade, a.assessment_type, g.score, g.is_absent, g.graded_on
           FROM course_enrollments e
           JOIN course_offerings o ON o.id = e.course_offering_id
           JOIN courses co ON co.id = o.course_id
           JOIN academic_terms t ON t.id = o.academic_term_id
           LEFT JOIN grades g ON g.enrollment_id = e.id
           LEFT JOIN assessments a ON a.id = g.assessment_id
           WHERE e.student_id = %(student)s
           ORDER BY t.start_date, co.code, g.graded_on"""),
    EverydayQuery(
        "teacher's roster for a term",
        """SELECT c.code, c.section, s.student_no, p.lastname, p.firstname, cs.status
           FROM courses c
           JOIN course_students cs ON cs.course_id = c.id
           JOIN students s ON s.id = cs.student_id
           JOIN persons p ON p.id = s.person_id
           WHERE c.teacher_id = %(teacher)s AND c.edu_year = %(edu_year)s
             AND c.semester = %(semester)s
           ORDER BY c.code, p.lastname, p.firstname""",
        """SELECT co.code, o.section_code, s.student_number, p.last_name, p.first_name,
                  e.enrollment_status
           FROM course_offerings o
           JOIN courses co ON co.id = o.course_id
           JOIN course_enrollments e ON e.course_offering_id = o.id
           JOIN students s ON s.id = e.student_id
           JOIN persons p ON p.id = s.person_id
           WHERE o.instructor_id = %(teacher)s AND o.academic_term_id = %(term)s
           ORDER BY co.code, p.last_name, p.first_name"""),
    EverydayQuery(
        "term's course list with enrollment counts",
        """SELECT c.code, c.name_az, c.section, count(cs.id) AS enrolled
           FROM courses c
           LEFT JOIN course_students cs ON cs.course_id = c.id
           WHERE c.edu_year = %(edu_year)s AND c.semester = %(semester)s
           GROUP BY c.id
           ORDER BY c.code, c.section""",
        """SELECT co.code, co.name ->> 'az', o.section_code, n.enrolled
           FROM course_offerings o
           JOIN courses co ON co.id = o.course_id
           CROSS JOIN LATERAL (SELECT count(*) AS enrolled FROM course_enrollments e
                               WHERE e.course_offering_id = o.id) n
           WHERE o.academic_term_id = %(term)s
           ORDER BY co.code, o.section_code"""),
    EverydayQuery(
        "course run's mark distribution",
        """SELECT g.grade_type, g.value, count(*)
           FROM course_students cs
           JOIN grades g ON g.course_student_id = cs.id
           WHERE cs.course_id = %(run)s
           GROUP BY g.grade_type, g.value
           ORDER BY g.grade_type, g.value""",
        """SELECT a.assessment_type, g.score, g.is_absent, count(*)
           FROM assessments a
           JOIN grades g ON g.assessment_id = a.id
           WHERE a.course_offering_id = %(run)s
           GROUP BY a.assessment_type, g.score, g.is_absent
           ORDER BY a.assessment_type, g.score"""),
    EverydayQuery(
        "login lookup by username",
        """SELECT id, password, user_type, is_active FROM users
           WHERE username = %(username)s""",
        """SELECT id, password_hash, password_algo, role, is_active FROM users
           WHERE lower(username) = lower(%(username)s)"""),
)

PICK_LEGACY = {
    "student": "SELECT student_id FROM course_students GROUP BY student_id "
               "ORDER BY count(*) DESC, student_id LIMIT 1",
    "teacher_term": "SELECT teacher_id, edu_year, semester FROM courses "
                    "WHERE teacher_id IS NOT NULL GROUP BY 1, 2, 3 "
                    "ORDER BY count(*) DESC, 1, 2, 3 LIMIT 1",
    "term": "SELECT edu_year, semester FROM courses GROUP BY 1, 2 "
            "ORDER BY count(*) DESC, 1, 2 LIMIT 1",
    "run": "SELECT course_id FROM course_students GROUP BY course_id "
           "ORDER BY count(*) DESC, course_id LIMIT 1",
    "username": "SELECT username FROM users ORDER BY id "
                "OFFSET (SELECT count(*) / 2 FROM users) LIMIT 1",
}


def _one(conn: psycopg.Connection, query: str, params: Any = None) -> tuple[Any, ...]:
    row = conn.execute(query.encode(), params).fetchone()
    if row is None:
        raise LookupError(f"no row for {query}")
    return tuple(row)


def _v2_term(conn: psycopg.Connection, edu_year: str, semester: int) -> Any:
    term_type = "fall" if semester == 1 else "spring"
    return _one(conn, "SELECT id FROM academic_terms WHERE academic_year = %s "
                      "AND term_type = %s", [edu_year.strip(), term_type])[0]


def _crosswalk(conn: psycopg.Connection, source_table: str, source_id: int,
               target_table: str) -> Any:
    return _one(conn, "SELECT target_id FROM migration.crosswalk WHERE source_table = %s "
                      "AND source_id = %s AND target_table = %s",
                [source_table, source_id, target_table])[0]


def subjects(legacy: psycopg.Connection,
             v2: psycopg.Connection) -> tuple[dict[str, Any], dict[str, Any]]:
    """The parameters of every query, on each side."""
    student = _one(legacy, PICK_LEGACY["student"])[0]
    teacher, teacher_year, teacher_semester = _one(legacy, PICK_LEGACY["teacher_term"])
    edu_year, semester = _one(legacy, PICK_LEGACY["term"])
    run = _one(legacy, PICK_LEGACY["run"])[0]
    username = _one(legacy, PICK_LEGACY["username"])[0]
    old = {"student": student, "teacher": teacher, "run": run, "username": username,
           "edu_year": edu_year, "semester": semester}
    new = {"student": _crosswalk(v2, "students", student, "students"),
           "teacher": _crosswalk(v2, "teachers", teacher, "staff_members"),
           "run": _crosswalk(v2, "courses", run, "course_offerings"),
           "username": username, "term": _v2_term(v2, edu_year, semester)}
    # The roster is the busiest teacher's in that teacher's busiest term.
    old_roster = dict(old, edu_year=teacher_year, semester=teacher_semester)
    new_roster = dict(new, term=_v2_term(v2, teacher_year, teacher_semester))
    return {"default": old, "roster": old_roster}, {"default": new, "roster": new_roster}


def _params_for(query: EverydayQuery, sides: dict[str, Any]) -> Any:
    return sides["roster" if "roster" in query.name else "default"]


def time_query(conn: psycopg.Connection, query: str, params: Any, repeats: int) -> dict[str, Any]:
    for _ in range(3):
        conn.execute(query.encode(), params).fetchall()
    samples = []
    rows = 0
    for _ in range(repeats):
        started = time.perf_counter()
        rows = len(conn.execute(query.encode(), params).fetchall())
        samples.append((time.perf_counter() - started) * 1000)
    return {"median_ms": statistics.median(samples), "min_ms": min(samples),
            "max_ms": max(samples), "rows": rows}


def _plan_nodes(plan: dict[str, Any]) -> list[str]:
    nodes = [str(plan["Node Type"]) + (f" on {plan['Relation Name']}"
                                       if "Relation Name" in plan else "")]
    for child in plan.get("Plans", []):
        nodes.extend(_plan_nodes(child))
    return nodes


def plan_of(conn: psycopg.Connection, query: str, params: Any) -> list[str]:
    row = conn.execute(b"EXPLAIN (FORMAT JSON) " + query.encode(), params).fetchone()
    assert row is not None
    return _plan_nodes(row[0][0]["Plan"])


def uses_index(nodes: list[str]) -> bool:
    return any("Index" in node for node in nodes)


def run_everyday_queries(legacy_url: str, v2_url: str, repeats: int = 25) -> list[dict[str, Any]]:
    """Median latency of each query on both sides, and the edu_v2 plan's nodes."""
    results = []
    with psycopg.connect(legacy_url, autocommit=True) as legacy, \
            psycopg.connect(v2_url, autocommit=True) as v2:
        old_sides, new_sides = subjects(legacy, v2)
        for query in QUERIES:
            old_params, new_params = _params_for(query, old_sides), _params_for(query, new_sides)
            old = time_query(legacy, query.legacy, old_params, repeats)
            new = time_query(v2, query.v2, new_params, repeats)
            nodes = plan_of(v2, query.v2, new_params)
            results.append({"query": query.name, "edu": old, "edu_v2": new,
                            "edu_v2_plan": nodes, "edu_v2_uses_index": uses_index(nodes),
                            "edu_plan": plan_of(legacy, query.legacy, old_params)})
    return results
