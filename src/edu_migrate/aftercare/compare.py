"""`edu-migrate compare-queries`: the guide's "no performance degradation", measured.

The LMS's everyday queries (everyday_queries.toml, the benchmarks' five) and any pairs of old
and new SQL from a file of the user's run on edu and on edu_v2; each side's median, and which
indexes each plan uses. A queries file is TOML:

    [[query]]
    name = "students of a program"      # optional
    old = "SELECT … FROM students WHERE …"
    new = "SELECT … FROM students WHERE …"

Every query is checked with EXPLAIN on its side before any is timed; both sides are read in
read-only sessions, so nothing in a file can change either database.
"""

from __future__ import annotations

import statistics
import time
import tomllib
from dataclasses import asdict, dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import psycopg

from edu_migrate.errors import MigrationError, PreconditionFailed
from edu_migrate.pg.connect import connect
from edu_migrate.pg.urls import masked

WARM_UPS = 3


@dataclass(frozen=True)
class QueryPair:
    name: str
    old: str
    new: str
    # Which picked parameters the pair takes (everyday queries); None: a user's literal SQL.
    subject: str | None = None


@cache
def _everyday() -> dict[str, Any]:
    text = resources.files("edu_migrate.aftercare").joinpath(
        "everyday_queries.toml").read_text("utf-8")
    return tomllib.loads(text)


def everyday_queries() -> list[QueryPair]:
    return [QueryPair(q["name"], q["old"].strip(), q["new"].strip(), q["subject"])
            for q in _everyday()["query"]]


def load_queries_file(path: Path) -> list[QueryPair]:
    """The pairs of a user's TOML file; one line naming the fault when it is not one."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise MigrationError(f"cannot read the queries file {path}: {exc.strerror}",
                             "check the --queries path") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise MigrationError(f"the queries file {path} is not valid TOML: {exc}",
                             "write each pair as [[query]] with old = \"…\" and new = \"…\"") \
            from exc
    entries = data.get("query")
    if not isinstance(entries, list) or not entries:
        raise MigrationError(f"the queries file {path} has no [[query]] entries",
                             "write each pair as [[query]] with old = \"…\" and new = \"…\"")
    pairs = []
    for number, entry in enumerate(entries, 1):
        name = str(entry.get("name") or f"query {number}")
        old, new = entry.get("old"), entry.get("new")
        if not isinstance(old, str) or not isinstance(new, str) or not old.strip() \
                or not new.strip():
            raise MigrationError(f"the queries file {path}: {name!r} needs both old and new SQL",
                                 "give old = \"…\" (for edu) and new = \"…\" (for edu_v2)")
        pairs.append(QueryPair(name, old.strip(), new.strip()))
    return pairs


def _one(conn: psycopg.Connection, text: str, params: Any = None) -> tuple[Any, ...]:
    row = conn.execute(text.encode(), params).fetchone()
    if row is None:
        raise PreconditionFailed("the old database has no data for the everyday queries",
                                 "run compare-queries after the migration, on edu and edu_v2")
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
    """The parameters of every everyday query on each side, by subject."""
    pick = _everyday()["subjects"]
    student = _one(legacy, pick["student"])[0]
    teacher, teacher_year, teacher_semester = _one(legacy, pick["teacher_term"])
    edu_year, semester = _one(legacy, pick["term"])
    run = _one(legacy, pick["run"])[0]
    username = _one(legacy, pick["username"])[0]
    old = {"student": student, "teacher": teacher, "run": run, "username": username,
           "edu_year": edu_year, "semester": semester}
    new = {"student": _crosswalk(v2, "students", student, "students"),
           "teacher": _crosswalk(v2, "teachers", teacher, "staff_members"),
           "run": _crosswalk(v2, "courses", run, "course_offerings"),
           "username": username, "term": _v2_term(v2, edu_year, semester)}
    old_roster = dict(old, edu_year=teacher_year, semester=teacher_semester)
    new_roster = dict(new, term=_v2_term(v2, teacher_year, teacher_semester))
    return {"default": old, "roster": old_roster}, {"default": new, "roster": new_roster}


def time_query(conn: psycopg.Connection, text: str, params: Any, repeats: int
               ) -> dict[str, Any]:
    for _ in range(WARM_UPS):
        conn.execute(text.encode(), params).fetchall()
    samples = []
    rows = 0
    for _ in range(repeats):
        started = time.perf_counter()
        rows = len(conn.execute(text.encode(), params).fetchall())
        samples.append((time.perf_counter() - started) * 1000)
    return {"median_ms": statistics.median(samples), "min_ms": min(samples),
            "max_ms": max(samples), "rows": rows}


def _nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    found = [plan]
    for child in plan.get("Plans", []):
        found.extend(_nodes(child))
    return found


def plan_of(conn: psycopg.Connection, text: str, params: Any) -> list[dict[str, Any]]:
    row = conn.execute(b"EXPLAIN (FORMAT JSON) " + text.encode(), params).fetchone()
    assert row is not None
    return _nodes(row[0][0]["Plan"])


def plan_nodes(nodes: list[dict[str, Any]]) -> list[str]:
    """Each node as 'Node Type on relation', the benchmarks' form."""
    return [str(n["Node Type"]) + (f" on {n['Relation Name']}" if "Relation Name" in n else "")
            for n in nodes]


def index_use(nodes: list[dict[str, Any]]) -> dict[str, list[str]]:
    indexes = sorted({str(n["Index Name"]) for n in nodes if "Index Name" in n})
    scanned = sorted({str(n["Relation Name"]) for n in nodes if n["Node Type"] == "Seq Scan"})
    return {"indexes": indexes, "seq_scans": scanned}


def _shown_index_use(use: dict[str, list[str]]) -> str:
    lines = [f"index {name}" for name in use["indexes"]]
    if use["seq_scans"]:
        lines.append("seq scan " + ", ".join(use["seq_scans"]))
    return "\n".join(lines) or "no table read"


@dataclass
class QueryTiming:
    name: str
    old_ms: float
    new_ms: float
    old_rows: int
    new_rows: int
    old_plan: dict[str, list[str]]
    new_plan: dict[str, list[str]]
    slower: bool

    @property
    def ratio(self) -> float:
        return self.new_ms / self.old_ms if self.old_ms else float("inf")

    def shown_plans(self) -> tuple[str, str]:
        return _shown_index_use(self.old_plan), _shown_index_use(self.new_plan)


@dataclass
class CompareReport:
    old: str
    new: str
    repeats: int
    threshold_percent: float
    min_difference_ms: float
    timings: list[QueryTiming] = field(default_factory=list)

    @property
    def slower(self) -> list[QueryTiming]:
        return [t for t in self.timings if t.slower]

    def to_dict(self) -> dict[str, Any]:
        return {"old": self.old, "new": self.new, "repeats": self.repeats,
                "threshold_percent": self.threshold_percent,
                "min_difference_ms": self.min_difference_ms,
                "slower": [t.name for t in self.slower],
                "queries": [asdict(t) | {"ratio": round(t.ratio, 2)} for t in self.timings]}


def _require_parses(conn: psycopg.Connection, pair: QueryPair, side: str, text: str,
                    origin: str) -> None:
    try:
        conn.execute(b"EXPLAIN " + text.encode())
    except psycopg.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise MigrationError(f"{origin}: the {side} SQL of {pair.name!r} does not run on "
                             f"{'edu' if side == 'old' else 'edu_v2'}: {first}",
                             "fix it; every query is checked with EXPLAIN before any is timed"
                             ) from exc


def compare_queries(old_url: str, new_url: str, *, queries_file: Path | None, repeats: int,
                    threshold_percent: float, min_difference_ms: float) -> CompareReport:
    """Time the everyday queries and the file's pairs on both databases."""
    if repeats < 1:
        raise MigrationError("--repeats must be at least 1", "e.g. --repeats 25")
    if threshold_percent < 0 or min_difference_ms < 0:
        raise MigrationError("--threshold and --min-difference-ms cannot be negative",
                             "e.g. --threshold 25")
    own = load_queries_file(queries_file) if queries_file is not None else []
    report = CompareReport(masked(old_url), masked(new_url), repeats, threshold_percent,
                           min_difference_ms)
    with connect(old_url, purpose="source", autocommit=True, read_only=True) as old, \
            connect(new_url, purpose="target", autocommit=True, read_only=True) as new:
        for pair in own:
            _require_parses(old, pair, "old", pair.old, str(queries_file))
            _require_parses(new, pair, "new", pair.new, str(queries_file))
        try:
            old_sides, new_sides = subjects(old, new)
        except psycopg.errors.UndefinedTable as exc:
            raise PreconditionFailed(
                f"the everyday queries need edu's and edu_v2's tables: "
                f"{str(exc).strip().splitlines()[0]}",
                "point --source at edu and --target at the migrated edu_v2") from exc
        for pair in [*everyday_queries(), *own]:
            old_params = old_sides[pair.subject] if pair.subject else None
            new_params = new_sides[pair.subject] if pair.subject else None
            before = time_query(old, pair.old, old_params, repeats)
            after = time_query(new, pair.new, new_params, repeats)
            difference = after["median_ms"] - before["median_ms"]
            slower = (after["median_ms"] > before["median_ms"] * (1 + threshold_percent / 100)
                      and difference > min_difference_ms)
            report.timings.append(QueryTiming(
                pair.name, before["median_ms"], after["median_ms"], before["rows"],
                after["rows"], index_use(plan_of(old, pair.old, old_params)),
                index_use(plan_of(new, pair.new, new_params)), slower))
    return report
