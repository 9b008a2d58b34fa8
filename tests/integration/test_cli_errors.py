"""Bad input: one clear line on stderr, a non-zero exit, no traceback, nothing written."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from edu_migrate import api
from edu_migrate.config import Settings
from edu_migrate.pg.urls import database_name
from tests.integration.helpers import prepared


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("EDU_")} | (env or {})
    return subprocess.run([sys.executable, "-m", "edu_migrate", *args], capture_output=True,
                          text=True, env=full_env, timeout=300, check=False)


def assert_one_line_error(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr + result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    for fragment in fragments:
        assert fragment in lines[0]


def urls(settings: Settings) -> list[str]:
    return ["--source", str(settings.source_url), "--target", str(settings.target_url)]


def test_unreachable_server() -> None:
    bad = "postgresql://postgres@127.0.0.1:1/edu"
    result = run_cli("migrate", "--all", "--source", bad, "--target", bad.replace("edu", "v2"))
    assert_one_line_error(result, "cannot connect to the source database", "not reachable")


def test_malformed_url() -> None:
    result = run_cli("migrate", "--all", "--source", "postgresql://a b c", "--target", "x=")
    assert_one_line_error(result, "malformed")


def test_wrong_password(settings: Settings) -> None:
    admin = str(settings.source_url)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute("DROP ROLE IF EXISTS edu_pw_test")
        conn.execute("CREATE ROLE edu_pw_test LOGIN SUPERUSER PASSWORD 'right'")
    wrong = make_conninfo(admin, user="edu_pw_test", password="wrong")
    result = run_cli("migrate", "--all", "--source", wrong, "--target", str(settings.target_url))
    assert_one_line_error(result, "cannot connect to the source database",
                          "password authentication failed")
    assert "wrong" not in result.stderr


def test_source_without_legacy_tables(settings: Settings) -> None:
    api.schema_apply(settings)
    result = run_cli("migrate", "--all", *urls(settings))
    assert_one_line_error(result, "lacks", "users", "grades")


def test_generate_at_a_scale_too_small(settings: Settings) -> None:
    result = run_cli("generate", "--scale", "0.003", "--source", str(settings.source_url))
    assert_one_line_error(result, "scale 0.003 is too small", "larger --scale")
    with psycopg.connect(str(settings.source_url)) as conn:
        tables = conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
        assert tables.fetchone() == (0,), "a refused generate left tables behind"


def test_target_without_schema(settings: Settings) -> None:
    api.generate(settings, scale=0.01)
    with psycopg.connect(str(settings.source_url), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(
            sql.Identifier(database_name(str(settings.target_url)))))
    result = run_cli("migrate", "--all", *urls(settings))
    assert_one_line_error(result, "no edu_v2 schema", "schema apply")


def test_phase_before_its_dependencies(settings: Settings) -> None:
    prepared(settings, scale=0.01)
    result = run_cli("migrate", "--phase", "5", *urls(settings))
    assert_one_line_error(result, "phase 5 needs phase")


def test_unknown_phase(settings: Settings) -> None:
    result = run_cli("migrate", "--phase", "9", *urls(settings))
    assert_one_line_error(result, "unknown phase 9")


def test_zero_batch_size(settings: Settings) -> None:
    result = run_cli("migrate", "--all", "--batch-size", "0", *urls(settings))
    assert_one_line_error(result, "batch_size")


def test_negative_batch_size(settings: Settings) -> None:
    result = run_cli("migrate", "--all", "--batch-size", "-5", *urls(settings))
    assert_one_line_error(result, "batch_size")


def _phase_runs(settings: Settings) -> int:
    with psycopg.connect(str(settings.target_url)) as conn:
        row = conn.execute("SELECT count(*) FROM migration.phase_runs").fetchone()
        return int(row[0]) if row else -1


def test_source_missing_a_column_names_it_and_writes_nothing(settings: Settings) -> None:
    prepared(settings, scale=0.01)
    with psycopg.connect(str(settings.source_url), autocommit=True) as conn:
        conn.execute("ALTER TABLE persons DROP COLUMN birthdate")
        conn.execute("DROP TABLE course_students CASCADE")
    result = run_cli("migrate", "--all", *urls(settings))
    assert_one_line_error(result, "lacks", "course_students", "persons.birthdate")
    assert _phase_runs(settings) == 0


def test_foreign_table_in_target_is_named_and_nothing_written(settings: Settings) -> None:
    prepared(settings, scale=0.01)
    with psycopg.connect(str(settings.target_url), autocommit=True) as conn:
        conn.execute("CREATE TABLE public.invoices (id int)")
    result = run_cli("migrate", "--all", *urls(settings))
    assert_one_line_error(result, "not edu-migrate's: invoices")
    assert _phase_runs(settings) == 0


def test_unknown_phase_writes_nothing(settings: Settings) -> None:
    prepared(settings, scale=0.01)
    result = run_cli("migrate", "--phase", "0", *urls(settings))
    assert_one_line_error(result, "unknown phase 0")
    assert _phase_runs(settings) == 0


def test_backup_and_restore_bad_input(settings: Settings, tmp_path: Path) -> None:
    env = {"EDU_BACKUP_DIR": str(tmp_path / "backups")}
    result = run_cli("backup", "--source", "postgresql://a b", "--target", "x=", env=env)
    assert_one_line_error(result, "malformed")
    result = run_cli("restore", str(tmp_path / "nothing.dump"), "--yes", *urls(settings),
                     env=env)
    assert_one_line_error(result, "no backup file")
    (tmp_path / "garbage.dump").write_bytes(b"not a dump")
    result = run_cli("restore", str(tmp_path / "garbage.dump"), "--yes", *urls(settings),
                     env=env)
    assert_one_line_error(result, "pg_restore --list of garbage.dump failed")


def test_truncated_dump_restores_nothing(settings: Settings, tmp_path: Path) -> None:
    prepared(settings, scale=0.01)
    env = {"EDU_BACKUP_DIR": str(tmp_path / "backups")}
    made = run_cli("backup", *urls(settings), env=env)
    assert made.returncode == 0, made.stderr
    (dump,) = (tmp_path / "backups").glob("source_*.dump")
    whole = dump.read_bytes()
    dump.write_bytes(whole[: len(whole) * 2 // 3])
    with psycopg.connect(str(settings.source_url), autocommit=True) as conn:
        conn.execute("DELETE FROM news")
    result = run_cli("restore", str(dump), "--yes", *urls(settings), env=env)
    assert_one_line_error(result, "restore of")
    with psycopg.connect(str(settings.source_url)) as conn:
        row = conn.execute("SELECT count(*) FROM news").fetchone()
    assert row == (0,)


def test_wrong_password_for_backup_is_one_line_without_the_password(settings: Settings) -> None:
    admin = str(settings.source_url)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute("DROP ROLE IF EXISTS edu_pw_backup")
        conn.execute("CREATE ROLE edu_pw_backup LOGIN PASSWORD 'right-one'")
    wrong = make_conninfo(admin, user="edu_pw_backup", password="wrong-one")
    result = run_cli("backup", "--source", wrong, "--target", str(settings.target_url))
    assert_one_line_error(result, "password authentication failed")
    assert "wrong-one" not in result.stderr + result.stdout


def test_statement_timeout_outside_a_phase_says_so(settings: Settings) -> None:
    """Another session holds a lock on a legacy table, so the preflight's first statement that
    opens it waits, always longer than the 1 s statement_timeout: the timeout fires before any
    phase starts, on any machine."""
    prepared(settings, scale=0.01)
    with psycopg.connect(str(settings.source_url)) as holder:
        holder.execute("LOCK TABLE users IN ACCESS EXCLUSIVE MODE")
        result = run_cli("migrate", "--all", *urls(settings),
                         env={"PGOPTIONS": "-c statement_timeout=1000"})
        holder.rollback()
    assert_one_line_error(result, "statement timeout", "statement_timeout")
    assert _phase_runs(settings) == 0
