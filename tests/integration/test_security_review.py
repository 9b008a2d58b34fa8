"""The security review's findings on a migrated database, each reproduced: request sessions and
password hashes, login cost and limits, PUBLIC helpers, marks that do not hold together, the
audit of access-changing tables, token revocation, hash upgrades and what a teacher sees."""

from __future__ import annotations

import hashlib
import statistics
import time
import unicodedata
import uuid
from collections.abc import Iterator
from typing import Any

import bcrypt
import psycopg
import pytest
from fastapi.testclient import TestClient
from psycopg import sql
from psycopg.conninfo import make_conninfo

from edu_migrate.security import passwords
from edu_migrate.web.app import create_app
from tests.integration.test_security import (
    Migrated,
    _headers,
    _login,
    _one,
    migrated_database,
)

RIGHT = "Doğru-parol-2024"


def _limits(per_username: int, per_client: int) -> Any:
    from edu_migrate.web.throttle import LoginLimits

    return LoginLimits(per_username=per_username, per_client=per_client, window_seconds=600)


@pytest.fixture(scope="module")
def migrated(admin_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Migrated]:
    yield from migrated_database(admin_url, tmp_path_factory.mktemp("review"))


@pytest.fixture(scope="module")
def client(migrated: Migrated) -> Iterator[TestClient]:
    """The API with its default login limits, which the tests below stay within."""
    with TestClient(create_app(migrated.url)) as test:
        yield test


def _as(conn: psycopg.Connection, role: str, user_id: str | None) -> None:
    conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(role)))
    conn.execute("SELECT set_config('app.current_user_id', %s, false)", [user_id or ""])


def _spare_students(url: str, n: int, offset: int) -> list[str]:
    """Usernames of active students no other test of the module signs in with."""
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT u.username FROM users u JOIN students s ON s.user_id = u.id "
                            "WHERE u.is_active ORDER BY u.username DESC LIMIT %s OFFSET %s",
                            [n, offset]).fetchall()
    assert len(rows) == n
    return [str(r[0]) for r in rows]


def _set_hash(url: str, username: str, stored: str, algo: str) -> None:
    with psycopg.connect(url) as conn:
        conn.execute("UPDATE users SET password_hash = %s, password_algo = %s "
                     "WHERE username = %s", [stored, algo, username])


# --- 2: no request session reads a password hash or changes one ---------------------------

def test_request_roles_can_neither_read_nor_change_password_hashes(migrated: Migrated) -> None:
    admin_name = migrated.username(migrated.admin)
    with psycopg.connect(migrated.url) as conn:
        _as(conn, "edu_app", None)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT * FROM auth.credentials(%s)", [admin_name])
        conn.rollback()
        _as(conn, "edu_app", None)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT auth.record_login(%s, 'x', 'y', 'argon2')", [migrated.admin])
        conn.rollback()
        _as(conn, "edu_admin", migrated.admin)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("UPDATE users SET password_hash = 'known' WHERE id = %s",
                         [migrated.admin])


def test_the_api_logins_reach_no_superuser_and_no_hash(client: TestClient) -> None:
    logins = client.app.state.database.logins  # type: ignore[attr-defined]
    with psycopg.connect(logins.requests_url, autocommit=True) as conn:
        conn.execute("RESET ROLE")
        assert conn.execute("SELECT rolsuper OR rolbypassrls OR rolcreaterole FROM pg_roles "
                            "WHERE rolname = current_user").fetchone() == (False,)
        for role in ("postgres", "edu_auth"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(role)))
        for query in ("SELECT password_hash FROM users", "SELECT * FROM migration.api_logins",
                      "SELECT * FROM auth.credentials('x')"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(query)
    with psycopg.connect(logins.credentials_url, autocommit=True) as conn:
        for role in ("postgres", "edu_app", "edu_admin"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(role)))


# --- 3: a failed login costs the same for everyone, and failures are limited -------------

def test_a_failed_login_costs_the_same_whoever_the_account_is(
        migrated: Migrated, client: TestClient) -> None:
    md5_user, bcrypt_user, argon2_user = _spare_students(migrated.url, 3, 0)
    _set_hash(migrated.url, md5_user, hashlib.md5(RIGHT.encode()).hexdigest(), "md5")
    _set_hash(migrated.url, bcrypt_user,
              bcrypt.hashpw(RIGHT.encode(), bcrypt.gensalt(4)).decode(), "bcrypt")
    _set_hash(migrated.url, argon2_user, passwords.hash_password(RIGHT), "argon2")

    def cost(username: str) -> float:
        times = []
        for _ in range(3):
            started = time.perf_counter()
            response = client.post("/api/v1/auth/login",
                                   json={"username": username, "password": RIGHT + "x"})
            times.append(time.perf_counter() - started)
            assert response.status_code == 401
        return statistics.median(times)

    argon2_cost = cost(argon2_user)
    for username in (md5_user, bcrypt_user, "nobody-" + uuid.uuid4().hex):
        # Within a factor of three (the machine may be busy); the MD5 and bcrypt failures
        # used to take a fortieth of the argon2 one.
        assert cost(username) > argon2_cost / 3, username


def test_failed_logins_are_limited_per_username_and_per_client(migrated: Migrated) -> None:
    username, = _spare_students(migrated.url, 1, 3)
    _set_hash(migrated.url, username, hashlib.md5(RIGHT.encode()).hexdigest(), "md5")
    with TestClient(create_app(migrated.url, login_limits=_limits(3, 6))) as limited:
        for _ in range(3):
            assert limited.post("/api/v1/auth/login", json={
                "username": username, "password": "wrong"}).status_code == 401
        refused = limited.post("/api/v1/auth/login",
                               json={"username": username.upper(), "password": RIGHT})
        assert refused.status_code == 429
        assert 0 < int(refused.headers["Retry-After"]) <= 600
        # Other usernames from the same client: three more failures reach the client's limit.
        for n in range(3):
            assert limited.post("/api/v1/auth/login", json={
                "username": f"nobody-{n}", "password": "wrong"}).status_code == 401
        assert limited.post("/api/v1/auth/login", json={
            "username": "nobody-else", "password": "wrong"}).status_code == 429


# --- 8: SECURITY DEFINER helpers are not PUBLIC's -----------------------------------------

def test_a_role_without_grants_cannot_call_the_policy_helpers(
        migrated: Migrated, admin_url: str) -> None:
    role, password = f"edu_nobody_{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
            sql.Identifier(role), sql.Literal(password)))
    try:
        with psycopg.connect(make_conninfo(migrated.url, user=role, password=password),
                             autocommit=True) as conn:
            conn.execute("SELECT set_config('app.current_user_id', %s, false)",
                         [migrated.teacher])
            for helper in ("taught_student_ids()", "taught_enrollment_ids()", "is_admin()",
                           "current_user_role()"):
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    conn.execute(f"SELECT {helper}")
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


# --- 7: marks that do not hold together are refused, for every role ---------------------

def _teachers_mark(url: str, teacher: str) -> dict[str, Any]:
    mark: dict[str, Any] = _one(url, """
        SELECT jsonb_build_object('id', g.id, 'enrollment', g.enrollment_id,
               'max', a.max_score, 'instructor', o.instructor_id,
               'colleague', (SELECT m.id FROM staff_members m WHERE m.id <> o.instructor_id
                             LIMIT 1),
               'other_assessment', (SELECT a2.id FROM assessments a2
                                    WHERE a2.course_offering_id <> o.id LIMIT 1))
        FROM grades g JOIN assessments a ON a.id = g.assessment_id
        JOIN course_offerings o ON o.id = a.course_offering_id
        JOIN staff_members m ON m.id = o.instructor_id
        WHERE m.user_id = %s AND NOT g.is_absent ORDER BY g.id LIMIT 1""", [teacher])
    return mark


@pytest.mark.parametrize("who", ["teacher", "admin", "owner"])
def test_marks_that_do_not_hold_together_are_refused(migrated: Migrated, who: str) -> None:
    mark = _teachers_mark(migrated.url, migrated.teacher)
    refused = {
        "mismatched offering": ("INSERT INTO grades (id, enrollment_id, assessment_id, score, "
                                "created_at) VALUES (gen_random_uuid(), %s, %s, 1, now())",
                                [mark["enrollment"], mark["other_assessment"]]),
        "above the maximum": ("UPDATE grades SET score = %s WHERE id = %s",
                              [float(mark["max"]) + 1, mark["id"]]),
        "a colleague grades": ("UPDATE grades SET graded_by = %s WHERE id = %s",
                               [mark["colleague"], mark["id"]]),
        "back-dated creation": ("UPDATE grades SET created_at = '2015-01-01' WHERE id = %s",
                                [mark["id"]]),
        "back-dated grading": ("UPDATE grades SET graded_on = '2015-01-01' WHERE id = %s",
                               [mark["id"]]),
    }
    for name, (statement, params) in refused.items():
        with psycopg.connect(migrated.url) as conn:
            if who != "owner":
                _as(conn, "edu_app" if who == "teacher" else "edu_admin",
                    migrated.teacher if who == "teacher" else migrated.admin)
            with pytest.raises((psycopg.errors.CheckViolation,
                                psycopg.errors.InsufficientPrivilege)) as caught:
                conn.execute(statement, params)
            if name != "mismatched offering" or who != "teacher":
                assert isinstance(caught.value, psycopg.errors.CheckViolation), name
    # What holds together still passes, and a teacher's change is theirs.
    with psycopg.connect(migrated.url) as conn:
        _as(conn, "edu_app", migrated.teacher)
        row = conn.execute("UPDATE grades SET score = 0, graded_on = current_date WHERE id = %s "
                           "RETURNING graded_by::text", [mark["id"]]).fetchone()
        assert row == (str(mark["instructor"]),)
        conn.rollback()


# --- 9: changes that move access or marks are audited -----------------------------------

def test_instructor_and_maximum_changes_are_audited(migrated: Migrated) -> None:
    mark = _teachers_mark(migrated.url, migrated.teacher)
    offering = _one(migrated.url, "SELECT course_offering_id::text FROM assessments a "
                                  "JOIN grades g ON g.assessment_id = a.id WHERE g.id = %s",
                    [mark["id"]])
    with psycopg.connect(migrated.url) as conn:
        _as(conn, "edu_admin", migrated.admin)
        assert conn.execute("UPDATE course_offerings SET instructor_id = %s WHERE id = %s",
                            [mark["colleague"], offering]).rowcount == 1
        assert conn.execute("UPDATE assessments SET max_score = max_score + 1 "
                            "WHERE course_offering_id = %s", [offering]).rowcount >= 1
        conn.rollback()
        _as(conn, "edu_admin", migrated.admin)
        conn.execute("UPDATE course_offerings SET instructor_id = %s WHERE id = %s",
                     [mark["colleague"], offering])
        conn.execute("UPDATE course_offerings SET instructor_id = %s WHERE id = %s",
                     [mark["instructor"], offering])
        conn.execute("UPDATE assessments SET max_score = max_score WHERE course_offering_id = %s",
                     [offering])
        conn.commit()
    logged = _one(migrated.url, "SELECT jsonb_agg(DISTINCT table_name) FROM audit.log "
                                "WHERE acting_user_id = %s AND operation = 'UPDATE'",
                  [migrated.admin])
    assert {"course_offerings", "assessments"} <= set(logged)
    assert _one(migrated.url, "SELECT count(*) FROM audit.log WHERE table_name = "
                              "'course_offerings' AND row_id = %s AND new_values ->> "
                              "'instructor_id' = %s", [offering, str(mark["colleague"])]) == 1


# --- 10: tokens, hash upgrades, never a 500 ----------------------------------------------

def test_a_password_change_or_deactivation_revokes_tokens(
        migrated: Migrated, client: TestClient) -> None:
    changed, deactivated = _spare_students(migrated.url, 2, 4)
    for username in (changed, deactivated):
        _set_hash(migrated.url, username, passwords.hash_password(RIGHT), "argon2")
    tokens = {u: _login(client, u, RIGHT) for u in (changed, deactivated)}
    for headers in tokens.values():
        assert client.get("/api/v1/users/me", headers=headers).status_code == 200
    _set_hash(migrated.url, changed, passwords.hash_password(RIGHT + "-new"), "argon2")
    with psycopg.connect(migrated.url) as conn:
        conn.execute("UPDATE users SET is_active = false WHERE username = %s", [deactivated])
    for headers in tokens.values():
        assert client.get("/api/v1/users/me", headers=headers).status_code == 401
    # A new login with the new password works at once; a rehash at login revokes nothing.
    fresh = _login(client, changed, RIGHT + "-new")
    assert client.get("/api/v1/users/me", headers=fresh).status_code == 200


def test_odd_hashes_never_answer_500_and_passwords_are_normalised(
        migrated: Migrated, client: TestClient) -> None:
    odd, nfc_md5, nfd_md5 = _spare_students(migrated.url, 3, 6)
    _set_hash(migrated.url, odd, "ş" * 32, "md5")
    assert client.post("/api/v1/auth/login",
                       json={"username": odd, "password": "ş"}).status_code == 401
    word = "günəş3383"
    nfd = unicodedata.normalize("NFD", word)
    assert nfd != word
    _set_hash(migrated.url, nfc_md5, hashlib.md5(word.encode()).hexdigest(), "md5")
    _set_hash(migrated.url, nfd_md5, hashlib.md5(nfd.encode()).hexdigest(), "md5")
    _login(client, nfc_md5, nfd)  # typed decomposed, hashed composed
    _login(client, nfd_md5, nfd)  # hashed as typed by the old system
    # Both are argon2 of the NFC form now: either form signs in.
    for username in (nfc_md5, nfd_md5):
        assert _one(migrated.url, "SELECT password_algo FROM users WHERE username = %s",
                    [username]) == "argon2"
        _login(client, username, word)
        _login(client, username, nfd)


# --- 6: a teacher sees name, number and e-mail of their students, nothing more -----------

def test_a_teacher_sees_only_name_number_and_email_of_their_students(
        migrated: Migrated, client: TestClient) -> None:
    with psycopg.connect(migrated.url) as conn:
        _as(conn, "edu_app", migrated.teacher)
        persons = conn.execute("SELECT user_id::text, pin, birth_date, address FROM persons"
                               ).fetchall()
        assert [row[0] for row in persons] == [migrated.teacher]
        assert conn.execute("SELECT count(*) FROM students").fetchone() == (0,)
        directory = conn.execute("SELECT * FROM taught_students").fetchall()
        columns = [c.name for c in conn.execute("SELECT * FROM taught_students LIMIT 0"
                                                ).description or []]
    assert columns == ["id", "student_number", "first_name", "last_name", "patronymic", "email"]
    assert len(directory) == _one(
        migrated.url, "SELECT count(DISTINCT e.student_id) FROM course_enrollments e "
                      "JOIN course_offerings o ON o.id = e.course_offering_id "
                      "JOIN staff_members m ON m.id = o.instructor_id WHERE m.user_id = %s",
        [migrated.teacher]) > 0
    page = client.get("/api/v1/students/", headers=_headers(client, migrated, migrated.teacher),
                      params={"limit": 200}).json()
    assert page["total"] == len(directory)
    for item in page["items"]:
        assert item["student_number"] and item["last_name"]
        assert item["gpa"] is item["status"] is item["admission_year"] is None
