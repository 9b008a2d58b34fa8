"""The sign-off report names the run's as-of time: the "now" every rule of the run used."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

from edu_migrate.report import render_html, render_markdown
from tests.unit.test_report_rendering import facts

AS_OF = datetime(2026, 1, 30, 20, 0, tzinfo=UTC)


def test_the_report_shows_the_as_of_time() -> None:
    data = dataclasses.replace(facts(), as_of=AS_OF)
    assert "<dt>As of</dt><dd>2026-01-30 20:00:00 UTC" in render_html(data)
    assert "| As of | 2026-01-30 20:00:00 UTC" in render_markdown(data)
    assert data.to_dict()["as_of"] == "2026-01-30T20:00:00+00:00"
