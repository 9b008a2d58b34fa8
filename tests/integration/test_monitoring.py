"""`edu-migrate monitoring`: the files it writes, checked by promtool; then run for real:
postgres_exporter against a migrated edu_v2 and Prometheus scraping it (and the API's
/metrics) on loopback ports; and pgBadger's report of a real server's log, opened in headless
Chromium."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from psycopg.conninfo import make_conninfo

from edu_migrate import api
from edu_migrate.aftercare.dashboard import expressions
from edu_migrate.aftercare.monitoring import (
    ENV_FILE,
    alert_names,
    exporter_queries,
    write_setup,
)
from edu_migrate.config import Settings
from edu_migrate.errors import PreconditionFailed
from edu_migrate.pg.embedded import EmbeddedServer, find_bin_dir
from edu_migrate.pg.urls import database_name
from edu_migrate.web.metrics import METRIC_NAMES
from tests.conftest import make_settings
from tests.integration.helpers import prepared
from tests.integration.test_cli_errors import assert_one_line_error, run_cli
from tests.integration.test_report import _browse, chromium  # noqa: F401 (a fixture)

RUNBOOK = Path(__file__).resolve().parents[2] / "docs" / "RUNBOOK.md"
# The exporter's own metrics that the rules and the dashboard use.
EXPORTER_DEFAULTS = {"pg_up", "up", "pg_stat_database_xact_commit",
                     "pg_stat_database_xact_rollback"}
PROMQL_FUNCTIONS = {"sum", "max", "min", "rate", "increase", "time", "by", "on", "and", "or",
                    "unless", "absent"}


def tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        pytest.skip(f"{name} is not installed: apt-get install it, as .ci/run does")
    return found


def promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([tool("promtool"), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120, check=False)


@pytest.fixture
def setup_dir(tmp_path: Path) -> Path:
    out = tmp_path / "monitoring"
    write_setup(out, "postgresql://migrator:s3cret-pw@db.example.org:5432/edu_v2",
                exporter="db.example.org:9187", api="api.example.org:8000",
                runbook="https://wiki.example.org/RUNBOOK.md")
    return out


# --- the files, checked by promtool -------------------------------------------------------------

def test_promtool_accepts_the_configuration_and_its_rules(setup_dir: Path) -> None:
    checked = promtool("check", "config", "prometheus.yml", cwd=setup_dir)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 1 rule files found" in checked.stdout
    rules = promtool("check", "rules", "alerts.yml", cwd=setup_dir)
    assert rules.returncode == 0 and f"SUCCESS: {len(alert_names())} rules found" in rules.stdout


def test_promtool_rule_tests_pass(setup_dir: Path) -> None:
    tested = promtool("test", "rules", "alerts_test.yml", cwd=setup_dir)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


def test_every_alert_has_a_case_that_fires_it_and_one_that_does_not(setup_dir: Path) -> None:
    tests = yaml.safe_load((setup_dir / "alerts_test.yml").read_text())
    fires: set[str] = set()
    silent: set[str] = set()
    for case in tests["tests"]:
        for check in case["alert_rule_test"]:
            (fires if check["exp_alerts"] else silent).add(check["alertname"])
    assert fires == silent == set(alert_names())
    assert len(alert_names()) == 7


def test_the_rule_tests_fail_when_a_threshold_is_wrong(setup_dir: Path) -> None:
    """The rule tests have teeth: 80 % of the connections become 90 % and a case fails."""
    rules = setup_dir / "alerts.yml"
    rules.write_text(rules.read_text().replace("> 0.8", "> 0.9"))
    tested = promtool("test", "rules", "alerts_test.yml", cwd=setup_dir)
    assert tested.returncode != 0
    assert "EduConnectionsHigh" in tested.stdout + tested.stderr


def test_each_alert_links_to_its_runbook_section(setup_dir: Path) -> None:
    rules = yaml.safe_load((setup_dir / "alerts.yml").read_text())
    runbook = RUNBOOK.read_text()
    for group in rules["groups"]:
        for rule in group["rules"]:
            url = rule["annotations"]["runbook_url"]
            base, anchor = url.split("#")
            assert base == "https://wiki.example.org/RUNBOOK.md"
            assert anchor == f"alert-{rule['alert'].lower()}"
            assert f'<a id="{anchor}"></a>' in runbook, f"RUNBOOK.md lacks the {anchor} section"


def _metric_names(expr: str) -> set[str]:
    without_strings = re.sub(r'"[^"]*"', "", expr)
    without_labels = re.sub(r"\{[^}]*\}", "", without_strings)
    without_ranges = re.sub(r"\[[^\]]*\]", "", without_labels)
    without_groupings = re.sub(r"\b(by|on)\s*\([^)]*\)", "", without_ranges)
    return {name for name in re.findall(r"[a-zA-Z_][a-zA-Z0-9_]*", without_groupings)
            if name not in PROMQL_FUNCTIONS}


def test_rules_and_dashboard_name_only_metrics_the_setup_produces(setup_dir: Path) -> None:
    known = EXPORTER_DEFAULTS | set(METRIC_NAMES) | {
        name for query in exporter_queries() for name in query.metric_names()}
    rules = yaml.safe_load((setup_dir / "alerts.yml").read_text())
    dashboard = json.loads((setup_dir / "grafana_dashboard.json").read_text())
    used = [rule["expr"] for group in rules["groups"] for rule in group["rules"]]
    used += expressions(dashboard)
    assert len(expressions(dashboard)) >= 15
    unknown = {name for expr in used for name in _metric_names(expr)} - known
    assert not unknown
    # Every metric edu-migrate adds is on the dashboard.
    shown = {name for expr in expressions(dashboard) for name in _metric_names(expr)}
    assert {"pg_edu_cache_hit_ratio", "pg_edu_audit_rows_written_total",
            "edu_api_login_failures_total", "edu_api_logins_throttled_total"} <= shown
    assert dashboard["uid"] and len({p["id"] for p in dashboard["panels"]}) == len(
        dashboard["panels"])


def test_no_password_in_any_file_and_the_environment_file_is_the_owners(setup_dir: Path) -> None:
    for path in setup_dir.iterdir():
        assert "s3cret-pw" not in path.read_text(), path.name
    env = setup_dir / ENV_FILE
    assert stat.S_IMODE(env.stat().st_mode) == 0o600
    assert ("DATA_SOURCE_NAME=postgresql://migrator@db.example.org:5432/edu_v2?sslmode=require"
            in env.read_text())
    readme = (setup_dir / "README.md").read_text()
    for name in ("prometheus.yml", "alerts.yml", "alerts_test.yml", "grafana_dashboard.json",
                 "postgres_exporter_queries.yml", ENV_FILE, "monitor_role.sql"):
        assert f"`{name}`" in readme


def test_bad_input_is_one_line(tmp_path: Path) -> None:
    target = ["--target", "postgresql://u@127.0.0.1:1/edu_v2"]
    assert_one_line_error(run_cli("monitoring", *target), "needs --out DIR")
    assert_one_line_error(run_cli("monitoring", "--out", str(tmp_path / "m"), "--api", "x",
                                  *target), "--api 'x' is not HOST:PORT")
    assert_one_line_error(run_cli("monitoring", "--out", str(tmp_path / "m"),
                                  "--scrape-interval", "often", *target), "not a duration")
    assert_one_line_error(run_cli("monitoring", "logging", "--min-duration", "-5", *target),
                          "--min-duration")
    assert not (tmp_path / "m").exists()


# --- for real: postgres_exporter and Prometheus over a migrated edu_v2 ---------------------------

STARTUP_SECONDS = 60


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for(what: str, probe: Any, seconds: float = STARTUP_SECONDS,
             processes: tuple[subprocess.Popen[str], ...] = ()) -> Any:
    """probe() until it returns something truthy, for at most `seconds`."""
    deadline = time.monotonic() + seconds
    while True:
        for process in processes:
            if process.poll() is not None:
                pytest.fail(f"{what}: {process.args!r} exited with {process.returncode}")
        try:
            found = probe()
        except OSError:
            found = None
        if found:
            return found
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {seconds:.0f} s")
        time.sleep(0.5)


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return str(response.read().decode())


def stop(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


class Server:
    """A server of this module's own (its settings change: logging for pgBadger) holding one
    migrated pair."""

    def __init__(self, server: EmbeddedServer, url: str, settings: Settings) -> None:
        self.server, self.admin_url, self.settings = server, url, settings

    @property
    def target(self) -> str:
        return str(self.settings.target_url)


@pytest.fixture(scope="module")
def migrated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = EmbeddedServer(tmp_path_factory.mktemp("monitoring-server"), bin_dir=find_bin_dir())
    url = server.start().url("postgres")
    try:
        for settings in make_settings(url, tmp_path_factory.mktemp("monitoring")):
            prepared(settings, scale=0.01)
            api.migrate(settings)
            with psycopg.connect(str(settings.target_url), autocommit=True) as conn:
                conn.execute("ANALYZE")
            yield Server(server, url, settings)
    finally:
        server.stop()


def prometheus_value(base: str, query: str) -> float | None:
    body = json.loads(get(f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": query})))
    result = body["data"]["result"]
    return float(result[0]["value"][1]) if result else None


@pytest.fixture(scope="module")
def watched(migrated: Server, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[dict[str, Any]]:
    """The generated setup run for real: the exporter, the API and Prometheus, on loopback."""
    folder = tmp_path_factory.mktemp("watched")
    exporter_port, api_port, prometheus_port = free_port(), free_port(), free_port()
    out = folder / "monitoring"
    write_setup(out, migrated.target, exporter=f"127.0.0.1:{exporter_port}",
                api=f"127.0.0.1:{api_port}", scrape_interval="3s")
    env = dict(os.environ)
    for line in (out / ENV_FILE).read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            env[name] = value
    processes: list[subprocess.Popen[str]] = []

    def start(*args: str, cwd: Path, environment: dict[str, str], log: str
              ) -> subprocess.Popen[str]:
        handle = (folder / log).open("w")
        process = subprocess.Popen(args, cwd=cwd, env=environment, stdout=handle,
                                   stderr=subprocess.STDOUT, text=True)
        processes.append(process)
        return process

    try:
        exporter = start(tool("prometheus-postgres-exporter"),
                         f"--extend.query-path={out / 'postgres_exporter_queries.yml'}",
                         f"--web.listen-address=127.0.0.1:{exporter_port}",
                         cwd=folder, environment=env, log="exporter.log")
        served = {k: v for k, v in os.environ.items() if not k.startswith("EDU_")}
        api_process = start(sys.executable, "-m", "edu_migrate", "serve", "--target",
                            migrated.target, "--port", str(api_port), cwd=folder,
                            environment=served, log="api.log")
        prometheus = start(tool("prometheus"), f"--config.file={out / 'prometheus.yml'}",
                           f"--storage.tsdb.path={folder / 'tsdb'}",
                           f"--web.listen-address=127.0.0.1:{prometheus_port}",
                           cwd=folder, environment=dict(os.environ), log="prometheus.log")
        base = f"http://127.0.0.1:{prometheus_port}"
        everything = (exporter, api_process, prometheus)
        wait_for("the exporter's edu_v2 metrics", lambda: "pg_edu_connection_limit_max" in get(
            f"http://127.0.0.1:{exporter_port}/metrics"), processes=everything)
        wait_for("the API", lambda: "edu_api_requests" in get(
            f"http://127.0.0.1:{api_port}/metrics"), processes=everything)
        wait_for("Prometheus's first scrapes", lambda: prometheus_value(
            base, 'min(up{job=~"edu_v2_postgres|edu_v2_api"})') == 1, processes=everything)
        yield {"prometheus": base, "api": f"http://127.0.0.1:{api_port}", "folder": folder,
               "exporter": f"http://127.0.0.1:{exporter_port}", "processes": everything}
    finally:
        for process in reversed(processes):
            stop(process)


def scalar(url: str, query: str) -> float:
    with psycopg.connect(url) as conn:
        row = conn.execute(query.encode()).fetchone()
        assert row is not None
        return float(row[0])


def test_prometheus_holds_the_value_the_database_has(migrated: Server,
                                                     watched: dict[str, Any]) -> None:
    base = watched["prometheus"]
    # Each value is the database's once a scrape after this point has landed: on a loaded
    # machine one scrape can miss its timeout, and the next one brings the value.
    wait_for("pg_up", lambda: prometheus_value(base, 'pg_up{job="edu_v2_postgres"}') == 1)
    connections = scalar(migrated.target, "SELECT current_setting('max_connections')::int")
    wait_for("max_connections", lambda: prometheus_value(
        base, "pg_edu_connection_limit_max") == connections)
    students = scalar(migrated.target, "SELECT n_live_tup FROM pg_stat_user_tables "
                                       "WHERE schemaname = 'public' AND relname = 'students'")
    assert students > 0
    wait_for("the students' live rows", lambda: prometheus_value(
        base, 'pg_edu_table_live_rows{table="students"}') == students)
    assert prometheus_value(base, 'pg_edu_cache_hit_ratio{database=~"edu_v2.*"}') is not None


def test_a_verified_backup_recorded_in_edu_v2_reaches_prometheus(
        migrated: Server, watched: dict[str, Any]) -> None:
    base = watched["prometheus"]
    metric = "pg_edu_backup_last_verified_timestamp_seconds"
    # none yet: EduBackupMissing would fire
    wait_for("no verified backup", lambda: prometheus_value(base, metric) == 0)
    database = database_name(migrated.target)
    with psycopg.connect(migrated.target, autocommit=True) as conn:
        conn.execute("INSERT INTO migration.run_log (event, detail) VALUES ('backup', "
                     "jsonb_build_object('verified', 'restored', 'database', %s::text, "
                     "'created_at', '2026-01-02T03:04:05+00:00'))", [database])
    try:
        wait_for("the backup's time in Prometheus",
                 lambda: prometheus_value(base, metric) == 1767323045.0)
    finally:
        with psycopg.connect(migrated.target, autocommit=True) as conn:
            conn.execute("DELETE FROM migration.run_log WHERE event = 'backup'")


def test_failed_sign_ins_at_the_api_reach_prometheus(watched: dict[str, Any]) -> None:
    base, api_base = watched["prometheus"], watched["api"]
    for _ in range(3):
        request = urllib.request.Request(
            f"{api_base}/api/v1/auth/login", method="POST",
            data=json.dumps({"username": "nobody-here", "password": "wrong"}).encode(),
            headers={"Content-Type": "application/json"})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=30)
        assert refused.value.code == 401
    exposed = get(f"{api_base}/metrics")
    assert "edu_api_login_failures_total 3.0" in exposed, exposed
    wait_for("the failed sign-ins in Prometheus", lambda: prometheus_value(
        base, 'edu_api_login_failures_total{job="edu_v2_api"}') == 3)
    assert prometheus_value(
        base, 'edu_api_requests_total{route="/api/v1/auth/login", status="401"}') == 3


def test_the_api_counts_throttled_sign_ins_and_names_routes_by_their_template(
        migrated: Server) -> None:
    from fastapi.testclient import TestClient

    from edu_migrate.web.app import create_app
    from edu_migrate.web.throttle import LoginLimits

    app = create_app(migrated.target, login_limits=LoginLimits(per_username=2))
    with TestClient(app) as client:
        answers = [client.post("/api/v1/auth/login",
                               json={"username": "guessed", "password": f"guess {n}"}).status_code
                   for n in range(4)]
        assert answers == [401, 401, 429, 429]
        assert client.get("/api/v1/students/5d8f3c52-7a0b-4a43-9d2b-2b7f4f3a9d10"
                          ).status_code == 401
        exposed = client.get("/metrics").text
    assert "edu_api_login_failures_total 2.0" in exposed
    assert "edu_api_logins_throttled_total 2.0" in exposed
    assert ('edu_api_requests_total{method="GET",route="/api/v1/students/{student_id}",'
            'status="401"} 1.0') in exposed
    assert "5d8f3c52" not in exposed


# --- pgBadger: the logging it needs, and its report of a real server's log ----------------------

def test_logging_apply_without_the_right_changes_nothing(migrated: Server) -> None:
    name = "edu_plain_monitoring"
    with psycopg.connect(migrated.admin_url, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {name} LOGIN PASSWORD 'plain-pw'")
    with psycopg.connect(migrated.target, autocommit=True) as conn:
        # edu_v2 lets no role connect unless granted (issue 23): a DBA's role would be.
        conn.execute(f"GRANT CONNECT ON DATABASE {conn.info.dbname} TO {name}")
    try:
        plain = migrated.settings.model_copy(update={"target_url": make_conninfo(
            migrated.target, user=name, password="plain-pw")})
        with pytest.raises(PreconditionFailed, match="may not use ALTER SYSTEM"):
            api.monitoring_logging(plain, min_duration_ms=0, apply=True)
        assert scalar(migrated.target, "SELECT count(*) FROM pg_file_settings WHERE "
                                       "sourcefile LIKE '%postgresql.auto.conf'") == 0
    finally:
        with psycopg.connect(migrated.target, autocommit=True) as conn:
            conn.execute(f"REVOKE CONNECT ON DATABASE {conn.info.dbname} FROM {name}")
        with psycopg.connect(migrated.admin_url, autocommit=True) as conn:
            conn.execute(f"DROP ROLE {name}")


@pytest.fixture(scope="module")
def badger_report(migrated: Server, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The logging applied, the everyday queries run, and pgBadger's report of the log."""
    tool("pgbadger")
    before = api.monitoring_logging(migrated.settings, min_duration_ms=0)
    assert {a.name for a in before.changes} >= {"log_min_duration_statement", "log_line_prefix",
                                                 "log_autovacuum_min_duration"}
    applied = api.monitoring_logging(migrated.settings, min_duration_ms=0, apply=True)
    assert set(applied.applied) == {a.name for a in before.changes}
    assert not api.monitoring_logging(migrated.settings, min_duration_ms=0).changes
    api.compare_queries(migrated.settings, repeats=2)
    with psycopg.connect(migrated.target, autocommit=True) as conn:
        conn.execute("CHECKPOINT")
    report = tmp_path_factory.mktemp("pgbadger") / "pgbadger.html"
    # The embedded server logs to standard error (no logging collector): the file is given.
    with pytest.raises(PreconditionFailed, match="logging_collector is off"):
        api.monitoring_pgbadger(migrated.settings, report)
    made = api.monitoring_pgbadger(migrated.settings, report, log=migrated.server.log_file)
    assert made.prefix.startswith("%t [%p]") and made.bytes > 100_000
    return report


def test_pgbadger_reports_the_everyday_queries_and_it_opens_in_chromium(
        badger_report: Path, chromium: str, tmp_path: Path) -> None:  # noqa: F811
    dom = _browse(chromium, tmp_path / "profile", "--dump-dom", badger_report.as_uri()).stdout
    assert "pgBadger" in dom
    # The everyday queries of edu_v2 (aftercare/everyday_queries.toml), normalised by pgBadger.
    assert "course_enrollments" in dom and "academic_terms" in dom
    assert "Checkpoints" in dom
    assert dom.count("<tr") > 20


def test_pgbadger_without_pgbadger_or_a_log_is_one_line(migrated: Server,
                                                        tmp_path: Path) -> None:
    target = ["--target", migrated.target]
    assert_one_line_error(run_cli("monitoring", "pgbadger", "--log", str(tmp_path / "none.log"),
                                  "--prefix", "%t ", *target), "is not a file here")
    empty_path = {"PATH": str(tmp_path)}
    (tmp_path / "x.log").write_text("", encoding="utf-8")  # a log that is there
    assert_one_line_error(run_cli("monitoring", "pgbadger", "--log", str(tmp_path / "x.log"),
                                  *target, env=empty_path), "pgbadger is not installed")


def test_the_command_writes_the_setup_and_reports_it_as_json(tmp_path: Path) -> None:
    out = tmp_path / "setup"
    result = run_cli("monitoring", "--out", str(out), "--no-api", "--target",
                     "postgresql://migrator@db1:5432/edu_v2", "--json", "-")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert sorted(report["files"]) == sorted(p.name for p in out.iterdir())
    assert report["api"] is None and len(report["alerts"]) == 7
    config = yaml.safe_load((out / "prometheus.yml").read_text())
    assert [job["job_name"] for job in config["scrape_configs"]] == ["edu_v2_postgres"]
