"""The change feed against the scan: the same day of changes synced both ways, on one server.

The feed needs `wal_level = logical`, which a stock server does not have (`replica`): this runs
on a server of its own, the machine's PostgreSQL 15 with stock settings but for logical
decoding (bench/servers.py, LogicalStockServer), with the same generated `edu` as `make bench`
(or on `--url`, a server that allows it). For each way, alternated: a live copy of `edu`,
`feed start` (the feed's way only), `migrate --all`, a first sync (nothing changed),
day_of_changes.sql and the day's sync, last_delta.sql and its sync, and a sync with nothing
changed: each timed with its profile.

    make bench-feed SCALE=1            # python -m bench.feed --scale 1 [--runs 2]
    python -m bench.feed --url postgresql://…/postgres   # a server that holds the bench's edu
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from bench.catchup import _cli, apply_changes
from bench.contenders import edu_migrate_all, recreate_database
from bench.run import WORK, build_legacy
from bench.servers import STOCK_MAJOR, LogicalStockServer
from edu_migrate.pg.embedded import _system_bin_dir
from edu_migrate.pg.urls import with_database

LIVE_DB, LIVE_TARGET_DB = "edu_feed_live", "edu_v2_feed_live"


def one_way(admin_url: str, work: Path, fed: bool) -> dict[str, Any]:
    source, target = with_database(admin_url, LIVE_DB), with_database(admin_url, LIVE_TARGET_DB)
    with psycopg.connect(admin_url, autocommit=True) as admin:
        for name in (LIVE_TARGET_DB, LIVE_DB):
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(name)))
        admin.execute(sql.SQL("CREATE DATABASE {} TEMPLATE edu").format(sql.Identifier(LIVE_DB)))
    recreate_database(admin_url, LIVE_TARGET_DB)
    try:
        if fed:
            _cli(["feed", "start"], source, target, work, "feed-start", None)
        shutil.rmtree(work / "full", ignore_errors=True)
        full = edu_migrate_all(source, target, work / "full")
        _cli(["sync"], source, target, work, "sync-first", None)
        changes = apply_changes(source, "day_of_changes.sql")
        day = _cli(["sync"], source, target, work, "sync-day", None)
        methods = sorted({str(c["method"]) for c in day.result["changes"].values()})
        # A cutover's rounds: a few hundred writes, then nothing (the target is on the source's
        # server here, so the scan of a quiet source is never skipped: docs/engine.md).
        last_rows = sum(apply_changes(source, "last_delta.sql").values())
        last = _cli(["sync"], source, target, work, "sync-last", None)
        empty = _cli(["sync"], source, target, work, "sync-empty", None)
        return {"way": "feed" if fed else "scan", "full_seconds": round(full.seconds, 2),
                "changed_rows_written": sum(changes.values()),
                "day_sync_seconds": round(day.seconds, 2),
                "share_of_full": round(day.seconds / full.seconds, 4),
                "changed_rows": day.result.get("changed_rows"), "methods": methods,
                "last_delta_rows_written": last_rows,
                "last_delta_sync_seconds": round(last.seconds, 2),
                "empty_sync_seconds": round(empty.seconds, 2),
                "profile": day.profile, "last_delta_profile": last.profile,
                "empty_profile": empty.profile}
    finally:
        if fed:
            _drop_slots(source)
        with psycopg.connect(admin_url, autocommit=True) as admin:
            for name in (LIVE_TARGET_DB, LIVE_DB):
                admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                    sql.Identifier(name)))


def _drop_slots(source_url: str) -> None:
    """The live copy's slot, dropped before its database can be (a slot holds it)."""
    with psycopg.connect(source_url, autocommit=True) as conn:
        conn.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                     "WHERE database = current_database()")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.feed", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default=None, help="superuser URL of the postgres database of a "
                        "server that holds the bench's `edu` (default: a server of its own)")
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--work", type=Path, default=WORK / "feed")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.url is None:
        bin_dir = _system_bin_dir(STOCK_MAJOR)
        if bin_dir is None:
            print(f"PostgreSQL {STOCK_MAJOR} binaries are not installed", file=sys.stderr)
            return 2
        status = LogicalStockServer(WORK / "server-pg15-logical", bin_dir=bin_dir).start()
        build_legacy(status, args.scale, args.seed, "clean")
        args.url = status.url("postgres")
    with psycopg.connect(args.url) as conn:
        row = conn.execute("SELECT current_setting('wal_level'), "
                           "current_setting('server_version')").fetchone()
    assert row is not None
    if row[0] != "logical":
        print(f"the server's wal_level is {row[0]}: the feed needs logical (set it, restart, "
              "and run this again)", file=sys.stderr)
        return 2
    runs = []
    for number in range(args.runs):
        for fed in (number % 2 == 0, number % 2 != 0):  # alternated: scan first every other run
            work = args.work / f"run{number}-{'feed' if fed else 'scan'}"
            work.mkdir(parents=True, exist_ok=True)
            result = one_way(args.url, work, fed)
            print(f"{result['way']}: day's sync {result['day_sync_seconds']}s "
                  f"({result['changed_rows']} changed rows, {', '.join(result['methods'])}), "
                  f"{result['share_of_full']:.1%} of the full run ({result['full_seconds']}s); "
                  f"last delta ({result['last_delta_rows_written']} rows) "
                  f"{result['last_delta_sync_seconds']}s; nothing changed "
                  f"{result['empty_sync_seconds']}s", flush=True)
            runs.append(result)
    payload = {"server_version": row[1], "wal_level": row[0], "scale": args.scale,
               "runs": runs}
    if args.out:
        args.out.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
