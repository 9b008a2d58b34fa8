"""A regression guard on speed: `migrate --all` against raw copy-through of the same tables.

At this scale fixed costs (five transactions, staging, index rebuilds, ANALYZE) weigh more than
at scale 1, so the bound is generous: a healthy run stays well under it on a loaded 2-core
machine, while a phase that turned row-by-row (one statement per mark) exceeds it many times.
"""

from __future__ import annotations

import time

import psycopg
from bench.contenders import raw_copy_through
from psycopg import sql

from edu_migrate import api
from edu_migrate.config import Settings
from edu_migrate.pg.urls import with_database
from tests.integration.helpers import prepared

SCALE = 0.1
BOUND = 10.0


def test_migrate_stays_within_a_bound_of_raw_copy(settings: Settings) -> None:
    prepared(settings, scale=SCALE)
    source = str(settings.source_url)
    copy_name = f"{psycopg.conninfo.conninfo_to_dict(source)['dbname']}_raw"
    admin = with_database(source, "postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(copy_name)))
    try:
        raw = raw_copy_through(source, with_database(source, copy_name)).seconds
        started = time.perf_counter()
        api.migrate(settings)
        migrate = time.perf_counter() - started
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(copy_name)))
    assert migrate / raw < BOUND, f"migrate --all {migrate:.2f}s, raw copy {raw:.2f}s"
