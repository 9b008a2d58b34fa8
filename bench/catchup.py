"""The catch-up scenario: migrate a live copy of `edu`, sync a day of its changes, cut over.

1. `edu_live` is a copy of `edu` (CREATE DATABASE … TEMPLATE edu): the old LMS, still live.
2. `migrate --all` into a fresh `edu_v2_live`, timed: the full run the sync is compared with.
3. A first `sync` with nothing changed, timed apart: it builds the mirror's indexes once.
4. day_of_changes.sql on the live copy, then `sync`, timed: the goal is 10 % of the full run.
5. last_delta.sql on the live copy; an application session keeps writing a mark a few times a
   second; `cutover --terminate-writers` syncs while the delta shrinks, freezes the source, ends
   that session, applies the last delta and validates: its window is the downtime.
6. day_on_edu_v2.sql on edu_v2: the applications' day after the cutover. An application session
   keeps re-entering a mark on edu_v2 while `fallback --yes --terminate-writers` carries the
   day back to edu in rounds, freezes edu_v2, ends that session and writes edu: its window is
   the downtime of the guide's "switch back to old database".
"""

from __future__ import annotations

import json
import re
import shutil
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from bench.contenders import (
    edu_migrate_all,
    edu_migrate_command,
    profile_from_log,
    recreate_database,
    run_measured,
)

LIVE_DB, LIVE_TARGET_DB = "edu_live", "edu_v2_live"
HERE = Path(__file__).resolve().parent


@dataclass
class Command:
    seconds: float
    client_cpu_seconds: float | None
    server_cpu_seconds: float | None
    result: dict[str, Any] = field(default_factory=dict)
    profile: dict[str, dict[str, float]] = field(default_factory=dict)


@dataclass
class CatchUp:
    full_seconds: float
    full_client_cpu_seconds: float | None
    full_server_cpu_seconds: float | None
    changes: dict[str, int]
    first_sync: Command
    day_sync: Command
    last_delta: dict[str, int]
    cutover: Command
    trickle_writes: int
    fallback_day: dict[str, int] = field(default_factory=dict)
    fallback: Command | None = None
    fallback_trickle_writes: int = 0
    fallback_error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _statements(file_name: str) -> list[str]:
    text = (HERE / file_name).read_text(encoding="utf-8")
    chunks = re.split(r";\s*\n", text)
    kept = []
    for chunk in chunks:
        code = "\n".join(line for line in chunk.splitlines() if not line.lstrip().startswith("--"))
        if code.strip():
            kept.append(code.strip())
    return kept


def apply_changes(url: str, file_name: str) -> dict[str, int]:
    """Run the file's statements in one transaction; rows affected, by statement kind and table."""
    counts: dict[str, int] = {}
    with psycopg.connect(url) as conn:
        for statement in _statements(file_name):
            cursor = conn.execute(statement.encode())
            match = re.match(r"(INSERT INTO|UPDATE|DELETE FROM)\s+(\w+)", statement)
            if match and cursor.rowcount >= 0 and match[2] != "new_students":
                key = f"{match[1].split()[0].lower()} {match[2]}"
                counts[key] = counts.get(key, 0) + cursor.rowcount
        conn.commit()
    return counts


def _cli(arguments: list[str], source_url: str, target_url: str, work: Path, name: str,
         server_cpu: Callable[[], float] | None) -> Command:
    """One edu-migrate command with --json, measured; its JSON result read back."""
    result_file = work / f"{name}.json"
    # The profile is read from every log in the folder: an earlier bench run's would mix in.
    shutil.rmtree(work / f"{name}-logs", ignore_errors=True)
    usage = run_measured([*edu_migrate_command(), *arguments, "--source", source_url,
                          "--target", target_url, "--json", str(result_file)],
                         env={"EDU_LOG_DIR": str(work / f"{name}-logs")},
                         log_file=work / f"{name}.out", server_cpu=server_cpu)
    if usage.status != 0:
        tail = (work / f"{name}.out").read_text(errors="replace").strip().splitlines()[-3:]
        raise RuntimeError(f"edu-migrate {' '.join(arguments)} failed ({usage.status}): "
                           f"{' / '.join(tail)}")
    result = json.loads(result_file.read_text(encoding="utf-8"))
    return Command(usage.seconds, usage.client_cpu_seconds, usage.server_cpu_seconds, result,
                   profile_from_log(work / f"{name}-logs", first_section=arguments[0]))


# An application's write of a mark, the n-th of its session: on edu (0 or 1, a valid mark of
# every type), and on edu_v2 after the cutover.
EDU_MARK = ("UPDATE grades SET value = ((id + %(n)s) %% 2)::text "
            "WHERE id = (SELECT min(id) FROM grades) + %(n)s * 7")
EDU_V2_MARK = ("UPDATE grades SET score = %(n)s %% 2, is_absent = false WHERE id = ("
               "SELECT target_id FROM migration.crosswalk WHERE source_table = 'grades' "
               "ORDER BY source_id OFFSET %(n)s * 7 LIMIT 1)")


class Trickle:
    """An application session that keeps re-entering marks until it is ended (the cutover's or
    the fallback's --terminate-writers ends it) or stopped."""

    def __init__(self, url: str, statement: str = EDU_MARK, interval: float = 0.2) -> None:
        self.url, self.statement, self.interval = url, statement, interval
        self.writes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._connected = threading.Event()

    def __enter__(self) -> Trickle:
        self._thread.start()
        self._connected.wait(30)
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        try:
            with psycopg.connect(self.url, application_name="lms-web") as conn:
                self._connected.set()
                while not self._stop.is_set():
                    conn.execute(self.statement.encode(), {"n": self.writes})
                    conn.commit()
                    self.writes += 1
                    self._stop.wait(self.interval)
        except psycopg.OperationalError:
            pass  # ended by the cutover
        finally:
            self._connected.set()


def run_catch_up(admin_url: str, url_of: Callable[[str], str], work: Path,
                 server_cpu: Callable[[], float] | None, say: Callable[[str], None]) -> CatchUp:
    work.mkdir(parents=True, exist_ok=True)
    source, target = url_of(LIVE_DB), url_of(LIVE_TARGET_DB)
    with psycopg.connect(admin_url, autocommit=True) as admin:
        for name in (LIVE_TARGET_DB, LIVE_DB):
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(name)))
        admin.execute(sql.SQL("CREATE DATABASE {} TEMPLATE edu").format(sql.Identifier(LIVE_DB)))
    recreate_database(admin_url, LIVE_TARGET_DB)
    try:
        shutil.rmtree(work / "full", ignore_errors=True)
        full = edu_migrate_all(source, target, work / "full", server_cpu)
        say(f"catch-up: full migrate --all of the live copy {full.seconds:.1f}s")
        first = _cli(["sync"], source, target, work, "sync-first", server_cpu)
        say(f"catch-up: first sync, nothing changed {first.seconds:.1f}s")
        changes = apply_changes(source, "day_of_changes.sql")
        say(f"catch-up: a day of changes applied ({sum(changes.values()):,} rows)")
        day = _cli(["sync"], source, target, work, "sync-day", server_cpu)
        say(f"catch-up: sync of the day {day.seconds:.1f}s "
            f"({day.result.get('changed_rows', '?')} changed rows), "
            f"{day.seconds / full.seconds:.1%} of the full run")
        last = apply_changes(source, "last_delta.sql")
        with Trickle(source) as trickle:
            window = _cli(["cutover", "--terminate-writers"], source, target, work, "cutover",
                          server_cpu)
        say(f"catch-up: cutover window {window.result.get('window_seconds', 0):.1f}s "
            f"(validate {window.result.get('validation_seconds', 0):.1f}s), "
            f"{window.seconds:.1f}s in all")
        catch_up = CatchUp(full.seconds, full.client_cpu_seconds, full.server_cpu_seconds,
                           changes, first, day, last, window, trickle.writes)
        try:
            catch_up.fallback_day = apply_changes(target, "day_on_edu_v2.sql")
            say(f"fallback: a day of application writes on edu_v2 "
                f"({sum(catch_up.fallback_day.values()):,} rows)")
            with Trickle(target, EDU_V2_MARK) as v2_trickle:
                catch_up.fallback = _cli(["fallback", "--yes", "--terminate-writers"], source,
                                         target, work, "fallback", server_cpu)
            catch_up.fallback_trickle_writes = v2_trickle.writes
            say(f"fallback: window {catch_up.fallback.result.get('window_seconds', 0):.1f}s, "
                f"{catch_up.fallback.seconds:.1f}s in all")
        except (RuntimeError, psycopg.Error) as exc:
            catch_up.fallback_error = str(exc).strip().splitlines()[0]
            say(f"fallback failed: {catch_up.fallback_error}")
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            for name in (LIVE_TARGET_DB, LIVE_DB):
                admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                    sql.Identifier(name)))
    return catch_up
