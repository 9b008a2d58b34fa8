"""A sync killed anywhere leaves edu_v2 as the last sync left it, and the same command then gives
what a full migration of the changed source gives; a sync under live writes reads one snapshot."""

from __future__ import annotations

import signal
import threading
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime

import psycopg
import pytest

from edu_migrate import api
from edu_migrate.config import Settings
from tests.conftest import make_settings
from tests.faults.harness import (
    admin_of,
    cli,
    holding,
    result_digests,
    sessions_of,
    start_cli,
    url_args,
    wait_for,
    waiting_backend,
)
from tests.integration.helpers import differences, prepared, result_rows

AS_OF = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
CHANGES = (
    "UPDATE grades SET value = '7' WHERE id % 40 = 0",
    "DELETE FROM course_students WHERE id % 53 = 0",
    "UPDATE users SET username = upper(username) WHERE id % 9 = 0",
    "INSERT INTO grades SELECT id + 10000000, course_student_id, grade_type, '5', lesson_date, "
    "teacher_id, created_at FROM grades WHERE id % 97 = 0",
    "UPDATE students SET status = 'məzun' WHERE id % 11 = 0",
)


@pytest.fixture
def migrated(admin_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    pair = make_settings(admin_url, tmp_path_factory.mktemp("sync_faults"))
    settings = next(pair)
    try:
        prepared(settings, scale=0.01)
        api.migrate(settings, force=True, as_of=AS_OF)
        yield settings
    finally:
        pair.close()


def _change_source(settings: Settings) -> None:
    with psycopg.connect(str(settings.source_url)) as conn:
        for statement in CHANGES:
            conn.execute(statement.encode())


def _result(settings: Settings) -> dict[str, Counter[str]]:
    """What sync must get right: every business table, the crosswalk, rejected_rows (but the time
    each row was set aside, which is bookkeeping) and repairs."""
    return result_rows(str(settings.target_url))


def _full_migration(settings: Settings) -> dict[str, Counter[str]]:
    """What a fresh full migration of the source, as it is now, at AS_OF gives (same target,
    same id secret)."""
    api.rollback(settings, None)
    api.migrate(settings, force=True, as_of=AS_OF)
    return _result(settings)


# Where the sync is held: while it derives marks again (it waits to delete from grades), and
# one statement before its commit (it waits to write its run_log row).
HOLD_POINTS = {"mid-derivation": ("grades", "SHARE"), "before-commit": ("migration.run_log",
                                                                         "SHARE")}


@pytest.mark.parametrize("point", sorted(HOLD_POINTS))
def test_sigkill_mid_sync_then_rerun_equals_full(migrated: Settings, point: str) -> None:
    settings = migrated
    before = result_digests(str(settings.target_url))
    _change_source(settings)
    admin = admin_of(settings)
    table, mode = HOLD_POINTS[point]
    with holding(str(settings.target_url), table, mode):
        child = start_cli(settings, "sync", "--as-of", AS_OF.isoformat(), *url_args(settings))
        wait_for(lambda: waiting_backend(admin, child.pid), f"the sync held at {point}")
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
        wait_for(lambda: sessions_of(admin, child.pid) == 0, "the orphaned sessions to end",
                 timeout=15)
    assert result_digests(str(settings.target_url)) == before, "a killed sync left rows behind"
    again = cli(settings, "sync", "--as-of", AS_OF.isoformat(), *url_args(settings))
    assert again.returncode == 0, again.stderr
    assert result_digests(str(settings.target_url)) != before, "the sync applied nothing"
    synced = _result(settings)
    assert not differences(_full_migration(settings), synced)


def test_sync_under_live_writes_reads_one_snapshot(migrated: Settings) -> None:
    """A writer changes a user's e-mail and a mark's value to the same token in one transaction,
    again and again, while syncs run: each sync must see both halves of a write or neither."""
    settings = migrated
    source = str(settings.source_url)
    with psycopg.connect(source) as conn:
        user_id, grade_id = conn.execute(
            "SELECT (SELECT min(id) FROM users WHERE is_active = 1 AND user_type = 1), "
            "(SELECT min(g.id) FROM grades g WHERE g.grade_type = 2)").fetchone() or (None, None)
    stop = threading.Event()
    written = [0]

    def write() -> None:
        with psycopg.connect(source, autocommit=True) as conn:
            token = 0
            while not stop.is_set() and token < 5000:
                token += 1
                with conn.transaction():
                    conn.execute("UPDATE users SET email = %s WHERE id = %s",
                                 [f"w{token % 10}@live.az", user_id])
                    conn.execute("UPDATE grades SET value = %s WHERE id = %s",
                                 [str(token % 10), grade_id])
                written[0] = token

    writer = threading.Thread(target=write)
    writer.start()
    try:
        wait_for(lambda: written[0], "the writer's first write")
        for _ in range(3):
            api.sync(settings)
            with psycopg.connect(str(settings.target_url)) as conn:
                email, value = conn.execute(
                    "SELECT (SELECT email FROM stage.users WHERE id = %s), "
                    "(SELECT value FROM stage.grades WHERE id = %s)",
                    [user_id, grade_id]).fetchone() or (None, None)
            assert email == f"w{value}@live.az", "a sync mixed two states of the source"
    finally:
        stop.set()
        writer.join(timeout=60)
    assert written[0] > 0
    api.sync(settings, as_of=AS_OF)
    api.require_valid(api.validate(settings))
    synced = _result(settings)
    assert not differences(_full_migration(settings), synced)
