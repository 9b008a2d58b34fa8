"""The dashboards `serve` renders, and `cutover-check --browser`, which looks at them in headless
Chromium: it passes on the migrated demo data and fails when a page breaks."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import httpx
import psycopg
import pytest
import uvicorn
from fastapi.testclient import TestClient
from jinja2 import ChoiceLoader, DictLoader

from edu_migrate import api
from edu_migrate.checks import dashboards
from edu_migrate.checks.endpoints import Account, CutoverCheck, demo_accounts
from edu_migrate.legacy.generator import legacy_password
from edu_migrate.web import pages
from edu_migrate.web.app import create_app
from tests.conftest import make_settings
from tests.integration.test_cli_errors import assert_one_line_error, run_cli

# The session fixture that installs Debian's chromium where it is missing, and the folder the
# browser tests keep their screenshots in.
from tests.integration.test_report import ARTIFACTS, chromium  # noqa: F401


@dataclass(frozen=True)
class Demo:
    url: str
    source_url: str
    accounts: dict[str, Account]


@pytest.fixture(scope="module")
def demo(admin_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    """The demo data, generated, migrated, with an account per role whose password we know."""
    for settings in make_settings(admin_url, tmp_path_factory.mktemp("dashboards")):
        api.generate(settings, scale=0.02, seed=5)
        api.schema_apply(settings)
        api.migrate(settings)
        url = str(settings.target_url)
        accounts = demo_accounts(url, legacy_password)
        assert set(accounts) == {"student", "teacher", "admin"}
        yield Demo(url, str(settings.source_url), accounts)


@pytest.fixture(scope="module")
def client(demo: Demo) -> Iterator[TestClient]:
    with TestClient(create_app(demo.url)) as test_client:
        yield test_client


def _sign_in(client: TestClient, account: Account, next_page: str = "") -> httpx.Response:
    client.cookies.clear()
    return client.post("/login", data={"username": account.username,
                                       "password": account.password, "next": next_page},
                       follow_redirects=False)


def _one(url: str, query: str, *params: object) -> object:
    with psycopg.connect(url) as conn:
        row = conn.execute(query.encode(), params).fetchone()
        assert row is not None
        return row[0]


def test_sign_in_sets_a_strict_httponly_cookie_carrying_the_api_token(
        demo: Demo, client: TestClient) -> None:
    student = demo.accounts["student"]
    response = _sign_in(client, student, "/student")
    assert response.status_code == 303 and response.headers["location"] == "/student"
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"{pages.COOKIE}=")
    assert "httponly" in cookie.lower() and "samesite=strict" in cookie.lower()
    assert student.password not in cookie
    token = client.cookies[pages.COOKIE]
    me = client.get("/api/v1/users/me", headers={"Authorization": f"Bearer {token}"})
    assert me.status_code == 200 and me.json()["username"] == student.username
    assert client.get("/", follow_redirects=False).headers["location"] == "/student"
    page = client.get("/student")
    assert page.status_code == 200
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert page.headers["cache-control"] == "no-store"
    signed_out = client.post("/logout", follow_redirects=False)
    assert signed_out.status_code == 303 and pages.COOKIE not in client.cookies
    assert client.get("/student", follow_redirects=False).status_code == 303


def test_a_wrong_password_gets_the_form_again_and_no_cookie(
        demo: Demo, client: TestClient) -> None:
    student = demo.accounts["student"]
    client.cookies.clear()
    wrong = f"{student.password}-wrong"
    response = client.post("/login", data={"username": student.username, "password": wrong},
                           follow_redirects=False)
    assert response.status_code == 401 and "set-cookie" not in response.headers
    assert "Wrong username or password." in response.text
    assert wrong not in response.text and student.username in response.text
    empty = client.post("/login", data={"username": student.username, "password": ""})
    assert empty.status_code == 422 and "Enter a username and a password." in empty.text


def test_pages_need_a_sign_in_and_send_back_only_to_themselves(
        demo: Demo, client: TestClient) -> None:
    client.cookies.clear()
    for path in ("/student", "/teacher", "/admin?q=x"):
        response = client.get(path, follow_redirects=False)
        assert response.status_code == 303
        assert response.headers["location"].startswith("/login?next=%2F")
    for elsewhere in ("https://evil.example/", "//evil.example/student", "/api/v1/users/me"):
        response = _sign_in(client, demo.accounts["admin"], elsewhere)
        assert response.status_code == 303 and response.headers["location"] == "/"
    client.cookies.clear()
    admin = demo.accounts["admin"]
    foreign = client.post("/login", data={"username": admin.username, "password": admin.password},
                          headers={"Origin": "https://evil.example"}, follow_redirects=False)
    assert foreign.status_code == 403 and "set-cookie" not in foreign.headers


def test_each_role_sees_its_own_page_only(demo: Demo, client: TestClient) -> None:
    for role, account in demo.accounts.items():
        _sign_in(client, account)
        for other, path in pages.DASHBOARDS.items():
            response = client.get(path)
            assert response.status_code == (200 if other == role else 403), (role, path)


def test_student_page_shows_exactly_their_enrollments(demo: Demo, client: TestClient) -> None:
    """Row-level security, not the page, chooses the rows: the page holds the student's own
    enrollments, as many as the database has for them."""
    student = demo.accounts["student"]
    _sign_in(client, student)
    html = client.get("/student").text
    expected = _one(demo.url, "SELECT count(*) FROM course_enrollments e JOIN students s "
                    "ON s.id = e.student_id JOIN users u ON u.id = s.user_id "
                    "WHERE u.username = %s", student.username)
    assert html.count('id="enrollment-') == expected
    others = _one(demo.url, "SELECT count(*) FROM course_enrollments")
    assert isinstance(others, int) and isinstance(expected, int) and others > expected


def test_admin_search_finds_users_and_courses_and_treats_wildcards_as_text(
        demo: Demo, client: TestClient) -> None:
    _sign_in(client, demo.accounts["admin"])
    name, code = str(_one(demo.url, "SELECT name ->> 'az' FROM courses ORDER BY code")), str(
        _one(demo.url, "SELECT code FROM courses ORDER BY code"))
    found = client.get("/admin", params={"q": name[1:-1].upper()})
    assert found.status_code == 200 and code in found.text
    student = demo.accounts["student"]
    number = _one(demo.url, "SELECT student_number FROM students s JOIN users u "
                  "ON u.id = s.user_id WHERE u.username = %s", student.username)
    assert student.username in client.get("/admin", params={"q": number}).text
    wildcard = client.get("/admin", params={"q": "%"}).text
    assert "No user matches." in wildcard and "No course matches." in wildcard


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def in_process(demo: Demo) -> Iterator[str]:
    """The app on a real port, in this process, so that a test can break its templates."""
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(demo.url), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.1)
    assert server.started
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)


def _template(name: str) -> str:
    return resources.files("edu_migrate.web").joinpath("templates", name).read_text("utf-8")


def _broken(name: str, old: str, new: str) -> tuple[str, str]:
    source = _template(name)
    assert old in source, f"{name} no longer has {old!r}: the breakage would break nothing"
    return name, source.replace(old, new)


def _lines(checks: list[CutoverCheck]) -> dict[str, CutoverCheck]:
    return {check.name: check for check in checks}


@pytest.mark.usefixtures("chromium")
def test_browser_check_fails_when_a_page_breaks(
        demo: Demo, in_process: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The student's template drops the marks, the teacher's page fails with 500, and the
    admin's refers to an image that is not there: each is caught, and nothing else."""
    broken = dict([
        _broken("student.html.j2", "{{ chips(a.scores) }}", ""),
        _broken("teacher.html.j2", "{{ o.enrolled }}", "{{ o.enrolled.missing.attribute }}"),
        _broken("admin.html.j2", "<h1>Administration</h1>",
                '<h1>Administration</h1><img src="/assets/logo.png" alt="">'),
    ])
    monkeypatch.setattr(pages.TEMPLATES, "loader",
                        ChoiceLoader([DictLoader(broken), pages.TEMPLATES.loader]))
    expected = dashboards.expectations(demo.url, demo.accounts)
    checks = _lines(dashboards.check_pages(dashboards.page_urls(in_process, {}), demo.accounts,
                                           expected))
    searches = [f"Browser: admin search for “{term}”" for term in expected["admin"].searches]
    failed = {name for name, check in checks.items() if not check.passed}
    assert failed == {"Browser: student page shows their courses and marks",
                      "Browser: teacher page loads", "Browser: admin page loads", *searches}, \
        "\n".join(check.line() for check in checks.values())

    marks = checks["Browser: student page shows their courses and marks"].detail
    counted = re.search(r"(\d+) of (\d+) marks", marks)
    assert counted is not None, marks
    shown, wanted = int(counted[1]), int(counted[2])
    assert wanted == expected["student"].numbers.total() and shown < wanted / 2
    assert "marks missing: " in marks
    assert checks["Browser: teacher page loads"].detail.startswith("500 from ")
    admin = checks["Browser: admin page loads"].detail
    assert admin.startswith("200 from ") and "404" in admin and "1 console errors" in admin
    # The search results have the same broken image; what they show is still reported.
    for search in searches:
        assert "finds " in checks[search].detail and "1 console errors" in checks[search].detail
    assert checks["Browser: admin page shows the counts"].passed
    assert checks["Browser: teacher sign-in (" + demo.accounts["teacher"].username + ")"].passed


@pytest.mark.usefixtures("chromium")
def test_cutover_check_browser_passes_on_the_demo(demo: Demo, tmp_path: Path) -> None:
    """`edu-migrate serve` and `edu-migrate cutover-check --browser`, as an operator runs them;
    then `--page` aims the check at another page, which is not the student's."""
    port = _free_port()
    env = {**os.environ, "EDU_LOG_DIR": str(tmp_path / "logs"), "EDU_TARGET_URL": demo.url,
           "EDU_SOURCE_URL": demo.source_url}
    cli = [sys.executable, "-m", "edu_migrate"]
    server = subprocess.Popen([*cli, "serve", "--port", str(port)], env=env, cwd=tmp_path,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(base + "/login", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        ARTIFACTS.mkdir(exist_ok=True)
        for old in ARTIFACTS.glob("dashboard-*.png"):
            old.unlink()
        result = subprocess.run([*cli, "cutover-check", "--api", base, "--browser",
                                 "--screenshots", str(ARTIFACTS), "--json", "cutover.json"],
                                env=env, cwd=tmp_path, capture_output=True, text=True,
                                timeout=600)
        output = result.stdout + result.stderr
        assert result.returncode == 0, output
        assert "FAIL" not in output and output.count("✓ PASS | Browser: ") == 11, output
        for role in ("student", "teacher", "admin", "admin-search"):
            shot = ARTIFACTS / f"dashboard-{role}.png"
            assert shot.exists() and shot.stat().st_size > 20_000, shot

        elsewhere = subprocess.run([*cli, "cutover-check", "--api", base,
                                    "--page", f"student={base}/admin"],
                                   env=env, cwd=tmp_path, capture_output=True, text=True,
                                   timeout=600)
        assert elsewhere.returncode == 1, elsewhere.stdout + elsewhere.stderr
        assert f"✗ FAIL | Browser: student page loads: 403 from {base}/admin" in elsewhere.stdout
        assert "Browser: teacher" not in elsewhere.stdout
    finally:
        server.terminate()
        log = server.communicate(timeout=15)[0].decode()
    for account in demo.accounts.values():
        assert account.password not in log + output


def test_cutover_check_bad_page_and_missing_chromium_are_one_line(
        demo: Demo, tmp_path: Path) -> None:
    target = ["--target", demo.url, "--api", "http://127.0.0.1:9"]
    bad = run_cli("cutover-check", *target, "--page", "dean=http://127.0.0.1:9/dean")
    assert_one_line_error(bad, "--page takes ROLE=URL", "student, teacher, admin")
    nowhere = tmp_path / "empty-path"
    nowhere.mkdir()
    missing = run_cli("cutover-check", *target, "--browser", env={"PATH": str(nowhere)})
    assert_one_line_error(missing, "needs Chromium", "apt-get install chromium")
    assert missing.returncode == 4
