"""The guide's Phase 7: after cutover, the application's critical endpoints answer, and each kind
of user can sign in and sees what they should.

Runs against any API that speaks the reference API's contract (`edu-migrate serve` is one).
Passwords are used for logging in and go nowhere else: not into lines, reports or errors.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from edu_migrate.pg.connect import connect
from edu_migrate.pg.urls import redacted

ROLES = ("student", "teacher", "admin")
API = "/api/v1"


@dataclass(frozen=True)
class Account:
    role: str
    username: str
    password: str = field(repr=False)
    # How many students this account should see, when the database was there to ask.
    expected_students: int | None = None


@dataclass
class CutoverCheck:
    name: str
    passed: bool
    detail: str

    def __post_init__(self) -> None:
        # A detail may quote a page's URL, and --page URLs may carry user:password@.
        self.detail = redacted(self.detail)

    def line(self) -> str:
        return f"{'✓ PASS' if self.passed else '✗ FAIL'} | {self.name}: {self.detail}"


@dataclass
class CutoverReport:
    api_url: str
    checks: list[CutoverCheck] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(c.passed for c in self.checks)

    def to_dict(self) -> dict[str, Any]:
        return {"api": redacted(self.api_url), "passed": self.passed,
                "checks": [{"name": c.name, "passed": c.passed, "detail": c.detail}
                           for c in self.checks]}


# One active account per role, with data to look at, and how many students it may see.
_DEMO_ACCOUNTS = """
SELECT DISTINCT ON (u.role) u.role, u.username,
       CASE u.role
           WHEN 'student' THEN 1
           WHEN 'admin' THEN (SELECT count(*) FROM students)
           ELSE (SELECT count(DISTINCT e.student_id) FROM course_enrollments e
                 JOIN course_offerings o ON o.id = e.course_offering_id
                 WHERE o.instructor_id = m.id)
       END AS expected_students
FROM users u
LEFT JOIN students s ON s.user_id = u.id
LEFT JOIN staff_members m ON m.user_id = u.id
WHERE u.is_active AND u.role IN ('student', 'teacher', 'admin')
  AND CASE u.role
          WHEN 'student' THEN EXISTS (SELECT 1 FROM course_enrollments e WHERE e.student_id = s.id)
          WHEN 'teacher' THEN EXISTS (SELECT 1 FROM course_offerings o WHERE o.instructor_id = m.id)
          ELSE true
      END
ORDER BY u.role, u.username
"""


def demo_accounts(target_url: str,
                  password_of: Callable[[str], str]) -> dict[str, Account]:
    """An account per role from a migrated database whose passwords `password_of(username)`
    knows (the generated demo data's), with the counts each should see."""
    with connect(target_url, purpose="target") as conn:
        rows = conn.execute(_DEMO_ACCOUNTS).fetchall()
    return {str(role): Account(str(role), str(username), password_of(str(username)), int(n))
            for role, username, n in rows}


class _Run:
    def __init__(self, client: httpx.Client, report: CutoverReport) -> None:
        self.client = client
        self.report = report

    def check(self, name: str, passed: bool, detail: str) -> bool:
        self.report.checks.append(CutoverCheck(name, passed, detail))
        return passed

    def get(self, path: str, token: str | None = None) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return self.client.get(API + path, headers=headers)

    def expect_status(self, name: str, response: httpx.Response, status: int) -> bool:
        return self.check(name, response.status_code == status,
                          f"{response.status_code} (expected {status})")


def run_checks(api_url: str, accounts: Mapping[str, Account], *,
               timeout: float = 15.0) -> CutoverReport:
    report = CutoverReport(api_url)
    with httpx.Client(base_url=api_url.rstrip("/"), timeout=timeout) as client:
        run = _Run(client, report)
        try:
            _check_all(run, accounts)
        except httpx.HTTPError as exc:
            run.check("API reachable", False, f"{type(exc).__name__}: {str(exc)[:120]}")
    return report


def _check_all(run: _Run, accounts: Mapping[str, Account]) -> None:
    schema = run.client.get("/openapi.json")
    if not run.check("API reachable (GET /openapi.json)", schema.status_code == 200,
                     f"{schema.status_code}, {len(_json(schema).get('paths', {}))} paths"):
        return
    run.expect_status("GET /api/v1/users/me without a token is refused",
                      run.get("/users/me"), 401)
    run.expect_status("GET /api/v1/students/ without a token is refused",
                      run.get("/students/"), 401)
    catalogue = run.get("/courses/")
    run.check("GET /api/v1/courses/ (public catalogue)",
              catalogue.status_code == 200 and _json(catalogue).get("total", 0) > 0,
              f"{catalogue.status_code}, {_json(catalogue).get('total', 0)} courses")
    for role in ROLES:
        account = accounts.get(role)
        if account is None:
            run.check(f"Login as {role}", False, "no account to try: pass --" + role +
                      " USER:PASS")
            continue
        _check_role(run, account)
    if accounts:
        first = next(iter(accounts.values()))
        wrong = run.client.post(API + "/auth/login", json={
            "username": first.username, "password": first.password + "-wrong"})
        run.expect_status("Login with a wrong password is refused", wrong, 401)


def _check_role(run: _Run, account: Account) -> None:
    role = account.role
    login = run.client.post(API + "/auth/login",
                            json={"username": account.username, "password": account.password})
    token = _json(login).get("access_token")
    if not run.check(f"Login as {role} ({account.username})",
                     login.status_code == 200 and isinstance(token, str),
                     f"{login.status_code}" + (", token issued" if token else "")):
        return
    me = run.get("/users/me", token)
    run.check(f"GET /api/v1/users/me as {role}",
              me.status_code == 200 and _json(me).get("role") == role
              and _json(me).get("username") == account.username,
              f"{me.status_code}, role {_json(me).get('role')}")
    students = run.get("/students/", token)
    seen = _json(students).get("total")
    expected = account.expected_students
    run.check(f"GET /api/v1/students/ as {role}",
              students.status_code == 200 and isinstance(seen, int)
              and (expected is None or seen == expected),
              f"{students.status_code}, {seen} visible"
              + (f" (expected {expected})" if expected is not None else ""))
    courses = run.get("/courses/", token)
    run.expect_status(f"GET /api/v1/courses/ as {role}", courses, 200)
    enrollments = run.get("/me/enrollments", token)
    items = _json(enrollments).get("items", [])
    run.check(f"GET /api/v1/me/enrollments as {role}",
              enrollments.status_code == 200 and (role == "admin" or len(items) > 0),
              f"{enrollments.status_code}, {_json(enrollments).get('total')} enrollments, "
              f"{sum(len(i.get('marks', [])) for i in items)} marks on the first page")


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}

