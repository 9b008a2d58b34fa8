"""Row-level security, audit trails, legacy passwords and the reference API, on a migrated
database: what each kind of user sees is compared with independent queries run as superuser."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bcrypt
import psycopg
import pytest
from fastapi.testclient import TestClient
from psycopg import sql

from edu_migrate import api
from edu_migrate.config import Settings
from edu_migrate.errors import PreconditionFailed
from edu_migrate.legacy.generator import legacy_password
from edu_migrate.web.app import create_app
from tests.conftest import make_settings
from tests.integration.helpers import scalar

BUSINESS_TABLES = ("users", "persons", "students", "staff_members", "organization_units",
                   "academic_terms", "courses", "course_offerings", "course_enrollments",
                   "assessments", "grades")
CATALOGUE = ("organization_units", "academic_terms", "courses")
# Accounts set up in the legacy source before migrating: an MD5 and a bcrypt password, both
# with Azerbaijani letters.
MD5_PASSWORD = "Şəhər-Günəş2024"
BCRYPT_PASSWORD = "Çiçək_Ölkə_ğ1"


@dataclass(frozen=True)
class Migrated:
    settings: Settings
    url: str
    student: str          # user ids (uuid text) of accounts with data to look at
    other_student: str
    teacher: str
    admin: str
    md5_username: str
    bcrypt_username: str
    inactive_username: str

    def username(self, user_id: str) -> str:
        return str(_one(self.url, "SELECT username FROM users WHERE id = %s", [user_id]))


def _one(url: str, query: str, params: list[Any] | None = None) -> Any:
    with psycopg.connect(url) as conn:
        row = conn.execute(query.encode(), params).fetchone()
        assert row is not None, query
        return row[0]


def _set_legacy_passwords(source_url: str) -> tuple[str, str]:
    """Give two active legacy students known passwords: one MD5, one bcrypt."""
    bcrypt_hash = bcrypt.hashpw(BCRYPT_PASSWORD.encode(), bcrypt.gensalt(4)).decode()
    with psycopg.connect(source_url) as conn:
        md5_user = conn.execute(
            "UPDATE users SET password = %s, is_active = 1, last_login = '2018-03-01' "
            "WHERE id = (SELECT min(id) FROM users WHERE user_type = 1) RETURNING username",
            [hashlib.md5(MD5_PASSWORD.encode()).hexdigest()]).fetchone()
        bcrypt_user = conn.execute(
            "UPDATE users SET password = %s, is_active = 1, last_login = '2023-03-01' "
            "WHERE id = (SELECT max(id) FROM users WHERE user_type = 1) RETURNING username",
            [bcrypt_hash]).fetchone()
    assert md5_user and bcrypt_user
    return str(md5_user[0]), str(bcrypt_user[0])


ACCOUNTS_WITH_MARKS = """
SELECT u.id::text FROM users u
JOIN students s ON s.user_id = u.id
WHERE u.is_active AND u.username <> ALL(%s)
  AND EXISTS (SELECT 1 FROM course_enrollments e JOIN grades g ON g.enrollment_id = e.id
              WHERE e.student_id = s.id)
ORDER BY u.username LIMIT 2
"""
TEACHER_WITH_MARKS = """
SELECT u.id::text FROM users u JOIN staff_members m ON m.user_id = u.id
WHERE u.is_active AND u.role = 'teacher'
  AND EXISTS (SELECT 1 FROM course_offerings o JOIN course_enrollments e
              ON e.course_offering_id = o.id JOIN grades g ON g.enrollment_id = e.id
              WHERE o.instructor_id = m.id)
ORDER BY u.username LIMIT 1
"""


@pytest.fixture(scope="module")
def migrated(admin_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Migrated]:
    yield from migrated_database(admin_url, tmp_path_factory.mktemp("security"))


def migrated_database(admin_url: str, folder: Path) -> Iterator[Migrated]:
    """A generated source, migrated, with two legacy passwords and accounts to look at."""
    for settings in make_settings(admin_url, folder):
        api.generate(settings, scale=0.02, seed=11)
        md5_username, bcrypt_username = _set_legacy_passwords(str(settings.source_url))
        api.schema_apply(settings)
        api.migrate(settings)
        url = str(settings.target_url)
        with psycopg.connect(url) as conn:
            students = [r[0] for r in conn.execute(
                ACCOUNTS_WITH_MARKS, [[md5_username, bcrypt_username]]).fetchall()]
            teacher = conn.execute(TEACHER_WITH_MARKS).fetchone()
            admin = conn.execute("SELECT id::text FROM users WHERE role = 'admin' AND is_active "
                                 "ORDER BY username LIMIT 1").fetchone()
            inactive = conn.execute("SELECT username FROM users WHERE NOT is_active "
                                    "ORDER BY username LIMIT 1").fetchone()
        assert len(students) == 2 and teacher and admin and inactive
        yield Migrated(settings, url, students[0], students[1], str(teacher[0]), str(admin[0]),
                       md5_username, bcrypt_username, str(inactive[0]))


@pytest.fixture(scope="module")
def client(migrated: Migrated) -> Iterator[TestClient]:
    with TestClient(create_app(migrated.url)) as test_client:
        yield test_client


def _visible_counts(url: str, user_id: str | None, role: str = "edu_app") -> dict[str, int]:
    with psycopg.connect(url) as conn:
        conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(role)))
        conn.execute("SELECT set_config('app.current_user_id', %s, false)", [user_id or ""])
        counts = {}
        for table in BUSINESS_TABLES:
            row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(
                sql.Identifier(table))).fetchone()
            assert row is not None
            counts[table] = int(row[0])
        return counts


def _totals(url: str) -> dict[str, int]:
    return {t: scalar(url, f"SELECT count(*) FROM {t}") for t in BUSINESS_TABLES}


def _expected_for_student(url: str, user_id: str) -> dict[str, int]:
    """What a student may see, by joins run as superuser (not through the policy helpers)."""
    mine = f"(SELECT id FROM students WHERE user_id = '{user_id}')"
    offerings = f"(SELECT course_offering_id FROM course_enrollments WHERE student_id IN {mine})"
    return {
        **{t: scalar(url, f"SELECT count(*) FROM {t}") for t in CATALOGUE},
        "users": 1, "persons": 1, "students": 1, "staff_members": 0,
        "course_offerings": scalar(url, f"SELECT count(*) FROM course_offerings "
                                        f"WHERE id IN {offerings}"),
        "course_enrollments": scalar(url, f"SELECT count(*) FROM course_enrollments "
                                          f"WHERE student_id IN {mine}"),
        "assessments": scalar(url, f"SELECT count(*) FROM assessments "
                                   f"WHERE course_offering_id IN {offerings}"),
        "grades": scalar(url, f"SELECT count(*) FROM grades g JOIN course_enrollments e "
                              f"ON e.id = g.enrollment_id WHERE e.student_id IN {mine}"),
    }


def _taught(user_id: str) -> str:
    return (f"(SELECT o.id FROM course_offerings o JOIN staff_members m "
            f"ON m.id = o.instructor_id WHERE m.user_id = '{user_id}')")


def _taught_students(url: str, user_id: str) -> int:
    return scalar(url, f"SELECT count(DISTINCT student_id) FROM course_enrollments "
                       f"WHERE course_offering_id IN {_taught(user_id)}")


def _expected_for_teacher(url: str, user_id: str) -> dict[str, int]:
    """A teacher's own records, their offerings with enrollments, assessments and marks; of
    their students no record (only the taught_students directory)."""
    taught = _taught(user_id)
    return {
        **{t: scalar(url, f"SELECT count(*) FROM {t}") for t in CATALOGUE},
        "users": 1, "persons": 1, "students": 0,
        "staff_members": 1,
        "course_offerings": scalar(url, f"SELECT count(*) FROM course_offerings "
                                        f"WHERE id IN {taught}"),
        "course_enrollments": scalar(url, f"SELECT count(*) FROM course_enrollments "
                                          f"WHERE course_offering_id IN {taught}"),
        "assessments": scalar(url, f"SELECT count(*) FROM assessments "
                                   f"WHERE course_offering_id IN {taught}"),
        "grades": scalar(url, f"SELECT count(*) FROM grades g JOIN course_enrollments e "
                              f"ON e.id = g.enrollment_id WHERE e.course_offering_id IN {taught}"),
    }


def _login(client: TestClient, username: str, password: str) -> dict[str, str]:
    response = client.post("/api/v1/auth/login", json={"username": username, "password": password})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["token_type"] == "bearer"
    return {"Authorization": f"Bearer {body['access_token']}"}


def _headers(client: TestClient, migrated: Migrated, user_id: str) -> dict[str, str]:
    username = migrated.username(user_id)
    return _login(client, username, legacy_password(username))


# --- the database: roles, RLS, audit --------------------------------------------------------

def test_roles_rls_and_one_audit_event_per_phase(migrated: Migrated) -> None:
    url = migrated.url
    assert _one(url, "SELECT NOT rolcanlogin AND NOT rolbypassrls AND NOT rolsuper "
                     "FROM pg_roles WHERE rolname = 'edu_app'")
    assert _one(url, "SELECT NOT rolcanlogin AND NOT rolbypassrls FROM pg_roles "
                     "WHERE rolname = 'edu_admin'")
    assert _one(url, "SELECT count(*) FROM pg_class WHERE relname = ANY(%s) "
                     "AND relnamespace = 'public'::regnamespace "
                     "AND relrowsecurity AND relforcerowsecurity",
                [list(BUSINESS_TABLES)]) == len(BUSINESS_TABLES)
    # The bulk load wrote one event per phase and not one row per migrated row; the triggers
    # it paused are back.
    assert _one(url, "SELECT count(*) FROM audit.log WHERE operation = 'MIGRATE'") == 5
    assert _one(url, "SELECT count(*) FROM audit.log WHERE operation <> 'MIGRATE'") == 0
    assert _one(url, "SELECT count(*) FROM pg_trigger WHERE tgname = 'audit_row_change' "
                     "AND tgenabled = 'O'") == len(BUSINESS_TABLES)
    assert _one(url, "SELECT (new_values -> 'rows' ->> 'migrate_grades')::int FROM audit.log "
                     "WHERE new_values ->> 'phase' = '5'") == scalar(
        url, "SELECT count(*) FROM grades")


def test_sql_student_sees_exactly_their_own(migrated: Migrated) -> None:
    assert _visible_counts(migrated.url, migrated.student) == _expected_for_student(
        migrated.url, migrated.student)


def test_sql_teacher_sees_exactly_their_offerings(migrated: Migrated) -> None:
    assert _visible_counts(migrated.url, migrated.teacher) == _expected_for_teacher(
        migrated.url, migrated.teacher)


def test_sql_admin_sees_everything_only_in_the_admin_role(migrated: Migrated) -> None:
    assert _visible_counts(migrated.url, migrated.admin, "edu_admin") == _totals(migrated.url)
    # edu_admin grants nothing by itself: its policies also ask for a user whose role is admin.
    assert _visible_counts(migrated.url, migrated.teacher, "edu_admin") == \
        _expected_for_teacher(migrated.url, migrated.teacher)


def test_sql_anonymous_sees_only_the_catalogue(migrated: Migrated) -> None:
    counts = _visible_counts(migrated.url, None)
    totals = _totals(migrated.url)
    assert {t: n for t, n in counts.items() if n} == {t: totals[t] for t in CATALOGUE}


def test_sql_student_transcript_uses_the_indexes(migrated: Migrated) -> None:
    with psycopg.connect(migrated.url) as conn:
        conn.execute("SET enable_seqscan = off")
        conn.execute("SET ROLE edu_app")
        conn.execute("SELECT set_config('app.current_user_id', %s, false)", [migrated.student])
        plan = "\n".join(str(r[0]) for r in conn.execute(
            "EXPLAIN SELECT g.score FROM course_enrollments e "
            "JOIN grades g ON g.enrollment_id = e.id").fetchall())
    assert "grades_enrollment_idx" in plan
    assert "Seq Scan" not in plan


def test_sql_teacher_writes_marks_only_in_own_offerings_and_is_audited(
        migrated: Migrated) -> None:
    url = migrated.url
    own = _one(url, "SELECT g.id::text FROM grades g JOIN course_enrollments e "
                    "ON e.id = g.enrollment_id JOIN course_offerings o ON o.id = "
                    "e.course_offering_id JOIN staff_members m ON m.id = o.instructor_id "
                    "WHERE m.user_id = %s AND NOT g.is_absent ORDER BY g.id LIMIT 1",
               [migrated.teacher])
    foreign = _one(url, "SELECT jsonb_build_object('id', g.id, 'enrollment', g.enrollment_id, "
                        "'assessment', g.assessment_id) FROM grades g JOIN course_enrollments e "
                        "ON e.id = g.enrollment_id JOIN course_offerings o ON o.id = "
                        "e.course_offering_id JOIN staff_members m ON m.id = o.instructor_id "
                        "WHERE m.user_id <> %s ORDER BY g.id LIMIT 1", [migrated.teacher])
    with psycopg.connect(url) as conn:
        conn.execute("SET ROLE edu_app")
        conn.execute("SELECT set_config('app.current_user_id', %s, false)", [migrated.teacher])
        assert conn.execute("UPDATE grades SET score = 0 WHERE id = %s", [own]).rowcount == 1
        assert conn.execute("UPDATE grades SET score = 0 WHERE id = %s",
                            [foreign["id"]]).rowcount == 0
        conn.commit()
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"):
            conn.execute("INSERT INTO grades (id, enrollment_id, assessment_id, score, "
                         "created_at) VALUES (gen_random_uuid(), %s, %s, 1, now())",
                         [foreign["enrollment"], foreign["assessment"]])
    with psycopg.connect(url) as conn:
        conn.execute("SET ROLE edu_app")
        conn.execute("SELECT set_config('app.current_user_id', %s, false)", [migrated.student])
        assert conn.execute("UPDATE grades SET score = 0").rowcount == 0
    entry = _one(url, "SELECT jsonb_build_object('who', acting_user_id, 'op', operation, "
                      "'new', new_values ->> 'score') FROM audit.log WHERE row_id = %s", [own])
    # grades.score is numeric without a scale (V009): the value as written
    assert entry == {"who": migrated.teacher, "op": "UPDATE", "new": "0"}


def test_an_application_cannot_move_a_marks_legacy_id(migrated: Migrated) -> None:
    """grades.legacy_id is the marks' crosswalk (schema V026): a teacher who may change their
    own marks must not point one at another legacy mark, which a fallback would then write, nor
    give it another id (derived from the legacy id, the way back to it)."""
    own = _one(migrated.url, "SELECT g.id::text FROM grades g JOIN course_enrollments e "
                             "ON e.id = g.enrollment_id JOIN course_offerings o ON o.id = "
                             "e.course_offering_id JOIN staff_members m ON m.id = o.instructor_id "
                             "WHERE m.user_id = %s ORDER BY g.id LIMIT 1", [migrated.teacher])
    for statement, values in (
            ("UPDATE grades SET legacy_id = legacy_id + 1 WHERE id = %s", [own]),
            ("UPDATE grades SET id = gen_random_uuid() WHERE id = %s", [own]),
            ("INSERT INTO grades (enrollment_id, assessment_id, score, created_at, legacy_id) "
             "SELECT enrollment_id, assessment_id, 1, now(), -1 FROM grades WHERE id = %s",
             [own])):
        with psycopg.connect(migrated.url) as conn:
            conn.execute("SET ROLE edu_app")
            conn.execute("SELECT set_config('app.current_user_id', %s, false)",
                         [migrated.teacher])
            with pytest.raises(psycopg.errors.InsufficientPrivilege,
                               match="permission denied for table grades"):
                conn.execute(statement, values)


# --- passwords ----------------------------------------------------------------------------

def test_legacy_md5_password_logs_in_and_is_rehashed_with_argon2(
        migrated: Migrated, client: TestClient) -> None:
    url, username = migrated.url, migrated.md5_username
    assert _one(url, "SELECT password_algo FROM users WHERE username = %s", [username]) == "md5"
    assert client.post("/api/v1/auth/login", json={
        "username": username, "password": MD5_PASSWORD.lower()}).status_code == 401
    assert _one(url, "SELECT password_algo FROM users WHERE username = %s", [username]) == "md5"
    headers = _login(client, username, MD5_PASSWORD)
    assert client.get("/api/v1/users/me", headers=headers).json()["username"] == username
    assert _one(url, "SELECT password_algo || ' ' || left(password_hash, 10) FROM users "
                     "WHERE username = %s", [username]) == "argon2 $argon2id$"
    _login(client, username, MD5_PASSWORD)  # the new hash verifies too
    # The rehash is audited, without the hash.
    logged = _one(url, "SELECT jsonb_agg(new_values) FROM audit.log a JOIN users u "
                       "ON u.id = a.row_id WHERE u.username = %s", [username])
    assert any(v["password_algo"] == "argon2" for v in logged)
    assert _one(url, "SELECT count(*) FROM audit.log WHERE old_values ? 'password_hash' "
                     "OR new_values ? 'password_hash'") == 0


def test_legacy_bcrypt_password_logs_in_and_is_rehashed_with_argon2(
        migrated: Migrated, client: TestClient) -> None:
    url, username = migrated.url, migrated.bcrypt_username
    assert _one(url, "SELECT password_algo FROM users WHERE username = %s", [username]) == \
        "bcrypt"
    _login(client, username.upper(), BCRYPT_PASSWORD)  # usernames are case-insensitive
    assert _one(url, "SELECT password_algo || ' ' || left(password_hash, 10) FROM users "
                     "WHERE username = %s", [username]) == "argon2 $argon2id$"
    _login(client, username, BCRYPT_PASSWORD)
    assert _one(url, "SELECT last_login_at > now() - interval '1 minute' FROM users "
                     "WHERE username = %s", [username])


def test_generated_passwords_log_in(migrated: Migrated, client: TestClient) -> None:
    for user_id in (migrated.student, migrated.teacher, migrated.admin):
        _headers(client, migrated, user_id)


def test_login_failures_are_json_and_say_nothing_secret(
        migrated: Migrated, client: TestClient) -> None:
    wrong = client.post("/api/v1/auth/login", json={"username": migrated.bcrypt_username,
                                                    "password": "Çiçək-wrong"})
    unknown = client.post("/api/v1/auth/login", json={"username": "nobody-at-all",
                                                      "password": "Çiçək-wrong"})
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json() == unknown.json() == {"detail": "wrong username or password"}
    inactive = client.post("/api/v1/auth/login", json={
        "username": migrated.inactive_username,
        "password": legacy_password(migrated.inactive_username)})
    assert inactive.status_code == 403 and inactive.json()["detail"]
    assert client.post("/api/v1/auth/login", json={"username": ""}).status_code == 422
    invalid = client.post("/api/v1/auth/login", json={"username": "x", "password": "Çiçək\x00"})
    assert invalid.status_code == 422 and "Çiçək" not in invalid.text
    surrogate = client.post("/api/v1/auth/login", content=b'{"username": "\\ud800", '
                            b'"password": "p"}', headers={"content-type": "application/json"})
    assert surrogate.status_code == 422
    for response in (wrong, unknown, inactive):
        assert "Çiçək" not in response.text and "$2" not in response.text


# --- the API ------------------------------------------------------------------------------

def _all_enrollments(client: TestClient, headers: dict[str, str]) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    while True:
        page = client.get("/api/v1/me/enrollments", headers=headers,
                          params={"limit": 200, "offset": len(items)})
        assert page.status_code == 200, page.text
        items += page.json()["items"]
        if len(items) >= page.json()["total"]:
            return items


@pytest.mark.parametrize("who", ["student", "teacher"])
def test_api_shows_each_user_what_the_rules_allow(
        migrated: Migrated, client: TestClient, who: str) -> None:
    user_id = getattr(migrated, who)
    expected = (_expected_for_student if who == "student" else _expected_for_teacher)(
        migrated.url, user_id)
    headers = _headers(client, migrated, user_id)
    me = client.get("/api/v1/users/me", headers=headers).json()
    assert (me["id"], me["role"]) == (user_id, who)
    students = client.get("/api/v1/students/", headers=headers).json()
    assert students["total"] == (1 if who == "student" else _taught_students(migrated.url,
                                                                              user_id))
    enrollments = _all_enrollments(client, headers)
    assert len(enrollments) == expected["course_enrollments"]
    assert sum(len(e["marks"]) for e in enrollments) == expected["grades"]
    courses = client.get("/api/v1/courses/", headers=headers).json()
    assert courses["total"] == expected["courses"]


def test_api_admin_sees_everything(migrated: Migrated, client: TestClient) -> None:
    headers = _headers(client, migrated, migrated.admin)
    totals = _totals(migrated.url)
    assert client.get("/api/v1/users/me", headers=headers).json()["role"] == "admin"
    assert client.get("/api/v1/students/", headers=headers).json()["total"] == totals["students"]
    assert client.get("/api/v1/me/enrollments", headers=headers).json()["total"] == \
        totals["course_enrollments"]


def test_api_student_cannot_read_another_students_marks_by_id(
        migrated: Migrated, client: TestClient) -> None:
    url = migrated.url
    theirs = _one(url, "SELECT jsonb_build_object('student', s.id, 'enrollment', e.id, "
                       "'grade', g.id) FROM students s JOIN course_enrollments e "
                       "ON e.student_id = s.id JOIN grades g ON g.enrollment_id = e.id "
                       "WHERE s.user_id = %s LIMIT 1", [migrated.other_student])
    mine = _one(url, "SELECT g.id::text FROM students s JOIN course_enrollments e "
                     "ON e.student_id = s.id JOIN grades g ON g.enrollment_id = e.id "
                     "WHERE s.user_id = %s LIMIT 1", [migrated.student])
    headers = _headers(client, migrated, migrated.student)
    assert client.get(f"/api/v1/students/{theirs['student']}", headers=headers).status_code == 404
    assert client.get(f"/api/v1/enrollments/{theirs['enrollment']}",
                      headers=headers).status_code == 404
    assert client.patch(f"/api/v1/grades/{theirs['grade']}", json={"score": 1},
                        headers=headers).status_code == 404
    ids = {e["id"] for e in _all_enrollments(client, headers)}
    assert theirs["enrollment"] not in ids
    # Their own marks they may read but not change.
    assert client.patch(f"/api/v1/grades/{mine}", json={"score": 1},
                        headers=headers).status_code == 403
    # Without a token, or with a forged one: 401.
    assert client.get("/api/v1/me/enrollments").status_code == 401
    forged = {"Authorization": "Bearer " + headers["Authorization"].split()[1][:-2] + "xx"}
    assert client.get("/api/v1/me/enrollments", headers=forged).status_code == 401
    assert client.get("/api/v1/students/not-a-uuid", headers=headers).status_code == 422


def test_api_teacher_changes_a_mark_in_their_offering(
        migrated: Migrated, client: TestClient) -> None:
    grade = _one(migrated.url, "SELECT g.id::text FROM grades g JOIN assessments a "
                               "ON a.id = g.assessment_id JOIN course_offerings o "
                               "ON o.id = a.course_offering_id JOIN staff_members m "
                               "ON m.id = o.instructor_id WHERE m.user_id = %s "
                               "AND a.max_score >= 5 ORDER BY g.id DESC LIMIT 1",
                 [migrated.teacher])
    headers = _headers(client, migrated, migrated.teacher)
    changed = client.patch(f"/api/v1/grades/{grade}", json={"score": 4.5}, headers=headers)
    assert changed.status_code == 200, changed.text
    assert (changed.json()["score"], changed.json()["is_absent"]) == (4.5, False)
    absent = client.patch(f"/api/v1/grades/{grade}", json={"score": None}, headers=headers)
    assert absent.json()["is_absent"] is True
    assert client.patch(f"/api/v1/grades/{grade}", json={"score": 99},
                        headers=headers).status_code in (200, 422)
    assert _one(migrated.url, "SELECT count(*) FROM audit.log WHERE row_id = %s "
                              "AND acting_user_id = %s", [grade, migrated.teacher]) >= 2


def test_openapi_fuzzing_finds_no_server_error(migrated: Migrated, client: TestClient) -> None:
    import schemathesis
    from hypothesis import HealthCheck, Phase, given, settings

    app = client.app
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    headers = _headers(client, migrated, migrated.student)
    strategy = schema.as_strategy()
    exercised: set[tuple[str, str]] = set()

    @given(case=strategy)
    @settings(max_examples=60, deadline=None, database=None, derandomize=True,
              phases=[Phase.explicit, Phase.generate],
              suppress_health_check=list(HealthCheck))
    def fuzz(case: Any) -> None:
        response = case.call(headers=headers)
        exercised.add((case.method, case.path))
        assert response.status_code < 500, (case.method, case.path, response.text[:200])

    fuzz()
    operations = sum(len(p) for p in client.get("/openapi.json").json()["paths"].values())
    assert len(exercised) == operations, exercised


def test_cutover_check_passes_against_the_served_api(migrated: Migrated, tmp_path: Path) -> None:
    """`edu-migrate serve` on the migrated database, `edu-migrate cutover-check` against it."""
    import os
    import socket
    import subprocess
    import sys
    import time

    import httpx

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "EDU_LOG_DIR": str(tmp_path / "logs"),
           "EDU_TARGET_URL": migrated.url, "EDU_SOURCE_URL": str(migrated.settings.source_url)}
    cli = [sys.executable, "-m", "edu_migrate"]
    server = subprocess.Popen([*cli, "serve", "--port", str(port)], env=env, cwd=tmp_path,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(base + "/openapi.json", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        result = subprocess.run([*cli, "cutover-check", "--api", base, "--json", "cutover.json"],
                                env=env, cwd=tmp_path, capture_output=True, text=True,
                                timeout=120)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "FAIL" not in result.stdout and result.stdout.count("✓ PASS") >= 18
        broken = subprocess.run([*cli, "cutover-check", "--api", base, "--student",
                                 f"{migrated.username(migrated.student)}:not-the-password"],
                                env=env, cwd=tmp_path, capture_output=True, text=True,
                                timeout=120)
        assert broken.returncode == 1 and "✗ FAIL | Login as student" in broken.stdout
        assert "not-the-password" not in broken.stdout + broken.stderr
    finally:
        server.terminate()
        log = server.communicate(timeout=15)[0].decode()
    for password in (MD5_PASSWORD, BCRYPT_PASSWORD, "not-the-password"):
        assert password not in log
    # serve says which roles serve requests and check passwords.
    assert "requests as the login role" in log and "not a superuser" in log


def test_row_level_security_on_postgresql_15(pg15_admin_url: str, tmp_path: Path) -> None:
    """The oldest server the guide allows: same roles, same policies, same answers."""
    for settings in make_settings(pg15_admin_url, tmp_path):
        api.generate(settings, scale=0.01, seed=3)
        api.schema_apply(settings)
        api.migrate(settings)
        url = str(settings.target_url)
        with psycopg.connect(url) as conn:
            student = conn.execute(ACCOUNTS_WITH_MARKS, [[]]).fetchone()
            teacher = conn.execute(TEACHER_WITH_MARKS).fetchone()
            admin = conn.execute("SELECT id::text FROM users WHERE role = 'admin' "
                                 "AND is_active LIMIT 1").fetchone()
        assert student and teacher and admin
        assert _visible_counts(url, student[0]) == _expected_for_student(url, student[0])
        assert _visible_counts(url, teacher[0]) == _expected_for_teacher(url, teacher[0])
        assert _visible_counts(url, admin[0], "edu_admin") == _totals(url)
        assert _one(url, "SELECT count(*) FROM audit.log") == 5


def test_schema_refuses_an_owner_that_row_level_security_would_filter(
        admin_url: str, tmp_path: Path) -> None:
    """FORCEd RLS applies to the table owner: a migration as a plain role would load nothing."""
    import uuid

    from psycopg.conninfo import make_conninfo

    role = f"edu_owner_{uuid.uuid4().hex[:8]}"
    password = uuid.uuid4().hex
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN CREATEDB NOBYPASSRLS PASSWORD {}").format(
            sql.Identifier(role), sql.Literal(password)))
    try:
        for settings in make_settings(admin_url, tmp_path):
            target = make_conninfo(str(settings.target_url), user=role, password=password)
            with pytest.raises(PreconditionFailed, match="cannot bypass row-level security"):
                api.schema_apply(settings.model_copy(update={"target_url": target}))
            with psycopg.connect(target) as conn:
                assert conn.execute("SELECT to_regclass('migration.schema_versions')"
                                    ).fetchone() == (None,)
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def test_serve_with_a_target_starts_no_embedded_server(migrated: Migrated,
                                                       tmp_path: Path) -> None:
    """`serve` needs only edu_v2: given --target, it starts no embedded server for a source it
    never reads (before, each such run initialised and left running a PostgreSQL of its own in
    the home folder). The port taken makes it stop after the checks that precede listening."""
    import socket

    from tests.integration.test_cli_errors import assert_one_line_error, run_cli

    home = tmp_path / "home"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        busy = run_cli("serve", "--port", str(port), "--target", migrated.url,
                       env={"EDU_MIGRATE_HOME": str(home)})
    assert_one_line_error(busy, f"cannot listen on 127.0.0.1:{port}")
    assert not home.exists()


def test_cli_bad_input_is_one_line(migrated: Migrated) -> None:
    import socket

    from tests.integration.test_cli_errors import assert_one_line_error, run_cli

    malformed = run_cli("cutover-check", "--api", "http://127.0.0.1:9", "--student",
                        "no-colon-secret", "--target", migrated.url)
    assert_one_line_error(malformed, "--student takes USER:PASSWORD")
    assert "no-colon-secret" not in malformed.stderr
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        busy = run_cli("serve", "--port", str(port), "--target", migrated.url)
    assert_one_line_error(busy, f"cannot listen on 127.0.0.1:{port}")
    unreachable = run_cli("cutover-check", "--api", "http://127.0.0.1:9", "--target", migrated.url)
    assert unreachable.returncode == 1
    assert "✗ FAIL | API reachable" in unreachable.stdout
