"""Detection off the sync's path: the full run builds the mirror's indexes and buckets, and a
sync skips the change scans when the source committed nothing since the mirror's snapshot.

The source here is a server of its own (not the target's): transaction ids are of a whole
cluster, so on a shared one the target's own commits are commits the source "saw", and no sync
would ever skip. It runs with autovacuum off (an automatic ANALYZE commits too, at a moment no
test chooses) and with prepared transactions allowed.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from edu_migrate import api
from edu_migrate.config import Settings
from edu_migrate.pg.embedded import EmbeddedServer, find_bin_dir
from edu_migrate.pg.urls import with_database
from edu_migrate.phases.staging import LEGACY_COLUMNS
from edu_migrate.phases.sync import SyncResult
from tests.integration.helpers import admin_sql, clone_database, drop_databases

AS_OF = datetime(2026, 1, 15, 9, 0, tzinfo=UTC)
# The indexes a sync's look-ups need (phases/sql/sync.sql), named as the full run names them.
EXPECTED_INDEXES = {
    *(f"{table}_id_idx" for table in LEGACY_COLUMNS),
    "course_students_student_id_course_id_idx", "course_students_course_id_idx",
    "grades_course_student_id_idx", "grades_teacher_id_idx",
    *(f"buckets_{table}_bucket_idx" for table in LEGACY_COLUMNS),
}


@dataclass(frozen=True)
class Pair:
    source_admin: str
    target_admin: str
    source: str
    target: str


@pytest.fixture(scope="module")
def source_admin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A server of its own for the source, with prepared transactions and no autovacuum."""
    server = EmbeddedServer(tmp_path_factory.mktemp("skip_source"), bin_dir=find_bin_dir())
    url = server.start().url("postgres")
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("ALTER SYSTEM SET max_prepared_transactions = 4")
            conn.execute("ALTER SYSTEM SET autovacuum = off")
        server.stop()
        url = server.start().url("postgres")
        with psycopg.connect(url) as conn:
            assert conn.execute("SHOW max_prepared_transactions").fetchone() == ("4",)
        yield url
    finally:
        server.stop()


@pytest.fixture(scope="module")
def migrated(source_admin: str, admin_url: str,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    suffix = uuid.uuid4().hex[:6]
    pair = Pair(source_admin, admin_url, f"skip_src_{suffix}", f"skip_dst_{suffix}")
    admin_sql(source_admin, sql.SQL("CREATE DATABASE {}").format(sql.Identifier(pair.source)))
    try:
        settings = _settings(pair, pair.source, pair.target, tmp_path_factory.mktemp("skip"))
        api.generate(settings, scale=0.005, profile="clean", seed=5)
        api.schema_apply(settings)
        api.migrate(settings, force=True, as_of=AS_OF)
        yield pair
    finally:
        drop_databases(admin_url, pair.target)
        drop_databases(source_admin, pair.source)


def _settings(pair: Pair, source: str, target: str, tmp: Path) -> Settings:
    return Settings(source_url=with_database(pair.source_admin, source),
                    target_url=with_database(pair.target_admin, target), home=tmp / "home",
                    log_dir=tmp / "logs", backup_dir=tmp / "backups", batch_size=5_000)


@pytest.fixture
def clone(migrated: Pair, tmp_path: Path) -> Iterator[Settings]:
    """Copies of the migrated source and target, the target reading the copy of the source,
    synced once (the copy of the source is a commit on its server)."""
    source = clone_database(migrated.source_admin, migrated.source)
    target = clone_database(migrated.target_admin, migrated.target)
    settings = _settings(migrated, source, target, tmp_path)
    try:
        with psycopg.connect(settings.target_url) as conn:
            conn.execute("UPDATE migration.state SET source_database = %s", [source])
        api.sync(settings, as_of=AS_OF)
        yield settings
    finally:
        with psycopg.connect(settings.source_url, autocommit=True) as conn:
            for (gid,) in conn.execute("SELECT gid FROM pg_prepared_xacts "
                                       "WHERE database = current_database()").fetchall():
                conn.execute(sql.SQL("ROLLBACK PREPARED {}").format(sql.Literal(gid)))
        drop_databases(migrated.target_admin, target)
        drop_databases(migrated.source_admin, source)


def _mirror_objects(url: str) -> tuple[set[str], dict[str, bool]]:
    """The indexes of the stage schema, and per legacy table whether its buckets hold the
    mirror's rows (their counts add up to the stage table's)."""
    with psycopg.connect(url) as conn:
        indexes = {str(r[0]) for r in conn.execute(
            "SELECT indexname FROM pg_indexes WHERE schemaname = 'stage'")}
        counted = {}
        for table in LEGACY_COLUMNS:
            exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL",
                                  [f"stage.buckets_{table}"]).fetchone()
            if not (exists and exists[0]):
                counted[table] = False
                continue
            row = conn.execute(sql.SQL(
                "SELECT (SELECT coalesce(sum(rows), 0) FROM {}) = (SELECT count(*) FROM {})"
            ).format(sql.Identifier("stage", f"buckets_{table}"),
                     sql.Identifier("stage", table))).fetchone()
            counted[table] = bool(row and row[0])
    return indexes, counted


def test_the_full_run_builds_the_mirror_indexes_and_buckets(
        migrated: Pair, tmp_path: Path) -> None:
    """Before any sync: a sync's look-ups are indexed and the buckets counted. A phase run
    again stages its tables anew (dropping their indexes with them) and builds them again."""
    settings = _settings(migrated, migrated.source, migrated.target, tmp_path)
    indexes, counted = _mirror_objects(settings.target_url)
    assert not EXPECTED_INDEXES - indexes, EXPECTED_INDEXES - indexes
    assert all(counted.values()), counted
    target = clone_database(migrated.target_admin, migrated.target)
    try:
        again = _settings(migrated, migrated.source, target, tmp_path)
        api.rollback(again, phase=5)
        api.migrate(again, phases=[5], force=True, as_of=AS_OF)
        indexes, counted = _mirror_objects(again.target_url)
        assert not EXPECTED_INDEXES - indexes, EXPECTED_INDEXES - indexes
        assert all(counted.values()), counted
    finally:
        drop_databases(migrated.target_admin, target)


def test_a_sync_builds_the_mirror_indexes_a_target_lacks(clone: Settings) -> None:
    """A mirror staged by an older version (or again after a crash) lacks them: a sync builds
    what is missing."""
    with psycopg.connect(clone.target_url) as conn:
        for name in ("grades_teacher_id_idx", "course_students_course_id_idx"):
            conn.execute(sql.SQL("DROP INDEX stage.{}").format(sql.Identifier(name)))
        conn.execute("DROP TABLE stage.buckets_grades")
    api.sync(clone, as_of=AS_OF)
    indexes, counted = _mirror_objects(clone.target_url)
    assert not EXPECTED_INDEXES - indexes, EXPECTED_INDEXES - indexes
    assert all(counted.values()), counted


def _methods(result: SyncResult) -> set[str]:
    return {changes.method for changes in result.changes.values()}


def _recorded_methods(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT changed_rows FROM migration.sync_runs "
                           "ORDER BY id DESC LIMIT 1").fetchone()
    assert row is not None
    return {str(changes["method"]) for changes in row[0].values()}


def _totals(result: SyncResult) -> dict[str, tuple[int, int, int]]:
    return {t: (c.inserted, c.updated, c.deleted) for t, c in result.changes.items() if c.total}


def _mark(settings: Settings, mark: int) -> str | None:
    """The mirror's value of a mark."""
    with psycopg.connect(settings.target_url) as conn:
        row = conn.execute("SELECT value FROM stage.grades WHERE id = %s", [mark]).fetchone()
    return None if row is None else str(row[0])


def _some_marks(settings: Settings, n: int) -> list[int]:
    with psycopg.connect(settings.source_url) as conn:
        return [int(r[0]) for r in conn.execute(
            "SELECT id FROM grades WHERE id > 0 ORDER BY id LIMIT %s", [n])]


def test_a_sync_of_a_quiet_source_scans_nothing_and_a_write_is_still_found(
        clone: Settings) -> None:
    (mark,) = _some_marks(clone, 1)
    quiet = api.sync(clone, as_of=AS_OF)
    assert _methods(quiet) == {"unchanged"} and not _totals(quiet)
    assert _recorded_methods(clone.target_url) == {"unchanged"}
    with psycopg.connect(clone.source_url) as conn:
        conn.execute("UPDATE grades SET value = 'z9' WHERE id = %s", [mark])
    found = api.sync(clone, as_of=AS_OF)
    # A commit: every table is scanned (by its horizon), and only the mark differs.
    assert _methods(found) == {"horizon"}
    assert _totals(found) == {"grades": (0, 1, 0)}
    assert _mark(clone, mark) == "z9"
    # The skipped tables' horizons moved with the rest: quiet again, nothing found again.
    again = api.sync(clone, as_of=AS_OF)
    assert _methods(again) == {"unchanged"} and not _totals(again)


def test_a_commit_in_another_database_of_the_source_cluster_makes_the_sync_scan(
        clone: Settings, migrated: Pair) -> None:
    """Transaction ids are the cluster's: a commit elsewhere cannot be told from one in the
    source, so the sync scans, and finds nothing."""
    with psycopg.connect(migrated.source_admin, autocommit=True) as conn:
        conn.execute("SELECT pg_current_xact_id()")  # a transaction id, committed
    result = api.sync(clone, as_of=AS_OF)
    assert _methods(result) == {"horizon"} and not _totals(result)


def test_prepared_and_open_transactions_are_found_when_they_commit(clone: Settings) -> None:
    """A transaction prepared before a sync's snapshot (running in it), one prepared after the
    sync before, and one open with its write in a savepoint: none is committed, so a sync
    skips and finds nothing; each one's rows are found by the first sync after its commit."""
    early, late, nested = _some_marks(clone, 3)

    def prepare(mark: int, gid: str) -> None:
        with psycopg.connect(clone.source_url) as conn:
            conn.execute("UPDATE grades SET value = %s WHERE id = %s", [gid, mark])
            conn.execute(sql.SQL("PREPARE TRANSACTION {}").format(sql.Literal(gid)))

    def commit_prepared(gid: str) -> None:
        with psycopg.connect(clone.source_url, autocommit=True) as conn:
            conn.execute(sql.SQL("COMMIT PREPARED {}").format(sql.Literal(gid)))

    prepare(early, "p_early")
    opened = psycopg.connect(clone.source_url)
    try:
        opened.execute("SAVEPOINT s")
        opened.execute("UPDATE grades SET value = 'nested' WHERE id = %s", [nested])
        opened.execute("RELEASE SAVEPOINT s")
        # Neither is committed: nothing to scan for (the savepoint's id is past the last
        # snapshot's and listed nowhere; it is 'in progress' with its parent).
        quiet = api.sync(clone, as_of=AS_OF)
        assert _methods(quiet) == {"unchanged"} and not _totals(quiet)
        prepare(late, "p_late")
        quiet = api.sync(clone, as_of=AS_OF)
        assert _methods(quiet) == {"unchanged"} and not _totals(quiet)

        # Each is found by the first sync after its commit: p_early and the open one were
        # running in the last two syncs' snapshots, p_late in the last one's.
        commit_prepared("p_early")
        found = api.sync(clone, as_of=AS_OF)
        assert _totals(found) == {"grades": (0, 1, 0)}
        assert _mark(clone, early) == "p_early"
        opened.commit()
    finally:
        opened.close()
    found = api.sync(clone, as_of=AS_OF)
    assert _totals(found) == {"grades": (0, 1, 0)}
    assert _mark(clone, nested) == "nested"
    commit_prepared("p_late")
    found = api.sync(clone, as_of=AS_OF)
    assert _totals(found) == {"grades": (0, 1, 0)}
    assert _mark(clone, late) == "p_late"
    quiet = api.sync(clone, as_of=AS_OF)
    assert _methods(quiet) == {"unchanged"} and not _totals(quiet)


def test_table_statistics_cannot_tell_that_nothing_was_written(
        source_admin: str) -> None:
    """Why the skip reads the commit log and not pg_stat_user_tables: its counters count a
    rolled-back insert, and pg_stat_reset() takes them back to zero while the rows stay. The
    same counts stand for different rows."""
    name = f"stats_{uuid.uuid4().hex[:6]}"
    admin_sql(source_admin, sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = with_database(source_admin, name)
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE TABLE t (id int)")

            def inserted() -> int:
                conn.execute("SELECT pg_stat_force_next_flush()")
                conn.execute("SELECT 1")  # idle in between: the counts are flushed
                conn.execute("SELECT pg_stat_clear_snapshot()")
                row = conn.execute("SELECT n_tup_ins FROM pg_stat_user_tables "
                                   "WHERE relname = 't'").fetchone()
                return int(row[0]) if row else 0

            with conn.transaction(force_rollback=True):
                conn.execute("INSERT INTO t SELECT generate_series(1, 5)")
            deadline = time.monotonic() + 5
            while inserted() != 5 and time.monotonic() < deadline:
                time.sleep(0.1)
            assert inserted() == 5
            assert conn.execute("SELECT count(*) FROM t").fetchone() == (0,)
            conn.execute("INSERT INTO t SELECT generate_series(1, 3)")
            while inserted() != 8 and time.monotonic() < deadline + 5:
                time.sleep(0.1)
            conn.execute("SELECT pg_stat_reset()")
            assert inserted() == 0
            assert conn.execute("SELECT count(*) FROM t").fetchone() == (3,)
    finally:
        drop_databases(source_admin, name)
