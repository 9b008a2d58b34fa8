"""The guide's optional safety: the source database made read-only for every new session."""

from __future__ import annotations

import psycopg
from psycopg import sql

from edu_migrate.errors import PreconditionFailed
from edu_migrate.pg.connect import connect

_FROZEN = """
SELECT EXISTS (SELECT 1 FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase
               WHERE d.datname = %s AND s.setrole = 0
                 AND 'default_transaction_read_only=on' = ANY(s.setconfig))
"""


def is_frozen(conn: psycopg.Connection, database: str) -> bool:
    row = conn.execute(_FROZEN, [database]).fetchone()
    return bool(row and row[0])


def set_frozen(url: str, frozen: bool) -> str:
    """Freeze (or thaw) the database of `url`; sessions already open keep their mode. Returns the
    database's name."""
    with connect(url, purpose="source", autocommit=True) as conn:
        # This session started under the frozen default: it must be allowed to lift it.
        conn.execute("SET default_transaction_read_only = off")
        row = conn.execute("SELECT current_database()").fetchone()
        assert row is not None
        name = str(row[0])
        statement = (sql.SQL("ALTER DATABASE {} SET default_transaction_read_only = on")
                     if frozen else
                     sql.SQL("ALTER DATABASE {} RESET default_transaction_read_only"))
        try:
            conn.execute(statement.format(sql.Identifier(name)))
        except psycopg.errors.InsufficientPrivilege as exc:
            raise PreconditionFailed(
                f"{conn.info.user} may not {'freeze' if frozen else 'unfreeze'} the database "
                f"{name}: only its owner or a superuser may",
                "run as the owner, or have a DBA run the guide's ALTER DATABASE") from exc
    return name
