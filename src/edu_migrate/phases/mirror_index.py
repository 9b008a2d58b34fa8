"""The mirror's indexes and its counts per bucket of ids: what a sync looks rows up by.

A sync finds a table's changes and its scope by id, by enrollment and by teacher
(phases/changes.py, phases/sql/sync.sql), and tells deletions from stage.buckets_<table>, the
mirror's row count per bucket of 64 ids. Both are built once a table is staged, by the full run
(phases/staging.py; the marks in a session of their own while phase 5 derives, runner.py), so
that the first sync finds them; a sync builds whatever is missing (a mirror staged by an older
version, or emptied by a crash of the target and staged again), with the same statements.
Staging drops a stage table with its indexes and its buckets, and builds them again after.
"""

from __future__ import annotations

import threading
import time

import psycopg
from psycopg import sql

from edu_migrate.mapping import LEGACY_COLUMNS
from edu_migrate.pg.connect import connect
from edu_migrate.phases.staging import STAGE_SCHEMA
from edu_migrate.runlog import Reporter

# A bucket is 2^6 = 64 consecutive ids: a deletion costs reading the source's ids of its bucket;
# the source sends one count per bucket (50,000 for 3.2 million marks).
BUCKET_BITS = 6

# The scope's look-ups (phases/sql/sync.sql) and the detection's joins, per staged table.
MIRROR_INDEXES: dict[str, tuple[tuple[str, ...], ...]] = {
    **{table: (("id",),) for table in LEGACY_COLUMNS},
    "course_students": (("id",), ("student_id", "course_id"), ("course_id",)),
    "grades": (("id",), ("course_student_id",), ("teacher_id",)),
}


def buckets_table(table: str) -> sql.Identifier:
    """stage.buckets_<table>: the mirror's row count per bucket of ids."""
    return sql.Identifier(STAGE_SCHEMA, f"buckets_{table}")


def index_statements(table: str) -> list[tuple[str, sql.Composed]]:
    """(step name, statement) of `table`'s mirror indexes; IF NOT EXISTS, so that running them
    again costs nothing."""
    statements = []
    for columns in MIRROR_INDEXES.get(table, ()):
        name = f"{table}_{'_'.join(columns)}_idx"
        statements.append((f"index mirror {name}", sql.SQL(
            "CREATE INDEX IF NOT EXISTS {} ON {}.{} ({})").format(
                sql.Identifier(name), sql.Identifier(STAGE_SCHEMA), sql.Identifier(table),
                sql.SQL(", ").join(map(sql.Identifier, columns)))))
    return statements


def bucket_statements(table: str) -> list[tuple[str, sql.Composed]]:
    """(step name, statement) counting stage.buckets_<table> from the mirror, unless it exists
    (each sync then keeps it up to date; a comparison drops it, to be counted again)."""
    return [
        (f"count mirror buckets_{table}", sql.SQL(
            "CREATE UNLOGGED TABLE IF NOT EXISTS {buckets} AS "
            "SELECT id >> {bits} AS bucket, count(*) AS rows FROM {stage} GROUP BY 1").format(
                buckets=buckets_table(table), bits=sql.Literal(BUCKET_BITS),
                stage=sql.Identifier(STAGE_SCHEMA, table))),
        (f"index mirror buckets_{table}_bucket_idx", sql.SQL(
            "CREATE UNIQUE INDEX IF NOT EXISTS {} ON {} (bucket)").format(
                sql.Identifier(f"buckets_{table}_bucket_idx"), buckets_table(table))),
    ]


def mirror_statements(table: str) -> list[tuple[str, sql.Composed]]:
    """Everything a sync needs built on stage.<table>: run by the full run, by a sync, and
    printed by `migrate --sql`."""
    return index_statements(table) + bucket_statements(table)


def count_buckets(conn: psycopg.Connection, table: str) -> None:
    """stage.buckets_<table>, in the caller's transaction, where missing."""
    for _, statement in bucket_statements(table):
        conn.execute(statement)


def index_mirror(conn: psycopg.Connection, tables: tuple[str, ...] | list[str],
                 reporter: Reporter) -> None:
    """Build what is missing of the mirror's indexes and buckets for `tables`, in the caller's
    transaction (the caller commits)."""
    for table in tables:
        for name, statement in mirror_statements(table):
            started = time.perf_counter()
            conn.execute(statement)
            reporter.step(name, time.perf_counter() - started, 0)


def index_mirror_now(target_url: str, tables: tuple[str, ...] | list[str],
                     reporter: Reporter) -> None:
    """index_mirror in a session of its own, committed."""
    with connect(target_url, purpose="target") as conn:
        index_mirror(conn, tables, reporter)
        conn.commit()


class MirrorIndexer:
    """index_mirror_now in a thread of its own: the marks' indexes are built while phase 5
    derives (its transaction only reads the stage tables, and CREATE INDEX lets readers read).
    A failure is kept and, once the phase is done, reported as a warning (runner.run_phase):
    the phase's result stands, and the next sync builds what is missing."""

    def __init__(self, target_url: str, tables: tuple[str, ...], reporter: Reporter) -> None:
        self._args = (target_url, tables, reporter)
        self.failure: BaseException | None = None
        self.seconds = 0.0
        self._thread = threading.Thread(target=self._run, name="mirror-index", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        started = time.perf_counter()
        try:
            index_mirror_now(*self._args)
        except BaseException as exc:  # kept for the run to raise, never dropped
            self.failure = exc
        self.seconds = time.perf_counter() - started

    def join(self) -> BaseException | None:
        """Wait; the failure, if any."""
        self._thread.join()
        return self.failure
