"""Small helpers shared by the integration tests."""

from __future__ import annotations

import hashlib

import psycopg
from psycopg import sql

from edu_migrate import api
from edu_migrate.config import Settings


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
