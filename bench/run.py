"""`make bench`: on each server (the machine's PostgreSQL 15 with stock settings, then the tuned
embedded one), with the legacy database built once, race raw copy-through (a), edu-migrate (b)
and pgloader (c), alternating, several times; time `validate` and the everyday queries; run the
catch-up scenario (a full run of a live copy, sync of a day of changes, cutover) and the per-mark
costs; write bench/results/<timestamp>.json and the results block of docs/benchmarks.md.

    python -m bench.run --scale 1 [--runs 3] [--servers stock,tuned] [--keep-server]
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
from collections.abc import Callable
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from bench import costs, least_work
from bench.catchup import run_catch_up
from bench.contenders import (
    MAPPED_TABLES,
    Measurement,
    copy_tables,
    edu_migrate_all,
    edu_migrate_validate,
    install_pgloader,
    legacy_ddl,
    pgloader_copy,
    raw_copy_through,
    recreate_database,
)
from bench.queries import run_everyday_queries
from bench.report import render_markdown, update_docs
from bench.servers import ServerKind, server_cpu_seconds, server_kinds
from edu_migrate import api
from edu_migrate.config import Settings
from edu_migrate.pg.embedded import ServerStatus

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


def _legacy_fingerprint_of(status: ServerStatus) -> str | None:
    with psycopg.connect(status.url(), autocommit=True) as admin:
        row = admin.execute("SELECT shobj_description(oid, 'pg_database') FROM pg_database "
                            "WHERE datname = %s", [LEGACY_DB]).fetchone()
    return str(row[0]) if row and row[0] else None


def _finish_legacy(status: ServerStatus, fingerprint: str) -> None:
    with psycopg.connect(status.url(LEGACY_DB), autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
        conn.execute(sql.SQL("COMMENT ON DATABASE {} IS {}").format(
            sql.Identifier(LEGACY_DB), sql.Literal(fingerprint)))


def build_legacy(status: ServerStatus, scale: float, seed: int, profile: str,
                 copy_from: ServerStatus | None = None) -> float:
    """Generate edu unless the same generator already built it at the same scale and seed; with
    `copy_from` (a server that holds that very database), copy it from there instead."""
    fingerprint = generator_fingerprint(scale, seed, profile)
    if _legacy_fingerprint_of(status) == fingerprint:
        say(f"legacy database reused ({fingerprint})")
        return 0.0
    recreate_database(status.url(), LEGACY_DB)
    started = time.perf_counter()
    if copy_from is not None and _legacy_fingerprint_of(copy_from) == fingerprint:
        say("copying the legacy database from the tuned server (same generator, scale, seed) …")
        copy_legacy(copy_from.url(LEGACY_DB), status.url(LEGACY_DB))
    else:
        say(f"generating the legacy database at scale {scale} …")
        settings = Settings(source_url=status.url(LEGACY_DB), target_url=status.url(TARGET_DB),
                            home=WORK / "home", log_dir=WORK / "generate-logs")
        api.generate(settings, scale=scale, profile=profile, seed=seed)
    seconds = time.perf_counter() - started
    _finish_legacy(status, fingerprint)
    say(f"legacy database built in {seconds:.1f}s")
    return seconds


def copy_legacy(source_url: str, dest_url: str) -> None:
    """Every table of the legacy database, created from the legacy DDL and filled by binary COPY
    (the generator's tables are exactly the DDL's)."""
    with psycopg.connect(dest_url, autocommit=True) as dest:
        dest.execute(legacy_ddl().encode())
    with psycopg.connect(source_url) as source, psycopg.connect(dest_url) as dest:
        query = "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1"
        tables = [row[0] for row in source.execute(query)]
        present = {row[0] for row in dest.execute(query)}
        if missing := [t for t in tables if t not in present]:
            raise RuntimeError(f"the legacy DDL lacks {missing}: cannot copy the database")
        copy_tables(source, dest, tables)
        dest.commit()


SHOWN_SETTINGS = ("shared_buffers", "maintenance_work_mem", "work_mem", "max_wal_size",
                  "checkpoint_timeout", "wal_level", "max_parallel_maintenance_workers",
                  "max_parallel_workers_per_gather", "fsync", "synchronous_commit",
                  "full_page_writes", "jit")


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
            "SELECT name, current_setting(name) FROM pg_settings WHERE name = ANY(%s) "
            "ORDER BY name", [list(SHOWN_SETTINGS)]).fetchall())
        # jit = on means nothing where the server has no llvmjit: say whether it compiles.
        jit = conn.execute("SELECT pg_jit_available()").fetchone()
        settings["jit"] = f"{settings.get('jit', '?')} (llvmjit " \
            f"{'available' if jit and jit[0] else 'not installed'})"
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


def race(status: ServerStatus, runs: int, with_pgloader: bool,
         work: Path) -> dict[str, list[Measurement]]:
    source = status.url(LEGACY_DB)

    def cpu() -> float:
        return server_cpu_seconds(status.data_dir)

    results: dict[str, list[Measurement]] = {"raw": [], "migrate": [], "validate": [],
                                             "pgloader": []}
    for number in range(1, runs + 1):
        run_work = work / f"run-{number}"
        run_work.mkdir(parents=True, exist_ok=True)
        recreate_database(status.url(), RAW_DB)
        raw = _started(os.getloadavg()[0],
                       raw_copy_through(source, status.url(RAW_DB), server_cpu=cpu))
        results["raw"].append(raw)
        say(f"run {number}: (a) raw copy-through {raw.seconds:.1f}s")
        recreate_database(status.url(), TARGET_DB)
        migrated = _started(os.getloadavg()[0],
                            edu_migrate_all(source, status.url(TARGET_DB), run_work, cpu))
        results["migrate"].append(migrated)
        say(f"run {number}: (b) edu-migrate migrate --all {migrated.seconds:.1f}s, "
            f"peak RSS {migrated.peak_rss_mb:.0f} MB, CPU client "
            f"{migrated.client_cpu_seconds or 0:.1f}s server "
            f"{migrated.server_cpu_seconds or 0:.1f}s")
        checked = _started(os.getloadavg()[0],
                           edu_migrate_validate(source, status.url(TARGET_DB), run_work, cpu))
        results["validate"].append(checked)
        say(f"run {number}:     edu-migrate validate {checked.seconds:.1f}s"
            + (f" ({checked.note})" if checked.note else ""))
        if with_pgloader:
            recreate_database(status.url(), PGLOADER_DB)
            loaded = _started(os.getloadavg()[0],
                              pgloader_copy(source, status.url(PGLOADER_DB), run_work,
                                            server_cpu=cpu))
            results["pgloader"].append(loaded)
            say(f"run {number}: (c) pgloader {loaded.seconds:.1f}s, peak RSS "
                f"{loaded.peak_rss_mb or 0:.0f} MB" + (f" ({loaded.note})" if loaded.note else ""))
    return results


def marks_count(status: ServerStatus) -> int:
    with psycopg.connect(status.url(LEGACY_DB)) as conn:
        row = conn.execute("SELECT count(*) FROM grades").fetchone()
    return int(row[0]) if row else 0


def _median_profile(runs: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    sections = list(dict.fromkeys(section for run in runs for section in run))
    return {section: _median_by_key([run.get(section, {}) for run in runs])
            for section in sections}


def cpu_use(measured: list[Measurement], cores: int) -> dict[str, float] | None:
    """Median CPU seconds of client and server, and how busy the cores were: CPU seconds over
    wall seconds times cores (1.0: every core busy throughout)."""
    usable = [m for m in measured if m.client_cpu_seconds is not None
              and m.server_cpu_seconds is not None and m.seconds > 0]
    if not usable:
        return None
    client = statistics.median(m.client_cpu_seconds or 0.0 for m in usable)
    server = statistics.median(m.server_cpu_seconds or 0.0 for m in usable)
    wall = statistics.median(m.seconds for m in usable)
    return {"client_seconds": client, "server_seconds": server, "wall_seconds": wall,
            "cores": cores, "utilisation": (client + server) / (wall * cores)}


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
        "migrate_profile": _median_profile([m.phase_steps for m in results["migrate"]]),
        "cpu": {name: cpu_use(results[name], os.cpu_count() or 1)
                for name in ("raw", "migrate", "validate", "pgloader")},
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
    """After a change to the report only: the same results, rendered again."""
    payload = json.loads(result_file.read_text(encoding="utf-8"))
    markdown = render_markdown(payload)
    print(markdown)
    if not no_docs:
        update_docs(ROOT / "docs" / "benchmarks.md", markdown, payload["scale"])
    return 0


def legacy_everywhere(kinds: list[ServerKind], args: argparse.Namespace) -> dict[str, float]:
    """Start every server and give each the legacy database: generated on the tuned server when
    there is one (its loads skip the WAL: the fastest place), copied from there to the others.
    Seconds it took, per server."""
    order = sorted(kinds, key=lambda kind: kind.name != "tuned")
    seconds: dict[str, float] = {}
    first: ServerStatus | None = None
    for kind in order:
        status = kind.server.start()
        say(f"{kind.name} server: {kind.description}, PostgreSQL {status.version} on port "
            f"{status.port}")
        seconds[kind.name] = build_legacy(status, args.scale, args.seed, "clean", first)
        first = first or status
    return seconds


def bench_one_server(kind: ServerKind, args: argparse.Namespace, with_pgloader: bool,
                     pgloader_note: str | None, generation: float,
                     publish: Callable[[dict[str, Any]], None]) -> None:
    """Everything on one server; `publish` gets its results so far after each part."""
    status = kind.server.start()
    say(f"now on the {kind.name} server")
    work = WORK / kind.name
    results = race(status, args.runs, with_pgloader, work)
    say("everyday queries: edu against edu_v2 …")
    queries = run_everyday_queries(status.url(LEGACY_DB), status.url(TARGET_DB))
    payload = assemble(args.scale, status, generation, results, queries, pgloader_note)
    payload["server"] = {"name": kind.name, "description": kind.description}
    if not args.no_costs:
        say("per-mark costs on the staged marks …")
        payload["costs"] = [vars(c) for c in costs.measure(status.url(TARGET_DB))]
        payload["slow_path_share"] = costs.slow_path_share(status.url(TARGET_DB))
        say("the least work: the marks' tables written once, indexed and checked, no rule …")
        payload["least_work"] = [vars(step) for step in least_work.measure(status.url(TARGET_DB))]
    publish(payload)
    if not args.no_catch_up:
        try:
            payload["catch_up"] = run_catch_up(
                status.url(), status.url, work / "catch-up",
                lambda: server_cpu_seconds(status.data_dir), say).to_dict()
        except (RuntimeError, psycopg.Error) as exc:
            # Reported, not fatal: the race's results and the next server still count.
            payload["catch_up_error"] = str(exc).strip().splitlines()[0]
            say(f"catch-up failed: {payload['catch_up_error']}")
        publish(payload)


def scales_of(text: str) -> list[float]:
    """`--scale 1` or `--scale 1,10`: the scales one run measures, in order."""
    try:
        scales = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a scale or a list of scales: {text!r}") from None
    if not scales or any(scale <= 0 for scale in scales):
        raise argparse.ArgumentTypeError(f"scales must be positive numbers: {text!r}")
    return scales


def drop_run_databases(kinds: list[ServerKind]) -> None:
    """Before the next scale: every database the last one made, so that both scales' sets never
    sit on the disk at once (scale 10's is about 45 GB)."""
    for kind in kinds:
        status = kind.server.start()
        with psycopg.connect(status.url(), autocommit=True) as conn:
            names = [row[0] for row in conn.execute(
                "SELECT datname FROM pg_database WHERE NOT datistemplate "
                "AND datname <> 'postgres'")]
            for name in names:
                conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(
                    sql.Identifier(name)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=scales_of, default=[1.0], metavar="S[,S...]",
                        help="the scale, or scales one after the other in one run "
                             "(1,10: each gets its block in docs/benchmarks.md, both dated by "
                             "this run); default 1")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--servers", default="stock,tuned",
                        help="which servers, in order: stock (the machine's PostgreSQL 15, "
                             "stock settings), tuned (the embedded server, edu-migrate's "
                             "settings); default both, stock first")
    parser.add_argument("--no-pgloader", action="store_true", help="skip contender (c)")
    parser.add_argument("--no-catch-up", action="store_true",
                        help="skip the sync and cutover scenario")
    parser.add_argument("--no-costs", action="store_true",
                        help="skip the per-mark costs and the least work")
    parser.add_argument("--keep-server", action="store_true",
                        help="leave the bench's servers running afterwards")
    parser.add_argument("--no-docs", action="store_true",
                        help="write the JSON only, not docs/benchmarks.md")
    parser.add_argument("--rerender", type=Path, metavar="RESULT_JSON",
                        help="no new runs: render the results of that file again")
    args = parser.parse_args(argv)
    if args.rerender:
        return rerender(args.rerender, args.no_docs)

    WORK.mkdir(parents=True, exist_ok=True)
    kinds, skipped = server_kinds(WORK, [name.strip() for name in args.servers.split(",")])
    for reason in skipped:
        say(f"server skipped: {reason}")
    pgloader_note = "skipped (--no-pgloader)" if args.no_pgloader else install_pgloader(say)
    with_pgloader = pgloader_note is None
    if pgloader_note:
        say(f"pgloader: {pgloader_note}")
    started = datetime.now()
    scales: list[float] = args.scale
    RESULTS.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    try:
        for number, scale in enumerate(scales):
            if number:
                drop_run_databases(kinds)
            one = argparse.Namespace(**{**vars(args), "scale": scale})
            written.append(bench_one_scale(one, kinds, skipped, started, scales, with_pgloader,
                                           pgloader_note))
    finally:
        if not args.keep_server:
            for kind in kinds:
                kind.server.stop()
    for out in written:
        say(f"results: {out.relative_to(ROOT)}")
    return 0


def bench_one_scale(args: argparse.Namespace, kinds: list[ServerKind], skipped: list[str],
                    started: datetime, scales: list[float], with_pgloader: bool,
                    pgloader_note: str | None) -> Path:
    """Every server at one scale; its results file, rewritten after each part."""
    servers: dict[str, Any] = {}
    out = RESULTS / f"{started:%Y%m%d_%H%M%S}_scale{args.scale:g}.json"
    began = datetime.now()

    def payload() -> dict[str, Any]:
        return {"when": began.isoformat(timespec="seconds"),
                "run": {"started": started.isoformat(timespec="seconds"), "scales": scales},
                "scale": args.scale, "runs": args.runs, "servers": servers,
                "skipped_servers": skipped, "pgloader_note": pgloader_note}

    def publish(name: str, result: dict[str, Any]) -> None:
        """Written after each part, so that a long run reports what it has measured."""
        servers[name] = result
        out.write_text(json.dumps(payload(), indent=2, default=str) + "\n", encoding="utf-8")
        if not args.no_docs:
            update_docs(ROOT / "docs" / "benchmarks.md", render_markdown(payload()), args.scale)
        say(f"{name} server results so far: {out.relative_to(ROOT)}"
            + ("" if args.no_docs else " and docs/benchmarks.md"))

    say(f"scale {args.scale:g}")
    generation = legacy_everywhere(kinds, args)
    for kind in kinds:
        bench_one_server(kind, args, with_pgloader, pgloader_note, generation[kind.name],
                         lambda result, name=kind.name: publish(name, result))
    if servers:
        print(render_markdown(payload()))
    return out


if __name__ == "__main__":
    sys.exit(main())
