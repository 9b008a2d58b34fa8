"""The catch-up's invariant: after any changes to the source, `sync` leaves edu_v2 exactly as a
fresh full migration of the changed source, at the same as-of time, would leave it — every
business table, the crosswalk, rejected_rows and repairs.

A dirty legacy database is generated and migrated once; each example clones both (a database
template copy), applies a random set of inserts, updates and deletes to the clone of the source,
syncs the clone of the target, migrates the changed source afresh into a third database with the
same id secret, and compares the two row by row.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, Phase, example, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from psycopg import sql

from edu_migrate import api
from edu_migrate.config import Settings
from edu_migrate.errors import MigrationError, PreconditionFailed
from edu_migrate.pg.urls import with_database
from edu_migrate.phases import changes as changes_module
from edu_migrate.phases import sync as sync_module
from edu_migrate.phases.archive import archive_unmapped
from edu_migrate.phases.staging import LEGACY_COLUMNS, SourceSnapshot
from edu_migrate.phases.sync import sync as run_sync
from edu_migrate.runlog import Reporter
from tests.integration.helpers import admin_sql as _admin
from tests.integration.helpers import clone_database as _clone
from tests.integration.helpers import clones, differences, result_rows
from tests.integration.helpers import drop_databases as _drop
from tests.integration.helpers import id_secret as _secret

MIGRATED_AT = datetime(2026, 1, 15, 9, 0, tzinfo=UTC)
# A later day, the same moment, and a time before most marks (many fall "in the future").
AS_OF_TIMES = (datetime(2026, 2, 1, 9, 0, tzinfo=UTC), MIGRATED_AT,
               datetime(2024, 3, 1, 0, 0, tzinfo=UTC))


@dataclass(frozen=True)
class Base:
    admin_url: str
    source: str
    target: str


def _read_from(source: str, settings: Settings) -> None:
    """The target clone is the same target, now reading `source` (a clone of its source)."""
    with psycopg.connect(settings.target_url) as conn:
        conn.execute("UPDATE migration.state SET source_database = %s", [source])


def _settings(base: Base, source: str, target: str, tmp: Path,
              mapping: dict[str, Any] | None = None) -> Settings:
    return Settings(source_url=with_database(base.admin_url, source),
                    target_url=with_database(base.admin_url, target), home=tmp / "home",
                    log_dir=tmp / "logs", backup_dir=tmp / "backups", batch_size=5_000,
                    mapping=mapping or {})


@contextmanager
def _cloned(base: Base, tmp_path: Path,
            mapping: dict[str, Any] | None = None) -> Iterator[tuple[str, Settings, str]]:
    """Clones of the base's source and target, the target reading the clone of the source: the
    source clone's name, the settings of the pair, and the name for a fresh full migration to
    compare with (all dropped afterwards)."""
    with clones(base.admin_url, base.source, base.target) as (source, synced, fresh):
        settings = _settings(base, source, synced, tmp_path, mapping)
        _read_from(source, settings)
        yield source, settings, fresh


# Rows the base source holds at ids near both ends of their type, and negative ids: the top
# bucket of ids (ids near 2^63) is where `(bucket + 1) << 6` wrapped around.
EDGE_IDS: dict[str, tuple[int, ...]] = {
    "grades": (-2**63, -2**63 + 1, -1, 2**63 - 64, 2**63 - 1),
    "course_students": (-2**31, -7),
}


def _copy_row_as(conn: psycopg.Connection, table: str, row_id: int, new_id: int) -> None:
    """A copy of one row of `table` under another id."""
    conn.execute(sql.SQL("CREATE TEMP TABLE new_row ON COMMIT DROP AS SELECT * FROM {} "
                         "WHERE id = %s").format(sql.Identifier(table)), [row_id])
    conn.execute("UPDATE new_row SET id = %s", [new_id])
    conn.execute(sql.SQL("INSERT INTO {} SELECT * FROM new_row").format(sql.Identifier(table)))
    conn.execute("DROP TABLE new_row")


@pytest.fixture(scope="module")
def base(admin_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Base]:
    suffix = uuid.uuid4().hex[:6]
    made = Base(admin_url, f"sync_src_{suffix}", f"sync_dst_{suffix}")
    tmp = tmp_path_factory.mktemp("sync")
    _admin(admin_url, sql.SQL("CREATE DATABASE {}").format(sql.Identifier(made.source)))
    try:
        settings = _settings(made, made.source, made.target, tmp)
        api.generate(settings, scale=0.005, profile="dirty", seed=11)
        with psycopg.connect(settings.source_url) as conn:
            for table, edge_ids in EDGE_IDS.items():
                for offset, new_id in enumerate(edge_ids):
                    _copy_row_as(conn, table, 10 + offset, new_id)
        api.schema_apply(settings)
        api.migrate(settings, force=True, as_of=MIGRATED_AT)
        yield made
    finally:
        _drop(admin_url, made.target, made.source)


# One change to the source, or to the mapping: (kind, table, row, other row, column, value
# kind, junk). `row` 0, 1, -1 and -2 pick the lowest and highest ids (near both ends of bigint,
# negative). insert_edge: a row copied to an id near an end of its type. swap: two columns
# trade names by RENAMEs (no row is written). remap: the mapping reads a column from another
# source column, or through an expression (the sync and the full run both read it so).
Change = tuple[str, str, int, int, int, str, int]
CHANGES = st.lists(st.tuples(
    st.sampled_from(("insert", "update", "update", "delete", "delete", "insert_edge", "swap",
                     "remap")),
    st.sampled_from(tuple(LEGACY_COLUMNS)),
    st.one_of(st.sampled_from((0, 1, -1, -2)), st.integers(0, 10**6)),
    st.integers(0, 10**6), st.integers(0, 100),
    st.sampled_from(("copy", "copy", "null", "junk")), st.integers(0, 100)),
    min_size=1, max_size=12)
# Ids near the ends of each legacy id's type: bigint for marks, integer for the rest.
EDGE_POOL = {"grades": (-2**63, -2**63 + 63, -2**63 + 64, -1, 0, 2**63 - 65, 2**63 - 64,
                        2**63 - 1),
             "other": (-2**31, -2**31 + 64, -1, 0, 2**31 - 64, 2**31 - 1)}

JUNK: dict[str, tuple[Any, ...]] = {
    "text": ("", "  ", "q/b", "٣", "1e1", "150", "-1", "ABC", " mat-101 ", "2019-2021",
             "31.02.1990", "7", "8,5", "2024-2025"),
    "int": (0, 1, 2, 3, 6, 7, -1, 99_999),
    "timestamp": ("2099-01-01 10:00", "2020-01-01 00:00", "2025-06-01 12:00"),
    "date": ("2099-01-01", "2021-09-15", "2025-05-20"),
    "numeric": (0, 50.5, 101, -1, 92),
}


def _junk_kind(staged_type: str) -> str:
    for prefix, kind in (("text", "text"), ("timestamp", "timestamp"), ("date", "date"),
                         ("numeric", "numeric")):
        if staged_type.startswith(prefix):
            return kind
    return "int"


def _text_columns(table: str) -> list[str]:
    """The columns staged as text that a swap or a remap may move (not the password)."""
    return [c for c, t in LEGACY_COLUMNS[table] if t == "text" and c != "password"]


def _remap(mapping: dict[str, Any], change: Change) -> set[str]:
    """Add a remap change to `mapping`; the legacy tables whose reading it changed."""
    _, table, _, _, column_pick, _, junk_pick = change
    columns = _text_columns(table)
    if change[0] != "remap" or len(columns) < 2:
        return set()
    column = columns[column_pick % len(columns)]
    other = [c for c in columns if c != column][junk_pick % (len(columns) - 1)]
    entry: str | dict[str, str] = other if junk_pick % 2 else {"sql": f"upper({other})"}
    mapping.setdefault(table, {}).setdefault("columns", {})[column] = entry
    return {table}


def _swapped(change: Change) -> tuple[str, str] | None:
    """The two columns a swap change trades names of, or None (not a swap, or too few)."""
    kind, table, _, _, column_pick, _, junk_pick = change
    texts = _text_columns(table)
    if kind != "swap" or len(texts) < 2:
        return None
    first = texts[column_pick % len(texts)]
    return first, [c for c in texts if c != first][junk_pick % (len(texts) - 1)]


def _redefined(changes: list[Change]) -> set[str]:
    """The legacy tables whose reading the changes changed, all taken together: a remapped
    column, or columns whose names the swaps left traded (two swaps of the same two columns
    leave the table as it was, and its rows are then still followed by the horizon)."""
    remapped = {change[1] for change in changes
                if change[0] == "remap" and len(_text_columns(change[1])) >= 2}
    holds: dict[str, dict[str, str]] = {}  # per table: name -> the column it names at the start
    for change in changes:
        pair = _swapped(change)
        if pair is not None:
            names = holds.setdefault(change[1], {c: c for c in _text_columns(change[1])})
            names[pair[0]], names[pair[1]] = names[pair[1]], names[pair[0]]
    return remapped | {table for table, names in holds.items()
                       if any(name != column for name, column in names.items())}


def _apply(conn: psycopg.Connection, change: Change) -> None:
    """Apply a change to the source (a remap changes the mapping only: _remap)."""
    kind, table, pick, other_pick, column_pick, value_kind, junk_pick = change
    if kind == "remap":
        return
    if kind == "swap":
        pair = _swapped(change)
        if pair is None:
            return
        first, second = pair
        for old_name, new_name in ((first, "swapped"), (second, first), ("swapped", second)):
            conn.execute(sql.SQL("ALTER TABLE {} RENAME {} TO {}").format(
                sql.Identifier(table), sql.Identifier(old_name), sql.Identifier(new_name)))
        return
    columns = [(c, t) for c, t in LEGACY_COLUMNS[table] if c != "id"]
    ids = [r[0] for r in conn.execute(sql.SQL("SELECT id FROM {} ORDER BY id").format(
        sql.Identifier(table)))]
    if not ids:
        return
    row_id, other_id = ids[pick % len(ids)], ids[other_pick % len(ids)]
    column, staged_type = columns[column_pick % len(columns)]
    pool = JUNK[_junk_kind(staged_type)]
    value: sql.Composable = {
        "copy": sql.SQL("(SELECT {} FROM {} WHERE id = {})").format(
            sql.Identifier(column), sql.Identifier(table), sql.Literal(other_id)),
        "null": sql.SQL("NULL"),
        "junk": sql.Literal(pool[junk_pick % len(pool)]),
    }[value_kind]
    try:
        with conn.transaction():
            if kind == "delete":
                conn.execute(sql.SQL("DELETE FROM {} WHERE id = %s").format(
                    sql.Identifier(table)), [row_id])
            elif kind == "insert_edge":
                pool = EDGE_POOL["grades" if table == "grades" else "other"]
                _copy_row_as(conn, table, row_id, pool[junk_pick % len(pool)])
            elif kind == "update":
                conn.execute(sql.SQL("UPDATE {} SET {} = {} WHERE id = %s").format(
                    sql.Identifier(table), sql.Identifier(column), value), [row_id])
            else:
                conn.execute(sql.SQL(
                    "CREATE TEMP TABLE new_row ON COMMIT DROP AS SELECT * FROM {} WHERE id = %s"
                ).format(sql.Identifier(table)), [row_id])
                # the next id of the ordinary ones (an id near an end may be taken)
                conn.execute(sql.SQL("UPDATE new_row SET id = (SELECT max(id) + 1 FROM {} "
                                     "WHERE id < 1000000000), "
                                     "{} = {}").format(sql.Identifier(table),
                                                       sql.Identifier(column), value))
                conn.execute(sql.SQL("INSERT INTO {} SELECT * FROM new_row").format(
                    sql.Identifier(table)))
    except (psycopg.DataError, psycopg.IntegrityError):
        pass  # a value or an id the legacy table cannot hold: not a change it could have


# How the mirror's horizon is left before the changes: as the migration recorded it; unknown (a
# mirror staged by an older version); ahead of the source's transactions (a source restored
# from a backup). The last two must fall back to comparing every row.
HORIZONS = {
    "kept": "SELECT 1",
    "forgotten": "UPDATE migration.mirror_state SET source_horizon = NULL",
    "ahead": "UPDATE migration.mirror_state SET source_horizon = source_horizon + 2^40",
    # the source's WAL behind where the mirror was read (restored to an earlier point), and
    # another timeline (a promoted standby): transaction ids of another history
    "wal_behind": "UPDATE migration.mirror_state SET source_lsn = 'FFFFFFFF/0'",
    "timeline": "UPDATE migration.mirror_state SET source_timeline = source_timeline + 1",
}


def _methods(url: str) -> dict[str, str]:
    """How the last sync found each table's changes."""
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT changed_rows FROM migration.sync_runs "
                           "ORDER BY id DESC LIMIT 1").fetchone()
    assert row is not None
    return {table: str(changes["method"]) for table, changes in row[0].items()}


@contextmanager
def _counts_ahead(on: bool) -> Iterator[None]:
    """Whether the sync counts the source's rows (and its ids per bucket) in a second session
    of its snapshot while the first streams the new rows: phases/changes.py does from
    COUNT_AHEAD_ROWS mirrored rows, which no table here has."""
    with _replaced(changes_module, "COUNT_AHEAD_ROWS", 0 if on else 2**63):
        yield


@contextmanager
def _replaced(module: Any, name: str, value: Any) -> Iterator[None]:
    """`module.name` is `value` inside the block, and what it was again after it."""
    kept = getattr(module, name)
    setattr(module, name, value)
    try:
        yield
    finally:
        setattr(module, name, kept)


# Each example migrates a database: no shrinking (the failure names its changes in full).
@hypothesis_settings(max_examples=9, deadline=None, phases=(Phase.explicit, Phase.generate),
                     suppress_health_check=[HealthCheck.function_scoped_fixture,
                                            HealthCheck.too_slow])
@given(changes=CHANGES, as_of=st.sampled_from(AS_OF_TIMES),
       horizon=st.sampled_from(tuple(HORIZONS)), counted_ahead=st.booleans())
# Changes that each reach one rule across rows, always tried: a second enrollment of the same
# student in the same run (a merge whose survivor may change), a teacher set aside (the marks
# they gave), a student and a course run deleted (their enrollments, then marks), an enrollment
# deleted (its marks: "enrollment missing"), a username taken (a rename), a mark's value.
@example(changes=[("insert", "course_students", 5, 5, 0, "copy", 0)], as_of=MIGRATED_AT,
         horizon="kept", counted_ahead=True)
# Phase 4 in part: a run moved to another run's code and one to a code written differently
# (both codes' groups, old and new), a department deleted (its runs lose their unit).
@example(changes=[("update", "courses", 3, 7, 0, "copy", 0),
                  ("update", "courses", 2, 0, 0, "junk", 8),
                  ("delete", "organizations", 1, 0, 0, "null", 0)],
         as_of=MIGRATED_AT, horizon="kept", counted_ahead=False)
# ... a run's created_at gone while the as-of time moves, and a run naming a new term (every
# run's term may change).
@example(changes=[("update", "courses", 4, 0, 11, "null", 0),
                  ("update", "courses", 5, 0, 7, "junk", 13)],
         as_of=AS_OF_TIMES[1], horizon="kept", counted_ahead=True)
@example(changes=[("update", "teachers", 1, 1, 3, "junk", 7)], as_of=MIGRATED_AT,
         horizon="kept", counted_ahead=True)
@example(changes=[("delete", "students", 3, 0, 0, "null", 0),
                  ("delete", "courses", 2, 0, 0, "null", 0)],
         as_of=AS_OF_TIMES[0], horizon="kept", counted_ahead=True)
@example(changes=[("delete", "course_students", 7, 0, 0, "null", 0),
                  ("update", "users", 0, 1, 0, "copy", 0),
                  ("update", "grades", 11, 0, 2, "junk", 3)],
         as_of=AS_OF_TIMES[2], horizon="kept", counted_ahead=True)
@example(changes=[("delete", "grades", 5, 0, 0, "null", 0),
                  ("insert", "grades", 9, 9, 1, "junk", 4)], as_of=MIGRATED_AT,
         horizon="forgotten", counted_ahead=True)
# The holes under the mirror, always tried: the mark at the top id (2^63 - 1) deleted and one
# at the lowest (-2^63) changed; persons' first and last names swapped by RENAMEs and the
# mapping of teachers edited, neither writing a row; the WAL behind the mirror's.
@example(changes=[("delete", "grades", -1, 0, 0, "null", 0),
                  ("update", "grades", 0, 0, 2, "junk", 7)], as_of=MIGRATED_AT,
         horizon="kept", counted_ahead=True)
@example(changes=[("swap", "persons", 0, 0, 1, "null", 0),
                  ("remap", "teachers", 0, 0, 0, "null", 1)], as_of=MIGRATED_AT,
         horizon="kept", counted_ahead=True)
@example(changes=[("update", "courses", 3, 4, 6, "copy", 0)], as_of=MIGRATED_AT,
         horizon="wal_behind", counted_ahead=True)
# Two swaps of the same two columns: the table is as it was, and followed by the horizon.
@example(changes=[("swap", "teachers", 0, 0, 0, "null", 0),
                  ("update", "teachers", 1, 1, 3, "junk", 7),
                  ("swap", "teachers", 0, 0, 0, "null", 0)], as_of=MIGRATED_AT, horizon="kept",
         counted_ahead=True)
# Phase 1's groups, derived again in part: an e-mail taken from another account, a person moved
# to another user (now its second person), a user deleted with its person, a username taken;
# and the as-of time moved back across birth dates and missing timestamps.
@example(changes=[("update", "users", 2, 3, 1, "copy", 0),
                  ("update", "persons", 4, 5, 0, "copy", 0),
                  ("delete", "users", 6, 0, 0, "null", 0),
                  ("update", "users", 7, 8, 0, "copy", 0)], as_of=AS_OF_TIMES[2],
         horizon="kept", counted_ahead=True)
def test_sync_equals_a_full_migration_of_the_changed_source(
        base: Base, tmp_path: Path, changes: list[Change], as_of: datetime,
        horizon: str, counted_ahead: bool) -> None:
    with clones(base.admin_url, base.source, base.target) as (source, synced, fresh), \
            _counts_ahead(counted_ahead):
        mapping: dict[str, Any] = {}
        for change in changes:
            _remap(mapping, change)
        redefined = _redefined(changes)
        synced_settings = _settings(base, source, synced, tmp_path, mapping)
        with psycopg.connect(synced_settings.target_url) as conn:
            # The clone is the same target, now reading the clone of its source.
            conn.execute("UPDATE migration.state SET source_database = %s", [source])
            conn.execute(HORIZONS[horizon])
        with psycopg.connect(synced_settings.source_url, autocommit=True) as conn:
            for change in changes:
                _apply(conn, change)
        api.sync(synced_settings, as_of=as_of)
        # The changes were found the way the horizon allows: the fast way when it is known
        # and nothing the table is read through changed.
        assert _methods(synced_settings.target_url) == {
            table: "horizon" if horizon == "kept" and table not in redefined else "comparison"
            for table in LEGACY_COLUMNS}

        _assert_equals_a_full_migration(base, source, synced_settings, fresh, tmp_path, as_of,
                                        f"after {changes}", mapping)


def _assert_equals_a_full_migration(base: Base, source: str, synced: Settings, fresh: str,
                                    tmp_path: Path, as_of: datetime, after: str,
                                    mapping: dict[str, Any] | None = None) -> None:
    """A full migration of `source` into `fresh`, with the synced target's id secret, leaves
    the same rows as the synced target; and the synced target validates."""
    full_settings = _settings(base, source, fresh, tmp_path, mapping)
    api.schema_apply(full_settings)
    with psycopg.connect(full_settings.target_url) as conn:
        conn.execute("UPDATE migration.state SET id_secret = %s", [_secret(synced.target_url)])
    api.migrate(full_settings, force=True, as_of=as_of)
    found = differences(result_rows(full_settings.target_url), result_rows(synced.target_url))
    assert not found, "\n".join([after, *found])
    api.require_valid(api.validate(synced))


def test_a_login_derives_phase_1_again_and_nothing_that_reads_it(
        base: Base, tmp_path: Path) -> None:
    """users.last_login changes phase 1's users, not what phases 2 and 4 read of them: a sync
    at the same as-of time derives phase 1 again and leaves the rest alone, and still equals a
    full migration. Of phase 1's tables it writes the rows whose content the logins changed and
    no other row, even where the target's search_path names the temporary schema last (the
    rules write into temporary twins of the tables, found first on the path)."""
    with clones(base.admin_url, base.source, base.target) as (source, synced, fresh):
        settings = _settings(base, source, synced, tmp_path)
        _read_from(source, settings)
        _admin(base.admin_url, sql.SQL("ALTER DATABASE {} SET search_path = "
                                       "\"$user\", public, pg_temp").format(
            sql.Identifier(synced)))
        with psycopg.connect(settings.source_url) as conn:
            conn.execute("UPDATE users SET last_login = coalesce(last_login, '2025-01-01') "
                         "+ interval '1 day' "
                         "WHERE id IN (SELECT min(id) FROM users UNION SELECT max(id) FROM users)")
        rows = ("SELECT 'users', id, ctid::text, md5(t::text) FROM users t UNION ALL "
                "SELECT 'persons', id, ctid::text, md5(t::text) FROM persons t")
        with psycopg.connect(settings.target_url) as conn:
            before = {(r[0], r[1]): r[2:] for r in conn.execute(rows)}
        api.sync(settings, as_of=MIGRATED_AT)
        with psycopg.connect(settings.target_url) as conn:
            row = conn.execute("SELECT recomputed FROM migration.sync_runs "
                               "ORDER BY id DESC LIMIT 1").fetchone()
            after = {(r[0], r[1]): r[2:] for r in conn.execute(rows)}
        assert row is not None
        assert row[0]["phase 1"] == 1 and "phase 2" not in row[0] and "phase 4" not in row[0]
        # (ctid, content) per row: a row written again has a new ctid
        changed = {key for key, (_, content) in after.items()
                   if before.get(key, ("", ""))[1] != content}
        rewritten = {key for key, (ctid, _) in after.items()
                     if before.get(key, ("", ""))[0] != ctid}
        assert changed, "the logins changed no row of edu_v2: the test tests nothing"
        assert rewritten == changed
        _assert_equals_a_full_migration(base, source, settings, fresh, tmp_path, MIGRATED_AT,
                                        "after two logins")


# A user whose username, e-mail and person no other user shares, by any spelling: its scope in
# phase 1 is itself and its person.
LONE_USER = """
SELECT u.id, p.id FROM users u JOIN persons p ON p.user_id = u.id
WHERE u.username ~ '^[a-z][a-z0-9_]*$'
  AND NOT EXISTS (SELECT 1 FROM users v WHERE v.id <> u.id
                  AND (starts_with(lower(btrim(v.username)), u.username)
                       OR starts_with(u.username, lower(btrim(v.username)))
                       OR lower(btrim(v.email)) = lower(btrim(u.email))))
  AND NOT EXISTS (SELECT 1 FROM persons q WHERE q.user_id = u.id AND q.id <> p.id)
ORDER BY u.id DESC LIMIT 1"""
CROSSWALK_VERSIONS = ("SELECT source_table, source_id, xmin::text FROM migration.crosswalk_rows "
                      "WHERE source_table IN ('users', 'persons')")


def test_a_login_derives_phase_1_again_for_that_user_and_its_person_alone(
        base: Base, tmp_path: Path) -> None:
    """Phase 1 is derived again in part: a login on the old LMS puts its user in scope, with
    the groups that user's outcome shares (its username, its e-mail, its persons), and no
    other user or person is derived again (issue 21, point 2): their crosswalk rows stay the
    row versions they were. The result still equals a full migration."""
    with _cloned(base, tmp_path) as (source, settings, fresh):
        with psycopg.connect(settings.source_url) as conn:
            lone = conn.execute(LONE_USER).fetchone()
            assert lone is not None, "the base holds no user with a group of its own"
            conn.execute("UPDATE users SET last_login = coalesce(last_login, '2025-01-01') "
                         "+ interval '1 day' WHERE id = %s", [lone[0]])
        with psycopg.connect(settings.target_url) as conn:
            before = {(r[0], r[1]): r[2] for r in conn.execute(CROSSWALK_VERSIONS)}
        api.sync(settings, as_of=MIGRATED_AT)
        with psycopg.connect(settings.target_url) as conn:
            row = conn.execute("SELECT recomputed FROM migration.sync_runs "
                               "ORDER BY id DESC LIMIT 1").fetchone()
            after = {(r[0], r[1]): r[2] for r in conn.execute(CROSSWALK_VERSIONS)}
        assert row is not None
        assert row[0] == {"phase 1": 1, "users": 1, "persons": 1, "course_students": 0,
                          "grades": 0}
        assert set(after) == set(before)
        assert {key for key in after if after[key] != before[key]} == \
            {("users", lone[0]), ("persons", lone[1])}
        _assert_equals_a_full_migration(base, source, settings, fresh, tmp_path, MIGRATED_AT,
                                        "after one login")


# A run of a code that other runs share, and how many runs that code has (the target's mirror
# normalises the codes as phase 4 does).
SHARED_CODE_RUN = """
SELECT id, runs FROM (
    SELECT c.id, count(*) OVER (PARTITION BY migration.normalise_course_code(c.code)) AS runs
    FROM stage.courses c
    WHERE migration.normalise_course_code(c.code) IS NOT NULL AND c.created_at IS NOT NULL) r
WHERE runs > 1 ORDER BY runs, id LIMIT 1"""
RUN_VERSIONS = ("SELECT source_id, target_table, xmin::text FROM migration.crosswalk_courses")


def _code_group(conn: psycopg.Connection) -> tuple[int, set[int]]:
    """SHARED_CODE_RUN's run, and every run of its code (the run among them)."""
    run = conn.execute(SHARED_CODE_RUN).fetchone()
    assert run is not None, "the base holds no code with two runs"
    group = {int(r[0]) for r in conn.execute(
        "SELECT c.id FROM stage.courses c, stage.courses r WHERE r.id = %s "
        "AND migration.normalise_course_code(c.code) = "
        "migration.normalise_course_code(r.code)", [run[0]])}
    assert len(group) == run[1]
    return int(run[0]), group


def test_an_edited_course_run_derives_phase_4_again_for_its_code_alone(
        base: Base, tmp_path: Path) -> None:
    """Phase 4 is derived again in part (issue 21, point 2): a run edited on the old LMS puts
    its code in scope, every run of that code with it (the catalogue course is decided from
    them all), and no other run is derived again: their crosswalk rows stay the row versions
    they were. The result still equals a full migration."""
    with _cloned(base, tmp_path) as (source, settings, fresh):
        with psycopg.connect(settings.target_url) as conn:
            run, group = _code_group(conn)
            before = {(r[0], r[1]): r[2] for r in conn.execute(RUN_VERSIONS)}
        with psycopg.connect(settings.source_url) as conn:
            conn.execute("UPDATE courses SET name_az = name_az || ' (yeni)' WHERE id = %s",
                         [run])
        api.sync(settings, as_of=MIGRATED_AT)
        with psycopg.connect(settings.target_url) as conn:
            row = conn.execute("SELECT recomputed FROM migration.sync_runs "
                               "ORDER BY id DESC LIMIT 1").fetchone()
            after = {(r[0], r[1]): r[2] for r in conn.execute(RUN_VERSIONS)}
        assert row is not None
        assert row[0]["phase 4"] == 1 and row[0]["courses"] == len(group)
        # phase 3 reads the runs too (their terms) and comes out the same: phase 2 is left alone
        assert row[0].get("phase 3") == 1 and "phase 2" not in row[0]
        assert set(after) == set(before)
        assert {source_id for (source_id, _), version in after.items()
                if version != before[(source_id, _)]} <= group
        _assert_equals_a_full_migration(base, source, settings, fresh, tmp_path, MIGRATED_AT,
                                        "after one course run edited")


def test_course_runs_moved_to_another_code_decide_both_catalogue_courses_again(
        base: Base, tmp_path: Path) -> None:
    """Every run of a code takes another code: the old code's catalogue course goes (no run has
    that code any more), the new code's is decided again from all its runs. Both groups are in
    scope, the old one from the runs as they were (old_courses); the result equals a full
    migration."""
    with _cloned(base, tmp_path) as (source, settings, fresh):
        with psycopg.connect(settings.target_url) as conn:
            _, group = _code_group(conn)
            moved = sorted(group)
            other = conn.execute(
                "SELECT c.id, count(*) OVER (PARTITION BY migration.normalise_course_code("
                "c.code)) FROM stage.courses c WHERE migration.normalise_course_code(c.code) "
                "IS NOT NULL AND c.id <> ALL(%s) ORDER BY c.id LIMIT 1", [moved]).fetchone()
            assert other is not None
            courses_before = conn.execute("SELECT count(*) FROM courses").fetchone()
        with psycopg.connect(settings.source_url) as conn:
            conn.execute("UPDATE courses SET code = (SELECT code FROM courses WHERE id = %s) "
                         "WHERE id = ANY(%s)", [other[0], moved])
        api.sync(settings, as_of=MIGRATED_AT)
        with psycopg.connect(settings.target_url) as conn:
            row = conn.execute("SELECT recomputed FROM migration.sync_runs "
                               "ORDER BY id DESC LIMIT 1").fetchone()
            courses_after = conn.execute("SELECT count(*) FROM courses").fetchone()
        assert row is not None and row[0]["courses"] == len(moved) + other[1]
        assert courses_before is not None and courses_after is not None
        assert courses_after[0] == courses_before[0] - 1
        _assert_equals_a_full_migration(base, source, settings, fresh, tmp_path, MIGRATED_AT,
                                        "after a code's runs moved to another code")


def test_a_department_set_aside_derives_its_course_runs_again(
        base: Base, tmp_path: Path) -> None:
    """A department set aside in phase 3 (its name blanked on the old LMS) changes what phase 4
    decides of its runs that did not change: they lose their unit, recorded, and their catalogue
    courses may take another run's. Those runs are in scope through the department's outcome,
    compared before and after phase 3; the result equals a full migration."""
    with _cloned(base, tmp_path) as (source, settings, fresh):
        with psycopg.connect(settings.target_url) as conn:
            # the department with the most runs, and how many of them were migrated
            department = conn.execute(
                "SELECT c.org_id, count(*), count(r.source_id) FROM stage.courses c "
                "JOIN migration.crosswalk_rows x ON x.source_table = 'organizations' "
                "AND x.source_id = c.org_id LEFT JOIN migration.crosswalk_courses r "
                "ON r.source_id = c.id AND r.target_table = 'course_offerings' "
                "GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 1").fetchone()
            assert department is not None, "no run of the base has a department"
        with psycopg.connect(settings.source_url) as conn:
            conn.execute("UPDATE organizations SET name_az = '' WHERE id = %s", [department[0]])
        api.sync(settings, as_of=MIGRATED_AT)
        with psycopg.connect(settings.target_url) as conn:
            row = conn.execute("SELECT recomputed FROM migration.sync_runs "
                               "ORDER BY id DESC LIMIT 1").fetchone()
            unitless = conn.execute(
                "SELECT count(*) FROM migration.repairs WHERE source_table = 'courses' "
                "AND column_name = 'org_id' AND old_value = %s::text",
                [department[0]]).fetchone()
        assert row is not None and row[0]["courses"] >= department[1]
        assert unitless is not None and unitless[0] == department[2] > 0
        _assert_equals_a_full_migration(base, source, settings, fresh, tmp_path, MIGRATED_AT,
                                        "after a department was set aside")


PHONES = "SELECT raw, e164, xmin::text FROM stage.phone_numbers ORDER BY raw"


# A kept mark of a mark type out of ten whose score can go up by one, its enrollment, and the
# other marks of that enrollment.
CORRECTABLE_MARK = """
SELECT g.legacy_id, e.source_id AS enrollment_legacy_id, g.score
FROM grades g
JOIN assessments a ON a.id = g.assessment_id
JOIN migration.crosswalk_course_students e ON e.target_id = g.enrollment_id
WHERE NOT g.is_absent AND a.max_score = 10 AND g.score BETWEEN 1 AND 8 AND g.score = trunc(g.score)
  AND (SELECT count(*) FROM grades o WHERE o.enrollment_id = g.enrollment_id) > 3
ORDER BY g.legacy_id LIMIT 1"""
GRADE_WRITES = ("SELECT n_tup_ins, n_tup_upd, n_tup_hot_upd, n_tup_del FROM pg_stat_user_tables "
                "WHERE relid = 'public.grades'::regclass")


def _grade_writes(url: str, before: tuple[int, ...] | None = None) -> tuple[int, ...]:
    """The statistics' count of rows grades has had inserted, updated (HOT among them) and
    deleted; with `before`, once they moved from it (a backend's counts reach the statistics
    when it ends, a moment after its client has closed it)."""
    deadline = time.monotonic() + 15
    with psycopg.connect(url, autocommit=True) as conn:
        while True:
            conn.execute("SELECT pg_stat_clear_snapshot()")
            row = conn.execute(GRADE_WRITES).fetchone()
            assert row is not None
            counts = tuple(int(v) for v in row)
            if before is None or counts != before or time.monotonic() > deadline:
                return counts
            time.sleep(0.2)


def test_a_corrected_mark_is_updated_in_place_and_its_enrollments_other_marks_are_not_written(
        base: Base, tmp_path: Path) -> None:
    """Issue 21, point 3: the marks in scope are derived into a twin of grades and only those
    that came out differently reach it, in place. A mark corrected on the old LMS is one HOT
    update of its row (no row deleted or inserted, so no index entry and no foreign-key check);
    the other marks of an enrollment edited the same day are derived again, come out the same,
    and keep their row versions. Before, every mark in scope was deleted and inserted again."""
    with _cloned(base, tmp_path) as (source, settings, fresh):
        with psycopg.connect(settings.target_url) as conn:
            row = conn.execute(CORRECTABLE_MARK).fetchone()
            assert row is not None, "the base holds no mark to correct"
            mark, enrollment, score = int(row[0]), int(row[1]), row[2]
            versions = dict(conn.execute(
                "SELECT g.legacy_id, g.xmin::text FROM grades g JOIN grades m "
                "ON m.enrollment_id = g.enrollment_id WHERE m.legacy_id = %s", [mark]).fetchall())
        with psycopg.connect(settings.source_url) as conn:
            conn.execute("UPDATE grades SET value = %s WHERE id = %s", [str(int(score) + 1), mark])
            conn.execute("UPDATE course_students SET enrolled_at = enrolled_at + interval '1 day' "
                         "WHERE id = %s", [enrollment])
        before = _grade_writes(settings.target_url)
        api.sync(settings, as_of=MIGRATED_AT)
        inserted, updated, hot, deleted = (
            a - b for a, b in zip(_grade_writes(settings.target_url, before), before,
                                  strict=True))
        assert (inserted, updated, hot, deleted) == (0, 1, 1, 0)
        with psycopg.connect(settings.target_url) as conn:
            after = dict(conn.execute(
                "SELECT legacy_id, xmin::text FROM grades WHERE legacy_id = ANY(%s)",
                [list(versions)]).fetchall())
            assert conn.execute("SELECT score FROM grades WHERE legacy_id = %s",
                                [mark]).fetchone() == (score + 1,)
        assert set(after) == set(versions)
        assert {m for m in versions if after[m] != versions[m]} == {mark}
        _assert_equals_a_full_migration(base, source, settings, fresh, tmp_path, MIGRATED_AT,
                                        "after a mark corrected and its enrollment edited")


def test_marks_moved_to_another_type_leave_their_old_assessment_and_it_goes(
        base: Base, tmp_path: Path) -> None:
    """Every mark of one type of a course run takes another type of the same maximum: their
    rows are updated in place (their key stays), and the assessment they leave has no mark and
    goes, as in a full migration, although no mark of it was deleted."""
    with _cloned(base, tmp_path) as (source, settings, fresh):
        with psycopg.connect(settings.source_url) as conn:
            row = conn.execute(
                "SELECT cs.course_id FROM grades g JOIN course_students cs "
                "ON cs.id = g.course_student_id WHERE g.grade_type = 2 "
                "GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT 1").fetchone()
            assert row is not None
            run = int(row[0])
            conn.execute("UPDATE grades g SET grade_type = 3 FROM course_students cs "
                         "WHERE cs.id = g.course_student_id AND cs.course_id = %s "
                         "AND g.grade_type = 2", [run])
        with psycopg.connect(settings.target_url) as conn:
            left = ("SELECT count(*) FROM assessments a JOIN migration.crosswalk_courses x "
                    "ON x.target_id = a.course_offering_id AND x.target_table = "
                    "'course_offerings' WHERE x.source_id = %s AND a.assessment_type = 'seminar'")
            assert conn.execute(left, [run]).fetchone() == (1,)
        api.sync(settings, as_of=MIGRATED_AT)
        with psycopg.connect(settings.target_url) as conn:
            assert conn.execute(left, [run]).fetchone() == (0,)
        _assert_equals_a_full_migration(base, source, settings, fresh, tmp_path, MIGRATED_AT,
                                        "after a run's marks moved to another type")


def _step_rows(caplog: pytest.LogCaptureFixture) -> dict[str, int]:
    """The rows of each step the run log got (Reporter.step), by name: the last, for a name
    seen twice."""
    return {str(r.args[0]): int(r.args[1]) for r in caplog.records
            if isinstance(r.args, tuple) and r.msg == "step %s: %s rows in %.2fs"}


def test_a_mark_of_a_new_type_creates_its_assessment_from_the_keys_of_its_own_run_alone(
        base: Base, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A sync derives the assessment keys (one per course run and mark type) of the runs of
    the marks in scope, not of every run: for one mark, the six of its run. With every run the
    last sync of the cutover's window at scale 10 derived 361,200 keys for 202 marks, and probed
    as many assessments. The mark's new type names an assessment its run did not have, which
    the sync creates, as a full migration does."""
    with _cloned(base, tmp_path) as (source, settings, fresh):
        with psycopg.connect(settings.source_url) as conn:
            # a mark of 0-9 (within every type's maximum but attendance's) and a type of
            # another maximum-10 or larger that no mark of its run has
            row = conn.execute(
                "SELECT g.id, t FROM grades g JOIN course_students cs "
                "ON cs.id = g.course_student_id CROSS JOIN generate_series(2, 6) t "
                "WHERE g.grade_type BETWEEN 2 AND 6 AND g.value ~ '^[0-9]$' AND NOT EXISTS ("
                "  SELECT 1 FROM grades o JOIN course_students ocs ON ocs.id = o.course_student_id "
                "  WHERE ocs.course_id = cs.course_id AND o.grade_type = t) "
                "ORDER BY g.id, t LIMIT 1").fetchone()
            assert row is not None, "the base holds no run without a mark of some type"
            conn.execute("UPDATE grades SET grade_type = %s WHERE id = %s", [row[1], row[0]])
            (runs,) = conn.execute("SELECT count(DISTINCT course_id) FROM course_students "
                                   "WHERE course_id IS NOT NULL").fetchone() or (0,)
        assert runs > 1
        caplog.set_level(logging.INFO, logger="edu_migrate")
        api.sync(settings, as_of=MIGRATED_AT)
        steps = _step_rows(caplog)
        assert steps["assessment_keys"] == 6
        assert steps["migrate_assessments"] == 1
        _assert_equals_a_full_migration(base, source, settings, fresh, tmp_path, MIGRATED_AT,
                                        "after a mark took a type its run had no mark of")


def test_marks_the_as_of_time_decides_are_derived_again_when_it_moves_and_only_then(
        base: Base, tmp_path: Path) -> None:
    """A moved as-of time brings into scope the marks it decides without a scan of the mirror:
    those with no time of their own (a repair: created_at is the as-of time) and those set aside
    as dated after it are found by their records; moved back, the kept ones it now puts in the
    future are found by their date. The marks are edited, then synced at the same as-of time,
    so that the later syncs find them unchanged and only the as-of time can bring them in."""
    later, earlier = AS_OF_TIMES[0], AS_OF_TIMES[2]
    with _cloned(base, tmp_path) as (source, settings, fresh):
        with psycopg.connect(settings.target_url) as conn:
            marks = [int(r[0]) for r in conn.execute(
                "SELECT legacy_id FROM grades WHERE legacy_id > 0 ORDER BY legacy_id LIMIT 3")]
        assert len(marks) == 3
        dated_between, timeless, kept_then_future = marks
        with psycopg.connect(settings.source_url) as conn:
            conn.execute("UPDATE grades SET lesson_date = '2026-01-20' WHERE id = %s",
                         [dated_between])
            conn.execute("UPDATE grades SET lesson_date = NULL, created_at = NULL WHERE id = %s",
                         [timeless])
            conn.execute("UPDATE grades SET lesson_date = '2025-06-01' WHERE id = %s",
                         [kept_then_future])
        api.sync(settings, as_of=MIGRATED_AT)

        def kept(mark: int) -> Any:
            with psycopg.connect(settings.target_url) as conn:
                row = conn.execute("SELECT created_at FROM grades WHERE legacy_id = %s",
                                   [mark]).fetchone()
            return None if row is None else row[0]

        assert kept(dated_between) is None and kept(timeless) == MIGRATED_AT
        api.sync(settings, as_of=later)
        assert kept(dated_between) is not None and kept(timeless) == later
        _assert_equals_a_full_migration(base, source, settings, fresh, tmp_path, later,
                                        "after the as-of time moved forward")
        _drop(base.admin_url, fresh)
        assert kept(kept_then_future) is not None
        api.sync(settings, as_of=earlier)
        assert kept(kept_then_future) is None and kept(timeless) == earlier
        _assert_equals_a_full_migration(base, source, settings, fresh, tmp_path, earlier,
                                        "after the as-of time moved back")


def test_phase_1_derived_again_parses_only_the_phones_it_has_not_seen(
        base: Base, tmp_path: Path) -> None:
    """The E.164 look-up is computed in Python, a phone at a time: a sync that derives phase 1
    again (a login is enough) parses only the spellings the look-up lacks, drops those no person
    has any more, and keeps the rest as they are; a new version of `phonenumbers` parses them
    all again. The result equals a full migration."""
    with _cloned(base, tmp_path) as (source, settings, fresh):
        with psycopg.connect(settings.target_url) as conn:
            before = {r[0]: r[1:] for r in conn.execute(PHONES)}
        with psycopg.connect(settings.source_url) as conn:
            row = conn.execute("UPDATE persons SET phone = '+994 (50) 123 45 67' WHERE id = "
                               "(SELECT min(id) FROM persons WHERE phone IS NOT NULL "
                               "AND phone NOT IN (SELECT phone FROM persons GROUP BY phone "
                               "HAVING count(*) > 1)) RETURNING (SELECT phone FROM persons "
                               "p WHERE p.id = persons.id)").fetchone()
            conn.execute("UPDATE users SET last_login = coalesce(last_login, '2025-01-01') "
                         "+ interval '1 day' WHERE id = (SELECT max(id) FROM users)")
        assert row is not None
        with psycopg.connect(settings.source_url) as conn:
            gone = conn.execute("SELECT %s::text NOT IN (SELECT phone FROM persons "
                                "WHERE phone IS NOT NULL)", [row[0]]).fetchone()
        api.sync(settings, as_of=MIGRATED_AT)
        with psycopg.connect(settings.target_url) as conn:
            after = {r[0]: r[1:] for r in conn.execute(PHONES)}
        assert after["+994 (50) 123 45 67"][0] == "+994501234567"
        kept = set(before) & set(after)
        assert kept and all(after[raw] == before[raw] for raw in kept), \
            "phones the look-up had were parsed and written again"
        assert set(after) - set(before) == {"+994 (50) 123 45 67"}
        assert gone == (True,) and set(before) - set(after) == {row[0]}
        _assert_equals_a_full_migration(base, source, settings, fresh, tmp_path, MIGRATED_AT,
                                        "after a phone changed")
        with psycopg.connect(settings.target_url) as conn:
            conn.execute("COMMENT ON TABLE stage.phone_numbers IS 'phonenumbers 0.0'")
        with psycopg.connect(settings.source_url) as conn:
            conn.execute("UPDATE users SET last_login = last_login + interval '1 day' "
                         "WHERE id = (SELECT max(id) FROM users)")
        api.sync(settings, as_of=MIGRATED_AT)
        with psycopg.connect(settings.target_url) as conn:
            again = {r[0]: r[1:] for r in conn.execute(PHONES)}
        assert {raw: v[0] for raw, v in again.items()} == {raw: v[0] for raw, v in after.items()}
        assert all(again[raw][1] != after[raw][1] for raw in again), \
            "another phonenumbers version must parse every phone again"


def test_sync_finds_what_a_savepoint_wrote_in_a_transaction_open_at_the_snapshot(
        base: Base, tmp_path: Path) -> None:
    """A transaction running when the migration took its snapshot writes in a savepoint (a
    subtransaction: its id is older than the snapshot's next id, yet the snapshot's list of
    running transactions names only the parent) and commits afterwards. The sync must find
    those rows: a horizon taken from the snapshot's next id would miss them."""
    source = _clone(base.admin_url, base.source)
    target, fresh = f"{source}_dst", f"{source}_full"
    settings = _settings(base, source, target, tmp_path)
    try:
        with psycopg.connect(settings.source_url) as writer:
            writer.execute("UPDATE users SET last_login = '2026-01-10 08:00' "
                           "WHERE id = (SELECT min(id) FROM users)")
            writer.execute("SAVEPOINT marks")
            writer.execute("UPDATE grades SET value = '9' WHERE id = (SELECT max(id) FROM grades)")
            writer.execute("INSERT INTO grades SELECT id + 1000000, course_student_id, "
                           "grade_type, '10', lesson_date, teacher_id, created_at FROM grades "
                           "WHERE id = (SELECT min(id) FROM grades)")
            writer.execute("RELEASE SAVEPOINT marks")
            api.schema_apply(settings)
            api.migrate(settings, force=True, as_of=MIGRATED_AT)
            writer.commit()
        api.sync(settings, as_of=MIGRATED_AT)
        assert set(_methods(settings.target_url).values()) == {"horizon"}
        _assert_equals_a_full_migration(base, source, settings, fresh, tmp_path, MIGRATED_AT,
                                        "after a savepoint's writes")
    finally:
        _drop(base.admin_url, fresh, target, source)


ROW_CHANGES = st.lists(st.tuples(
    st.sampled_from(("insert", "update", "delete", "insert_edge")),
    st.sampled_from(tuple(LEGACY_COLUMNS)),
    st.one_of(st.sampled_from((0, 1, -1, -2)), st.integers(0, 10**6)),
    st.integers(0, 10**6), st.integers(0, 100),
    st.sampled_from(("copy", "copy", "null", "junk")), st.integers(0, 100)),
    min_size=0, max_size=6)


@contextmanager
def _counted_first(answers: list[tuple[str, bool]] | None) -> Iterator[None]:
    """The write check's count (changes.untouched_since) recorded into `answers`, or (None)
    never asked: every table's rows compared, as before it."""
    def recorded(conn: psycopg.Connection, snapshot: SourceSnapshot, table: str,
                 horizon: int) -> bool:
        if answers is None:
            return False
        answer = changes_module.untouched_since(conn, snapshot, table, horizon)
        answers.append((table, answer))
        return answer

    with _replaced(sync_module, "untouched_since", recorded):
        yield


@hypothesis_settings(max_examples=12, deadline=None, phases=(Phase.explicit, Phase.generate),
                     suppress_health_check=[HealthCheck.function_scoped_fixture,
                                            HealthCheck.too_slow])
@given(changes=ROW_CHANGES, split=st.booleans())
@example(changes=[], split=True)
@example(changes=[("delete", "grades", 0, 0, 0, "copy", 0)], split=True)
@example(changes=[("delete", "grades", -1, 0, 0, "copy", 0)], split=True)
def test_the_write_checks_count_gives_the_answer_the_rows_compared_give(
        base: Base, tmp_path: Path, changes: list[Change], split: bool) -> None:
    """The cutover's test that nothing reached the source after its last sync counts each
    table's row headers in one pass first (no row written since the horizon, as many rows as
    the mirror: nothing changed), split over two sessions of the snapshot by the table's pages
    where the table is large (`split` makes every table large), and compares the rows only
    where the count cannot tell. Its answer is the one comparing every table's rows gives, for
    drawn writes to the source (none; inserts, updates and deletions; rows at ids near the ends
    of bigint; the lowest and highest ids, at the two ends of the pages split). With nothing
    written, the count tells for every table."""
    source, synced = _clone(base.admin_url, base.source), _clone(base.admin_url, base.target)
    try:
        settings = _settings(base, source, synced, tmp_path)
        _read_from(source, settings)
        with psycopg.connect(settings.source_url, autocommit=True) as conn:
            for change in changes:
                _apply(conn, change)
        answers: list[tuple[str, bool]] = []
        with _counts_ahead(split):
            with _counted_first(answers):
                counted = api.unsynced_tables(settings)
            with _counted_first(None):
                compared = api.unsynced_tables(settings)
        assert counted == compared, changes
        if not changes:
            assert counted == {} and answers == [(t, True) for t in LEGACY_COLUMNS]
    finally:
        _drop(base.admin_url, synced, source)


def test_sync_refuses_a_target_with_no_completed_migration(base: Base, tmp_path: Path) -> None:
    target = f"{base.target}_empty"
    settings = _settings(base, base.source, target, tmp_path)
    try:
        api.schema_apply(settings)
        with pytest.raises(PreconditionFailed, match="sync needs a completed migration"):
            api.sync(settings)
    finally:
        _drop(base.admin_url, target)


def test_sync_refuses_a_target_migrated_from_another_source(base: Base, tmp_path: Path) -> None:
    other, target = _clone(base.admin_url, base.source), _clone(base.admin_url, base.target)
    try:
        with pytest.raises(PreconditionFailed, match="migrated from database"):
            api.sync(_settings(base, other, target, tmp_path))
    finally:
        _drop(base.admin_url, target, other)


def test_sync_refuses_a_source_whose_ids_repeat_and_applies_nothing(
        base: Base, tmp_path: Path) -> None:
    source, target = _clone(base.admin_url, base.source), _clone(base.admin_url, base.target)
    try:
        settings = _settings(base, source, target, tmp_path)
        _read_from(source, settings)
        before = result_rows(settings.target_url)
        with psycopg.connect(settings.source_url) as conn:
            conn.execute("ALTER TABLE grades DROP CONSTRAINT grades_pkey")
            conn.execute("UPDATE users SET username = 'changed' WHERE id = (SELECT min(id) "
                         "FROM users)")
            conn.execute("INSERT INTO grades SELECT * FROM grades WHERE id = "
                         "(SELECT min(id) FROM grades)")
        with pytest.raises(PreconditionFailed, match=r"grades holds id .* more than once"):
            api.sync(settings)
        assert result_rows(settings.target_url) == before
    finally:
        _drop(base.admin_url, target, source)


def _frozen(url: str) -> bool:
    with psycopg.connect(url) as conn:
        row = conn.execute("SHOW default_transaction_read_only").fetchone()
    return row is not None and row[0] == "on"


def test_cutover_ends_a_writer_open_before_the_freeze_and_equals_a_full_migration(
        base: Base, tmp_path: Path) -> None:
    """A session that wrote and has not committed when the source is frozen is ended
    (--terminate-writers): its write never reaches edu_v2. What had been committed does, and the
    frozen source migrated afresh gives the same rows."""
    with _cloned(base, tmp_path) as (source, settings, fresh):
        with psycopg.connect(settings.source_url) as conn:
            conn.execute("UPDATE grades SET value = '10' WHERE id = (SELECT min(id) FROM grades)")
        writer = psycopg.connect(settings.source_url)
        writer.execute("UPDATE grades SET value = '0' WHERE id = (SELECT max(id) FROM grades)")
        result = api.cutover(settings, as_of=MIGRATED_AT, terminate_writers=True)
        with pytest.raises(psycopg.OperationalError):
            writer.execute("SELECT 1")
        writer.close()
        # (the count may include the session that committed above: a closed connection's
        # backend can still be listed for a moment)
        assert result.writers_terminated >= 1
        assert _frozen(settings.source_url)
        with psycopg.connect(settings.target_url) as conn:
            row = conn.execute("SELECT detail -> 'window_seconds' FROM migration.run_log "
                               "WHERE event = 'cutover'").fetchone()
        assert row is not None and float(row[0]) == result.window_seconds
        _assert_equals_a_full_migration(base, source, settings, fresh, tmp_path, MIGRATED_AT,
                                        "after a cutover")


def test_a_cutover_that_fails_validation_unfreezes_the_source(
        base: Base, tmp_path: Path) -> None:
    """The abort path: a mark's crosswalk row lost in the target makes validation fail inside
    the window; the cutover says so in one error and leaves the source writable."""
    with clones(base.admin_url, base.source, base.target) as (source, synced, _):
        settings = _settings(base, source, synced, tmp_path)
        with psycopg.connect(settings.target_url) as conn:
            conn.execute("UPDATE migration.state SET source_database = %s", [source])
            # the marks' crosswalk is derived from grades.legacy_id (schema V026)
            conn.execute("UPDATE grades SET legacy_id = NULL WHERE legacy_id = "
                         "(SELECT min(legacy_id) FROM grades)")
        with pytest.raises(MigrationError, match="cutover aborted, the source is writable"):
            api.cutover(settings, as_of=MIGRATED_AT, terminate_writers=True)
        assert not _frozen(settings.source_url)


def test_a_sync_copies_no_unchanged_archived_table_again(base: Base, tmp_path: Path) -> None:
    """The archive keeps secret columns empty; a sync compares the source's rows as the archive
    keeps them, so a table nobody wrote to is not copied again (it used to be, every sync, for
    each table with a masked column), and its masked columns stay on record."""
    source, synced = _clone(base.admin_url, base.source), _clone(base.admin_url, base.target)

    def archive_state() -> tuple[dict[str, int], dict[str, list[str]]]:
        with psycopg.connect(with_database(base.admin_url, synced)) as conn:
            tables = {str(name): int(oid) for name, oid in conn.execute(
                "SELECT c.relname, c.oid FROM pg_class c JOIN pg_namespace n "
                "ON n.oid = c.relnamespace WHERE n.nspname = 'legacy_archive' "
                "AND c.relkind = 'r'")}
            row = conn.execute("SELECT detail -> 'masked' FROM migration.run_log "
                               "WHERE event = 'archive' ORDER BY id DESC LIMIT 1").fetchone()
        assert row is not None
        return tables, row[0]

    try:
        settings = _settings(base, source, synced, tmp_path)
        _read_from(source, settings)
        tables, masked = archive_state()
        assert masked, "the dirty database has archived tables with secret columns"
        api.sync(settings, as_of=MIGRATED_AT)
        assert archive_state() == (tables, masked)
        # A row written again (same values) and a row deleted: those two tables are copied
        # again, to the source's rows; the rest stay as they were.
        with psycopg.connect(settings.source_url) as conn:
            conn.execute("UPDATE rooms SET id = id WHERE id = (SELECT min(id) FROM rooms)")
            conn.execute("DELETE FROM news WHERE id = (SELECT max(id) FROM news)")
            news = conn.execute("SELECT count(*) FROM news").fetchone()
        api.sync(settings, as_of=MIGRATED_AT)
        after, masked_after = archive_state()
        assert masked_after == masked
        assert {t for t in tables if after[t] != tables[t]} == {"rooms", "news"}
        with psycopg.connect(settings.target_url) as conn:
            assert conn.execute("SELECT count(*) FROM legacy_archive.news").fetchone() == news
    finally:
        _drop(base.admin_url, synced, source)


def test_a_syncs_archive_step_reads_no_mapped_table(base: Base, tmp_path: Path) -> None:
    """A sync's archive step copies again the unmapped tables that changed. It used to count
    every table of the source, the mapped ones too, whose counts it never used: the 32 million
    marks at scale 10, 1.6 s inside the cutover's window. In the snapshot's own transaction the
    statistics show no scan of a mapped table, and the archived tables are still counted."""
    source, synced = _clone(base.admin_url, base.source), _clone(base.admin_url, base.target)
    scans = ("SELECT c.relname, coalesce(s.seq_scan, 0) + coalesce(s.idx_scan, 0) "
             "FROM pg_stat_xact_user_tables s JOIN pg_class c ON c.oid = s.relid "
             "WHERE s.relid = ANY(%s::regclass[])")
    try:
        settings = _settings(base, source, synced, tmp_path)
        _read_from(source, settings)
        with psycopg.connect(settings.source_url) as conn:
            conn.execute("DELETE FROM news WHERE id = (SELECT max(id) FROM news)")
        snapshot = SourceSnapshot(settings.source_url)
        try:
            relations = [snapshot.mapping[t].relation.as_string(snapshot.conn)
                         for t in LEGACY_COLUMNS]
            before = dict(snapshot.conn.execute(scans, [relations]).fetchall())
            result = archive_unmapped(snapshot, settings.target_url, settings.exclude,
                                      Reporter(), skip_unchanged=True)
            after = dict(snapshot.conn.execute(scans, [relations]).fetchall())
            (news,) = snapshot.conn.execute("SELECT count(*) FROM news").fetchone() or (None,)
        finally:
            snapshot.close()
        assert {t: n - before.get(t, 0) for t, n in after.items() if n != before.get(t, 0)} \
            == {}
        assert result.archived["news"] == news
    finally:
        _drop(base.admin_url, synced, source)


def test_a_source_restored_to_an_earlier_point_is_compared_row_by_row(
        base: Base, tmp_path: Path) -> None:
    """A source restored from a backup taken before the last sync keeps its system identifier,
    and its transaction counter may have passed the mirror's horizon again: the horizon would
    find nothing written, while the rows went back. Here the backup is a copy of the source
    as the migration read it (a database of the same server: rows under their old xids), and
    the WAL position a restore would show (behind the mirror's) is put in the record. The sync
    must compare every row, and equal a full migration of the restored source."""
    backup = _clone(base.admin_url, base.source)
    source, synced = _clone(base.admin_url, base.source), _clone(base.admin_url, base.target)
    fresh = f"{synced}_full"
    try:
        settings = _settings(base, source, synced, tmp_path)
        _read_from(source, settings)
        with psycopg.connect(settings.source_url) as conn:
            conn.execute("UPDATE grades SET value = '10' WHERE id = (SELECT min(id) FROM grades "
                         "WHERE id > 0)")
            conn.execute("UPDATE users SET last_login = '2026-01-12 10:00' WHERE id = "
                         "(SELECT min(id) FROM users)")
        api.sync(settings, as_of=MIGRATED_AT)
        restored = _settings(base, backup, synced, tmp_path)
        _read_from(backup, restored)
        with psycopg.connect(restored.target_url) as conn:
            conn.execute("UPDATE migration.mirror_state SET source_lsn = "
                         "source_lsn + 1000000000000")
        api.sync(restored, as_of=MIGRATED_AT)
        assert set(_methods(restored.target_url).values()) == {"comparison"}
        _assert_equals_a_full_migration(base, backup, restored, fresh, tmp_path, MIGRATED_AT,
                                        "after a restore to before the last sync")
    finally:
        _drop(base.admin_url, fresh, synced, source, backup)


def test_a_stalled_sync_older_than_the_mirror_is_refused_and_applies_nothing(
        base: Base, tmp_path: Path) -> None:
    """A sync takes its snapshot, then stalls (waiting for the migration lock, say) while a
    mark is deleted and another sync brings the mirror past it. Applied, the stalled snapshot
    would bring the deleted mark back: it is refused instead, and edu_v2 is left as it is."""
    with clones(base.admin_url, base.source, base.target) as (source, synced, _):
        settings = _settings(base, source, synced, tmp_path)
        _read_from(source, settings)
        stalled = SourceSnapshot(settings.source_url)
        try:
            with psycopg.connect(settings.source_url) as conn:
                conn.execute("DELETE FROM grades WHERE id = (SELECT max(id) FROM grades "
                             "WHERE id < 1000000000)")
            api.sync(settings, as_of=MIGRATED_AT)
            before = result_rows(settings.target_url)
            with pytest.raises(PreconditionFailed, match="older than the one the mirror"):
                run_sync(stalled, settings.target_url, as_of=MIGRATED_AT, batch_size=5_000,
                         reporter=Reporter())
        finally:
            stalled.close()
        assert result_rows(settings.target_url) == before


@pytest.mark.parametrize("copy", ["intact", "emptied"])
def test_phases_that_share_a_staged_table_derive_from_one_snapshot_of_it(
        base: Base, tmp_path: Path, copy: str) -> None:
    """Phase 3 derives the terms from the course runs; phase 4, run later on a new snapshot,
    reads the same runs. A run of a new term written between the two: had phase 4 staged the
    runs again (and their horizon with them), phase 3 would never see it and a sync would not
    find it. The sync after must equal a full migration. `emptied`: the staged runs were
    emptied in between, as a crash of the target empties them (UNLOGGED; the real crash is
    tests/faults/test_crash_restart.py): phase 4 must stage them again, on its snapshot, and
    the sync derive phase 3 again."""
    source = _clone(base.admin_url, base.source)
    target, fresh = f"{source}_dst", f"{source}_full"
    settings = _settings(base, source, target, tmp_path)
    try:
        api.schema_apply(settings)
        api.migrate(settings, phases=[1, 3], force=True, as_of=MIGRATED_AT)
        if copy == "emptied":
            with psycopg.connect(settings.target_url) as conn:
                conn.execute("TRUNCATE stage.courses")
        with psycopg.connect(settings.source_url) as conn:
            _copy_row_as(conn, "courses", 3, 900_001)
            conn.execute("UPDATE courses SET edu_year = '2031-2032', semester = 1 "
                         "WHERE id = 900001")
        api.migrate(settings, phases=[2, 4, 5], force=True, as_of=MIGRATED_AT)
        api.sync(settings, as_of=MIGRATED_AT)
        _assert_equals_a_full_migration(base, source, settings, fresh, tmp_path, MIGRATED_AT,
                                        "after phases 1 and 3, a new term, then 2, 4 and 5")
    finally:
        _drop(base.admin_url, fresh, target, source)


# A source read through an enum and a function: teachers' degree is an enum's label, their
# position passes through a function of the source's own.
MAPPED = {"teachers": {"columns": {"degree": {"sql": "degree_code::text"},
                                   "position": {"sql": "position_of(position)"}}}}
UNDER_THE_MAPPING = {
    "enum": "ALTER TYPE degree_code RENAME VALUE 'phd' TO 'PhD (renamed)'",
    "function": "CREATE OR REPLACE FUNCTION position_of(p text) RETURNS text IMMUTABLE "
                "LANGUAGE sql AS $$ SELECT p || ' (replaced)' $$",
}


@pytest.fixture(scope="module")
def mapped_base(base: Base, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Base]:
    source = _clone(base.admin_url, base.source)
    made = Base(base.admin_url, source, f"{source}_dst")
    try:
        settings = _settings(made, made.source, made.target, tmp_path_factory.mktemp("mapped"),
                             MAPPED)
        with psycopg.connect(settings.source_url) as conn:
            conn.execute("CREATE TYPE degree_code AS ENUM ('phd', 'dsc', 'none')")
            conn.execute("ALTER TABLE teachers ADD COLUMN degree_code degree_code")
            conn.execute("UPDATE teachers SET degree_code = "
                         "(ARRAY['phd', 'dsc', 'none'])[1 + id % 3]::degree_code")
            conn.execute("CREATE FUNCTION position_of(p text) RETURNS text IMMUTABLE "
                         "LANGUAGE sql AS $$ SELECT p $$")
        api.schema_apply(settings)
        api.migrate(settings, force=True, as_of=MIGRATED_AT)
        yield made
    finally:
        _drop(base.admin_url, made.target, made.source)


def test_an_enum_and_a_function_changed_under_the_mapping_are_found(
        mapped_base: Base, tmp_path: Path) -> None:
    """A renamed enum label, a replaced function: no row is written, so no horizon sees them,
    yet every teacher reads differently. The mirror's fingerprint of what it was read
    through differs, the sync compares teachers row by row and equals a full migration.
    (Either change alone makes the old code miss it: one sync covers both, for time.)"""
    base = mapped_base
    with _cloned(base, tmp_path, MAPPED) as (source, settings, fresh):
        with psycopg.connect(settings.source_url) as conn:
            for change in UNDER_THE_MAPPING.values():
                conn.execute(change.encode())
        api.sync(settings, as_of=MIGRATED_AT)
        assert _methods(settings.target_url)["teachers"] == "comparison"
        _assert_equals_a_full_migration(base, source, settings, fresh, tmp_path, MIGRATED_AT,
                                        "after an enum label and a function changed", MAPPED)


def test_a_sync_records_the_relation_an_edited_mapping_reads_a_table_from(
        base: Base, tmp_path: Path) -> None:
    """The mapping edited to read `courses` from another relation, the table renamed to match:
    every crosswalk row the sync writes for it names that relation. The phases write straight
    into the crosswalk's partitions, whose defaults name the source table; a sync that left
    them as the full run set them recorded the old one."""
    mapping: dict[str, Any] = {"courses": {"table": "public.course_runs"}}
    with _cloned(base, tmp_path, mapping) as (source, settings, fresh):
        with psycopg.connect(settings.source_url, autocommit=True) as conn:
            conn.execute("ALTER TABLE courses RENAME TO course_runs")
        api.sync(settings, as_of=MIGRATED_AT)
        with psycopg.connect(settings.target_url) as conn:
            relations = {str(r[0]) for r in conn.execute(
                "SELECT DISTINCT source_relation FROM migration.crosswalk "
                "WHERE source_table = 'courses'")}
        assert relations == {"public.course_runs"}
        _assert_equals_a_full_migration(base, source, settings, fresh, tmp_path, MIGRATED_AT,
                                        "after courses moved to course_runs", mapping)
