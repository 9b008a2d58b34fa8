"""The least work edu_v2's marks need on a server: a bound under `migrate --all`, with no rule.

On a migrated edu_v2, copy `grades` (whose rows carry the marks' crosswalk) as it is into empty
tables of a scratch schema (`bench_least_work`), then build their indexes and validate the foreign
keys of `grades`, one statement at a time, each timed, in one transaction with the session settings
the phases use (phases/session.py: maintenance_work_mem, work_mem, synchronous_commit, jit): the
writes and builds that any engine producing this edu_v2 must make once, on this server, with no
parsing, no id derivation and no join. Added to raw copy-through (which moves the legacy bytes into
the target once), it is the time under which `migrate --all` cannot go on this server, however its
rules are written.

The scratch schema is dropped before and after; nothing else is touched.

    python -m bench.least_work --target postgresql://postgres@127.0.0.1:PORT/edu_v2 [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any

import psycopg
from psycopg import sql

from edu_migrate.phases.session import SESSION_SETTINGS

SCHEMA = "bench_least_work"
# The marks' tables in edu_v2, as (schema, table): what phase 5 writes for 3.2 million marks
# (their crosswalk is derived from grades.legacy_id since schema V026: nothing to write).
TABLES: tuple[tuple[str, str], ...] = (("public", "grades"),)


@dataclass
class Step:
    step: str
    seconds: float


def _timed(conn: psycopg.Connection[Any], steps: list[Step], name: str,
           statement: sql.Composable) -> None:
    started = time.perf_counter()
    conn.execute(statement)
    steps.append(Step(name, round(time.perf_counter() - started, 2)))


def measure(target_url: str) -> list[Step]:
    steps: list[Step] = []
    drop = sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(SCHEMA))
    with psycopg.connect(target_url, autocommit=True) as conn:
        conn.execute(drop)
        try:
            conn.execute("BEGIN")
            for setting in SESSION_SETTINGS:
                conn.execute(setting)
            conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(SCHEMA)))
            for schema, table in TABLES:
                source = sql.Identifier(schema, table)
                copy = sql.Identifier(SCHEMA, table)
                conn.execute(sql.SQL("CREATE TABLE {} (LIKE {} INCLUDING DEFAULTS)").format(
                    copy, source))
                _timed(conn, steps, f"write {schema}.{table}",
                       sql.SQL("INSERT INTO {} SELECT * FROM {}").format(copy, source))
            for schema, table in TABLES:
                indexes = conn.execute(
                    "SELECT i.relname, pg_get_indexdef(x.indexrelid) FROM pg_index x "
                    "JOIN pg_class i ON i.oid = x.indexrelid WHERE x.indrelid = %s::regclass "
                    "ORDER BY i.relname", (f"{schema}.{table}",)).fetchall()
                for name, definition in indexes:
                    # The same definition on the copy: only the relation it is built on changes.
                    on = f" ON {schema}.{table} " if schema != "public" else f" ON public.{table} "
                    body = str(definition).split(on, 1)[1]
                    statement = sql.SQL("CREATE {}INDEX ON {} {}").format(
                        sql.SQL("UNIQUE " if " UNIQUE " in f" {definition} " else ""),
                        sql.Identifier(SCHEMA, table), sql.SQL(body))
                    _timed(conn, steps, f"index {name}", statement)
            keys = conn.execute(
                "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
                "WHERE conrelid = 'public.grades'::regclass AND contype = 'f' "
                "ORDER BY conname").fetchall()
            for name, definition in keys:
                _timed(conn, steps, f"foreign key {name}",
                       sql.SQL("ALTER TABLE {} ADD {}").format(
                           sql.Identifier(SCHEMA, "grades"), sql.SQL(str(definition))))
            _timed(conn, steps, "commit", sql.SQL("COMMIT"))
        finally:
            conn.execute("ROLLBACK")  # after the commit a no-op (a warning), else undoes all
            conn.execute(drop)
    return steps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", required=True, help="URL of a migrated edu_v2")
    parser.add_argument("--json", action="store_true", help="print the steps as JSON")
    args = parser.parse_args(argv)
    steps = measure(args.target)
    total = round(sum(s.seconds for s in steps), 2)
    if args.json:
        print(json.dumps({"steps": [asdict(s) for s in steps], "total_seconds": total}))
    else:
        width = max(len(s.step) for s in steps)
        for s in steps:
            print(f"{s.step:<{width}}  {s.seconds:8.2f} s")
        print(f"{'total':<{width}}  {total:8.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
