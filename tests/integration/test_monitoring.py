"""`edu-migrate monitoring`: the files it writes, checked by promtool; then run for real:
postgres_exporter against a migrated edu_v2 and Prometheus scraping it (and the API's
/metrics) on loopback ports; and pgBadger's report of a real server's log, opened in headless
Chromium."""

from __future__ import annotations

import json
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
import yaml

from edu_migrate.aftercare.dashboard import expressions
from edu_migrate.aftercare.monitoring import (
    ENV_FILE,
    alert_names,
    exporter_queries,
    write_setup,
)
from edu_migrate.web.metrics import METRIC_NAMES
from tests.integration.test_cli_errors import assert_one_line_error, run_cli

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
