"""Phase 5's marks ahead of its transaction: staged, and the work each mark owes to itself alone
done, in sessions of their own, so that the second core works while phases 1–4 run.

The per-mark work (phase5_marks.sql's `parse_grades`: derived id, parsed score, absence, Baku
times, the reject reasons a mark decides alone) depends on nothing but the mark, the id secret
and the as-of time. A full run computes it over ranges of ids in parallel sessions (each session's
`scoped_grades` is its range) into the UNLOGGED work table stage.parsed_grades, committed before
phase 5's transaction, which joins it and drops it at its commit. Only the process that staged
and parsed trusts the work table: any other run stages and parses again, and drops it first. A
sync computes the same query inside its own transaction, over its scope.
"""

from __future__ import annotations

import logging
import threading
import time

import psycopg
from psycopg import sql

from edu_migrate.errors import MigrationError
from edu_migrate.pg.connect import connect
from edu_migrate.phases import sqlfile
from edu_migrate.phases.session import set_session
from edu_migrate.phases.staging import STAGE_SCHEMA, SourceSnapshot, stage_tables
from edu_migrate.runlog import Reporter

PARSE_SQL = "phase5_marks.sql"
WORK_TABLE = sql.Identifier(STAGE_SCHEMA, "parsed_grades")
_MARKS = sql.Identifier(STAGE_SCHEMA, "grades")
log = logging.getLogger("edu_migrate")


def _parse_query() -> sql.SQL:
    (statement,) = [s for s in sqlfile.load(PARSE_SQL) if s.name == "parse_grades"]
    return sql.SQL(statement.text)


def scope_marks_statement(low: int | None = None, high: int | None = None) -> sql.Composed:
    """This session's scoped_grades: the staged marks with ids in [low, high), or all of them;
    also printed by `migrate --sql`."""
    where = sql.SQL("") if low is None or high is None else sql.SQL(
        " WHERE s.id >= {} AND s.id < {}").format(sql.Literal(low), sql.Literal(high))
    return sql.SQL("CREATE OR REPLACE TEMP VIEW scoped_grades AS SELECT s.* FROM {} s{}").format(
        _MARKS, where)


def _scope_marks(conn: psycopg.Connection, low: int | None, high: int | None) -> None:
    conn.execute(scope_marks_statement(low, high))


def parse_in_transaction(conn: psycopg.Connection, reporter: Reporter) -> int:
    """The work table anew, in the caller's transaction, over its scoped_grades (a sync)."""
    started = time.perf_counter()
    conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(WORK_TABLE))
    cursor = conn.execute(sql.Composed([
        sql.SQL("CREATE UNLOGGED TABLE {} AS\n").format(WORK_TABLE), _parse_query()]))
    rows = max(cursor.rowcount, 0)
    conn.execute(sql.SQL("ANALYZE {}").format(WORK_TABLE))
    reporter.step("parse_grades", time.perf_counter() - started, rows)
    return rows


def parse_in_ranges(target_url: str, *, workers: int, reporter: Reporter) -> int:
    """The work table anew over every staged mark, filled by `workers` sessions, one range of
    ids each, and committed: before phase 5's transaction."""
    started = time.perf_counter()
    with connect(target_url, purpose="target") as conn:
        set_session(conn)
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(WORK_TABLE))
        _scope_marks(conn, None, None)
        conn.execute(sql.Composed([
            sql.SQL("CREATE UNLOGGED TABLE {} AS\n").format(WORK_TABLE), _parse_query(),
            sql.SQL("\nWITH NO DATA")]))
        bounds = conn.execute(sql.SQL("SELECT min(id), max(id) FROM {}").format(
            _MARKS)).fetchone()
        conn.commit()
    assert bounds is not None
    if bounds[0] is None:
        return 0
    low, high = int(bounds[0]), int(bounds[1]) + 1
    width = -(-(high - low) // workers)
    ranges = [(start, min(start + width, high)) for start in range(low, high, width)]
    parsed = [0] * len(ranges)
    failures: list[BaseException] = []

    def work(n: int) -> None:
        try:
            with connect(target_url, purpose="target") as session:
                set_session(session)
                _scope_marks(session, *ranges[n])
                cursor = session.execute(sql.Composed([
                    sql.SQL("INSERT INTO {}\n").format(WORK_TABLE), _parse_query()]))
                parsed[n] = max(cursor.rowcount, 0)
                session.commit()
        except BaseException as exc:  # a worker's failure must stop the run, not vanish
            failures.append(exc)

    threads = [threading.Thread(target=work, args=(n,), name=f"parse-grades-{n}")
               for n in range(len(ranges))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise failures[0]
    with connect(target_url, purpose="target", autocommit=True) as conn:
        conn.execute(sql.SQL("ANALYZE {}").format(WORK_TABLE))
    reporter.step(f"parse_grades ({len(ranges)} sessions)", time.perf_counter() - started,
                  sum(parsed))
    return sum(parsed)


def prepare_marks(snapshot: SourceSnapshot, target_url: str, tables: tuple[str, ...], *,
                  batch_size: int, workers: int, reporter: Reporter,
                  source: psycopg.Connection | None = None) -> None:
    """Stage phase 5's legacy tables and parse the marks, each step committed on its own."""
    stage_tables(snapshot, target_url, tables, batch_size=batch_size, workers=workers,
                 reporter=reporter, source=source)
    parse_in_ranges(target_url, workers=workers, reporter=reporter)


def _first_line(exc: BaseException) -> str:
    if isinstance(exc, MigrationError):
        return exc.one_line()
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class MarksAhead:
    """prepare_marks in a thread of its own, reading the run's source snapshot through a session
    of its own, while phases 1–4 run. Phase 5 waits for it; its failure is the run's."""

    def __init__(self, snapshot: SourceSnapshot, target_url: str, tables: tuple[str, ...], *,
                 batch_size: int, workers: int) -> None:
        self.snapshot = snapshot
        self._args = (target_url, tables, batch_size, workers)
        self._failure: BaseException | None = None
        self._reported = False
        self._started = time.perf_counter()
        self.seconds = 0.0
        # Before any other session stages: two that create a schema at once collide.
        with connect(target_url, purpose="target", autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(
                sql.Identifier(STAGE_SCHEMA)))
        self._thread = threading.Thread(target=self._run, name="marks-ahead", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        target_url, tables, batch_size, workers = self._args
        try:
            with self.snapshot.reader() as source:
                # Lines and progress of a background thread go to the run's log only.
                prepare_marks(self.snapshot, target_url, tables, batch_size=batch_size,
                              workers=workers, reporter=Reporter(), source=source)
        except BaseException as exc:  # kept for the run to raise, never dropped
            self._failure = exc
        self.seconds = time.perf_counter() - self._started

    def result(self) -> None:
        """Wait until the marks are staged and parsed; raise the background's failure."""
        self._thread.join()
        if self._failure is not None:
            self._reported = True
            raise MigrationError(
                f"staging and parsing the marks in the background failed: "
                f"{_first_line(self._failure)}",
                "fix the cause and run the same command again; it stages them anew"
            ) from self._failure

    def finish(self) -> None:
        """At the end of the run, whatever happened: wait, and log a failure that phase 5 did
        not raise because the run had failed before it (the run's error stays its one line)."""
        self._thread.join()
        if self._failure is not None and not self._reported:
            self._reported = True
            log.warning("staging and parsing the marks in the background failed too: %s",
                        _first_line(self._failure))
