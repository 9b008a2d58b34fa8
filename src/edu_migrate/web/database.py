"""The API's database sessions, over two logins of their own (edu_migrate.web.logins):

- request sessions: one transaction per request as the requests login, switched to edu_app
  (edu_admin for an administrator) with app.current_user_id set, so that row-level security
  decides what it sees. That login reaches no password hash and no superuser.
- login sessions: the credentials login, member of edu_auth only, looks up the account,
  and records a login whose password it verified.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from uuid import UUID

import psycopg
from psycopg.rows import DictRow, dict_row
from psycopg_pool import ConnectionPool, PoolTimeout

from edu_migrate.pg.connect import APPLICATION_NAME
from edu_migrate.security import passwords
from edu_migrate.web.logins import ApiLogins


class NotSignedIn(Exception):
    """The user of a token no longer exists, is no longer active, or changed their password
    (or role) since the token was issued."""


class LoginRefused(Exception):
    """Unknown username or wrong password: the caller is not told which."""


class AccountDisabled(Exception):
    """Right password, but the account is not active."""


Session = psycopg.Connection[DictRow]


def _pool(url: str, purpose: str, max_size: int) -> ConnectionPool[Session]:
    return ConnectionPool(
        url, min_size=1, max_size=max_size, open=False,
        kwargs={"row_factory": dict_row, "application_name": f"{APPLICATION_NAME} {purpose}"},
        check=ConnectionPool.check_connection)


class Database:
    def __init__(self, logins: ApiLogins, *, max_connections: int = 8) -> None:
        self.logins = logins
        self._requests = _pool(logins.requests_url, "api", max_connections)
        self._credentials = _pool(logins.credentials_url, "api login", passwords.HASHING_SLOTS)

    def open(self) -> None:
        self._requests.open(wait=True, timeout=15)
        self._credentials.open(wait=True, timeout=15)

    def close(self) -> None:
        self._requests.close()
        self._credentials.close()

    @contextmanager
    def session(self, user_id: UUID | None,
                issued_at: datetime | None = None) -> Iterator[Session]:
        """A transaction as `user_id` (None: anonymous) holding a token issued at `issued_at`.
        Raises NotSignedIn when that user is gone, inactive, or the token was revoked."""
        with self._requests.connection() as conn, conn.transaction():
            conn.execute("SET LOCAL ROLE edu_app")
            conn.execute("SET LOCAL statement_timeout = '10s'")
            conn.execute("SELECT set_config('app.current_user_id', %s, true)",
                         [str(user_id) if user_id else ""])
            if user_id is not None:
                row = conn.execute("SELECT current_user_role() AS role, "
                                   "token_still_valid(%s) AS valid", [issued_at]).fetchone()
                role = row["role"] if row else None
                if role is None or not row or (issued_at is not None and not row["valid"]):
                    raise NotSignedIn
                if role == "admin":
                    conn.execute("SET LOCAL ROLE edu_admin")
            yield conn

    def authenticate(self, username: str, password: str) -> UUID:
        """The id of the account, after checking its password; a legacy or outdated hash is
        replaced by a modern one on the way. Costs one argon2 computation whatever happens."""
        try:
            with self._credentials.connection(timeout=passwords.SLOT_WAIT_SECONDS) as conn, \
                    conn.transaction():
                return self._check(conn, username, password)
        except PoolTimeout:
            raise passwords.HashingBusy from None

    @staticmethod
    def _check(conn: Session, username: str, password: str) -> UUID:
        """Look the account up, verify, record the login (with the new hash)."""
        account = conn.execute(
            "SELECT user_id, password_hash, password_algo, is_active "
            "FROM auth.credentials(%s)", [username]).fetchone()
        stored = account["password_hash"] if account else None
        algo = account["password_algo"] if account else None
        check = passwords.check_login(password, stored, algo)
        if account is None or not check.matches:
            raise LoginRefused
        if not account["is_active"]:
            raise AccountDisabled
        user_id: UUID = account["user_id"]
        # The login is the acting user of its own audit row.
        conn.execute("SELECT set_config('app.current_user_id', %s, true)", [str(user_id)])
        conn.execute("SELECT auth.record_login(%s, %s, %s, %s)",
                     [user_id, stored, check.new_hash,
                      passwords.MODERN_ALGO if check.new_hash else None])
        return user_id
