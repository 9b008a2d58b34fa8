"""The API's own database logins, one pair per edu_v2 database, created by `serve`:

- `<database>_api` serves requests. It is a member of edu_admin (and so of edu_app) and of
  nothing else: not a superuser, so `RESET ROLE` leads nowhere but back to it, and no route to
  the credential functions.
- `<database>_login` checks passwords at login. It is a member of edu_auth only, the role that
  may look up a password hash and record a verified login.

Neither login connects to any other database of the server (a staging copy, `postgres`, the
legacy edu): every other database grants CONNECT to PUBLIC by default, so each login role
carries a setting that makes its sessions fail at the start everywhere but in its own
database (see `_confine`).

Their passwords are generated once and kept in migration.api_logins, which only the owner of
edu_v2 reads, so every `serve` of the same database (several processes, a restart) uses the
same ones. The server sees only a SCRAM verifier of each, never the password itself.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from edu_migrate.errors import PreconditionFailed
from edu_migrate.pg.connect import connect
from edu_migrate.pg.urls import database_name

# Role names are at most 63 bytes; the database's name is cut short enough for the suffix.
_NAME_BUDGET = 50


@dataclass(frozen=True)
class ApiLogins:
    requests_role: str
    credentials_role: str
    requests_url: str = field(repr=False)
    credentials_url: str = field(repr=False)
    # Other databases of the server these logins could still connect to (none when confined).
    open_elsewhere: tuple[str, ...] = ()

    def describe(self) -> str:
        return (f"requests as the login role {self.requests_role} (edu_app/edu_admin only, not a "
                f"superuser); password checks as {self.credentials_role} (edu_auth only)")


def role_names(database: str) -> tuple[str, str]:
    base = database[:_NAME_BUDGET]
    return f"{base}_api", f"{base}_login"


def _ensure_role(conn: psycopg.Connection, role: str, member_of: str) -> str:
    """The role, created when missing, logging in with its kept password and a member of
    `member_of` alone; returns the password."""
    row = conn.execute("SELECT password FROM migration.api_logins WHERE role_name = %s",
                       [role]).fetchone()
    password = str(row[0]) if row else secrets.token_urlsafe(32)
    if row is None:
        conn.execute("INSERT INTO migration.api_logins (role_name, password) VALUES (%s, %s)",
                     [role, password])
    verifier = conn.pgconn.encrypt_password(password.encode(), role.encode(), b"scram-sha-256")
    exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [role]).fetchone()
    statement = "ALTER ROLE {} WITH" if exists else "CREATE ROLE {} WITH"
    conn.execute(sql.SQL(statement + " LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION "
                         "NOBYPASSRLS PASSWORD {}").format(
        sql.Identifier(role), sql.Literal(verifier.decode())))
    others = conn.execute(
        "SELECT r.rolname FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.roleid "
        "WHERE m.member = %s::regrole AND r.rolname <> %s", [role, member_of]).fetchall()
    for (other,) in others:
        conn.execute(sql.SQL("REVOKE {} FROM {}").format(sql.Identifier(str(other)),
                                                         sql.Identifier(role)))
    conn.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(member_of),
                                                  sql.Identifier(role)))
    return password


# A library that does not exist: a session that would load it fails at its start, naming it.
REFUSED_ELSEWHERE = "edu-migrate: this login serves one edu_v2 database only"
# What the login's own database loads instead: a library every server has, already loaded.
HARMLESS_LIBRARY = "plpgsql"


def _confine(conn: psycopg.Connection, role: str) -> bool:
    """Make `role` unable to open a session in any database but the current one: its role-wide
    session_preload_libraries names a library that does not exist, and the setting for this
    database alone (which takes precedence) a harmless one. False when the owner may not set
    it (only a superuser may): the caller says so."""
    database = conn.execute("SELECT current_database()").fetchone()
    assert database is not None
    try:
        with conn.transaction():
            conn.execute(sql.SQL("ALTER ROLE {} SET session_preload_libraries = {}").format(
                sql.Identifier(role), sql.Literal(REFUSED_ELSEWHERE)))
            conn.execute(sql.SQL(
                "ALTER ROLE {} IN DATABASE {} SET session_preload_libraries = {}").format(
                sql.Identifier(role), sql.Identifier(str(database[0])),
                sql.Literal(HARMLESS_LIBRARY)))
    except psycopg.errors.InsufficientPrivilege:
        return False
    return True


def databases_open_to(conn: psycopg.Connection, role: str) -> list[str]:
    """Other databases of the server that `role` may connect to, by its CONNECT privilege and
    its settings (an unconfined login of an older version, or an owner who may not confine)."""
    rows = conn.execute(
        "SELECT d.datname FROM pg_database d WHERE d.datallowconn "
        "AND d.datname <> current_database() AND has_database_privilege(%s, d.oid, 'CONNECT') "
        "AND NOT EXISTS (SELECT FROM pg_db_role_setting s WHERE s.setrole = %s::regrole "
        "  AND s.setdatabase = 0 AND %s = ANY(s.setconfig)) "
        "ORDER BY 1", [role, role, f"session_preload_libraries=\"{REFUSED_ELSEWHERE}\""]
    ).fetchall()
    return [str(r[0]) for r in rows]


def prepare_api_logins(owner_url: str) -> ApiLogins:
    """Create (or bring back in line) the API's two login roles of the database at `owner_url`,
    whose user owns edu_v2 and may create roles, and return their URLs."""
    requests_role, credentials_role = role_names(database_name(owner_url))
    with connect(owner_url, purpose="target") as conn:
        # Roles belong to the server: two `serve` of one database must not both create them.
        conn.execute("SELECT pg_advisory_xact_lock(hashtext('edu-migrate api logins'))")
        try:
            requests_password = _ensure_role(conn, requests_role, "edu_admin")
            credentials_password = _ensure_role(conn, credentials_role, "edu_auth")
            confined = all([_confine(conn, requests_role), _confine(conn, credentials_role)])
        except psycopg.errors.InsufficientPrivilege as exc:
            raise PreconditionFailed(
                "the target user may not create the API's login roles "
                f"{requests_role} and {credentials_role}",
                "serve as the owner of edu_v2 (a superuser, or a role WITH CREATEROLE)") from exc
        open_elsewhere = [] if confined else sorted(
            set(databases_open_to(conn, requests_role))
            | set(databases_open_to(conn, credentials_role)))
        conn.commit()
    return ApiLogins(
        requests_role, credentials_role,
        make_conninfo(owner_url, user=requests_role, password=requests_password),
        make_conninfo(owner_url, user=credentials_role, password=credentials_password),
        open_elsewhere=tuple(open_elsewhere))
