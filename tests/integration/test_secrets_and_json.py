"""For automation and for safety: `--json -` gives pure JSON on standard output for every command
that reports, and a password given in a URL or PGPASSWORD never reaches the terminal, the log
file or the report."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from edu_migrate import api
from edu_migrate.config import Settings
from tests.integration.helpers import prepared

PASSWORD = "Pw-7f3a9c-kept-secret"
ROLE = "edu_secret_test"


def run_in(folder: Path, *args: str, env: dict[str, str] | None = None,
           ) -> subprocess.CompletedProcess[str]:
    """The CLI in `folder` (so its logs/ and edu-migrate.toml are the test's own)."""
    full_env = {k: v for k, v in os.environ.items()
                if not k.startswith(("EDU_", "PG"))} | (env or {})
    return subprocess.run([sys.executable, "-m", "edu_migrate", *args], cwd=folder,
                          capture_output=True, text=True, env=full_env, timeout=600, check=False)


def everything_written(folder: Path, *results: subprocess.CompletedProcess[str]) -> str:
    """Standard output and error of the runs, and every file they left in the folder."""
    texts = [r.stdout + r.stderr for r in results]
    texts += [path.read_text("utf-8", errors="replace") for path in folder.rglob("*")
              if path.is_file()]
    return "\n".join(texts)


@pytest.fixture
def password_urls(settings: Settings) -> tuple[str, str]:
    """Source and target URLs of a login role with a password (scram over TCP)."""
    with psycopg.connect(str(settings.source_url), autocommit=True) as conn:
        conn.execute(f"DROP ROLE IF EXISTS {ROLE}")
        conn.execute(f"CREATE ROLE {ROLE} LOGIN SUPERUSER PASSWORD '{PASSWORD}'")
    source = make_conninfo(str(settings.source_url), user=ROLE, password=PASSWORD)
    target = make_conninfo(str(settings.target_url), user=ROLE, password=PASSWORD)
    return _as_url(source), _as_url(target)


def _as_url(conninfo: str) -> str:
    parts = conninfo_to_dict(conninfo)
    return (f"postgresql://{parts['user']}:{parts['password']}@{parts['host']}:{parts['port']}"
            f"/{parts['dbname']}")


def test_a_password_never_reaches_output_logs_or_report(
        settings: Settings, password_urls: tuple[str, str], tmp_path: Path) -> None:
    prepared(settings, scale=0.01)
    source, target = password_urls
    urls = ["--source", source, "--target", target]
    runs = [
        run_in(tmp_path, "migrate", "--all", *urls),
        run_in(tmp_path, "validate", *urls),
        run_in(tmp_path, "status", *urls),
        run_in(tmp_path, "config", "show", *urls),
        run_in(tmp_path, "report", "--html", "r.html", "--md", "r.md", "--json", "r.json", *urls),
        run_in(tmp_path, "migrate", "--phase", "9", *urls),
        run_in(tmp_path, "status", "--target", target.replace(PASSWORD, "wrong-" + PASSWORD),
               "--source", source),
    ]
    assert [r.returncode for r in runs[:5]] == [0] * 5, [r.stderr for r in runs]
    assert runs[-1].returncode != 0 and "password authentication failed" in runs[-1].stderr
    logs = list((tmp_path / "logs").glob("migration_*.log"))
    assert logs and (tmp_path / "r.html").exists()
    assert any("--source postgresql://" in log.read_text("utf-8") for log in logs)
    written = everything_written(tmp_path, *runs)
    assert PASSWORD not in written
    assert f"{ROLE}:***@" in written


@pytest.mark.parametrize("way", ["PGPASSWORD", "pgpass"])
def test_password_from_libpq_is_used_and_never_shown(
        settings: Settings, password_urls: tuple[str, str], tmp_path: Path, way: str) -> None:
    prepared(settings, scale=0.01)
    source, target = (url.replace(f":{PASSWORD}@", "@") for url in password_urls)
    if way == "PGPASSWORD":
        env = {"PGPASSWORD": PASSWORD}
    else:
        pgpass = tmp_path / "pgpass"
        pgpass.write_text(f"*:*:*:{ROLE}:{PASSWORD}\n", encoding="utf-8")
        pgpass.chmod(0o600)
        env = {"PGPASSFILE": str(pgpass)}
    folder = tmp_path / "run"
    folder.mkdir()
    result = run_in(folder, "migrate", "--phase", "1", "--source", source, "--target", target,
                    env=env)
    assert result.returncode == 0, result.stderr
    assert PASSWORD not in everything_written(folder, result)


def test_config_precedence_flags_then_env_then_file(tmp_path: Path) -> None:
    (tmp_path / "settings.toml").write_text(
        '[edu-migrate]\n'
        'source_url = "postgresql://file:filepw@file-host/edu"\n'
        'target_url = "postgresql://file@file-host/edu_v2"\n'
        'batch_size = 10\nworkers = 3\nexclude = ["sessions"]\n', encoding="utf-8")
    env = {"EDU_TARGET_URL": "postgresql://env:envpw@env-host/edu_v2", "EDU_BATCH_SIZE": "20"}
    result = run_in(tmp_path, "config", "show", "--config", "settings.toml",
                    "--source", "postgresql://flag:flagpw@flag-host/edu", "--json", "-", env=env)
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert shown["source_url"] == "postgresql://flag:***@flag-host:5432/edu"
    assert shown["target_url"] == "postgresql://env:***@env-host:5432/edu_v2"
    assert (shown["batch_size"], shown["workers"], shown["exclude"]) == (20, 3, ["sessions"])
    assert not any(pw in result.stdout + result.stderr for pw in ("filepw", "envpw", "flagpw"))


def test_every_reporting_command_gives_pure_json(settings: Settings, tmp_path: Path) -> None:
    prepared(settings, scale=0.01)
    urls = ["--source", str(settings.source_url), "--target", str(settings.target_url)]
    migrate = run_in(tmp_path, "migrate", "--all", *urls, "--json", "-")
    assert [p["number"] for p in json.loads(migrate.stdout)["phases"]] == [1, 3, 2, 4, 5]
    assert json.loads(run_in(tmp_path, "validate", *urls, "--json", "-").stdout)["passed"]
    status = json.loads(run_in(tmp_path, "status", *urls, "--json", "-").stdout)
    assert {p["status"] for p in status["phases"]} == {"done"}
    report = json.loads(run_in(tmp_path, "report", *urls, "--json", "-").stdout)
    assert report["verdict"] == "PASS"
    config = json.loads(run_in(tmp_path, "config", "show", *urls, "--json", "-").stdout)
    assert config["workers"] >= 1
    home = {"EDU_MIGRATE_HOME": str(tmp_path / "home")}
    db_status = run_in(tmp_path, "db", "status", "--json", "-", env=home)
    assert json.loads(db_status.stdout)["running"] is False
    assert not (tmp_path / "report.html").exists(), "--json alone writes no HTML file"


def test_demo_gives_pure_json(tmp_path: Path) -> None:
    home = {"EDU_MIGRATE_HOME": str(tmp_path / "home")}
    try:
        demo = run_in(tmp_path, "demo", "--scale", "0.01", "--json", "-", env=home)
        assert demo.returncode == 0, demo.stderr[-2000:]
        payload = json.loads(demo.stdout)
        assert payload["validation"]["passed"]
        assert "VALIDATION RESULTS" in demo.stderr
    finally:
        run_in(tmp_path, "db", "stop", env=home)


def test_report_api_masks_urls(settings: Settings, password_urls: tuple[str, str]) -> None:
    prepared(settings, scale=0.01)
    source, target = password_urls
    secret = settings.model_copy(update={"source_url": source, "target_url": target})
    api.migrate(secret)
    data = api.report(secret)
    assert PASSWORD not in json.dumps(data.to_dict(), default=str)
    assert data.target.url.startswith(f"postgresql://{ROLE}:***@")
