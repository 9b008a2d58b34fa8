"""The guide's files, made by edu-migrate against a real server: new_database_schema.sql
(`schema sql`), the SQL backup beside the -Fc one (`backup --format plain`), a phase's
statements for review (`migrate --phase N --sql`), and the documentation generated from the
databases (`docs --out DIR`: data dictionary, ER diagram, OLD_TO_NEW_SCHEMA_MAPPING.md)."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from edu_migrate.pg.tools import client_program, run_client
from edu_migrate.pg.urls import with_database
from tests.integration.helpers import admin_sql, drop_databases
from tests.integration.test_cli_errors import run_cli

# pg_dump marks each dump with a random key (\restrict KEY, PostgreSQL 17.6 and later).
_RESTRICT = re.compile(r"^\\(un)?restrict \S+$", re.MULTILINE)


def _schema_of(url: str) -> str:
    """pg_dump --schema-only of a database, without what differs between any two dumps."""
    with psycopg.connect(url) as conn:
        version = conn.info.server_version
    dump = run_client(client_program("pg_dump", version), ["--schema-only"], url,
                      what="pg_dump --schema-only").stdout
    return _RESTRICT.sub("", dump)


@pytest.fixture
def two_empty_databases(admin_url: str) -> Iterator[tuple[str, str]]:
    names = [f"schema_{kind}_{uuid.uuid4().hex[:8]}" for kind in ("apply", "file")]
    for name in names:
        admin_sql(admin_url, sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield with_database(admin_url, names[0]), with_database(admin_url, names[1])
    finally:
        drop_databases(admin_url, *names)


def test_schema_sql_applied_by_psql_gives_what_schema_apply_gives(
        two_empty_databases: tuple[str, str], tmp_path: Path) -> None:
    applied, scripted = two_empty_databases
    assert run_cli("schema", "apply", "--target", applied).returncode == 0
    printed = run_cli("schema", "sql")
    assert printed.returncode == 0, printed.stderr
    script = tmp_path / "new_database_schema.sql"
    script.write_text(printed.stdout, encoding="utf-8")
    psql = client_program("psql", 0)
    run_client(psql, ["--no-psqlrc", "--quiet", "--file", str(script)], scripted,
               what="psql -f new_database_schema.sql")

    assert _schema_of(scripted) == _schema_of(applied)
    versions = "SELECT array_agg((version, name)::text ORDER BY version) FROM " \
               "migration.schema_versions"
    secrets = "SELECT id_secret FROM migration.state"
    with psycopg.connect(applied) as left, psycopg.connect(scripted) as right:
        assert right.execute(versions).fetchone() == left.execute(versions).fetchone()
        (left_secret,), (right_secret,) = (c.execute(secrets).fetchone() or ("",)
                                           for c in (left, right))
    # Each database draws its own secret; the file holds none.
    assert re.fullmatch(r"[0-9a-f]{64}", str(right_secret))
    assert right_secret != left_secret and str(right_secret) not in printed.stdout
    # Applied once more, the file refuses and changes nothing.
    again = run_cli("schema", "sql")
    script.write_text(again.stdout, encoding="utf-8")
    with pytest.raises(Exception, match="already has an edu_v2 schema"):
        run_client(psql, ["--no-psqlrc", "--quiet", "--file", str(script)], scripted,
                   what="psql -f new_database_schema.sql")
    assert _schema_of(scripted) == _schema_of(applied)
