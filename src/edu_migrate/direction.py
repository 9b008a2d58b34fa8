"""The direction of truth: which database is the system of record, recorded in edu_v2.

Before the cutover edu is, and edu_v2 follows it (sync equals full). The cutover makes edu_v2 the
system of record: from then on no command may write edu_v2 from edu, since that would overwrite
what the applications wrote there. A fallback makes edu the system of record again. Every
command that writes edu_v2 from edu asks `require_forward` first; an explicit override is
recorded (docs/engine.md, "The direction of truth").
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from edu_migrate.errors import PreconditionFailed

EDU, EDU_V2 = "edu", "edu_v2"


@dataclass(frozen=True)
class Direction:
    system_of_record: str
    event: str | None = None
    since: datetime | None = None
    audit_mark: int = 0

    @property
    def cut_over(self) -> bool:
        return self.system_of_record == EDU_V2

    def to_dict(self) -> dict[str, Any]:
        return {"system_of_record": self.system_of_record, "event": self.event,
                "since": self.since.isoformat() if self.since else None}


def _recorded(conn: psycopg.Connection) -> bool:
    row = conn.execute("SELECT to_regclass('migration.system_of_record') IS NOT NULL").fetchone()
    return bool(row and row[0])


def current(conn: psycopg.Connection) -> Direction:
    if not _recorded(conn):
        return Direction(EDU)
    row = conn.execute("SELECT database, event, at, audit_mark FROM migration.system_of_record "
                       "ORDER BY id DESC LIMIT 1").fetchone()
    if row is None:
        return Direction(EDU)
    return Direction(str(row[0]), str(row[1]), row[2], int(row[3]))


def last_fallback(conn: psycopg.Connection) -> dict[str, Any] | None:
    if not _recorded(conn):
        return None
    row = conn.execute("SELECT at, detail FROM migration.system_of_record "
                       "WHERE event = 'fallback' ORDER BY id DESC LIMIT 1").fetchone()
    return {"at": row[0].isoformat(), **row[1]} if row else None


def audit_mark(conn: psycopg.Connection) -> int:
    row = conn.execute("SELECT coalesce(max(id), 0) FROM audit.log").fetchone()
    return int(row[0]) if row else 0


def writes_since(conn: psycopg.Connection, mark: int) -> dict[str, int]:
    """The audited row writes after `mark`, per edu_v2 table: the applications' own."""
    return {str(r[0]): int(r[1]) for r in conn.execute(
        "SELECT table_name, count(*) FROM audit.log WHERE id > %s AND row_id IS NOT NULL "
        "GROUP BY 1 ORDER BY 1", [mark])}


def record(conn: psycopg.Connection, database: str, event: str,
           detail: dict[str, Any] | None = None) -> None:
    """A new system of record, from now on (in the caller's transaction)."""
    conn.execute("INSERT INTO migration.system_of_record (database, event, audit_mark, detail) "
                 "VALUES (%s, %s, %s, %s)", [database, event, audit_mark(conn),
                                             Jsonb(detail or {})])


def _shown(writes: dict[str, int]) -> str:
    return ", ".join(f"{table} {count:,}" for table, count in writes.items())


def require_forward(conn: psycopg.Connection, command: str, *, override: bool) -> bool:
    """Refuse a command that writes edu_v2 from edu while edu_v2 is the system of record, unless
    overridden (then recorded: edu is the system of record again, by the operator's word).
    Returns whether edu_v2 was handed back by a fallback (it is still frozen then)."""
    state = current(conn)
    if state.cut_over:
        if not override:
            writes = writes_since(conn, state.audit_mark)
            since = state.since.isoformat(timespec="seconds") if state.since else "the cutover"
            raise PreconditionFailed(
                f"`{command}` would overwrite edu_v2 from edu, but edu_v2 is the system of "
                f"record since {since} ({_shown(writes) or 'no'} application writes since)",
                "to switch back to edu without losing them run `edu-migrate fallback`; to "
                "overwrite them anyway add --override-cutover (recorded)")
        record(conn, EDU, "override", {"command": command})
        conn.commit()
        return False
    if state.event == "fallback":
        writes = writes_since(conn, state.audit_mark)
        if writes and not override:
            raise PreconditionFailed(
                f"edu_v2 was written after the fallback ({_shown(writes)}): `{command}` would "
                "overwrite those writes from edu",
                "carry them to edu by hand, or add --override-cutover to drop them (recorded)")
        return True
    return False


def require_cut_over(conn: psycopg.Connection) -> Direction:
    state = current(conn)
    if not state.cut_over:
        what = ("edu is the system of record again since the last fallback"
                if state.event == "fallback"
                else "no cutover was made: edu is the system of record")
        raise PreconditionFailed(f"nothing to fall back from: {what}",
                                 "the applications are on edu already; `edu-migrate status` "
                                 "shows the direction")
    return state
