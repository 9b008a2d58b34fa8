"""The sign-off report: what it holds, what it never holds, what it refuses to report on, and how
it looks in a real headless browser (Debian's chromium; a screenshot is kept in test-artifacts/)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from edu_migrate import api
from edu_migrate.config import Settings
from edu_migrate.errors import PreconditionFailed
from edu_migrate.report import ReportData
from tests.conftest import make_settings
from tests.integration.helpers import prepared
from tests.integration.test_cli_errors import assert_one_line_error, run_cli, urls

# Legacy rows the tests spoil before the migration, so that the report has something to say
# about rows set aside and repairs.
SPOILED_MARK_IDS = (3, 5, 8)
SPOILED_USER_PASSWORD = "not-a-hash-but-secret"


@dataclass(frozen=True)
class Reported:
    settings: Settings
    data: ReportData
    html: str
    md: str
    json_text: str


@pytest.fixture(scope="module")
def reported(admin_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Reported]:
    """One small migration with a few spoiled legacy rows, and its report in three forms."""
    folder = tmp_path_factory.mktemp("report")
    for settings in make_settings(admin_url, folder):
        prepared(settings, scale=0.02)
        with psycopg.connect(str(settings.source_url), autocommit=True) as conn:
            conn.execute("UPDATE grades SET value = 'n/a' WHERE id = ANY(%s)",
                         [list(SPOILED_MARK_IDS)])
            conn.execute("UPDATE users SET username = '  ' || username || ' ' "
                         "WHERE id = (SELECT min(id) FROM users)")
            conn.execute("UPDATE users SET password = %s WHERE id = (SELECT max(id) FROM users "
                         "WHERE user_type = 3)", [SPOILED_USER_PASSWORD])
        api.migrate(settings)
        html, md = folder / "report.html", folder / "report.md"
        data = api.report(settings, html=html, md=md)
        yield Reported(settings, data, html.read_text("utf-8"), md.read_text("utf-8"),
                       json.dumps(data.to_dict(), default=str))


def test_report_holds_what_a_sign_off_needs(reported: Reported) -> None:
    data, html = reported.data, reported.html
    assert data.all_phases_done
    for table_id in ("validation-table", "accounting-table", "set-aside-table", "repairs-table",
                     "marks-table", "checksums-legacy", "checksums-edu_v2", "run-log-table",
                     "phases-table", "sign-off"):
        assert f'id="{table_id}"' in html, table_id
    assert html.count("<svg") >= 3
    for role in ("Technical Lead", "Project Manager", "CTO"):
        assert role in html and role in reported.md
    grades = next(c for c in data.checksums if c.side == "edu_v2" and c.table == "grades")
    assert f"{grades.rows:,}" in html and f"{grades.rows:,}" in reported.md
    assert re.fullmatch(r"[0-9a-f]{32}", grades.digest)
    assert {c.table for c in data.checksums if c.side == "legacy"} >= {"users", "grades"}


def test_validation_and_accounting_match_validate(reported: Reported) -> None:
    report = api.validate(reported.settings)
    assert [c.line() for c in reported.data.validation.checks] == [c.line() for c in report.checks]
    # Every spoiled row is set aside or repaired with its rule, every phase is done: a pass.
    assert reported.data.checks_failed == []
    assert reported.data.verdict == "PASS"
    assert '<section id="verdict" class="verdict pass">' in reported.html
    grades = next(a for a in reported.data.accounting if a.legacy_table == "grades")
    assert grades.old == grades.migrated + grades.merged + grades.set_aside
    assert grades.set_aside >= len(SPOILED_MARK_IDS)


def test_rows_set_aside_and_repairs_are_reported_by_reason_with_ids(reported: Reported) -> None:
    marks = next(g for g in reported.data.set_aside
                 if g.source_table == "grades" and "not a number" in g.reason)
    assert marks.rows == len(SPOILED_MARK_IDS)
    assert marks.sample_ids == list(SPOILED_MARK_IDS)
    assert "3, 5, 8" in reported.html and "3, 5, 8" in reported.md
    assert any(g.source_table == "users" and "password" in g.reason
               for g in reported.data.set_aside)
    assert any(g.source_table == "users" and g.column == "username"
               for g in reported.data.repairs)
    not_a_mark = sum(m.old_not_a_mark for m in reported.data.marks)
    assert not_a_mark == len(SPOILED_MARK_IDS)


def test_marks_distribution_compares_old_and_new(reported: Reported) -> None:
    for mark in reported.data.marks:
        assert mark.old_marks > 0 and mark.new_marks > 0
        assert mark.old_absent == mark.new_absent
    assert sum(m.new_marks + m.new_absent for m in reported.data.marks) == next(
        c.rows for c in reported.data.checksums if c.side == "edu_v2" and c.table == "grades")


def test_no_password_or_hash_anywhere_in_the_report(reported: Reported) -> None:
    settings = reported.settings
    with psycopg.connect(str(settings.target_url)) as conn:
        hashes = [row[0] for row in conn.execute("SELECT password_hash FROM users")]
    with psycopg.connect(str(settings.source_url)) as conn:
        legacy = [row[0] for row in conn.execute("SELECT password FROM users")]
    secrets = {value.strip() for value in hashes + legacy if value and value.strip()}
    assert SPOILED_USER_PASSWORD in secrets and len(secrets) > 100
    for name, text in (("html", reported.html), ("md", reported.md),
                       ("json", reported.json_text)):
        leaked = [s for s in secrets if s in text or s.lower() in text.lower()]
        assert not leaked, f"{name} holds {len(leaked)} password hashes"


def test_the_page_is_self_contained(reported: Reported) -> None:
    html = reported.html
    assert "<script" not in html.lower()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html, re.IGNORECASE)
    assert "@import" not in html
    assert not re.search(r"url\(\s*['\"]?(?!#)", html), "only in-page url(#id) references"
    assert "@font-face" not in html


def test_cli_report_writes_json_and_the_files(reported: Reported, tmp_path: Path) -> None:
    html, md = tmp_path / "r.html", tmp_path / "r.md"
    result = run_cli("report", "--html", str(html), "--md", str(md), "--json", "-",
                     *urls(reported.settings))
    payload = json.loads(result.stdout)
    assert payload["verdict"] == "PASS"
    assert result.returncode == 0, result.stderr
    assert html.exists() and md.exists()
    assert f"Wrote {html}" in result.stderr


def test_a_missing_foreign_key_makes_the_report_fail(reported: Reported, tmp_path: Path) -> None:
    """The same migration with one foreign key of edu_v2 dropped: the report must say FAIL,
    name the check, and exit non-zero; the key is put back afterwards."""
    target = str(reported.settings.target_url)
    with psycopg.connect(target, autocommit=True) as conn:
        row = conn.execute("SELECT pg_get_constraintdef(oid) FROM pg_constraint "
                           "WHERE conname = 'grades_graded_by_fkey'").fetchone()
        assert row is not None
        conn.execute("ALTER TABLE grades DROP CONSTRAINT grades_graded_by_fkey")
    try:
        html = tmp_path / "failed.html"
        data = api.report(reported.settings, html=html)
        assert data.verdict == "FAIL"
        assert data.checks_failed == ["Foreign Keys Valid"]
        assert '<section id="verdict" class="verdict fail">' in html.read_text("utf-8")
        result = run_cli("report", "--json", "-", *urls(reported.settings))
        assert json.loads(result.stdout)["verdict"] == "FAIL"
        assert result.returncode != 0
    finally:
        with psycopg.connect(target, autocommit=True) as conn:
            conn.execute(f"ALTER TABLE grades ADD CONSTRAINT grades_graded_by_fkey {row[0]}")


def test_report_before_any_phase_is_one_line(settings: Settings, tmp_path: Path) -> None:
    prepared(settings, scale=0.01)
    html = tmp_path / "report.html"
    result = run_cli("report", "--html", str(html), *urls(settings))
    assert_one_line_error(result, "no migration phase has run", "migrate --all")
    assert not html.exists()
    with pytest.raises(PreconditionFailed):
        api.report(settings, html=html)


def test_report_on_a_database_that_is_not_edu_v2(settings: Settings, tmp_path: Path) -> None:
    api.generate(settings, scale=0.01)
    html = tmp_path / "report.html"
    result = run_cli("report", "--html", str(html), "--source", str(settings.source_url),
                     "--target", str(settings.source_url))
    assert_one_line_error(result, "no edu_v2 schema")
    assert not html.exists()

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
BROWSER_NAMES = ("chromium", "chromium-browser")
# No network, no profile, no background services: the page must render from itself alone.
BROWSER_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync")


def _installed() -> str | None:
    return next((found for name in BROWSER_NAMES if (found := shutil.which(name))), None)


def _install() -> str | None:
    """apt-get install chromium, where the machine lets us (root on Debian)."""
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        return None
    env = os.environ | {"DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update", "-qq"],
                    ["apt-get", "install", "-y", "-qq", "chromium"]):
        done = subprocess.run(command, env=env, capture_output=True, timeout=900, check=False)
        if done.returncode != 0:
            return None
    return _installed()


@pytest.fixture(scope="session")
def chromium() -> str:
    found = _installed() or _install()
    if found is None:
        pytest.skip("chromium is not installed and cannot be installed here (needs apt-get and "
                    "root): `apt-get install chromium` to run the browser test")
    return found


def _browse(chromium: str, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([chromium, *BROWSER_FLAGS, f"--user-data-dir={profile}", *args],
                          capture_output=True, text=True, timeout=180, check=False)


def test_report_renders_in_a_real_browser(reported: Reported, chromium: str,
                                          tmp_path: Path) -> None:
    page = tmp_path / "report.html"
    page.write_text(reported.html, encoding="utf-8")
    ARTIFACTS.mkdir(exist_ok=True)
    screenshot = ARTIFACTS / "report.png"
    screenshot.unlink(missing_ok=True)
    shot = _browse(chromium, tmp_path / "profile-shot", f"--screenshot={screenshot}",
                   "--window-size=1400,3000", page.as_uri())
    assert screenshot.exists() and screenshot.stat().st_size > 50_000, shot.stderr[-2000:]
    (ARTIFACTS / "report.html").write_text(reported.html, encoding="utf-8")

    dom = _browse(chromium, tmp_path / "profile-dom", "--dump-dom", page.as_uri()).stdout
    for element_id in ("verdict", "validation-table", "accounting-table", "set-aside-table",
                       "repairs-table", "marks-table", "checksums-legacy", "checksums-edu_v2",
                       "plot-timings", "plot-rows", "plot-marks", "sign-off"):
        assert f'id="{element_id}"' in dom, element_id
    assert dom.count("<svg") >= 3
    assert dom.count("<tr") > 40
