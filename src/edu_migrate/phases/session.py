"""The settings of a session that runs the phases' rules: the id secret, the as-of time, and
what makes the work fast. Every setting is for the transaction only."""

from __future__ import annotations

import psycopg

from edu_migrate.errors import PreconditionFailed

# Settings for the transaction only: none outlives the run or touches the source.
SESSION_SETTINGS: tuple[str, ...] = (
    "SET LOCAL synchronous_commit = off",
    "SET LOCAL maintenance_work_mem = '512MB'",
    "SET LOCAL work_mem = '128MB'",
    # A server with JIT on (PostgreSQL 15 as packaged) compiles the small phases' statements,
    # whose estimated costs run high before their staged tables are analysed: seconds of
    # compiling for a few thousand rows (docs/benchmarks.md). None of them gains from it.
    "SET LOCAL jit = off",
    # The phases must see and write every row: if row-level security applied to this role, fail
    # loudly instead of loading a filtered subset (the owner needs superuser or BYPASSRLS).
    "SET LOCAL row_security = off",
)

# The id secret goes from migration.state into the setting without ever reaching the client: the
# query answers whether it was set, not with its value (a psql script shows its answers).
ID_SECRET_SETTING = ("SELECT set_config('edu_migrate.id_secret', id_secret, true) IS NOT NULL "
                     "AS id_secret_set FROM migration.state")


def set_session(conn: psycopg.Connection) -> None:
    """Settings for this transaction only: none outlives the run or touches the source."""
    for setting in SESSION_SETTINGS:
        conn.execute(setting)
    row = conn.execute(ID_SECRET_SETTING).fetchone()
    if row is None:
        raise PreconditionFailed("the target has no migration state",
                                 "run `edu-migrate schema apply` first")
    # The run's as-of time, read by migration.as_of(): no rule asks the wall clock.
    as_of = conn.execute("SELECT set_config('edu_migrate.as_of', as_of::text, true) "
                         "FROM migration.state WHERE as_of IS NOT NULL").fetchone()
    if as_of is None:
        raise PreconditionFailed("the target has no as-of time for this run",
                                 "run phases with `edu-migrate migrate`, which records it")
