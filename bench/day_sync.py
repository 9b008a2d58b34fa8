"""The day's sync, again and again from the same start: for A/B measurements of the catch-up.

`prepare` migrates a live copy of the bench's `edu` on the stock server (bench/servers.py,
StockServer), syncs it once, applies day_of_changes.sql to the source, and keeps both databases
as templates. Each `run` then clones both templates back under the live names (a file copy, so
the unlogged mirror comes too), takes a checkpoint, and times one `edu-migrate sync` with its
profile. Nothing else differs from one run to the next, so two engines can be alternated on
the same data:

    python -m bench.day_sync prepare --scale 1
    git worktree add /tmp/before <commit>
    for i in 1 2 3; do
        PYTHONPATH=/tmp/before/src python -m bench.day_sync run --label before
        python -m bench.day_sync run --label after
    done

The sync is run as a process (`edu-migrate`, or `python -m edu_migrate`), so PYTHONPATH picks
the engine. A prepared target made by one engine is synced by the other: compare engines whose
schema versions agree, or prepare each engine's own templates under a tag (`--tag before`,
`--tag after`: each `run --tag T` then starts from T's):

    PYTHONPATH=/tmp/before/src python -m bench.day_sync prepare --tag before
    python -m bench.day_sync prepare --tag after
    PYTHONPATH=/tmp/before/src python -m bench.day_sync run --tag before --label before
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import psycopg
from psycopg import sql

from bench.catchup import _cli, apply_changes
from bench.contenders import edu_migrate_all, recreate_database
from bench.run import WORK, build_legacy
from bench.servers import STOCK_MAJOR, StockServer
from edu_migrate.pg.embedded import _system_bin_dir
from edu_migrate.pg.urls import with_database

SOURCE, TARGET = "edu_day_live", "edu_v2_day_live"


def templates(tag: str | None) -> dict[str, str]:
    """The live database's name and its template's, under `tag` (one pair per engine)."""
    suffix = f"_{tag}" if tag else ""
    return {SOURCE: f"edu_day_template{suffix}", TARGET: f"edu_v2_day_template{suffix}"}


def _clone(admin_url: str, template: str, name: str) -> None:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
            sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {} STRATEGY FILE_COPY").format(
            sql.Identifier(name), sql.Identifier(template)))


def prepare(admin_url: str, work: Path, scale: float, seed: int, tag: str | None) -> None:
    _clone(admin_url, "edu", SOURCE)
    recreate_database(admin_url, TARGET)
    source, target = with_database(admin_url, SOURCE), with_database(admin_url, TARGET)
    shutil.rmtree(work / "full", ignore_errors=True)
    full = edu_migrate_all(source, target, work / "full")
    _cli(["sync"], source, target, work, "sync-first", None)
    changed = apply_changes(source, "day_of_changes.sql")
    for live, template in templates(tag).items():
        _clone(admin_url, live, template)
    print(json.dumps({"full_seconds": round(full.seconds, 2), "scale": scale, "seed": seed,
                      "changed_rows_written": sum(changed.values())}))


def run(admin_url: str, work: Path, label: str, top: int, tag: str | None) -> None:
    for live, template in templates(tag).items():
        _clone(admin_url, template, live)
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute("CHECKPOINT")
    source, target = with_database(admin_url, SOURCE), with_database(admin_url, TARGET)
    number = len(list(work.glob(f"{label}-*.json"))) + 1
    day = _cli(["sync"], source, target, work, f"{label}-{number}", None)
    steps = day.profile.get("sync", {})
    print(json.dumps({"label": label, "run": number, "seconds": round(day.seconds, 2),
                      "changed_rows": day.result.get("changed_rows"),
                      "slowest": dict(sorted(steps.items(), key=lambda kv: -kv[1])[:top])}))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.day_sync", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=("prepare", "run"))
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--label", default="sync")
    parser.add_argument("--top", type=int, default=12, help="slowest steps shown per run")
    parser.add_argument("--tag", help="the templates' tag: one pair per engine compared")
    parser.add_argument("--work", type=Path, default=WORK / "day-sync")
    args = parser.parse_args(argv)
    bin_dir = _system_bin_dir(STOCK_MAJOR)
    if bin_dir is None:
        parser.error(f"PostgreSQL {STOCK_MAJOR} binaries are not installed")
    status = StockServer(WORK / "server-pg15", bin_dir=bin_dir).start()
    admin_url = status.url("postgres")
    args.work.mkdir(parents=True, exist_ok=True)
    if args.what == "prepare":
        build_legacy(status, args.scale, args.seed, "clean")
        prepare(admin_url, args.work, args.scale, args.seed, args.tag)
    else:
        run(admin_url, args.work, args.label, args.top, args.tag)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
