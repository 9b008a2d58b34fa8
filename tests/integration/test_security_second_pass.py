"""Issue 23, the security review's second pass: each defect, shown on a real server."""

from __future__ import annotations

import psycopg
import pytest

from edu_migrate import api
from edu_migrate.config import Settings
from edu_migrate.errors import MigrationError
from tests.integration.test_cli_errors import assert_one_line_error, run_cli

# --------------------------------------------------------------------------------------------
# 1. Nothing the tool runs by mistake destroys legacy data
# --------------------------------------------------------------------------------------------


def _tables(url: str) -> dict[str, int]:
    with psycopg.connect(url) as conn:
        names = [r[0] for r in conn.execute(
            "SELECT format('%I.%I', schemaname, tablename) FROM pg_tables "
            "WHERE schemaname NOT IN ('pg_catalog', 'information_schema')").fetchall()]
        counts = {}
        for name in names:
            row = conn.execute(f"SELECT count(*) FROM {name}").fetchone()
            assert row is not None
            counts[name] = int(row[0])
        return counts


def test_generate_refuses_a_database_with_tables_of_its_own(settings: Settings) -> None:
    """A DBA who exported the real server's URL and tries `generate` keeps their edu."""
    url = str(settings.source_url)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE public.users (id integer PRIMARY KEY, username text)")
        conn.execute("INSERT INTO public.users VALUES (1, 'the real registrar')")
        conn.execute("CREATE SCHEMA lms")
        conn.execute("CREATE TABLE lms.marks_2019 (id integer)")
    before = _tables(url)
    result = run_cli("generate", "--scale", "0.005", "--source", url)
    assert_one_line_error(result, "public.users", "lms.marks_2019")
    assert _tables(url) == before
    with pytest.raises(MigrationError):
        api.generate(settings, scale=0.005)
    assert _tables(url) == before


def test_generate_reruns_over_its_own_tables_but_not_over_one_added(settings: Settings) -> None:
    url = str(settings.source_url)
    api.generate(settings, scale=0.005, seed=1)
    api.generate(settings, scale=0.005, seed=2)  # its own tables: replaced
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE public.exam_archive (id integer)")
        conn.execute("INSERT INTO public.exam_archive VALUES (7)")
    before = _tables(url)
    with pytest.raises(MigrationError) as refused:
        api.generate(settings, scale=0.005, seed=3)
    assert "public.exam_archive" in refused.value.message
    assert "public.users" not in refused.value.message
    assert _tables(url) == before
