"""The report's rendering on its own, from hand-made facts: verdicts, escaping, formats."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from edu_migrate.checks.validation import Check, ValidationReport
from edu_migrate.pg.urls import redacted
from edu_migrate.phases.runner import PHASES, RUN_ORDER
from edu_migrate.report import render_html, render_markdown
from edu_migrate.report.facts import (
    MARK_TYPES,
    PHASE_NAMES,
    Checksum,
    MarkDistribution,
    PhaseTiming,
    ReportData,
    RowGroup,
    ServerInfo,
    TableAccounting,
)

AT = datetime(2026, 1, 31, 2, 0, tzinfo=UTC)


def facts(*, passed: bool = True, phase_five: str = "done") -> ReportData:
    phases = [PhaseTiming(n, PHASE_NAMES[n], "done" if n != 5 else phase_five, AT, AT, 1.5,
                          {"grades": 3_209_747} if n == 5 else {"users": 6_987}, None)
              for n in RUN_ORDER]
    checks = [Check("Grade Count", passed, 3_209_747, 3_209_747 if passed else 3_209_700)]
    marks = [MarkDistribution(n, kind, top) for n, (kind, top) in MARK_TYPES.items()]
    for mark in marks:
        mark.old_bins[10] = mark.new_bins[10] = 1_000
    return ReportData(
        generated_at=AT, tool_version="0.1.0", schema_version=3,
        source=ServerInfo("source", "postgresql://u:***@old:5432/edu", "15.8", "edu"),
        target=ServerInfo("target", "postgresql://u:***@new:5432/edu_v2", "18.0", "edu_v2"),
        phases=phases, run_log=[], validation=ValidationReport(checks),
        accounting=[TableAccounting("Grades", "grades", "grades", 3_209_747, 3_209_740, 0, 7,
                                    3_209_740, True)],
        set_aside=[RowGroup("grades", "mark is <script>alert(1)</script> | odd", 7,
                            [1, 2, 3, 4, 5])],
        repairs=[], checksums=[Checksum("edu_v2", "grades", 3_209_740, "ab" * 16)], marks=marks)


def test_phase_names_cover_every_phase() -> None:
    assert set(PHASE_NAMES) == set(PHASES)


def test_a_passing_run_reads_pass_with_thousands_separators() -> None:
    html = render_html(facts())
    assert '<section id="verdict" class="verdict pass">' in html
    assert "3,209,747" in html and "3209747" not in html.replace("3,209,747", "")
    assert html.count("<svg") == 3
    md = render_markdown(facts())
    assert md.startswith("# Migration report: edu → edu_v2\n\n**Verdict: PASS**")


@pytest.mark.parametrize(("data", "reason"), [
    (facts(passed=False), "Check failed: Grade Count"),
    (facts(phase_five="failed"), "Phase 5 (Enrollments and marks) failed"),
])
def test_a_failed_check_or_phase_reads_fail_and_says_why(data: ReportData, reason: str) -> None:
    html = render_html(data)
    assert '<section id="verdict" class="verdict fail">' in html
    assert reason in html and reason in render_markdown(data)
    assert data.verdict == "FAIL"


def test_text_from_the_database_is_escaped() -> None:
    html = render_html(facts())
    assert "<script>" not in html
    assert "&lt;script&gt;" in html
    md = render_markdown(facts())
    assert "\\| odd" in md


@pytest.mark.parametrize("text", [
    "--source postgresql://admin:s3cr3t@db/edu",
    "--target=postgres://admin:s3cr3t@db:5432/edu_v2",
    "--target 'host=db password=s3cr3t dbname=edu_v2'",
    "--target \"host=db password='s3 cr3t' dbname=edu_v2\"",
    "postgresql://db/edu?password=s3cr3t&sslmode=require",
])
def test_command_lines_are_redacted(text: str) -> None:
    shown = redacted(text)
    assert "s3cr3t" not in shown and "s3 cr3t" not in shown
    assert "***" in shown


def test_a_failed_check_names_what_is_wrong() -> None:
    data = facts()
    data.validation = ValidationReport([Check(
        "Foreign Keys Valid", False, None, 17, {"Declared": 18, "Missing": 1},
        ("missing: grades.graded_by → staff_members.id",))])
    for text in (render_html(data), render_markdown(data)):
        assert "missing: grades.graded_by → staff_members.id" in text
    assert data.validation.checks[0].line() == (
        "✗ FAIL | Foreign Keys Valid: New=17, Declared=18, Missing=1 — missing: "
        "grades.graded_by → staff_members.id")

