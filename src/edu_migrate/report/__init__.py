"""The sign-off report: collect the run's facts once, render them as HTML, Markdown or JSON."""

from edu_migrate.report.facts import ReportData, collect, require_a_run
from edu_migrate.report.render import render_html, render_markdown

__all__ = ["ReportData", "collect", "render_html", "render_markdown", "require_a_run"]
