"""Scale-out on paper, measured on one server: would phase 5 and sync co-locate by student, and
does the per-mark work split evenly over key ranges of students? (docs/engine.md, "Scale-out".)

On a migrated edu_v2 (its staged mirror kept, as a full run keeps it):

(a) for each join of phase 5 and of sync's scope, how many joined rows belong to another student
    than the row's own distribution key (0: the join can run on the shard, co-located), and for
    the parents that are not per student (assessments, teachers, offerings) how many students and
    shards their children span (a reference table, or a multi-shard statement);
(b) phase 5's per-mark work (`parse_grades`, then `decided_marks`' joins) over N key ranges of
    students, as Citus would split a uuid column into N shards (equal ranges of its hash), each
    range timed, against the same work over every mark.

The distribution key of a legacy row is computed from legacy ids and the id secret alone:
`derive_id('students', <the legacy student id of its enrollment>)`, the uuid phase 2 gives that
student. Everything runs in one transaction that is rolled back: the target is left as it was.
Parallel workers and JIT are off, so a time is one core's.

    python -m bench.colocation --target-url postgresql://postgres@127.0.0.1:PORT/edu_v2
    python -m bench.colocation --scale 0.1 [--profile dirty] [--work DIR]

(the second: an embedded server of its own, a generated edu, migrated).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from edu_migrate.phases import sqlfile
from edu_migrate.phases.session import set_session

HASH_MIN, HASH_MAX = -(2**31), 2**31  # int4 hash space, MAX exclusive
SHARDS = 32  # Citus' default shard count, for the spread of the multi-shard joins

# The key of a staged enrollment (alias cs): the uuid its student gets in phase 2.
STUDENT_KEY = "migration.derive_id('students', cs.student_id::text)"


def shard_ranges(count: int) -> list[tuple[int, int]]:
    """`count` half-open ranges [low, high) of the int4 hash space, Citus' split of a hash-
    distributed table into shards: equal widths, the last one up to the top."""
    if count < 1:
        raise ValueError("at least one range")
    width = (HASH_MAX - HASH_MIN) // count
    lows = [HASH_MIN + i * width for i in range(count)]
    return [(low, lows[i + 1] if i + 1 < count else HASH_MAX) for i, low in enumerate(lows)]


def shard_of(hash_value: int, ranges: list[tuple[int, int]]) -> int:
    """The range that holds a hash value (what the SQL below computes per row)."""
    for n, (low, high) in enumerate(ranges):
        if low <= hash_value < high:
            return n
    raise ValueError(f"{hash_value} is outside the int4 hash space")


# (a) Name, the statement(s) it stands for, and a query answering (rows joined, across students).
JOINS: tuple[tuple[str, str, str], ...] = (
    ("mark → its enrollment", "decided_marks, clear_grades_in_scope, FK grades.enrollment_id",
     """SELECT count(*), count(*) FILTER (WHERE k.student_key IS DISTINCT FROM e.student_id)
        FROM grades g JOIN bench_mark_keys k ON k.source_id = g.legacy_id
        JOIN course_enrollments e ON e.id = g.enrollment_id"""),
    ("enrollment → its survivor", "merge_duplicate_enrollments, crosswalk_enrollments",
     f"""SELECT count(*), count(*) FILTER (WHERE {STUDENT_KEY} IS DISTINCT FROM e.student_id)
        FROM migration.crosswalk_course_students x
        JOIN stage.course_students cs ON cs.id = x.source_id
        JOIN course_enrollments e ON e.id = x.target_id"""),
    ("enrollment → its student", "prepare_enrollments, FK course_enrollments.student_id",
     f"""SELECT count(*), count(*) FILTER (WHERE xs.target_id IS DISTINCT FROM {STUDENT_KEY})
        FROM stage.course_students cs
        JOIN migration.crosswalk_students xs ON xs.source_id = cs.student_id"""),
    ("sync scope: marks of an enrollment in scope", "scope_grades (course_student_id)",
     f"""SELECT count(*), count(*) FILTER (WHERE k.student_key IS DISTINCT FROM {STUDENT_KEY})
        FROM stage.grades g JOIN bench_mark_keys k ON k.source_id = g.id
        JOIN stage.course_students cs ON cs.id = g.course_student_id"""),
    ("sync scope: a duplicate group", "scope_course_students (student_id, course_id)",
     f"""SELECT count(*), count(*) FILTER (WHERE {STUDENT_KEY} IS DISTINCT FROM
                                               migration.derive_id('students', o.student_id::text))
        FROM stage.course_students cs JOIN stage.course_students o
          ON o.student_id = cs.student_id AND o.course_id = cs.course_id"""),
)

# Parents shared by students: how many of them have children of more than one student, and how
# many shards (of SHARDS) a parent's children reach on average.
SHARED: tuple[tuple[str, str, str], ...] = (
    ("assessment", "FK grades.assessment_id, migrate_assessments, drop_assessments_without_marks",
     "SELECT g.assessment_id AS parent, e.student_id AS student FROM grades g "
     "JOIN course_enrollments e ON e.id = g.enrollment_id"),
    ("teacher (grader)", "FK grades.graded_by, scope_grades (teacher_id), RLS teacher policies",
     "SELECT g.graded_by AS parent, e.student_id AS student FROM grades g "
     "JOIN course_enrollments e ON e.id = g.enrollment_id WHERE g.graded_by IS NOT NULL"),
    ("course offering", "FK course_enrollments.course_offering_id, scope_course_students "
     "(course_id), RLS teacher_taught", "SELECT course_offering_id AS parent, student_id AS "
     "student FROM course_enrollments"),
)

SHARD_SQL = ("floor((uuid_hash({key})::bigint + 2147483648) * {shards} / 4294967296.0)::int")


@dataclass
class Join:
    join: str
    statements: str
    rows: int
    across_students: int


@dataclass
class Shared:
    parent: str
    statements: str
    parents: int
    with_several_students: int
    mean_students: float
    mean_shards: float


@dataclass
class Range:
    range: int
    low: int
    high: int
    students: int
    marks: int
    seconds: float


def _mark_keys(conn: psycopg.Connection[Any]) -> None:
    """Each staged mark's distribution key (NULL: its enrollment is missing, or names no
    student) and that key's hash, as Citus would route it."""
    conn.execute(f"""CREATE TEMP TABLE bench_mark_keys AS
        SELECT g.id AS source_id, {STUDENT_KEY} AS student_key,
               uuid_hash({STUDENT_KEY}) AS key_hash
        FROM stage.grades g LEFT JOIN stage.course_students cs ON cs.id = g.course_student_id""")
    conn.execute("CREATE INDEX ON bench_mark_keys (source_id)")
    conn.execute("ANALYZE bench_mark_keys")


def measure_joins(conn: psycopg.Connection[Any]) -> list[Join]:
    found = []
    for name, statements, query in JOINS:
        row = conn.execute(query.encode()).fetchone()
        assert row is not None
        found.append(Join(name, statements, int(row[0]), int(row[1])))
    return found


def measure_shared(conn: psycopg.Connection[Any]) -> list[Shared]:
    found = []
    for name, statements, query in SHARED:
        shard = SHARD_SQL.format(key="c.student", shards=SHARDS)
        row = conn.execute(f"""SELECT count(*), count(*) FILTER (WHERE students > 1),
                   coalesce(avg(students), 0), coalesce(avg(shards), 0)
            FROM (SELECT parent, count(DISTINCT student) AS students,
                         count(DISTINCT {shard}) AS shards
                  FROM ({query}) c GROUP BY parent) p""".encode()).fetchone()
        assert row is not None
        found.append(Shared(name, statements, int(row[0]), int(row[1]), round(float(row[2]), 1),
                            round(float(row[3]), 1)))
    return found


def keyless_marks(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT count(*) FROM bench_mark_keys WHERE student_key IS NULL").fetchone()
    return int(row[0]) if row else 0


def _statement(file_name: str, name: str) -> str:
    (found,) = [s.text for s in sqlfile.load(file_name) if s.name == name]
    return found


def _replaced(text: str, old: str, new: str) -> str:
    if old not in text:
        raise RuntimeError(f"the phase's SQL no longer contains {old!r}: update bench/colocation")
    return text.replace(old, new)


def _shard(conn: psycopg.Connection[Any], where: str) -> None:
    """The shard of the staged marks, enrollments and enrollment crosswalk whose key hash
    satisfies `where`, as tables of their own (what Citus would hold on one worker; the marks
    without a key go to the lowest hash: some shard must hold them). Not timed: it stands for
    staging routed by key."""
    key = "coalesce(k.key_hash, -2147483648)::bigint"
    conn.execute("DROP TABLE IF EXISTS bench_grades, bench_enrollments, bench_crosswalk CASCADE")
    conn.execute(f"""CREATE TEMP TABLE bench_grades AS SELECT g.* FROM stage.grades g
        JOIN bench_mark_keys k ON k.source_id = g.id WHERE {where.format(key=key)}""")
    enrollment_key = f"coalesce(uuid_hash({STUDENT_KEY}), -2147483648)::bigint"
    conn.execute(f"""CREATE TEMP TABLE bench_enrollments AS SELECT cs.* FROM stage.course_students
        cs WHERE {where.format(key=enrollment_key)}""")
    conn.execute("""CREATE TEMP TABLE bench_crosswalk AS SELECT x.* FROM
        migration.crosswalk_course_students x JOIN bench_enrollments e ON e.id = x.source_id""")
    for table in ("bench_grades", "bench_enrollments", "bench_crosswalk"):
        conn.execute(f"ANALYZE {table}")
    conn.execute("CREATE OR REPLACE TEMP VIEW scoped_grades AS SELECT * FROM bench_grades")


def _per_mark_work(conn: psycopg.Connection[Any]) -> tuple[int, float]:
    """parse_grades and decided_marks' joins over the current shard (written to a table here,
    as a stand-in for migrate_grades' pass over them)."""
    parse = _statement("phase5_marks.sql", "parse_grades")
    prepare = _statement("phase5.sql", "decided_marks")
    for old, new in (("CREATE OR REPLACE TEMP VIEW decided_marks AS",
                      "CREATE TEMP TABLE bench_prepared AS"),
                     ("FROM stage.parsed_grades m", "FROM bench_parsed m"),
                     ("LEFT JOIN (stage.course_students e", "LEFT JOIN (bench_enrollments e"),
                     ("LEFT JOIN migration.crosswalk_course_students xe",
                      "LEFT JOIN bench_crosswalk xe")):
        prepare = _replaced(prepare, old, new)
    started = time.perf_counter()
    cursor = conn.execute(f"CREATE TEMP TABLE bench_parsed AS\n{parse}".encode())
    marks = max(cursor.rowcount, 0)
    conn.execute("ANALYZE bench_parsed")
    conn.execute(prepare.encode())
    seconds = time.perf_counter() - started
    conn.execute("DROP TABLE bench_parsed, bench_prepared")
    return marks, seconds


def measure_ranges(conn: psycopg.Connection[Any], count: int,
                   repeats: int) -> tuple[list[Range], tuple[int, float]]:
    conn.execute(_statement("phase5.sql", "assessment_keys"))
    conn.execute("ANALYZE assessment_keys")
    _shard(conn, "true")
    _per_mark_work(conn)  # warm the cache
    whole = min((_per_mark_work(conn) for _ in range(repeats)), key=lambda r: r[1])
    found = []
    for n, (low, high) in enumerate(shard_ranges(count)):
        _shard(conn, f"{{key}} >= {low} AND {{key}} < {high}")
        marks, seconds = min((_per_mark_work(conn) for _ in range(repeats)), key=lambda r: r[1])
        row = conn.execute(f"""SELECT count(*) FROM students s
            WHERE uuid_hash(s.id)::bigint >= {low} AND uuid_hash(s.id)::bigint < {high}"""
                           ).fetchone()
        found.append(Range(n, low, high, int(row[0]) if row else 0, marks, round(seconds, 3)))
    return found, (whole[0], round(whole[1], 3))


def measure(target_url: str, ranges: int = 4, repeats: int = 2) -> dict[str, Any]:
    with psycopg.connect(target_url) as conn:
        set_session(conn)
        conn.execute("SET LOCAL max_parallel_workers_per_gather = 0")
        counts = conn.execute("SELECT (SELECT count(*) FROM students), "
                              "(SELECT count(*) FROM course_enrollments), "
                              "(SELECT count(*) FROM grades), (SELECT count(*) FROM stage.grades), "
                              "(SELECT count(*) FROM migration.rejected_rows), "
                              "(SELECT count(*) FROM migration.repairs)").fetchone()
        assert counts is not None
        _mark_keys(conn)
        joins = measure_joins(conn)
        shared = measure_shared(conn)
        keyless = keyless_marks(conn)
        per_range, (whole_marks, whole_seconds) = measure_ranges(conn, ranges, repeats)
        conn.rollback()
    covered = sum(r.marks for r in per_range)
    if covered != whole_marks:
        raise RuntimeError(f"the ranges parsed {covered} marks, the whole run {whole_marks}")
    return {"machine": f"{platform.machine()}, {platform.processor() or 'cpu ?'}, "
                       f"{_cores()} cores, {platform.system()} {platform.release()}",
            "server_version": _server_version(target_url),
            "tables": {"students": counts[0], "course_enrollments": counts[1],
                       "grades": counts[2], "staged_marks": counts[3],
                       "rejected_rows": counts[4], "repairs": counts[5]},
            "joins": [asdict(j) for j in joins], "shared_parents": [asdict(s) for s in shared],
            "shards_for_spread": SHARDS, "marks_without_key": keyless,
            "ranges": [asdict(r) for r in per_range],
            "whole": {"marks": whole_marks, "seconds": whole_seconds},
            "sum_of_ranges_seconds": round(sum(r.seconds for r in per_range), 3)}


def _cores() -> int:
    import os

    return os.cpu_count() or 0


def _server_version(url: str) -> str:
    with psycopg.connect(url) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    return str(row[0]) if row else "?"


def markdown(result: dict[str, Any]) -> str:
    t = result["tables"]
    lines = [f"{t['students']} students, {t['course_enrollments']} enrollments, {t['grades']} "
             f"marks ({t['staged_marks']} staged), {t['rejected_rows']} rows set aside, "
             f"{t['repairs']} repairs; PostgreSQL {result['server_version']}; "
             f"{result['machine']}.", "",
             "| join | statements | rows joined | of another student |", "|---|---|---:|---:|"]
    lines += [f"| {j['join']} | {j['statements']} | {j['rows']} | {j['across_students']} |"
              for j in result["joins"]]
    lines += ["", f"| parent | statements | parents | with marks/enrollments of > 1 student | "
              f"students per parent | shards per parent (of {result['shards_for_spread']}) |",
              "|---|---|---:|---:|---:|---:|"]
    lines += [f"| {s['parent']} | {s['statements']} | {s['parents']} | "
              f"{s['with_several_students']} | {s['mean_students']} | {s['mean_shards']} |"
              for s in result["shared_parents"]]
    lines += ["", f"Staged marks without a student key (enrollment missing): "
              f"{result['marks_without_key']}.", "",
              "| key range (hash of students.id) | students | marks | seconds |",
              "|---|---:|---:|---:|"]
    lines += [f"| {r['range']}: [{r['low']}, {r['high']}) | {r['students']} | {r['marks']} | "
              f"{r['seconds']} |" for r in result["ranges"]]
    lines += [f"| sum of the ranges | {t['students']} | "
              f"{sum(r['marks'] for r in result['ranges'])} | {result['sum_of_ranges_seconds']} |",
              f"| every mark at once | {t['students']} | {result['whole']['marks']} | "
              f"{result['whole']['seconds']} |"]
    return "\n".join(lines)


def _embedded(scale: float, profile: str, work: Path) -> tuple[Any, str]:
    """An embedded server in `work`, a generated edu at `scale`, migrated into edu_v2."""
    from edu_migrate import api
    from edu_migrate.config import Settings
    from edu_migrate.pg.embedded import EmbeddedServer, find_bin_dir
    from edu_migrate.pg.urls import with_database

    server = EmbeddedServer(work / "server", bin_dir=find_bin_dir())
    admin = server.start().url("postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        for name in ("edu_v2", "edu"):
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(name)))
        conn.execute("CREATE DATABASE edu")
    settings = Settings(source_url=with_database(admin, "edu"),
                        target_url=with_database(admin, "edu_v2"), home=work / "home",
                        log_dir=work / "logs", backup_dir=work / "backups")
    api.generate(settings, scale=scale, profile=profile)
    api.schema_apply(settings)
    api.migrate(settings)
    assert settings.target_url is not None
    return server, settings.target_url


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.colocation", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    given = parser.add_mutually_exclusive_group(required=True)
    given.add_argument("--target-url", help="URL of a migrated edu_v2 (a superuser's)")
    given.add_argument("--scale", type=float,
                       help="generate and migrate at this scale on an embedded server")
    parser.add_argument("--profile", choices=("clean", "dirty"), default="clean",
                        help="the generated data's profile (--scale)")
    parser.add_argument("--work", type=Path, help="folder of the embedded server (--scale)")
    parser.add_argument("--ranges", type=int, default=4, help="key ranges of students")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs each, best kept")
    parser.add_argument("--json", action="store_true", help="JSON instead of tables")
    args = parser.parse_args(argv)
    server = None
    with tempfile.TemporaryDirectory(prefix="colocation-") as scratch:
        if args.target_url:
            url = args.target_url
        else:
            server, url = _embedded(args.scale, args.profile, args.work or Path(scratch))
        try:
            result = measure(url, args.ranges, args.repeats)
        finally:
            if server is not None:
                server.stop()
    if args.scale:
        result["scale"], result["profile"] = args.scale, args.profile
    print(json.dumps(result, indent=2) if args.json else markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
