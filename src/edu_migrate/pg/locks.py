"""One migration at a time per target: a session advisory lock, and who holds it when taken."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, suppress

import psycopg

from edu_migrate.errors import PreconditionFailed
from edu_migrate.pg.connect import connect

# Two int4 keys, so that pg_locks shows them as classid/objid and the holder can be named.
LOCK_CLASS = 0x6564_7532  # "edu2"
LOCK_OBJECT = 1


def lock_holder(conn: psycopg.Connection) -> str | None:
    """Who holds the migration lock of the connection's database, or None."""
    holder = conn.execute(
        "SELECT a.pid, a.application_name, coalesce(a.client_addr::text, 'local'), "
        "a.backend_start::timestamp(0) FROM pg_locks l JOIN pg_stat_activity a "
        "USING (pid) WHERE l.locktype = 'advisory' AND l.database = "
        "(SELECT oid FROM pg_database WHERE datname = current_database()) "
        "AND l.classid = %s AND l.objid = %s AND l.granted", [LOCK_CLASS, LOCK_OBJECT]).fetchone()
    if holder is None:
        return None
    return f"server pid {holder[0]} ({holder[1]}, from {holder[2]}, since {holder[3]})"


@contextmanager
def migration_lock(target_url: str) -> Iterator[None]:
    with connect(target_url, purpose="target", autocommit=True) as conn:
        row = conn.execute("SELECT pg_try_advisory_lock(%s, %s)",
                           [LOCK_CLASS, LOCK_OBJECT]).fetchone()
        if not row or not row[0]:
            who = lock_holder(conn) or "another session"
            raise PreconditionFailed(f"another migration is running against this target: {who}",
                                     "wait for it to finish, or stop it, then run again")
        try:
            yield
        finally:
            # A lost session has released the lock with itself: nothing left to unlock. It
            # may be found lost only now (the target restarted after a crash during the run).
            if not conn.broken:
                with suppress(psycopg.OperationalError):
                    conn.execute("SELECT pg_advisory_unlock(%s, %s)", [LOCK_CLASS, LOCK_OBJECT])
