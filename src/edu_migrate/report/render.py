"""ReportData → one self-contained HTML page and a Markdown twin, from Jinja2 templates shipped
with the package."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup

from edu_migrate.report import plots
from edu_migrate.report.facts import CHECKSUM_QUERY, ReportData

SIGNATORIES = ("Technical Lead", "Project Manager", "CTO")


def number(value: int | float | None) -> str:
    if value is None:
        return "–"
    if isinstance(value, float) and not value.is_integer():
        return f"{value:,.2f}"
    return f"{int(value):,}"


def seconds(value: float | None) -> str:
    if value is None:
        return "–"
    if value >= 90:
        minutes, rest = divmod(value, 60)
        return f"{int(minutes)} min {rest:.0f} s"
    return f"{value:,.1f} s"


def moment(value: datetime | None, zone: bool = True) -> str:
    if value is None:
        return "–"
    return value.astimezone(UTC).strftime(
        "%Y-%m-%d %H:%M:%S UTC" if zone else "%Y-%m-%d %H:%M:%S")


def cell(value: object) -> str:
    """Free text made safe for one Markdown table cell."""
    return " ".join(str(value).split()).replace("|", "\\|")


def _environment(autoescape: bool) -> Environment:
    env = Environment(loader=PackageLoader("edu_migrate.report", "templates"),
                      autoescape=autoescape,
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                      keep_trailing_newline=True)
    env.filters.update(number=number, seconds=seconds, moment=moment, cell=cell)
    return env


def _context(data: ReportData) -> dict[str, Any]:
    return {"r": data, "signatories": SIGNATORIES,
            "checksum_sql": CHECKSUM_QUERY.format("<table>")}


def render_html(data: ReportData) -> str:
    figures = {
        "timings": Markup(plots.phase_timings(data.phases)),
        "rows": Markup(plots.rows_per_phase(data.phases)),
        "marks": Markup(plots.marks_distribution(data.marks)) if data.marks else None,
    }
    template = _environment(autoescape=True).get_template("report.html.j2")
    return template.render(_context(data) | {"figures": figures})


def render_markdown(data: ReportData) -> str:
    return _environment(autoescape=False).get_template("report.md.j2").render(_context(data))
