"""The audit trail around the tool's own bulk work.

Row triggers (audit_row_change, see schemas V005 and V006) record each change an application
makes, and marks_hold_together (V006) refuses marks that do not hold together. A phase loads
millions of rows of history: it pauses those triggers inside its own transaction, so a crash or a
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
# The row triggers a bulk load of history pauses.
PAUSED_TRIGGERS = (ROW_TRIGGER, "marks_hold_together", "audit_password_change")


def paused_triggers(conn: psycopg.Connection, tables: Sequence[str]) -> list[tuple[str, str]]:
    rows = conn.execute(
        "SELECT c.relname, t.tgname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = 'public' AND t.tgname = ANY(%s) AND c.relname = ANY(%s) "
        "ORDER BY 1, 2", [list(PAUSED_TRIGGERS), list(tables)]).fetchall()
    return [(str(row[0]), str(row[1])) for row in rows]


@contextmanager
def row_audit_paused(conn: psycopg.Connection, tables: Sequence[str]) -> Iterator[None]:
    """No per-row audit rows and no per-row mark checks for `tables` until the block ends, in
    this transaction only."""
    paused = paused_triggers(conn, tables)
    for statement in trigger_statements(paused, enable=False):
        conn.execute(statement)
    yield
    for statement in trigger_statements(paused, enable=True):
        conn.execute(statement)


def trigger_statements(paused: Sequence[tuple[str, str]], *,
                       enable: bool) -> list[sql.Composed]:
    """The statements that pause (or resume) the triggers of paused_triggers; also printed by
    `migrate --sql`."""
    switch = sql.SQL("ENABLE" if enable else "DISABLE")
    return [sql.SQL("ALTER TABLE {} {} TRIGGER {}").format(
        sql.Identifier(table), switch, sql.Identifier(trigger)) for table, trigger in paused]


def record_bulk_event(conn: psycopg.Connection, operation: str, tables: Sequence[str],
                      detail: dict[str, Any]) -> None:
    """One audit event for a bulk operation of the tool (MIGRATE or ROLLBACK) on `tables`."""
    conn.execute(
        "INSERT INTO audit.log (table_name, operation, new_values) VALUES (%s, %s, %s)",
        [", ".join(tables), operation, Jsonb(detail)])
