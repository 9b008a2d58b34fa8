"""What each piece of per-mark work costs, on the staged marks (stage.grades of a migrated target).

Each piece is one SELECT over the staged marks that computes only that expression and counts the
results; its cost per row is its time minus the time of the same scan computing nothing, divided
by the rows. One mark in EVERY (by id, the same marks each time) is computed, so that the five
pieces take a minute, not five, at scale 1; the per-mark figure does not depend on it. Parallel
workers and JIT are off, so the figure is per core. One timed SELECT each, after a scan that
warms the cache (at scale 1 each takes seconds: the noise of one run is small).

    python -m bench.costs --target postgresql://postgres@127.0.0.1:PORT/edu_v2
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

# Name, the expression over stage.grades g, and what it stands for in the engine.
PIECES: tuple[tuple[str, str, str], ...] = (
    ("md5 id derivation", "migration.derive_id('grades', g.id::text)",
     "migration.derive_id, one per mark (the grade id)"),
    ("time-zone conversion", "migration.baku_time(g.created_at)",
     "migration.baku_time of created_at, one per mark"),
    ("text parsing, fast path",
     "CASE WHEN length(g.value) <= 7 AND translate(g.value, '0123456789', '') IN ('', '.', ',') "
     "AND ascii(g.value) BETWEEN 48 AND 57 AND ascii(right(g.value, 1)) BETWEEN 48 AND 57 "
     "THEN replace(g.value, ',', '.')::numeric ELSE migration.parse_decimal(g.value) END",
     "parse_grades' parsing: the fast path, parse_decimal for what it does not take"),
    ("text parsing, slow path only", "migration.parse_decimal(g.value)",
     "migration.parse_decimal on every mark (cleaning regexp, then a regexp match)"),
    ("to_jsonb of the row", "to_jsonb(g)",
     "reject_grades' detail; paid only per rejected mark"),
)
SCAN = "g.id"
EVERY = 4


@dataclass
class Cost:
    piece: str
    expression: str
    stands_for: str
    seconds: float
    rows: int
    microseconds_per_row: float


def _timed(conn: psycopg.Connection[Any], expression: str, table: sql.Composable,
           every: int) -> float:
    query = sql.SQL("SELECT count(x) FROM (SELECT {} AS x FROM {} g WHERE g.id % {} = 0 "
                    "OFFSET 0) s").format(sql.SQL(expression), table, sql.Literal(every))
    started = time.perf_counter()
    conn.execute(query)
    return time.perf_counter() - started


def measure(target_url: str, table: str = "stage.grades", every: int = EVERY) -> list[Cost]:
    schema, name = table.split(".")
    relation = sql.Identifier(schema, name)
    costs: list[Cost] = []
    with psycopg.connect(target_url) as conn:
        # A throwaway secret, this transaction only: the cost of md5 does not depend on it.
        conn.execute("SELECT set_config('edu_migrate.id_secret', 'bench-costs', true)")
        conn.execute("SET LOCAL max_parallel_workers_per_gather = 0")
        conn.execute("SET LOCAL jit = off")
        row = conn.execute(sql.SQL("SELECT count(*) FROM {} WHERE id % {} = 0").format(
            relation, sql.Literal(every))).fetchone()
        rows = int(row[0]) if row else 0
        _timed(conn, SCAN, relation, every)  # warm the cache
        scan = _timed(conn, SCAN, relation, every)
        for piece, expression, stands_for in PIECES:
            seconds = _timed(conn, expression, relation, every)
            costs.append(Cost(piece, expression, stands_for, round(seconds, 3), rows,
                              round(max(seconds - scan, 0.0) / max(rows, 1) * 1e6, 3)))
        costs.append(Cost("scan alone", SCAN, "reading the staged marks, the baseline above",
                          round(scan, 3), rows, round(scan / max(rows, 1) * 1e6, 3)))
        conn.rollback()
    return costs


def slow_path_share(target_url: str, table: str = "stage.grades") -> float:
    """The share of marks the fast path does not take."""
    schema, name = table.split(".")
    query = sql.SQL(
        "SELECT avg(CASE WHEN length(value) <= 7 AND translate(value, '0123456789', '') "
        "IN ('', '.', ',') AND ascii(value) BETWEEN 48 AND 57 "
        "AND ascii(right(value, 1)) BETWEEN 48 AND 57 THEN 0 ELSE 1 END) FROM {}").format(
        sql.Identifier(schema, name))
    with psycopg.connect(target_url) as conn:
        row = conn.execute(query).fetchone()
    return float(row[0]) if row and row[0] is not None else 0.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.costs", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", required=True, help="URL of a migrated edu_v2")
    parser.add_argument("--table", default="stage.grades")
    parser.add_argument("--every", type=int, default=EVERY,
                        help="compute one mark in this many (1: every mark)")
    args = parser.parse_args(argv)
    costs = measure(args.target, args.table, args.every)
    print(json.dumps({"costs": [asdict(c) for c in costs],
                      "slow_path_share": slow_path_share(args.target, args.table)}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
