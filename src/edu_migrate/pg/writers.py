"""Who can still write to a database frozen with `default_transaction_read_only = on`.

The freeze (pg/freeze.py) is only a default, and only for sessions that start after it:

- a session opened before the freeze keeps its mode;
- any session may turn the default off again (`SET default_transaction_read_only = off`,
  `BEGIN READ WRITE`), and a role's own setting (`ALTER ROLE … [IN DATABASE …] SET`) beats the
  database's, so its new sessions are not frozen at all;
- a transaction prepared before the freeze (PREPARE TRANSACTION) has no session to wait for or
  end, and `COMMIT PREPARED` is allowed in a read-only transaction.

A window that freezes a database (the cutover freezes edu, the fallback edu_v2) uses these checks
around its last delta. None of them can see a session that turned the default off and has not
written yet: another session's settings are not visible. So a window also tests, after its last
delta, that nothing was written since that delta's snapshot (for the cutover:
phases/sync.unsynced_changes).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from datetime import datetime

import psycopg

from edu_migrate.errors import StillWritable
from edu_migrate.pg.connect import APPLICATION_NAME, connect
from edu_migrate.runlog import Reporter

# Client sessions of this database other than this one: opened before the freeze (they keep their
# mode, and this process's own are left out), or holding a transaction id (they have written, so
# they turned the default off, whenever they started). Autovacuum's ANALYZE takes a transaction id
# for the statistics it writes: it writes no table.
_WRITERS = """
SELECT pid, coalesce(nullif(application_name, ''), usename::text, '?'), state,
       backend_xid IS NOT NULL AS writing
FROM pg_stat_activity
WHERE datname = current_database() AND pid <> pg_backend_pid()
  AND ((backend_type = 'client backend' AND backend_start < %(frozen_at)s
        AND application_name NOT LIKE %(own)s)
       OR (backend_xid IS NOT NULL AND backend_type <> 'autovacuum worker'))
ORDER BY pid
"""

# How long ending a session may take before the window goes on (and finds it again).
TERMINATE_WAIT_MS = 5000

_PREPARED = """
SELECT gid, owner::text, prepared FROM pg_prepared_xacts WHERE database = current_database()
ORDER BY prepared
"""

# Roles whose own setting of default_transaction_read_only, for every database or for this one,
# takes precedence over the database's: their new sessions are not frozen.
_OVERRIDES = """
SELECT r.rolname::text, d.datname::text, c.value
FROM pg_db_role_setting s JOIN pg_roles r ON r.oid = s.setrole
LEFT JOIN pg_database d ON d.oid = s.setdatabase
CROSS JOIN LATERAL unnest(s.setconfig) AS c(value)
WHERE s.setrole <> 0 AND s.setdatabase IN (0, (SELECT oid FROM pg_database
                                               WHERE datname = current_database()))
  AND c.value LIKE 'default\\_transaction\\_read\\_only=%%'
  AND lower(split_part(c.value, '=', 2)) NOT IN ('on', 'true', 'yes', '1', 't', 'y')
ORDER BY 1
"""


@dataclass(frozen=True)
class Session:
    pid: int
    who: str  # application name, else user name
    state: str | None
    writing: bool  # holds a transaction id: it has written, and not yet committed

    def shown(self) -> str:
        return f"{self.pid} ({self.who}, {self.state or '?'})"


@dataclass(frozen=True)
class Prepared:
    gid: str
    owner: str
    prepared_at: datetime


@dataclass(frozen=True)
class Override:
    role: str
    database: str | None  # None: the role's setting for every database
    setting: str  # as pg_db_role_setting holds it: 'default_transaction_read_only=off'

    def shown(self) -> str:
        return f"{self.role}{f' in database {self.database}' if self.database else ''} " \
               f"({self.setting})"

    def reset(self) -> str:
        """The statement that removes it."""
        where = f" IN DATABASE {self.database}" if self.database else ""
        return f"ALTER ROLE {self.role}{where} RESET default_transaction_read_only"


@dataclass
class Settled:
    waited_seconds: float = 0.0
    terminated: int = 0


def prepared_transactions(url: str, *, purpose: str = "source") -> list[Prepared]:
    """The transactions prepared (PREPARE TRANSACTION) in the database of `url`, oldest first:
    each can still commit, in any session, whatever the database's default."""
    with connect(url, purpose=purpose, autocommit=True, read_only=True) as conn:
        return _prepared(conn)


def read_only_overrides(url: str, *, purpose: str = "source") -> list[Override]:
    """The roles whose own `default_transaction_read_only` (other than on) beats a freeze of
    the database of `url`: for every database, or for this one."""
    with connect(url, purpose=purpose, autocommit=True, read_only=True) as conn:
        return [Override(str(role), database, str(setting))
                for role, database, setting in conn.execute(_OVERRIDES).fetchall()]


def require_not_overridden(url: str, *, purpose: str = "source") -> None:
    """Refuse, before anything is frozen, a database some role's own setting keeps writable."""
    overrides = read_only_overrides(url, purpose=purpose)
    if overrides:
        raise StillWritable(
            f"{_count(len(overrides), 'role setting')} "
            f"{'beats' if len(overrides) == 1 else 'beat'} the freeze, so new sessions of "
            f"{'that role' if len(overrides) == 1 else 'those roles'} could still write: "
            f"{', '.join(o.shown() for o in overrides)}",
            f"remove {'it' if len(overrides) == 1 else 'them'} "
            f"({'; '.join(o.reset() for o in overrides)})")


def writers(url: str, frozen_at: datetime, *, purpose: str = "source") -> list[Session]:
    """Sessions that can write to the database of `url`, frozen at `frozen_at`: opened before
    the freeze, or in a write transaction now."""
    with connect(url, purpose=purpose, autocommit=True, read_only=True) as conn:
        return _writers(conn, frozen_at)


def settle_writers(url: str, frozen_at: datetime, reporter: Reporter, *, timeout: float,
                   terminate: bool, purpose: str = "source") -> Settled:
    """Wait until no writer (writers()) and no prepared transaction is left in the database of
    `url`, frozen at `frozen_at`; with `terminate`, end the writing sessions instead of waiting
    for them. A prepared transaction cannot be ended: after `timeout` seconds it is refused."""
    settled = Settled()
    started = time.perf_counter()
    ended: set[int] = set()
    with connect(url, purpose=purpose, autocommit=True, read_only=True) as conn:
        while True:
            sessions, prepared = _writers(conn, frozen_at), _prepared(conn)
            if terminate and sessions:
                # An ended backend can still be listed for a moment: end each once, and wait
                # for it to go (the timeout below still applies).
                fresh = [s for s in sessions if s.pid not in ended]
                settled.terminated += _terminate(conn, fresh, reporter)
                ended.update(s.pid for s in fresh)
            if not sessions and not prepared:
                break
            waited = time.perf_counter() - started
            if waited >= timeout:
                if prepared:
                    raise _prepared_refusal(prepared, f"after {timeout:.0f}s")
                writing = sum(1 for s in sessions if s.writing)
                raise StillWritable(
                    f"{_count(len(sessions), 'session')} that can write still connected after "
                    f"{timeout:.0f}s (opened before the freeze, or in a write transaction; "
                    f"{writing} in a write transaction): "
                    f"{', '.join(s.shown() for s in sessions[:5])}",
                    "stop the applications, or use --terminate-writers to end those sessions")
            time.sleep(0.05 if terminate and sessions else 0.2)
    settled.waited_seconds = round(time.perf_counter() - started, 2)
    return settled


def require_no_writers(url: str, reporter: Reporter, *, terminate: bool,
                       purpose: str = "source") -> int:
    """At the end of a window: no session in a write transaction (it turned the default off and
    could commit after the window reported success) and no prepared transaction. With
    `terminate`, such sessions are ended (their writes roll back) rather than refused. Returns
    how many were ended."""
    with connect(url, purpose=purpose, autocommit=True, read_only=True) as conn:
        prepared = _prepared(conn)
        if prepared:
            raise _prepared_refusal(prepared, "at the end of the window")
        sessions = [s for s in _writers(conn, None) if s.writing]
        if not sessions:
            return 0
        if terminate:
            return _terminate(conn, sessions, reporter)
        raise StillWritable(
            f"{_count(len(sessions), 'session')} in a write transaction on the frozen database "
            f"(turned default_transaction_read_only off) at the end of the window: "
            f"{', '.join(s.shown() for s in sessions[:5])}",
            "stop those applications, or use --terminate-writers to end those sessions")


def _writers(conn: psycopg.Connection, frozen_at: datetime | None) -> list[Session]:
    # Without a freeze time only the sessions in a write transaction are asked for.
    rows = conn.execute(_WRITERS, {"frozen_at": frozen_at or datetime.min,
                                   # this process's own sessions only: the reference API's
                                   # pool is named "edu-migrate <purpose>" too, and it is a
                                   # writer like any application
                                   "own": f"{APPLICATION_NAME} % pid={os.getpid()}"}).fetchall()
    return [Session(int(pid), str(who), state, bool(writing)) for pid, who, state, writing in rows]


def _prepared(conn: psycopg.Connection) -> list[Prepared]:
    return [Prepared(str(gid), str(owner), prepared)
            for gid, owner, prepared in conn.execute(_PREPARED).fetchall()]


def _terminate(conn: psycopg.Connection, sessions: list[Session], reporter: Reporter) -> int:
    for session in sessions:
        # With a timeout it returns once the backend has exited (PostgreSQL 14+): its
        # transaction is rolled back by then, and can no longer commit.
        conn.execute("SELECT pg_terminate_backend(%s, %s)", [session.pid, TERMINATE_WAIT_MS])
        reporter.line(f"Ended session {session.pid} ({session.who}), "
                      + ("in a write transaction on the frozen database" if session.writing
                         else "open since before the freeze"))
    return len(sessions)


def _prepared_refusal(prepared: list[Prepared], when: str) -> StillWritable:
    shown = ", ".join(f"prepared transaction {p.gid} (by {p.owner}, since "
                      f"{p.prepared_at.isoformat(timespec='seconds')})" for p in prepared[:5])
    return StillWritable(
        f"{_count(len(prepared), 'prepared transaction')} of the frozen database still open "
        f"{when} "
        f"(they can commit whatever the freeze, and --terminate-writers cannot end them): "
        f"{shown}",
        "resolve each with COMMIT PREPARED 'gid' or ROLLBACK PREPARED 'gid' (pg_prepared_xacts "
        "lists them)")


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"
