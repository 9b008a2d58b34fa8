"""The opt-in change feed (phases/feed.py): a logical replication slot on the source tells a
sync which rows were written. Its sync must equal the scanning sync exactly, lose no write
committed around its snapshot, and go back to scanning wherever the feed cannot be trusted.

The tests run on a server of their own with `wal_level = logical` (the default test server runs
with `minimal`). A slot belongs to one database and a clone does not carry it, so each test
clones the migrated pair, starts a feed on the clones, and syncs once to bring the mirror past
the feed's start (a mirror older than the feed is scanned, which the first sync shows).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
from hypothesis import HealthCheck, Phase, example, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from psycopg import sql

from edu_migrate import api
from edu_migrate.config import Settings
from edu_migrate.errors import PreconditionFailed
from edu_migrate.pg.embedded import EmbeddedServer, find_bin_dir
from edu_migrate.pg.urls import with_database
from edu_migrate.phases.staging import LEGACY_COLUMNS, STAGE_SCHEMA, SourceSnapshot
from edu_migrate.phases.sync import sync as run_sync
from edu_migrate.runlog import Reporter
from tests.integration.helpers import admin_sql, clone_database, drop_databases, result_rows
from tests.integration.helpers import table_digest as digest
from tests.integration.test_cli_errors import assert_one_line_error, run_cli, urls
from tests.integration.test_sync import EDGE_IDS, Change, _apply, _copy_row_as

MIGRATED_AT = datetime(2026, 1, 15, 9, 0, tzinfo=UTC)
LOGICAL_SETTINGS = """
# the change feed's tests: logical decoding
wal_level = logical
max_wal_senders = 4
max_replication_slots = 8
"""


@pytest.fixture(scope="module")
def logical_admin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Superuser URL of an embedded server that allows logical decoding."""
    home = tmp_path_factory.mktemp("logical")
    server = EmbeddedServer(home, bin_dir=find_bin_dir())
    server.start()
    server.stop()
    with (server.data_dir / "postgresql.conf").open("a", encoding="utf-8") as conf:
        conf.write(LOGICAL_SETTINGS)
    with (server.data_dir / "pg_hba.conf").open("a", encoding="utf-8") as hba:
        hba.write("host  replication all 127.0.0.1/32 scram-sha-256\n")
    url = server.start().url("postgres")
    yield url
    server.stop()


@pytest.fixture(scope="module")
def migrated(logical_admin: str, tmp_path_factory: pytest.TempPathFactory
             ) -> Iterator[tuple[str, str]]:
    """A dirty legacy source, with rows at ids near both ends of their types, migrated."""
    suffix = uuid.uuid4().hex[:6]
    source, target = f"feed_src_{suffix}", f"feed_dst_{suffix}"
    admin_sql(logical_admin, sql.SQL("CREATE DATABASE {}").format(sql.Identifier(source)))
    try:
        settings = _settings(logical_admin, source, target, tmp_path_factory.mktemp("feed"))
        api.generate(settings, scale=0.005, profile="dirty", seed=11)
        with psycopg.connect(settings.source_url) as conn:
            for table, edge_ids in EDGE_IDS.items():
                for offset, new_id in enumerate(edge_ids):
                    _copy_row_as(conn, table, 10 + offset, new_id)
        api.schema_apply(settings)
        api.migrate(settings, force=True, as_of=MIGRATED_AT)
        yield source, target
    finally:
        drop_databases(logical_admin, target, source)


def _settings(admin: str, source: str, target: str, tmp: Path) -> Settings:
    return Settings(source_url=with_database(admin, source),
                    target_url=with_database(admin, target), home=tmp / "home",
                    log_dir=tmp / "logs", backup_dir=tmp / "backups", batch_size=5_000)


class Pair:
    """A source clone read by two target clones: one followed by a feed, one scanning."""

    def __init__(self, admin: str, migrated: tuple[str, str], tmp: Path) -> None:
        self.admin = admin
        self.source = clone_database(admin, migrated[0])
        self.fed = _settings(admin, self.source, clone_database(admin, migrated[1]), tmp)
        self.scanned = _settings(admin, self.source, clone_database(admin, migrated[1]), tmp)
        self.slot = f"feed_{uuid.uuid4().hex[:10]}"
        for settings in (self.fed, self.scanned):
            with psycopg.connect(settings.target_url) as conn:
                conn.execute("UPDATE migration.state SET source_database = %s", [self.source])

    def start(self) -> None:
        """The feed started on the clones, and a first sync of both: the fed target's mirror
        is older than its feed, so it is scanned, and the feed covers all that follows."""
        api.feed_start(self.fed, self.slot)
        for settings in (self.fed, self.scanned):
            api.sync(settings, as_of=MIGRATED_AT)
        assert set(_methods(self.fed.target_url).values()) <= {"horizon", "unchanged"}

    def sync_both(self) -> None:
        for settings in (self.fed, self.scanned):
            api.sync(settings, as_of=MIGRATED_AT)

    def assert_same(self, after: str) -> None:
        fed, scanned = result_rows(self.fed.target_url), result_rows(self.scanned.target_url)
        assert fed == scanned, after
        # and the mirrors the next syncs start from
        for table in LEGACY_COLUMNS:
            assert digest(self.fed.target_url, f"{STAGE_SCHEMA}.{table}") == \
                digest(self.scanned.target_url, f"{STAGE_SCHEMA}.{table}"), (table, after)

    def drop(self) -> None:
        with psycopg.connect(with_database(self.admin, self.source), autocommit=True) as conn:
            conn.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                         "WHERE slot_name = %s", [self.slot])
        drop_databases(self.admin, self.fed.target_url.rsplit("/", 1)[1],
                       self.scanned.target_url.rsplit("/", 1)[1], self.source)


@pytest.fixture
def pair(logical_admin: str, migrated: tuple[str, str], tmp_path: Path) -> Iterator[Pair]:
    made = Pair(logical_admin, migrated, tmp_path)
    try:
        yield made
    finally:
        made.drop()


def _methods(url: str) -> dict[str, str]:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT changed_rows FROM migration.sync_runs "
                           "ORDER BY id DESC LIMIT 1").fetchone()
    assert row is not None
    return {table: str(changes["method"]) for table, changes in row[0].items()}


def _reasons(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT changed_rows FROM migration.sync_runs "
                           "ORDER BY id DESC LIMIT 1").fetchone()
    assert row is not None
    return {str(changes["reason"]) for changes in row[0].values()}


def _apply_feed_change(conn: psycopg.Connection, change: Change) -> None:
    """test_sync's changes, and two the feed names in its own way: an id changed by an UPDATE
    (the old id only in the change's old key), and a text value that mimics an id column with
    numbers, one beyond bigint."""
    kind, table, pick, other_pick, _, _, _ = change
    ids = [r[0] for r in conn.execute(sql.SQL("SELECT id FROM {} ORDER BY id").format(
        sql.Identifier(table)))]
    if kind == "rekey" and ids:
        with conn.transaction():
            conn.execute(sql.SQL("UPDATE {} SET id = (SELECT max(id) + 1 FROM {} WHERE id < "
                                 "1000000000) WHERE id = %s").format(
                sql.Identifier(table), sql.Identifier(table)), [ids[pick % len(ids)]])
    elif kind == "mimic" and ids:
        texts = [c for c, t in LEGACY_COLUMNS[table] if t == "text" and c != "id"]
        if texts:
            try:
                with conn.transaction():
                    conn.execute(sql.SQL("UPDATE {} SET {} = %s WHERE id = %s").format(
                        sql.Identifier(table),
                        sql.Identifier(texts[other_pick % len(texts)])),
                        [f"x id[integer]:{ids[other_pick % len(ids)]} id[bigint]:{'9' * 30}",
                         ids[pick % len(ids)]])
            except psycopg.DataError:
                pass  # a column too short for it
    else:
        _apply(conn, change)


FEED_CHANGES = st.lists(st.tuples(
    st.sampled_from(("insert", "update", "delete", "insert_edge", "rekey", "mimic")),
    st.sampled_from(tuple(LEGACY_COLUMNS)),
    st.one_of(st.sampled_from((0, 1, -1, -2)), st.integers(0, 10**6)),
    st.integers(0, 10**6), st.integers(0, 100),
    st.sampled_from(("copy", "null", "junk")), st.integers(0, 100)),
    min_size=1, max_size=10)


@hypothesis_settings(max_examples=4, deadline=None, phases=(Phase.explicit, Phase.generate),
                     suppress_health_check=[HealthCheck.function_scoped_fixture,
                                            HealthCheck.too_slow])
@given(changes=FEED_CHANGES)
@example(changes=[("rekey", "grades", 5, 0, 0, "null", 0),
                  ("mimic", "users", 3, 4, 0, "null", 0),
                  ("delete", "grades", -1, 0, 0, "null", 0),
                  ("insert_edge", "grades", 7, 0, 0, "copy", 0),
                  ("update", "persons", 2, 3, 1, "copy", 0)])
def test_the_feeds_sync_equals_the_scanning_sync(
        logical_admin: str, migrated: tuple[str, str], tmp_path: Path,
        changes: list[Change]) -> None:
    made = Pair(logical_admin, migrated, tmp_path)
    try:
        made.start()
        with psycopg.connect(made.fed.source_url, autocommit=True) as conn:
            for change in changes:
                _apply_feed_change(conn, change)
        made.sync_both()
        assert set(_methods(made.fed.target_url).values()) == {"feed"}, _reasons(
            made.fed.target_url)
        assert set(_methods(made.scanned.target_url).values()) <= {"horizon", "unchanged"}
        made.assert_same(f"after {changes}")
    finally:
        made.drop()


def _slot_position(url: str, slot: str) -> str:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT confirmed_flush_lsn::text FROM pg_replication_slots "
                           "WHERE slot_name = %s", [slot]).fetchone()
    assert row is not None
    return str(row[0])


def test_a_write_committed_after_the_syncs_snapshot_is_decoded_again_not_lost(
        pair: Pair) -> None:
    """A mark written after a sync took its snapshot, and before it read the slot, is decoded
    by that sync but not seen by its snapshot: the slot must not be advanced past it, and the
    next sync applies it. Advancing to the end of what was read would lose it for good."""
    pair.start()
    with psycopg.connect(pair.fed.source_url, autocommit=True) as conn:
        conn.execute("UPDATE grades SET value = '3' WHERE id = (SELECT min(id) FROM grades "
                     "WHERE id > 0)")
        snapshot = SourceSnapshot(pair.fed.source_url)
        try:
            conn.execute("UPDATE grades SET value = '4' WHERE id = (SELECT max(id) FROM grades "
                         "WHERE id < 1000000000)")
            before = _slot_position(pair.fed.source_url, pair.slot)
            run_sync(snapshot, pair.fed.target_url, as_of=MIGRATED_AT, batch_size=5_000,
                     reporter=Reporter())
        finally:
            snapshot.close()
    # advanced past the first write's transaction, not past the second's
    assert _slot_position(pair.fed.source_url, pair.slot) > before
    assert _methods(pair.fed.target_url)["grades"] == "feed"
    pair.sync_both()
    assert _methods(pair.fed.target_url)["grades"] == "feed"
    pair.assert_same("after a write committed between the snapshot and the slot's reading")


@pytest.mark.parametrize("trouble", ["slot dropped", "slot advanced", "truncate"])
def test_a_feed_that_cannot_be_trusted_sends_the_sync_back_to_scanning(
        pair: Pair, trouble: str) -> None:
    pair.start()
    with psycopg.connect(pair.fed.source_url, autocommit=True) as conn:
        conn.execute("DELETE FROM grades WHERE id = (SELECT min(id) FROM grades WHERE id > 0)")
        if trouble == "slot dropped":
            conn.execute("SELECT pg_drop_replication_slot(%s)", [pair.slot])
        elif trouble == "slot advanced":  # another client consumed changes the sync needs
            conn.execute("SELECT pg_replication_slot_advance(%s, pg_current_wal_lsn())",
                         [pair.slot])
        else:
            conn.execute("TRUNCATE teachers")
    pair.sync_both()
    assert set(_methods(pair.fed.target_url).values()) <= {"horizon", "unchanged"}
    expected = {"slot dropped": "no longer exists", "slot advanced": "skipped changes",
                "truncate": "a TRUNCATE was decoded"}[trouble]
    assert any(expected in reason for reason in _reasons(pair.fed.target_url))
    problem = api.feed_status(pair.fed).problem
    if trouble == "truncate":  # past the TRUNCATE, the next sync follows the feed again
        assert problem is None
        with psycopg.connect(pair.fed.source_url, autocommit=True) as conn:
            conn.execute("DELETE FROM grades WHERE id = (SELECT max(id) FROM grades "
                         "WHERE id < 1000000000)")
        pair.sync_both()
        assert set(_methods(pair.fed.target_url).values()) == {"feed"}
    else:
        assert problem is not None and {"slot dropped": "no longer exists",
                                         "slot advanced": "beyond"}[trouble] in problem
    pair.assert_same(f"after the feed's {trouble}")


def test_feed_status_and_stop_and_the_cutover_drops_the_slot(pair: Pair) -> None:
    pair.start()
    status = api.feed_status(pair.fed)
    assert status.started and status.slot == pair.slot and status.problem is None
    assert status.retained_wal_bytes is not None
    with pytest.raises(PreconditionFailed, match="already started"):
        api.feed_start(pair.fed, "another_slot")
    api.cutover(pair.fed, as_of=MIGRATED_AT)
    with psycopg.connect(pair.fed.source_url) as conn:
        assert conn.execute("SELECT count(*) FROM pg_replication_slots").fetchone() == (0,)
    assert not api.feed_status(pair.fed).started


def test_a_feed_needs_a_source_that_allows_logical_decoding(settings: Settings) -> None:
    """The default test server runs with wal_level = minimal: one clear line, nothing made."""
    api.schema_apply(settings)
    result = run_cli("feed", "start", *urls(settings))
    assert_one_line_error(result, "wal_level is minimal", "wal_level = logical")
    assert not api.feed_status(settings).started
