"""`edu-migrate monitoring --out DIR`: the guide's week-1 "Set Up Monitoring", as files.

postgres_exporter's extra queries (from the .sql files in monitoring/), the alert rules and
their promtool tests, a Prometheus configuration that scrapes the exporter and the API, a
Grafana dashboard, the exporter's environment file and a README that explains each. Nothing
runs here and no password is written: the exporter's password is the operator's to provide.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import yaml

from edu_migrate.aftercare.dashboard import DASHBOARD_UID, dashboard_json
from edu_migrate.checks.preflight import LOCAL_HOSTS
from edu_migrate.errors import MigrationError
from edu_migrate.pg.urls import parse

EXPORTER_JOB = "edu_v2_postgres"
API_JOB = "edu_v2_api"
DEFAULT_EXPORTER = "localhost:9187"
DEFAULT_API = "localhost:8000"
DEFAULT_RUNBOOK = "docs/RUNBOOK.md"
RUNBOOK_TOKEN = "RUNBOOK_URL"
_ADDRESS = re.compile(r"^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9][A-Za-z0-9.-]*):\d{1,5}$")
_INTERVAL = re.compile(r"^\d+(ms|s|m|h)$")

# The files written, in the order the README explains them.
QUERIES_FILE = "postgres_exporter_queries.yml"
ENV_FILE = "postgres_exporter.env"
ROLE_FILE = "monitor_role.sql"
CONFIG_FILE = "prometheus.yml"
RULES_FILE = "alerts.yml"
TESTS_FILE = "alerts_test.yml"
DASHBOARD_FILE = "grafana_dashboard.json"
README_FILE = "README.md"


def _resource(name: str) -> Traversable:
    return resources.files("edu_migrate.aftercare").joinpath("monitoring", name)


def _text(name: str) -> str:
    return _resource(name).read_text("utf-8")


@dataclass(frozen=True)
class ExporterQuery:
    name: str
    sql: str
    columns: dict[str, tuple[str, str]]

    def metric_names(self) -> list[str]:
        return [f"{self.name}_{column}" for column, (usage, _) in self.columns.items()
                if usage != "LABEL"]


def exporter_queries() -> list[ExporterQuery]:
    spec = tomllib.loads(_text("exporter_queries.toml"))
    return [ExporterQuery(entry["name"], _text(f"{entry['sql']}.sql"),
                          {column: (usage, description) for column, (usage, description)
                           in entry["columns"].items()})
            for entry in spec["query"]]


def exporter_queries_yaml() -> str:
    """The queries in postgres_exporter's --extend.query-path format (master: run on the
    database of DATA_SOURCE_NAME only, edu_v2)."""
    document: dict[str, Any] = {}
    for query in exporter_queries():
        body = "\n".join(line for line in query.sql.splitlines()
                         if not line.lstrip().startswith("--")).strip()
        document[query.name] = {
            "query": body, "master": True,
            "metrics": [{column: {"usage": usage, "description": description}}
                        for column, (usage, description) in query.columns.items()]}
    header = ("# postgres_exporter queries for edu_v2, written by `edu-migrate monitoring` "
              "from its .sql files.\n# Each column becomes <query>_<column>; the exporter's "
              "own metrics (pg_up, pg_stat_database_*, …) come on top.\n")
    return header + yaml.dump(document, Dumper=_BlockDumper, sort_keys=False,
                              allow_unicode=True, width=100)


class _BlockDumper(yaml.SafeDumper):
    """Multi-line strings (the SQL) as YAML literal blocks, readable as written."""


def _block_string(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_BlockDumper.add_representer(str, _block_string)


def _check_address(value: str, option: str) -> str:
    if not _ADDRESS.match(value) or not 0 < int(value.rsplit(":", 1)[1]) < 65536:
        raise MigrationError(f"{option} {value!r} is not HOST:PORT",
                             f"e.g. {option} localhost:9187")
    return value


def prometheus_config(exporter: str, api: str | None, scrape_interval: str = "30s") -> str:
    if not _INTERVAL.match(scrape_interval):
        raise MigrationError(f"--scrape-interval {scrape_interval!r} is not a duration",
                             "e.g. --scrape-interval 30s")
    scrapes: list[dict[str, Any]] = [
        {"job_name": EXPORTER_JOB, "static_configs": [{"targets": [exporter]}]}]
    if api is not None:
        scrapes.append({"job_name": API_JOB, "metrics_path": "/metrics",
                        "static_configs": [{"targets": [api]}]})
    document = {"global": {"scrape_interval": scrape_interval,
                           "evaluation_interval": scrape_interval},
                "rule_files": [RULES_FILE], "scrape_configs": scrapes}
    header = ("# Prometheus configuration for edu_v2, written by `edu-migrate monitoring`.\n"
              "# Check it with `promtool check config prometheus.yml`. Alertmanager: add an "
              "`alerting:` section.\n")
    return header + yaml.safe_dump(document, sort_keys=False)


def alert_rules(runbook: str = DEFAULT_RUNBOOK) -> str:
    return _text(RULES_FILE).replace(RUNBOOK_TOKEN, runbook)


def alert_tests(runbook: str = DEFAULT_RUNBOOK) -> str:
    return _text(TESTS_FILE).replace(RUNBOOK_TOKEN, runbook)


def alert_names() -> list[str]:
    rules = yaml.safe_load(_text(RULES_FILE))
    return [rule["alert"] for group in rules["groups"] for rule in group["rules"]]


def exporter_dsn(target_url: str) -> str:
    """The target as a URL for postgres_exporter (Go's lib/pq): user, host, port, database and
    sslmode, never the password. lib/pq requires SSL unless told otherwise: disabled towards
    this machine, required elsewhere, unless the target URL says."""
    params = parse(target_url, purpose="target")
    host = params.get("host") or "localhost"
    if host.startswith("/"):
        raise MigrationError("the target is reached through a Unix socket",
                             "give --target with a host name for postgres_exporter")
    sslmode = params.get("sslmode") or ("disable" if host in LOCAL_HOSTS else "require")
    user = quote(params.get("user") or os.environ.get("USER", "postgres"), safe="")
    netloc = f"{user}@{host}" + (f":{params['port']}" if params.get("port") else "")
    return f"postgresql://{netloc}/{quote(params.get('dbname', 'edu_v2'), safe='')}" \
           f"?sslmode={sslmode}"


def exporter_env(target_url: str) -> str:
    params = parse(target_url, purpose="target")
    lines = ["# postgres_exporter's environment (systemd EnvironmentFile=, or `set -a; . FILE`).",
             "# Keep it mode 0600. The password is not written here: give it through",
             "# PGPASSFILE (a libpq password file of the exporter's user), or add",
             "# PGPASSWORD=... on a line of its own.",
             f"DATA_SOURCE_NAME={exporter_dsn(target_url)}"]
    if params.get("passfile"):
        lines.append(f"PGPASSFILE={params['passfile']}")
    return "\n".join(lines) + "\n"


def monitor_role_sql(database: str) -> str:
    return _text(ROLE_FILE).replace("EDU_V2_DATABASE", database)


def readme(exporter: str, api: str | None, runbook: str) -> str:
    alerts = "\n".join(f"- `{name}`: {runbook}#alert-{name.lower()}" for name in alert_names())
    metrics = "\n".join(f"- `{name}`" for query in exporter_queries()
                        for name in query.metric_names())
    return _text("README.md.in").format(
        exporter=exporter, api=api or "(not scraped: --no-api)", alerts=alerts, metrics=metrics,
        queries=QUERIES_FILE, env=ENV_FILE, role=ROLE_FILE, config=CONFIG_FILE,
        rules=RULES_FILE, tests=TESTS_FILE, dashboard=DASHBOARD_FILE, uid=DASHBOARD_UID,
        exporter_job=EXPORTER_JOB, api_job=API_JOB)


@dataclass
class MonitoringSetup:
    out: Path
    exporter: str
    api: str | None
    files: dict[str, str] = field(default_factory=dict)  # name → what it is

    def to_dict(self) -> dict[str, Any]:
        return {"out": str(self.out), "exporter": self.exporter, "api": self.api,
                "files": self.files, "alerts": alert_names()}


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    partial = path.with_name(f".{path.name}.partial")
    partial.unlink(missing_ok=True)
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.chmod(partial, mode)  # whatever the umask
    partial.replace(path)


def write_setup(out: Path, target_url: str, *, exporter: str = DEFAULT_EXPORTER,
                api: str | None = DEFAULT_API, runbook: str = DEFAULT_RUNBOOK,
                scrape_interval: str = "30s") -> MonitoringSetup:
    _check_address(exporter, "--exporter")
    if api is not None:
        _check_address(api, "--api")
    config = prometheus_config(exporter, api, scrape_interval)
    database = parse(target_url, purpose="target").get("dbname", "edu_v2")
    files = {
        QUERIES_FILE: ("postgres_exporter's extra queries: --extend.query-path", 0o644,
                       exporter_queries_yaml()),
        ENV_FILE: ("postgres_exporter's environment: DATA_SOURCE_NAME (no password)", 0o600,
                   exporter_env(target_url)),
        ROLE_FILE: ("the exporter's role: pg_monitor and the backup log", 0o644,
                    monitor_role_sql(database)),
        CONFIG_FILE: ("Prometheus: scrapes the exporter and the API, loads the alerts", 0o644,
                      config),
        RULES_FILE: ("the alert rules, each with its runbook section", 0o644,
                     alert_rules(runbook)),
        TESTS_FILE: ("promtool test rules: each alert fired and not fired", 0o644,
                     alert_tests(runbook)),
        DASHBOARD_FILE: ("the Grafana dashboard (import it)", 0o644, dashboard_json()),
        README_FILE: ("what each file is and how to run it", 0o644,
                      readme(exporter, api, runbook)),
    }
    try:
        out.mkdir(parents=True, exist_ok=True)
        for name, (_, mode, text) in files.items():
            _write(out / name, text, mode)
    except OSError as exc:
        raise MigrationError(f"cannot write into {out}: {exc.strerror}",
                             "choose a writable --out folder") from exc
    return MonitoringSetup(out, exporter, api, {name: what for name, (what, _, _)
                                                in files.items()})
