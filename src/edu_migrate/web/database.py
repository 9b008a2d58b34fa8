"""The API's database sessions: one transaction per request, run as edu_app (edu_admin for an
administrator) with app.current_user_id set, so that row-level security decides what it sees."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from uuid import UUID

import psycopg
from psycopg.rows import DictRow, dict_row
from psycopg_pool import ConnectionPool

from edu_migrate.pg.connect import APPLICATION_NAME
from edu_migrate.security import passwords


class NotSignedIn(Exception):
    """The user of a token no longer exists or is no longer active."""


class LoginRefused(Exception):
    """Unknown username or wrong password: the caller is not told which."""


class AccountDisabled(Exception):
    """Right password, but the account is not active."""


Session = psycopg.Connection[DictRow]


class Database:
    def __init__(self, target_url: str, *, max_connections: int = 8) -> None:
        self._pool: ConnectionPool[Session] = ConnectionPool(
            target_url, min_size=1, max_size=max_connections, open=False,
            kwargs={"row_factory": dict_row, "application_name": f"{APPLICATION_NAME} api"},
            check=ConnectionPool.check_connection)

    def open(self) -> None:
        self._pool.open(wait=True, timeout=15)

    def close(self) -> None:
        self._pool.close()

    @contextmanager
    def session(self, user_id: UUID | None) -> Iterator[Session]:
        """A transaction as `user_id` (None: anonymous). Raises NotSignedIn when that user is
        gone or inactive."""
        with self._pool.connection() as conn, conn.transaction():
            conn.execute("SET LOCAL ROLE edu_app")
            conn.execute("SET LOCAL statement_timeout = '10s'")
            conn.execute("SELECT set_config('app.current_user_id', %s, true)",
                         [str(user_id) if user_id else ""])
            if user_id is not None:
                row = conn.execute("SELECT current_user_role() AS role").fetchone()
                role = row["role"] if row else None
                if role is None:
                    raise NotSignedIn
                if role == "admin":
                    conn.execute("SET LOCAL ROLE edu_admin")
            yield conn

    def authenticate(self, username: str, password: str) -> UUID:
        """The id of the account, after checking its password; an MD5 or outdated hash is
        replaced by a modern one on the way."""
        with self.session(None) as conn:
            account = conn.execute(
                "SELECT user_id, password_hash, password_algo, is_active "
                "FROM auth.credentials(%s)", [username]).fetchone()
            if account is None:
                passwords.verify_unknown_account(password)
                raise LoginRefused
            stored, algo = account["password_hash"], account["password_algo"]
            if not passwords.verify(password, stored, algo):
                raise LoginRefused
            if not account["is_active"]:
                raise AccountDisabled
            user_id: UUID = account["user_id"]
            # The login is the acting user of its own audit row.
            conn.execute("SELECT set_config('app.current_user_id', %s, true)", [str(user_id)])
            new_hash = (passwords.hash_password(password)
                        if passwords.needs_rehash(stored, algo) else None)
            conn.execute("SELECT auth.record_login(%s, %s, %s, %s)",
                         [user_id, stored, new_hash, passwords.MODERN_ALGO if new_hash else None])
            return user_id
