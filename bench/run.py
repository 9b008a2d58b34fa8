"""`make bench`: build the legacy database once, then race raw copy-through (a), edu-migrate
(b) and pgloader (c), alternating, several times; time `validate` and the everyday queries; write
bench/results/<timestamp>.json and the results table of docs/benchmarks.md.

    python -m bench.run --scale 1 [--runs 3] [--keep-server]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import statistics
import sys
import time
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from bench.contenders import (
    MAPPED_TABLES,
    Measurement,
    edu_migrate_all,
    edu_migrate_validate,
    pgloader_available,
    pgloader_copy,
    raw_copy_through,
    recreate_database,
    steps_from_log,
)
from bench.queries import run_everyday_queries
from bench.report import render_markdown, update_docs
from edu_migrate import api
from edu_migrate.config import Settings
from edu_migrate.pg.embedded import EmbeddedServer, ServerStatus

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "bench" / ".work"
RESULTS = ROOT / "bench" / "results"
LEGACY_DB, TARGET_DB, RAW_DB, PGLOADER_DB = "edu", "edu_v2", "edu_raw_copy", "edu_pgloader"


def say(text: str) -> None:
    print(f"[bench {datetime.now():%H:%M:%S}] {text}", flush=True)


def generator_fingerprint(scale: float, seed: int, profile: str) -> str:
    legacy = resources.files("edu_migrate.legacy")
    digest = hashlib.sha256()
    for name in ("generator.py", "ddl.sql"):
        digest.update((legacy / name).read_bytes())
    return f"edu-migrate bench: scale={scale} seed={seed} profile={profile} " \
           f"generator={digest.hexdigest()[:16]}"


def build_legacy(status: ServerStatus, scale: float, seed: int, profile: str) -> float:
    """Generate edu unless the same generator already built it at the same scale and seed."""
    fingerprint = generator_fingerprint(scale, seed, profile)
    with psycopg.connect(status.url(), autocommit=True) as admin:
        row = admin.execute("SELECT shobj_description(oid, 'pg_database') FROM pg_database "
                            "WHERE datname = %s", [LEGACY_DB]).fetchone()
    if row and row[0] == fingerprint:
        say(f"legacy database reused ({fingerprint})")
        return 0.0
    recreate_database(status.url(), LEGACY_DB)
    say(f"generating the legacy database at scale {scale} …")
    started = time.perf_counter()
    settings = Settings(source_url=status.url(LEGACY_DB), target_url=status.url(TARGET_DB),
                        home=WORK / "home", log_dir=WORK / "generate-logs")
    api.generate(settings, scale=scale, profile=profile, seed=seed)
    seconds = time.perf_counter() - started
    with psycopg.connect(status.url(LEGACY_DB), autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
        conn.execute(sql.SQL("COMMENT ON DATABASE {} IS {}").format(
            sql.Identifier(LEGACY_DB), sql.Literal(fingerprint)))
    say(f"generated in {seconds:.1f}s")
    return seconds


def machine(status: ServerStatus) -> dict[str, Any]:
    memory_kb = 0
    with open("/proc/meminfo", encoding="ascii") as meminfo:
        for line in meminfo:
            if line.startswith("MemTotal:"):
                memory_kb = int(line.split()[1])
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo
                        if line.startswith("model name")), cpu)
    except OSError:
        pass
    with psycopg.connect(status.url(), autocommit=True) as conn:
        version = conn.execute("SHOW server_version").fetchone()
        settings = dict(conn.execute(
            "SELECT name, current_setting(name) FROM pg_settings WHERE name IN "
            "('shared_buffers', 'maintenance_work_mem', 'work_mem', 'max_wal_size', "
            "'wal_level', 'max_parallel_maintenance_workers', 'max_parallel_workers_per_gather',"
            " 'fsync', 'synchronous_commit')").fetchall())
    return {"cores": os.cpu_count(), "memory_gb": round(memory_kb / 1024 / 1024, 1),
            "cpu": cpu, "os": platform.platform(), "python": platform.python_version(),
            "postgresql": version[0] if version else "?", "server_settings": settings}


def summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "spread": max(values) - min(values), "runs": len(values)}


def _median_by_key(runs: list[dict[str, float]]) -> dict[str, float]:
    keys = {key for run in runs for key in run}
    return {key: statistics.median(run.get(key, 0.0) for run in runs) for key in sorted(keys)}


def _started(load_before: float, measured: Measurement) -> Measurement:
    measured.load_average = load_before
    return measured


def race(status: ServerStatus, runs: int, with_pgloader: bool) -> dict[str, list[Measurement]]:
    source = status.url(LEGACY_DB)
    results: dict[str, list[Measurement]] = {"raw": [], "migrate": [], "validate": [],
                                             "pgloader": []}
    for number in range(1, runs + 1):
        work = WORK / f"run-{number}"
        work.mkdir(parents=True, exist_ok=True)
        recreate_database(status.url(), RAW_DB)
        raw = _started(os.getloadavg()[0], raw_copy_through(source, status.url(RAW_DB)))
        results["raw"].append(raw)
        say(f"run {number}: (a) raw copy-through {raw.seconds:.1f}s")
        recreate_database(status.url(), TARGET_DB)
        migrated = _started(os.getloadavg()[0],
                            edu_migrate_all(source, status.url(TARGET_DB), work))
        results["migrate"].append(migrated)
        say(f"run {number}: (b) edu-migrate migrate --all {migrated.seconds:.1f}s, "
            f"peak RSS {migrated.peak_rss_mb:.0f} MB")
        checked = _started(os.getloadavg()[0],
                           edu_migrate_validate(source, status.url(TARGET_DB), work))
        results["validate"].append(checked)
        say(f"run {number}:     edu-migrate validate {checked.seconds:.1f}s"
            + (f" ({checked.note})" if checked.note else ""))
        if with_pgloader:
            recreate_database(status.url(), PGLOADER_DB)
            loaded = _started(os.getloadavg()[0],
                              pgloader_copy(source, status.url(PGLOADER_DB), work))
            results["pgloader"].append(loaded)
            say(f"run {number}: (c) pgloader {loaded.seconds:.1f}s, peak RSS "
                f"{loaded.peak_rss_mb or 0:.0f} MB" + (f" ({loaded.note})" if loaded.note else ""))
    return results


def marks_count(status: ServerStatus) -> int:
    with psycopg.connect(status.url(LEGACY_DB)) as conn:
        row = conn.execute("SELECT count(*) FROM grades").fetchone()
    return int(row[0]) if row else 0


def assemble(scale: float, status: ServerStatus, generation: float,
             results: dict[str, list[Measurement]], queries: list[dict[str, Any]],
             pgloader_note: str | None) -> dict[str, Any]:
    raw = summary([m.seconds for m in results["raw"]])
    migrate = summary([m.seconds for m in results["migrate"]])
    marks = marks_count(status)
    pgloader_ok = [m for m in results["pgloader"] if m.note is None]
    payload: dict[str, Any] = {
        "when": datetime.now().isoformat(timespec="seconds"),
        "scale": scale,
        "machine": machine(status),
        "tables": list(MAPPED_TABLES),
        "marks": marks,
        "generation_seconds": round(generation, 1),
        "raw_copy": raw,
        "migrate": migrate,
        "migrate_peak_rss_mb": summary([m.peak_rss_mb or 0.0 for m in results["migrate"]]),
        "migrate_phases": _median_by_key([m.phases for m in results["migrate"]]),
        "migrate_steps": _median_by_key([m.steps for m in results["migrate"]]),
        "marks_per_second": marks / migrate["median"] if migrate["median"] else 0.0,
        "ratio_migrate_to_raw": migrate["median"] / raw["median"] if raw["median"] else 0.0,
        "validate": summary([m.seconds for m in results["validate"]]),
        "validate_passed": all(m.note is None for m in results["validate"]),
        "pgloader": summary([m.seconds for m in pgloader_ok]) if pgloader_ok else None,
        "pgloader_peak_rss_mb": summary([m.peak_rss_mb or 0.0 for m in pgloader_ok])
        if pgloader_ok else None,
        "pgloader_note": pgloader_note or next((m.note for m in results["pgloader"] if m.note),
                                               None),
        "everyday_queries": queries,
        "load_average": summary([m.load_average for measured in results.values()
                                 for m in measured]),
    }
    payload["runs"] = {name: [vars(m) for m in measured] for name, measured in results.items()}
    return payload


def rerender(result_file: Path, no_docs: bool) -> int:
    """After a change to the report or the queries only: the same runs, reported again."""
    payload = json.loads(result_file.read_text(encoding="utf-8"))
    runs = len(payload["runs"]["migrate"])
    payload["migrate_steps"] = _median_by_key(
        [steps_from_log(WORK / f"run-{number}" / "logs") for number in range(1, runs + 1)])
    status = EmbeddedServer(WORK / "server").start()
    payload["everyday_queries"] = run_everyday_queries(status.url(LEGACY_DB),
                                                       status.url(TARGET_DB))
    result_file.write_text(json.dumps(payload, indent=2, default=str) + "\n", encoding="utf-8")
    markdown = render_markdown(payload)
    print(markdown)
    if not no_docs:
        update_docs(ROOT / "docs" / "benchmarks.md", markdown, payload["scale"])
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--no-pgloader", action="store_true", help="skip contender (c)")
    parser.add_argument("--keep-server", action="store_true",
                        help="leave the bench's server running afterwards")
    parser.add_argument("--no-docs", action="store_true",
                        help="write the JSON only, not docs/benchmarks.md")
    parser.add_argument("--rerender", type=Path, metavar="RESULT_JSON",
                        help="no new runs: re-read the step profile from the last runs' logs, "
                             "time the everyday queries again, rewrite the results")
    args = parser.parse_args(argv)
    if args.rerender:
        return rerender(args.rerender, args.no_docs)

    WORK.mkdir(parents=True, exist_ok=True)
    server = EmbeddedServer(WORK / "server")
    status = server.start()
    say(f"bench server: PostgreSQL {status.version} on port {status.port}")
    pgloader_note = None
    with_pgloader = not args.no_pgloader and pgloader_available() is not None
    if not with_pgloader:
        pgloader_note = ("skipped (--no-pgloader)" if args.no_pgloader else
                         "pgloader is not installed (`apt-get install -y pgloader`)")
        say(f"pgloader: {pgloader_note}")
    try:
        generation = build_legacy(status, args.scale, args.seed, "clean")
        results = race(status, args.runs, with_pgloader)
        say("everyday queries: edu against edu_v2 …")
        queries = run_everyday_queries(status.url(LEGACY_DB), status.url(TARGET_DB))
        payload = assemble(args.scale, status, generation, results, queries, pgloader_note)
    finally:
        if not args.keep_server:
            server.stop()
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"{datetime.now():%Y%m%d_%H%M%S}_scale{args.scale:g}.json"
    out.write_text(json.dumps(payload, indent=2, default=str) + "\n", encoding="utf-8")
    markdown = render_markdown(payload)
    print(markdown)
    if not args.no_docs:
        update_docs(ROOT / "docs" / "benchmarks.md", markdown, args.scale)
    say(f"results: {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
