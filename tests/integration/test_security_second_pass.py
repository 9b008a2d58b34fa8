"""Issue 23, the security review's second pass: each defect, shown on a real server."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from edu_migrate import api
from edu_migrate.config import Settings
from edu_migrate.errors import MigrationError
from edu_migrate.pg.connect import connect
from tests.integration.test_cli_errors import assert_one_line_error, run_cli, urls

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


def _rooms_exists(url: str) -> bool:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT to_regclass('public.rooms') IS NOT NULL").fetchone()
        return bool(row and row[0])


# Closes the read-only transaction it was pasted into, opens a writable one, drops a table.
ESCAPE = ("email)::text FROM public.users LIMIT 0; COMMIT; BEGIN READ WRITE; "
          "DROP TABLE public.rooms; COMMIT; SELECT (email")


def test_a_mapping_expression_cannot_write_to_the_source(settings: Settings,
                                                         tmp_path: Path) -> None:
    url = str(settings.source_url)
    api.generate(settings, scale=0.005)
    mapping = tmp_path / "mapping.toml"
    mapping.write_text(f'[mapping.users.columns]\nemail = {{ sql = "{ESCAPE}" }}\n',
                       encoding="utf-8")
    result = run_cli("mapping", "check", "--source", url, "--mapping", str(mapping))
    assert_one_line_error(result, "users.email", "single expression")
    assert _rooms_exists(url)
    result = run_cli("preflight", *urls(settings), "--mapping", str(mapping))
    assert result.returncode != 0
    assert "users.email" in result.stdout + result.stderr
    assert _rooms_exists(url)


@pytest.mark.parametrize("autocommit", [False, True])
def test_a_source_session_runs_one_statement_per_call_in_read_only_transactions(
        settings: Settings, autocommit: bool) -> None:
    """Whatever text reaches a source session, it runs over the extended protocol (one
    statement) in a transaction that says READ ONLY, whatever the session's defaults say."""
    url = str(settings.source_url)
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute("CREATE TABLE public.rooms (id integer)")
    with connect(url, purpose="source", autocommit=autocommit, read_only=True) as conn:
        with pytest.raises(psycopg.Error):
            conn.execute("SELECT 1; COMMIT; BEGIN READ WRITE; DROP TABLE public.rooms; COMMIT")
        conn.rollback()
        with pytest.raises(psycopg.Error), conn.cursor() as cur, cur.copy(
                "COPY (SELECT 1) TO STDOUT; COMMIT; BEGIN READ WRITE; "
                "DROP TABLE public.rooms; COMMIT") as copy:
            list(copy)
        conn.rollback()
        # An expression may change the session's default; the next transaction still reads only.
        conn.execute("SELECT set_config('default_transaction_read_only', 'off', false)")
        conn.commit()
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            conn.execute("DROP TABLE public.rooms")
        conn.rollback()
    assert _rooms_exists(url)
