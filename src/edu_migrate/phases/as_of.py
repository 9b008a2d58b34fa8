"""The run's as-of time: the one "now" every phase rule uses (a date in the future, the current
term, a missing timestamp), kept in migration.state.as_of.

`migrate --as-of` sets it; otherwise the first phase records the source snapshot's time. Reruns,
resumes and rollbacks of single phases keep it, so every phase of one edu_v2 answers "now" alike;
`rollback --all` clears it. The phases read it through the SQL function migration.as_of().
"""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import psycopg

from edu_migrate.errors import MigrationError, PreconditionFailed

# Legacy times are Baku wall-clock times, and so is an --as-of written without an offset.
LEGACY_ZONE = ZoneInfo("Asia/Baku")


def parse_as_of(text: str) -> datetime:
    """An ISO 8601 date or timestamp; without an offset it is a Baku time."""
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise MigrationError(
            f"--as-of {text!r} is not a date or timestamp",
            "write it as ISO 8601, e.g. 2024-06-30T18:00:00+04:00 (without an offset: Baku "
            "time)") from None
    return value if value.tzinfo is not None else value.replace(tzinfo=LEGACY_ZONE)


def recorded_as_of(conn: psycopg.Connection) -> datetime | None:
    row = conn.execute("SELECT as_of FROM migration.state").fetchone()
    return row[0] if row else None


def _refuse_a_second_time(conn: psycopg.Connection, recorded: datetime,
                          requested: datetime | None) -> None:
    done = conn.execute("SELECT count(*) FROM migration.phase_runs "
                        "WHERE status = 'done'").fetchone()
    if done and done[0]:
        raise PreconditionFailed(
            f"the target is migrated as of {recorded.isoformat()}; --as-of "
            f"{requested.isoformat() if requested else ''} would mix two times",
            "leave out --as-of to go on as of the recorded time, or run "
            "`edu-migrate rollback --all` first to start over")


def settle_as_of(conn: psycopg.Connection, requested: datetime | None,
                 snapshot_time: datetime) -> datetime:
    """The as-of time of this run: the recorded one, else `requested`, else the snapshot's.
    A `requested` time that differs from the recorded one is refused once a phase is done:
    one edu_v2 is never built at two times. Commits."""
    recorded = recorded_as_of(conn)
    if recorded is not None and (requested is None or requested == recorded):
        conn.commit()
        return recorded
    if recorded is not None:
        _refuse_a_second_time(conn, recorded, requested)
    chosen = requested if requested is not None else snapshot_time
    conn.execute("UPDATE migration.state SET as_of = %s", [chosen])
    conn.commit()
    return chosen


def planned_as_of(conn: psycopg.Connection, requested: datetime | None) -> datetime | None:
    """The as-of time that settle_as_of would choose, read only: None when it would be the
    snapshot's time of the run, unknown until it starts (`migrate --sql`)."""
    recorded = recorded_as_of(conn)
    if recorded is not None and requested is not None and requested != recorded:
        _refuse_a_second_time(conn, recorded, requested)
    return requested if requested is not None else recorded


def clear_as_of(conn: psycopg.Connection) -> None:
    conn.execute("UPDATE migration.state SET as_of = NULL")
