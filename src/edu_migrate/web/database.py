"""The API's database sessions, over two logins of their own (edu_migrate.web.logins):

- request sessions: one transaction per request as the requests login, switched to edu_app
  (edu_admin for an administrator) with app.current_user_id set, so that row-level security
  decides what it sees. That login reaches no password hash and no superuser.
- login sessions: the credentials login, member of edu_auth only, looks up the account,
  and records a login whose password it verified.

A failed login is answered no sooner than the slowest password verification this process has
seen (at least one argon2 and one bcrypt of the usual cost; at most MAX_FLOOR_SECONDS): an
unknown account, an MD5, an argon2 and a bcrypt account of any cost, a password typed in NFC or
not, all fail in the same time.
"""

from __future__ import annotations

import threading
import time
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

    def __init__(self, seconds: float = 0.0) -> None:
        super().__init__()
        self.seconds = seconds  # what the verification took


class AccountDisabled(Exception):
    """Right password, but the account is not active."""


Session = psycopg.Connection[DictRow]

# A verification slower than this (a bcrypt of cost 15, a stalled machine) is not waited for by
# every later failure: the floor stops here.
MAX_FLOOR_SECONDS = 2.0


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
        self._floor: float | None = None  # the slowest verification seen, once calibrated
        self._floor_lock = threading.Lock()

    def open(self) -> None:
        self._requests.open(wait=True, timeout=15)
        self._credentials.open(wait=True, timeout=15)

    def close(self) -> None:
        self._requests.close()
        self._credentials.close()

    def login_key(self, username: str) -> str:
        """The username as the database matches it to an account (`lower()`, under the
        database's own collation): the login limits count every spelling of one account
        together."""
        with self._requests.connection() as conn:
            row = conn.execute("SELECT lower(%s::text) AS key", [username]).fetchone()
            conn.rollback()
        return str(row["key"]) if row else username

    def revoke(self, user_id: UUID, issued_at: datetime, token_id: UUID,
               expires_at: datetime) -> None:
        """Sign a token out: void from now on, in every process that shares this database."""
        with self.session(user_id, issued_at, token_id) as conn:
            conn.execute("SELECT revoke_token(%s, %s)", [token_id, expires_at])

    @contextmanager
    def session(self, user_id: UUID | None, issued_at: datetime | None = None,
                token_id: UUID | None = None) -> Iterator[Session]:
        """A transaction as `user_id` (None: anonymous) holding the token `token_id` issued at
        `issued_at`. Raises NotSignedIn when that user is gone, inactive, or the token was
        revoked."""
        with self._requests.connection() as conn, conn.transaction():
            conn.execute("SET LOCAL ROLE edu_app")
            conn.execute("SET LOCAL statement_timeout = '10s'")
            conn.execute("SELECT set_config('app.current_user_id', %s, true)",
                         [str(user_id) if user_id else ""])
            if user_id is not None:
                row = conn.execute("SELECT current_user_role() AS role, "
                                   "token_still_valid(%s, %s) AS valid",
                                   [issued_at, token_id]).fetchone()
                role = row["role"] if row else None
                if role is None or not row or (issued_at is not None and not row["valid"]):
                    raise NotSignedIn
                if role == "admin":
                    conn.execute("SET LOCAL ROLE edu_admin")
            yield conn

    def authenticate(self, username: str, password: str) -> UUID:
        """The id of the account, after checking its password; a legacy or outdated hash is
        replaced by a modern one on the way. A failure takes as long as the slowest
        verification seen."""
        try:
            with self._credentials.connection(timeout=passwords.SLOT_WAIT_SECONDS) as conn, \
                    conn.transaction():
                return self._check(conn, username, password)
        except PoolTimeout:
            raise passwords.HashingBusy from None
        except LoginRefused as refused:
            time.sleep(max(0.0, self._note_verification(refused.seconds) - refused.seconds))
            raise

    def _note_verification(self, seconds: float) -> float:
        """Record a verification's time; the floor every failure is held to."""
        calibrated = passwords.calibration_seconds() if self._floor is None else 0.0
        with self._floor_lock:
            self._floor = min(MAX_FLOOR_SECONDS, max(self._floor or 0.0, calibrated, seconds))
            return self._floor

    def _check(self, conn: Session, username: str, password: str) -> UUID:
        """Look the account up, verify, record the login (with the new hash)."""
        account = conn.execute(
            "SELECT user_id, password_hash, password_algo, is_active "
            "FROM auth.credentials(%s)", [username]).fetchone()
        stored = account["password_hash"] if account else None
        algo = account["password_algo"] if account else None
        check = passwords.check_login(password, stored, algo)
        if account is None or not check.matches:
            raise LoginRefused(check.seconds)
        self._note_verification(check.seconds)
        if not account["is_active"]:
            raise AccountDisabled
        user_id: UUID = account["user_id"]
        # The login is the acting user of its own audit row.
        conn.execute("SELECT set_config('app.current_user_id', %s, true)", [str(user_id)])
        conn.execute("SELECT auth.record_login(%s, %s, %s, %s)",
                     [user_id, stored, check.new_hash,
                      passwords.MODERN_ALGO if check.new_hash else None])
        return user_id
