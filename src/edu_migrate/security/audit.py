"""The audit trail around the tool's own bulk work.

Row triggers (audit_row_change, see schema V005) record each change an application makes. A phase
loads millions of rows: it pauses those triggers inside its own transaction, so a crash or a
rollback restores them with everything else, and records one event for the whole load instead.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

ROW_TRIGGER = "audit_row_change"


def _audited(conn: psycopg.Connection, tables: Sequence[str]) -> list[str]:
    rows = conn.execute(
        "SELECT c.relname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = 'public' AND t.tgname = %s AND c.relname = ANY(%s) ORDER BY 1",
        [ROW_TRIGGER, list(tables)]).fetchall()
    return [str(row[0]) for row in rows]


@contextmanager
def row_audit_paused(conn: psycopg.Connection, tables: Sequence[str]) -> Iterator[None]:
    """No per-row audit rows for `tables` until the block ends, in this transaction only."""
    audited = _audited(conn, tables)
    for table in audited:
        conn.execute(sql.SQL("ALTER TABLE {} DISABLE TRIGGER {}").format(
            sql.Identifier(table), sql.Identifier(ROW_TRIGGER)))
    yield
    for table in audited:
        conn.execute(sql.SQL("ALTER TABLE {} ENABLE TRIGGER {}").format(
            sql.Identifier(table), sql.Identifier(ROW_TRIGGER)))


def record_bulk_event(conn: psycopg.Connection, operation: str, tables: Sequence[str],
                      detail: dict[str, Any]) -> None:
    """One audit event for a bulk operation of the tool (MIGRATE or ROLLBACK) on `tables`."""
    conn.execute(
        "INSERT INTO audit.log (table_name, operation, new_values) VALUES (%s, %s, %s)",
        [", ".join(tables), operation, Jsonb(detail)])
