"""Day 1, "Update Documentation": the old database marked deprecated in its own catalogue.

A successful cutover puts `COMMENT ON DATABASE edu IS 'DEPRECATED since …: migrated to edu_v2
…'`, dated with the cutover's recorded time (migration.system_of_record.at), so that psql's
`\\l+`, pgAdmin and any schema browser say where the data went. The comment edu had before is
recorded with the cutover; a fallback puts it back, when the mark is still the cutover's.

COMMENT ON DATABASE needs the database's ownership. Without it the mark is left out with one
warning: the cutover itself has succeeded by then, and a comment is not worth undoing it.
"""

from __future__ import annotations

from datetime import UTC, datetime

import psycopg
from psycopg import sql

from edu_migrate.aftercare.sqlfiles import query
from edu_migrate.errors import MigrationError
from edu_migrate.pg.connect import connect
from edu_migrate.pg.urls import database_name
from edu_migrate.runlog import Reporter


def mark_text(at: datetime, new_database: str) -> str:
    return (f"DEPRECATED since {at.astimezone(UTC):%Y-%m-%d %H:%M} UTC: migrated to "
            f"{new_database} by edu-migrate cutover; {new_database} is the system of record. "
            "Do not write here.")


def database_comment(url: str) -> str | None:
    with connect(url, purpose="source", read_only=True) as conn:
        row = conn.execute(query("database_comment")).fetchone()
        conn.rollback()
    return None if row is None or row[0] is None else str(row[0])


def _comment_on(url: str, text: str | None, reporter: Reporter, doing: str) -> bool:
    """COMMENT ON DATABASE; a failure is one warning, never an error."""
    name = database_name(url)
    try:
        with connect(url, purpose="source", autocommit=True) as conn:
            # The source is frozen (read-only for new sessions) at the cutover.
            conn.execute("SET default_transaction_read_only = off")
            conn.execute(sql.SQL("COMMENT ON DATABASE {} IS {}").format(
                sql.Identifier(name), sql.Literal(text)))
    except psycopg.errors.InsufficientPrivilege:
        reporter.warn(f"could not {doing} {name}: COMMENT ON DATABASE needs its owner "
                      "(the cutover goes on; a DBA may run it)")
        return False
    except (psycopg.Error, MigrationError) as exc:
        first = (exc.message if isinstance(exc, MigrationError) else str(exc)).strip()
        reporter.warn(f"could not {doing} {name}: {first.splitlines()[0] if first else exc}")
        return False
    return True


def mark_deprecated(source_url: str, at: datetime, new_database: str,
                    reporter: Reporter) -> bool:
    """The cutover's mark on the old database (after its success is recorded)."""
    done = _comment_on(source_url, mark_text(at, new_database), reporter, "mark as deprecated")
    if done:
        reporter.line(f"Marked {database_name(source_url)} deprecated (COMMENT ON DATABASE)")
    return done


def unmark(source_url: str, target_url: str, reporter: Reporter) -> bool:
    """The fallback takes the mark off: edu gets back the comment it had before the cutover,
    unless its comment is no longer the cutover's mark (someone wrote another since)."""
    try:
        with connect(target_url, purpose="target", read_only=True) as conn:
            row = conn.execute(query("last_cutover")).fetchone()
            conn.rollback()
        current = database_comment(source_url)
    except (psycopg.Error, MigrationError) as exc:
        reporter.warn(f"could not read the deprecation mark: {str(exc).splitlines()[0]}")
        return False
    if row is None or current != mark_text(row[0], database_name(target_url)):
        return False
    done = _comment_on(source_url, row[1], reporter, "take the deprecation mark off")
    if done:
        reporter.line(f"Took the deprecation mark off {database_name(source_url)}: its comment "
                      "is what it was before the cutover")
    return done
