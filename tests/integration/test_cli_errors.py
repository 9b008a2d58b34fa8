"""Bad input: one clear line on stderr, a non-zero exit, no traceback, nothing written."""

from __future__ import annotations

import os
import subprocess
import sys

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
