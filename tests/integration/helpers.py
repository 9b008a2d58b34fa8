"""Small helpers shared by the integration tests."""

from __future__ import annotations

import hashlib
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg import sql

from edu_migrate import api
from edu_migrate.config import Settings
from edu_migrate.phases.runner import PHASES, RUN_ORDER


def prepared(settings: Settings, scale: float = 0.02, seed: int = 7) -> None:
    """Generated legacy data in the source and the schema in the target."""
    api.generate(settings, scale=scale, seed=seed)
    api.schema_apply(settings)


def scalar(url: str, query: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(query.encode()).fetchone()
        assert row is not None
        return int(row[0])


def table_digest(url: str, table: str) -> str:
    """md5 of a table's rows in a stable order: equal digests, equal content."""
    with psycopg.connect(url) as conn:
        row = conn.execute(sql.SQL(
            "SELECT md5(coalesce(string_agg(t::text, E'\\n' ORDER BY t::text), '')) FROM {} t"
        ).format(sql.Identifier(*table.split(".")))).fetchone()
        assert row is not None
        return hashlib.sha1(str(row[0]).encode()).hexdigest()


BUSINESS_TABLES = tuple(t for n in RUN_ORDER for t in PHASES[n].writes)


def result_rows(url: str) -> dict[str, Counter[str]]:
    """Every row a run must get right, as text, per table: the business tables, the crosswalk,
    rejected_rows (but the time each row was set aside, which is bookkeeping) and repairs."""
    queries = {table: sql.SQL("SELECT t::text FROM {} t").format(sql.Identifier(table))
               for table in BUSINESS_TABLES}
    queries["crosswalk"] = sql.SQL("SELECT t::text FROM migration.crosswalk t")
    queries["rejected_rows"] = sql.SQL(
        "SELECT (source_table, source_id, reason, detail, phase)::text "
        "FROM migration.rejected_rows")
    queries["repairs"] = sql.SQL("SELECT t::text FROM migration.repairs t")
    with psycopg.connect(url) as conn:
        conn.execute("SET TIME ZONE 'UTC'")
        return {name: Counter(r[0] for r in conn.execute(query))
                for name, query in queries.items()}


def differences(left: dict[str, Counter[str]], right: dict[str, Counter[str]]) -> list[str]:
    """The rows one side has and the other lacks: `left` is the full run's, `right` the
    sync's."""
    found = []
    for table in left:
        only_full, only_sync = left[table] - right[table], right[table] - left[table]
        found += [f"{table}: full has {row}" for row in list(only_full.elements())[:3]]
        found += [f"{table}: sync has {row}" for row in list(only_sync.elements())[:3]]
    return found


def admin_sql(admin_url: str, statement: sql.Composable) -> None:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(statement)


def clone_database(admin_url: str, template: str) -> str:
    name = f"{template}_{uuid.uuid4().hex[:8]}"
    # FILE_COPY copies the UNLOGGED stage tables too: the clone keeps the mirror.
    admin_sql(admin_url, sql.SQL("CREATE DATABASE {} TEMPLATE {} STRATEGY FILE_COPY").format(
        sql.Identifier(name), sql.Identifier(template)))
    return name


@contextmanager
def clones(admin_url: str, source: str, target: str) -> Iterator[tuple[str, str, str]]:
    """Clones of a migrated source and target, and the name for a fresh full migration to
    compare with (`<target clone>_full`); all three dropped afterwards, whatever happened."""
    source_clone = clone_database(admin_url, source)
    target_clone = clone_database(admin_url, target)
    fresh = f"{target_clone}_full"
    try:
        yield source_clone, target_clone, fresh
    finally:
        drop_databases(admin_url, fresh, target_clone, source_clone)


def drop_databases(admin_url: str, *names: str) -> None:
    for name in names:
        admin_sql(admin_url, sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
            sql.Identifier(name)))


def id_secret(url: str) -> str:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT id_secret FROM migration.state").fetchone()
        assert row is not None
        return str(row[0])
