"""The cutover's leaks: writes that reach the frozen source past the last sync.

`default_transaction_read_only = on` is only a default. A session can turn it off (or begin
READ WRITE), and a transaction prepared before the freeze has no session to wait for: COMMIT
PREPARED is allowed in a read-only transaction. Validation compares what the last sync's snapshot
read, so it cannot see such a write. Each test wraps one of the window's steps (api.cutover_steps)
to write at a precise moment, and requires that the cutover either carries the write into edu_v2
or fails, unfreezes the source and names what leaked.

Prepared transactions need `max_prepared_transactions > 0`, which the embedded server's settings
leave at 0: the module runs on EDU_TEST_ADMIN_URL's server when that allows them, and otherwise
starts a server of its own that does.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from edu_migrate import api
from edu_migrate.checks.validation import SourceFacts
from edu_migrate.config import Settings
from edu_migrate.errors import MigrationError
from edu_migrate.pg.embedded import EmbeddedServer, find_bin_dir
from edu_migrate.pg.urls import with_database
from edu_migrate.runlog import Reporter
from edu_migrate.switchover import Steps, cutover

MIGRATED_AT = datetime(2026, 1, 15, 9, 0, tzinfo=UTC)
PREPARED = "edu_leak_test"


def _prepared_allowed(url: str) -> bool:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT current_setting('max_prepared_transactions')::int").fetchone()
    return bool(row and row[0] > 0)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A superuser URL of a server that allows prepared transactions."""
    given = os.environ.get("EDU_TEST_ADMIN_URL")
    if given and _prepared_allowed(given):
        yield given
        return
    home = tmp_path_factory.mktemp("prepared")
    embedded = EmbeddedServer(home, bin_dir=find_bin_dir())
    url = embedded.start().url("postgres")
    try:
        # A server setting: it takes a restart.
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("ALTER SYSTEM SET max_prepared_transactions = 4")
        embedded.stop()
        url = embedded.start().url("postgres")
        assert _prepared_allowed(url)
        yield url
    finally:
        embedded.stop()


def _admin(url: str, statement: sql.Composable) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(statement)


def _drop(url: str, *names: str) -> None:
    for name in names:
        _admin(url, sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
            sql.Identifier(name)))


def _settings(url: str, source: str, target: str, tmp: Path) -> Settings:
    return Settings(source_url=with_database(url, source), target_url=with_database(url, target),
                    home=tmp / "home", log_dir=tmp / "logs", backup_dir=tmp / "backups",
                    batch_size=5_000)


@pytest.fixture(scope="module")
def migrated(server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """A small legacy database and its migration, cloned by each test."""
    suffix = uuid.uuid4().hex[:6]
    source, target = f"leak_src_{suffix}", f"leak_dst_{suffix}"
    _admin(server, sql.SQL("CREATE DATABASE {}").format(sql.Identifier(source)))
    try:
        settings = _settings(server, source, target, tmp_path_factory.mktemp("leaks"))
        api.generate(settings, scale=0.005, profile="clean", seed=5)
        api.schema_apply(settings)
        api.migrate(settings, force=True, as_of=MIGRATED_AT)
        yield source, target
    finally:
        _drop(server, target, source)


@pytest.fixture
def pair(server: str, migrated: tuple[str, str], tmp_path: Path) -> Iterator[Settings]:
    """Clones of the migrated pair, the target pointed at its cloned source."""
    suffix = uuid.uuid4().hex[:8]
    source, target = f"{migrated[0]}_{suffix}", f"{migrated[1]}_{suffix}"
    for name, template in ((source, migrated[0]), (target, migrated[1])):
        # FILE_COPY copies the UNLOGGED stage tables too: the clone keeps the mirror.
        _admin(server, sql.SQL("CREATE DATABASE {} TEMPLATE {} STRATEGY FILE_COPY").format(
            sql.Identifier(name), sql.Identifier(template)))
    settings = _settings(server, source, target, tmp_path)
    with psycopg.connect(settings.target_url) as conn:
        conn.execute("UPDATE migration.state SET source_database = %s", [source])
    try:
        yield settings
    finally:
        # A prepared transaction outlives its session and would keep the database in use.
        with psycopg.connect(settings.source_url, autocommit=True) as conn:
            if conn.execute("SELECT 1 FROM pg_prepared_xacts WHERE gid = %s",
                            [PREPARED]).fetchone():
                conn.execute(sql.SQL("ROLLBACK PREPARED {}").format(sql.Literal(PREPARED)))
        _drop(server, target, source)


def _frozen(url: str) -> bool:
    with psycopg.connect(url) as conn:
        row = conn.execute("SHOW default_transaction_read_only").fetchone()
    return row is not None and row[0] == "on"


def _first_mark(settings: Settings) -> tuple[int, str]:
    """A migrated legacy mark's id, and the legacy value of another migrated mark of the same
    kind that came out as a different score (so that the change is visible in edu_v2)."""
    with psycopg.connect(settings.target_url) as conn:
        scores = dict(conn.execute(
            "SELECT c.source_id, g.score FROM migration.crosswalk_grades c JOIN grades g "
            "ON g.id = c.target_id WHERE g.score IS NOT NULL").fetchall())
    with psycopg.connect(settings.source_url) as conn:
        marks = conn.execute("SELECT id, grade_type, value FROM grades WHERE id = ANY(%s) "
                             "ORDER BY id", [list(scores)]).fetchall()
    first = marks[0]
    value = next(v for i, kind, v in marks if kind == first[1] and scores[i] != scores[first[0]])
    return int(first[0]), str(value)


def _migrated_mark(settings: Settings, legacy_id: int) -> str | None:
    """The mark edu_v2 holds for the legacy mark `legacy_id`, as text."""
    with psycopg.connect(settings.target_url) as conn:
        row = conn.execute(
            "SELECT g.score::text FROM grades g JOIN migration.crosswalk c "
            "ON c.target_id = g.id WHERE c.source_table = 'grades' AND c.source_id = %s",
            [legacy_id]).fetchone()
    return None if row is None else str(row[0])


def _write_past_the_freeze(settings: Settings, statement: str, params: list[object]) -> None:
    """What an application does to write to the frozen source: a session of its own, opened
    after the freeze, that turns the default off."""
    with psycopg.connect(settings.source_url, autocommit=True) as conn:
        conn.execute("SET default_transaction_read_only = off")
        conn.execute(statement, params)


def _after_validation(steps: Steps, act: Callable[[], None]) -> Steps:
    """The window's steps, with `act` run once validation has passed: the last moment before the
    cutover would report success."""
    def validate(facts: SourceFacts) -> None:
        steps.validate(facts)
        act()
    return replace(steps, validate=validate)


def _cutover(settings: Settings, steps: Steps, *, writer_timeout: float = 30.0,
             terminate_writers: bool = False) -> None:
    cutover(str(settings.source_url), str(settings.target_url), steps, Reporter(),
            as_of=MIGRATED_AT, max_rounds=2, settle_rows=1000, writer_timeout=writer_timeout,
            terminate_writers=terminate_writers)


def test_a_cutover_with_nothing_written_in_the_window_succeeds(pair: Settings) -> None:
    """The checks that follow validation find nothing: the cutover reports success and the source
    stays frozen."""
    _cutover(pair, api.cutover_steps(pair))
    assert _frozen(pair.source_url)
    with psycopg.connect(pair.target_url) as conn:
        assert conn.execute("SELECT count(*) FROM migration.run_log "
                            "WHERE event = 'cutover'").fetchone() == (1,)


def test_a_transaction_prepared_before_the_freeze_is_never_lost(pair: Settings) -> None:
    """A mark changed in a transaction prepared before the freeze and committed once the last sync
    and validation are done. The cutover may not report success with that mark missing from
    edu_v2: it refuses while the transaction is prepared, says how to resolve it, and unfreezes
    the source."""
    mark, value = _first_mark(pair)
    before = _migrated_mark(pair, mark)
    with psycopg.connect(pair.source_url, autocommit=True) as conn:
        conn.execute("BEGIN")
        conn.execute("UPDATE grades SET value = %s WHERE id = %s", [value, mark])
        conn.execute(sql.SQL("PREPARE TRANSACTION {}").format(sql.Literal(PREPARED)))

    def commit_prepared() -> None:
        with psycopg.connect(pair.source_url, autocommit=True) as conn:
            conn.execute(sql.SQL("COMMIT PREPARED {}").format(sql.Literal(PREPARED)))

    try:
        _cutover(pair, _after_validation(api.cutover_steps(pair), commit_prepared),
                 writer_timeout=1.0, terminate_writers=True)
    except MigrationError as exc:
        line = exc.one_line()
        assert "\n" not in line
        assert "cutover aborted, the source is writable again" in line
        assert f"prepared transaction {PREPARED}" in line and "COMMIT PREPARED" in line
        assert not _frozen(pair.source_url)
        assert _migrated_mark(pair, mark) == before
    else:
        with psycopg.connect(pair.source_url) as conn:
            committed = conn.execute("SELECT value FROM grades WHERE id = %s",
                                     [mark]).fetchone()
        assert committed == (value,)
        assert _migrated_mark(pair, mark) != before, (
            "the cutover reported success, and the mark committed by the prepared transaction "
            "is missing from edu_v2")


def test_the_cutover_waits_for_a_prepared_transaction_resolved_in_the_window(
        pair: Settings) -> None:
    """Committed while the cutover waits for it (within --writer-timeout): the last sync carries
    the mark, and the cutover succeeds."""
    mark, value = _first_mark(pair)
    before = _migrated_mark(pair, mark)
    with psycopg.connect(pair.source_url, autocommit=True) as conn:
        conn.execute("BEGIN")
        conn.execute("UPDATE grades SET value = %s WHERE id = %s", [value, mark])
        conn.execute(sql.SQL("PREPARE TRANSACTION {}").format(sql.Literal(PREPARED)))
    failures: list[BaseException] = []

    def commit_once_frozen() -> None:
        try:
            deadline = time.monotonic() + 60
            while not _frozen(pair.source_url) and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(0.5)
            with psycopg.connect(pair.source_url, autocommit=True) as conn:
                conn.execute(sql.SQL("COMMIT PREPARED {}").format(sql.Literal(PREPARED)))
        except BaseException as exc:  # handed to the test's thread
            failures.append(exc)

    committer = threading.Thread(target=commit_once_frozen)
    committer.start()
    try:
        _cutover(pair, api.cutover_steps(pair), writer_timeout=30.0)
    finally:
        committer.join()
    assert not failures
    assert _frozen(pair.source_url)
    assert _migrated_mark(pair, mark) not in (None, before)


def test_a_write_by_a_session_that_turned_read_only_off_fails_the_cutover(
        pair: Settings) -> None:
    """A session opened after the freeze turns `default_transaction_read_only` off and changes a
    user once the last sync and validation are done. The cutover fails in one line that names
    the table, and unfreezes the source."""
    def write() -> None:
        _write_past_the_freeze(pair, "UPDATE users SET email = 'leak@example.org' WHERE id = "
                               "(SELECT min(id) FROM users)", [])

    with pytest.raises(MigrationError) as raised:
        _cutover(pair, _after_validation(api.cutover_steps(pair), write))
    line = raised.value.one_line()
    assert "\n" not in line
    assert "cutover aborted, the source is writable again" in line
    assert "written after the last sync" in line and "users" in line
    assert "grades" not in line
    assert not _frozen(pair.source_url)
    with psycopg.connect(pair.target_url) as conn:
        assert conn.execute("SELECT count(*) FROM migration.run_log "
                            "WHERE event = 'cutover'").fetchone() == (0,)


def test_a_deletion_past_the_freeze_fails_the_cutover(pair: Settings) -> None:
    """A deletion leaves no row to find by its xmin: the row counts tell it."""
    def delete() -> None:
        _write_past_the_freeze(pair, "DELETE FROM grades WHERE id = (SELECT max(id) FROM grades)",
                               [])

    with pytest.raises(MigrationError, match=r"written after the last sync.*grades"):
        _cutover(pair, _after_validation(api.cutover_steps(pair), delete))
    assert not _frozen(pair.source_url)


def test_a_write_transaction_open_at_the_end_of_the_window_is_ended_or_refused(
        pair: Settings) -> None:
    """A session that turned read-only off and has written, not yet committed, when validation is
    done: it could commit after the cutover reported success. Without --terminate-writers the
    cutover refuses, naming the session; with it, the session is ended (its write rolled back)
    and the cutover succeeds."""
    mark, value = _first_mark(pair)
    writers: list[psycopg.Connection] = []

    def begin_write() -> None:
        # Opened after the freeze: no session opened before it is left to wait for.
        writer = psycopg.connect(pair.source_url, autocommit=True)
        writers.append(writer)
        writer.execute("SET default_transaction_read_only = off")
        writer.execute("BEGIN READ WRITE")
        writer.execute("UPDATE grades SET value = %s WHERE id = %s", [value, mark])

    try:
        with pytest.raises(MigrationError, match=r"in a write transaction"):
            _cutover(pair, _after_validation(api.cutover_steps(pair), begin_write),
                     writer_timeout=1.0)
        assert not _frozen(pair.source_url)
        writers[0].execute("ROLLBACK")
        _cutover(pair, _after_validation(api.cutover_steps(pair), begin_write),
                 terminate_writers=True)
        with pytest.raises(psycopg.OperationalError):
            writers[1].execute("SELECT 1")
    finally:
        for writer in writers:
            writer.close()
    assert _frozen(pair.source_url)
    with psycopg.connect(pair.source_url) as conn:
        assert conn.execute("SELECT value FROM grades WHERE id = %s", [mark]).fetchone() \
            != (value,)


def test_a_role_whose_own_setting_beats_the_freeze_is_refused_before_the_freeze(
        server: str, pair: Settings) -> None:
    """`ALTER ROLE … IN DATABASE … SET default_transaction_read_only = off` takes precedence
    over the database's setting: that role's new sessions would write through the freeze. The
    cutover refuses before freezing anything, naming the role."""
    role = f"leak_app_{uuid.uuid4().hex[:8]}"
    database = str(psycopg.conninfo.conninfo_to_dict(str(pair.source_url))["dbname"])
    _admin(server, sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
    try:
        _admin(server, sql.SQL("ALTER ROLE {} IN DATABASE {} SET "
                               "default_transaction_read_only = off").format(
            sql.Identifier(role), sql.Identifier(database)))
        with pytest.raises(MigrationError, match=rf"{role} in database {database} \(") as raised:
            _cutover(pair, api.cutover_steps(pair))
        assert f"ALTER ROLE {role} IN DATABASE {database} RESET" in raised.value.one_line()
        assert not _frozen(pair.source_url)
    finally:
        _admin(server, sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))
