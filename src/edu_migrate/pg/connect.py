"""Connections as context managers, with failures turned into one clear line."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Self

import psycopg
from psycopg import sql
from psycopg.pq import TransactionStatus
from psycopg.rows import TupleRow

from edu_migrate.errors import ConnectionFailed
from edu_migrate.pg.urls import (
    database_name,
    driver_message,
    masked,
    parse,
    redacted,
    with_database,
)

APPLICATION_NAME = "edu-migrate"
CONNECTION_CHECK_SINCE = 140000


class ReadOnlyCursor(psycopg.Cursor[TupleRow]):
    """The cursor of a read-only session (every read of the source).

    Each call is one statement over the extended protocol: psycopg would send a statement
    without parameters over the simple-query protocol, which runs `;`-separated statements, so
    that `COMMIT; BEGIN READ WRITE; …` in a pasted mapping expression would leave the read-only
    transaction. COPY goes the same way. And a statement outside a transaction (autocommit)
    runs in its own `BEGIN READ ONLY`, so that no session default decides.
    """

    def _execute_send(self, query: Any, *, force_extended: bool = False,
                      binary: bool | None = None) -> None:
        super()._execute_send(query, force_extended=True, binary=binary)

    def execute(self, query: Any, params: Any = None, *,
                prepare: bool | None = None, binary: bool | None = None) -> Self:
        conn = self.connection
        if conn.autocommit and conn.info.transaction_status == TransactionStatus.IDLE:
            with conn.transaction():
                return super().execute(query, params, prepare=prepare, binary=binary)
        return super().execute(query, params, prepare=prepare, binary=binary)


def _reason(exc: psycopg.OperationalError) -> tuple[str, str]:
    text = redacted(str(exc).strip())
    last = [line for line in text.splitlines() if line.strip()]
    detail = last[-1] if last else text
    lowered = text.lower()
    if "password authentication failed" in lowered or "no password supplied" in lowered:
        return ("password authentication failed",
                "check the user and password in the URL, PGPASSWORD or ~/.pgpass")
    if "does not exist" in lowered and "database" in lowered:
        return (detail.removeprefix("FATAL:  "),
                "create it, or run `edu-migrate schema apply` for the target")
    if "connection refused" in lowered or "could not connect" in lowered or "timeout" in lowered:
        return ("the server is not reachable",
                "check host and port, and that PostgreSQL is running")
    # Anything else may quote the connection string it could not use (a malformed host, say):
    # its quoted parts are left out.
    return (driver_message(detail).removeprefix("FATAL:  "), "check the URL and the server")


@contextmanager
def connect(url: str, *, purpose: str, autocommit: bool = False,
            read_only: bool = False, replication: bool = False) -> Iterator[psycopg.Connection]:
    """Open a connection; `read_only` sessions can never write, whatever the code does: every
    transaction is begun `READ ONLY` (not left to the session's default, which an expression
    can change) and every call is one statement (ReadOnlyCursor). `replication`: a logical
    replication session of the database (for replication commands; always autocommit)."""
    parse(url, purpose=purpose)
    extra: dict[str, Any] = {"replication": "database"} if replication else {}
    try:
        conn = psycopg.connect(url, autocommit=autocommit or replication, connect_timeout=10,
                               **extra,
                               application_name=f"{APPLICATION_NAME} {purpose} pid={os.getpid()}",
                               cursor_factory=ReadOnlyCursor if read_only else psycopg.Cursor)
    except psycopg.OperationalError as exc:
        reason, hint = _reason(exc)
        raise ConnectionFailed(f"cannot connect to the {purpose} database {masked(url)}: {reason}",
                               hint) from exc
    try:
        if replication:  # a walsender takes replication commands and simple queries only
            yield conn
            return
        if read_only:
            conn.read_only = True
        if conn.info.server_version >= CONNECTION_CHECK_SINCE:
            # When this process dies mid-statement, the server stops the statement within the
            # interval and frees its locks, instead of running on for an absent client.
            conn.execute("SET client_connection_check_interval = '1s'")
        if read_only:
            conn.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
        if not autocommit:
            conn.commit()
        yield conn
    finally:
        conn.close()


def server_version(conn: psycopg.Connection) -> int:
    return conn.info.server_version


def create_database_if_missing(url: str, *, purpose: str) -> bool:
    """Create the database a URL names, through the same server's `postgres` database; True
    when it had to be created."""
    name = database_name(url)
    with connect(with_database(url, "postgres"), purpose=f"{purpose} server",
                 autocommit=True) as admin:
        if admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            return False
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return True
