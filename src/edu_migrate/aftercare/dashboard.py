"""The Grafana dashboard of `edu-migrate monitoring`, built with grafana-foundation-sdk over the
metrics of postgres_exporter (its defaults and edu-migrate's queries) and of the API's /metrics.
"""

from __future__ import annotations

import json
from typing import Any

from grafana_foundation_sdk.builders import dashboard, prometheus, stat, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import DataSourceRef, GridPos

DASHBOARD_UID = "edu-v2-monitoring"
DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")
DB = 'job="edu_v2_postgres"'
API = 'job="edu_v2_api"'


def _query(expr: str, legend: str = "", ref: str = "A") -> prometheus.Dataquery:
    query = prometheus.Dataquery().expr(expr).ref_id(ref)
    return query.legend_format(legend) if legend else query


def _series(title: str, unit: str, description: str, *queries: tuple[str, str]
            ) -> timeseries.Panel:
    panel = (timeseries.Panel().title(title).description(description).unit(unit)
             .datasource(DATASOURCE))
    for index, (expr, legend) in enumerate(queries):
        panel = panel.with_target(_query(expr, legend, chr(ord("A") + index)))
    return panel


def _stat(title: str, unit: str, description: str, expr: str) -> stat.Panel:
    return (stat.Panel().title(title).description(description).unit(unit)
            .datasource(DATASOURCE).with_target(_query(expr)))


# (row, [(panel, width)]): rows of panels, 24 columns wide.
def _rows() -> list[tuple[str, list[tuple[Any, int]]]]:
    return [
        ("Database", [
            (_stat("Database up", "none", "1 when postgres_exporter reaches edu_v2 "
                   "(alert EduDatabaseDown).", f"min(pg_up{{{DB}}})"), 4),
            (_stat("Connections used", "percentunit", "Client sessions over max_connections "
                   "(alert EduConnectionsHigh above 80 %).",
                   f"sum(pg_edu_connections_sessions{{{DB}}}) / "
                   f"max(pg_edu_connection_limit_max{{{DB}}})"), 4),
            (_stat("Last verified backup", "s", "Age of the newest backup restored and counted "
                   "(alert EduBackupMissing past 26 h).",
                   f"time() - max(pg_edu_backup_last_verified_timestamp_seconds{{{DB}}})"), 4),
            (_stat("Cache hit ratio", "percentunit", "Block reads served from shared buffers.",
                   f"min(pg_edu_cache_hit_ratio{{{DB}}})"), 4),
            (_stat("Oldest open transaction", "s", "Alert EduLongTransaction past 5 minutes.",
                   f"max(pg_edu_transactions_oldest_seconds{{{DB}}})"), 8),
            (_series("Connections by state", "short", "Client sessions of the server by "
                     "state, and max_connections.",
                     (f"pg_edu_connections_sessions{{{DB}}} > 0", "{{state}}"),
                     (f"max(pg_edu_connection_limit_max{{{DB}}})", "max_connections")), 12),
            (_series("Transactions", "ops", "Commits and rollbacks per second in edu_v2 "
                     "(the exporter's pg_stat_database).",
                     (f'rate(pg_stat_database_xact_commit{{{DB}, datname="edu_v2"}}[5m])',
                      "commits"),
                     (f'rate(pg_stat_database_xact_rollback{{{DB}, datname="edu_v2"}}[5m])',
                      "rollbacks")), 12),
            (_series("Open transactions by state", "s", "Age of the oldest open transaction "
                     "of each state.",
                     (f"pg_edu_transactions_oldest_seconds{{{DB}}}", "{{state}}")), 12),
            (_series("Replication lag", "s", "Each standby's replay lag (none without "
                     "standbys).",
                     (f"pg_edu_replication_replay_lag_seconds{{{DB}}}", "{{standby}}")), 12),
        ]),
        ("Tables", [
            (_series("Dead rows", "short", "Dead rows per business table (alert "
                     "EduAutovacuumBehind above 1000 and 20 % of the live rows for 30 minutes).",
                     (f"pg_edu_table_dead_rows{{{DB}}}", "{{table}}")), 12),
            (_series("Since the last analyse", "s", "Per business table (tables never "
                     "analysed are left out).",
                     (f"time() - (pg_edu_table_last_analyse_timestamp_seconds{{{DB}}} > 0)",
                      "{{table}}")), 12),
            (_series("Audit log writes", "rowsps", "Rows written to the audit trail per "
                     "second.", (f"rate(pg_edu_audit_rows_written_total{{{DB}}}[5m])",
                                 "audit rows")), 12),
            (_series("Live rows", "short", "Estimated live rows per business table.",
                     (f"pg_edu_table_live_rows{{{DB}}}", "{{table}}")), 12),
        ]),
        ("API", [
            (_series("Requests by status", "reqps", "Requests per second to the API.",
                     (f"sum by (status) (rate(edu_api_requests_total{{{API}}}[5m]))",
                      "{{status}}")), 8),
            (_series("Error rate", "percentunit", "Share of 5xx answers (alert EduApiErrors "
                     "above 5 %).",
                     (f'sum(rate(edu_api_requests_total{{{API}, status=~"5.."}}[5m])) / '
                      f"sum(rate(edu_api_requests_total{{{API}}}[5m]))", "5xx")), 8),
            (_series("Sign-ins", "short", "Failed and throttled sign-ins per 5 minutes (alert "
                     "EduSignInStorm above 100 failures).",
                     (f"sum(increase(edu_api_login_failures_total{{{API}}}[5m]))", "failed"),
                     (f"sum(increase(edu_api_logins_throttled_total{{{API}}}[5m]))",
                      "throttled")), 8),
        ]),
    ]


def build() -> dashboard.Dashboard:
    board = (dashboard.Dashboard("edu_v2").uid(DASHBOARD_UID)
             .description("edu_v2 after the migration: the database (postgres_exporter) and "
                          "the reference API (/metrics). Written by `edu-migrate monitoring`.")
             .tags(["edu_v2", "postgresql", "edu-migrate"]).refresh("30s")
             .time("now-6h", "now").timezone("browser")
             .with_variable(dashboard.DatasourceVariable("datasource").label("Prometheus")
                            .type("prometheus")))
    y = 0
    for title, panels in _rows():
        board = board.with_row(dashboard.Row(title).grid_pos(GridPos(h=1, w=24, x=0, y=y)))
        y += 1
        x = line = 0
        for panel, width in panels:
            height = 4 if isinstance(panel, stat.Panel) else 8
            if x + width > 24:
                x, y, line = 0, y + line, 0
            board = board.with_panel(panel.grid_pos(GridPos(h=height, w=width, x=x, y=y)))
            x, line = x + width, max(line, height)
        y += line
    return board


def dashboard_json() -> str:
    """The dashboard as Grafana imports it (Dashboards → New → Import)."""
    model = json.loads(json.dumps(build().build(), cls=JSONEncoder))
    # Panel ids, unique, as Grafana expects them in an imported file.
    panel_id = 0
    for panel in model.get("panels", []):
        panel_id += 1
        panel["id"] = panel_id
        for inner in panel.get("panels") or []:
            panel_id += 1
            inner["id"] = panel_id
    return json.dumps(model, indent=2, ensure_ascii=False) + "\n"


def expressions(model: dict[str, Any]) -> list[str]:
    """Every PromQL expression of a dashboard model."""
    return [target["expr"] for panel in model.get("panels", [])
            for target in panel.get("targets") or [] if "expr" in target]
