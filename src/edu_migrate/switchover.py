"""The two windows that move the system of record: `cutover` (edu to edu_v2) and `fallback`
(edu_v2 back to edu), each as short as its last delta.

While the old LMS runs, `sync` rounds bring edu_v2 close to the source. Then the source is frozen
(the guide's `default_transaction_read_only = on`), the sessions that were open before the freeze
are waited for (that setting binds only new sessions: an open session can still write), a last sync
applies what remains, and validation proves the result. The window is measured from the freeze to
the validated result and recorded in migration.run_log (event `cutover`). Any failure unfreezes
the source: the applications stay on edu.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from edu_migrate.checks.validation import SourceFacts
from edu_migrate.errors import MigrationError, StillWritable
from edu_migrate.pg.connect import connect
from edu_migrate.pg.freeze import set_frozen
from edu_migrate.pg.writers import require_no_writers, require_not_overridden, settle_writers
from edu_migrate.phases.sync import SyncResult
from edu_migrate.runlog import Reporter


@dataclass
class Round:
    rows: int
    seconds: float


@dataclass
class CutoverResult:
    rounds: list[Round] = field(default_factory=list)
    frozen_at: datetime | None = None
    writers_waited_seconds: float = 0.0
    writers_terminated: int = 0
    final_rows: int = 0
    final_sync_seconds: float = 0.0
    validation_seconds: float = 0.0
    # the test that nothing reached the source past the last sync (after validation)
    write_check_seconds: float = 0.0
    window_seconds: float = 0.0
    as_of: datetime | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["frozen_at"] = self.frozen_at.isoformat() if self.frozen_at else None
        data["as_of"] = self.as_of.isoformat() if self.as_of else None
        return data


@dataclass(frozen=True)
class Steps:
    """What a cutover does, as calls: the API passes its own sync and validation."""
    sync: Callable[[datetime | None], SyncResult]
    source_facts: Callable[[], SourceFacts]
    validate: Callable[[SourceFacts], None]
    # The source's tables written since the last sync's snapshot, with their rows: what a sync
    # now would apply.
    unsynced: Callable[[], dict[str, int]]


def cutover(source_url: str, target_url: str, steps: Steps, reporter: Reporter, *,
            as_of: datetime | None, max_rounds: int, settle_rows: int,
            writer_timeout: float, terminate_writers: bool) -> CutoverResult:
    result = CutoverResult()
    # A role's own setting beats the database's: the freeze would not bind its sessions.
    require_not_overridden(source_url)
    previous: int | None = None
    for number in range(1, max_rounds + 1):
        synced = steps.sync(as_of)
        # Every later round and the last sync keep the first round's as-of time: moving it
        # would make each of them derive again whatever depends on "now" (phases 1–4 whole).
        as_of = as_of or synced.as_of
        result.rounds.append(Round(synced.changed_rows, round(synced.seconds, 2)))
        reporter.line(f"Round {number}: {synced.changed_rows:,} changed rows applied in "
                      f"{synced.seconds:.1f}s")
        if synced.changed_rows <= settle_rows or (previous is not None
                                                  and synced.changed_rows >= previous):
            break
        previous = synced.changed_rows
    frozen = time.perf_counter()
    set_frozen(source_url, True)
    result.frozen_at = _server_now(source_url)
    reporter.line(f"Froze the source at {result.frozen_at.isoformat()}: the downtime window "
                  "starts")
    try:
        settled = settle_writers(source_url, result.frozen_at, reporter, timeout=writer_timeout,
                                 terminate=terminate_writers)
        result.writers_waited_seconds = settled.waited_seconds
        result.writers_terminated = settled.terminated
        started = time.perf_counter()
        # The source is frozen and no writer is left: validation's reading of it runs on the
        # other core while the last sync works.
        with ThreadPoolExecutor(max_workers=1) as pool:
            reading = pool.submit(steps.source_facts)
            final = steps.sync(as_of)
            result.final_rows, result.as_of = final.changed_rows, final.as_of
            result.final_sync_seconds = round(time.perf_counter() - started, 2)
            reporter.line(f"Last sync: {final.changed_rows:,} changed rows in "
                          f"{result.final_sync_seconds:.1f}s")
            started = time.perf_counter()
            facts = reading.result()
        steps.validate(facts)
        result.validation_seconds = round(time.perf_counter() - started, 2)
        started = time.perf_counter()
        _require_nothing_written(source_url, steps, result, reporter, terminate_writers)
        result.write_check_seconds = round(time.perf_counter() - started, 2)
        result.window_seconds = round(time.perf_counter() - frozen, 2)
        _record(target_url, result)
    except (MigrationError, psycopg.Error) as exc:
        set_frozen(source_url, False)
        cause = exc.message if isinstance(exc, MigrationError) else str(exc).strip()
        # A write that leaked past the freeze says what to do about its writer.
        hint = f"{exc.hint}, then run `edu-migrate cutover` again" \
            if isinstance(exc, StillWritable) and exc.hint else \
            "fix the cause, then run `edu-migrate cutover` again"
        raise MigrationError(
            f"cutover aborted, the source is writable again and the applications stay on edu: "
            f"{cause.splitlines()[0] if cause else type(exc).__name__}", hint) from exc
    reporter.line(f"Downtime window: {result.window_seconds:.1f}s from the freeze to the "
                  f"validated result ({result.final_rows:,} rows in the last delta). The source "
                  "stays read-only: point the applications at edu_v2.")
    return result


def _server_now(url: str) -> datetime:
    with connect(url, purpose="source", read_only=True) as conn:
        row = conn.execute("SELECT clock_timestamp()").fetchone()
        assert row is not None
        return row[0]  # type: ignore[no-any-return]


def _require_nothing_written(source_url: str, steps: Steps, result: CutoverResult,
                             reporter: Reporter, terminate: bool) -> None:
    """The freeze is only a default: prove that no write reached the source after the last
    sync's snapshot, which is all that validation compared. First no session may be left in a
    write transaction (it could commit after the success is reported) and no transaction
    prepared; then the sync's own test for changed rows, once more, must find none."""
    result.writers_terminated += require_no_writers(source_url, reporter, terminate=terminate)
    written = steps.unsynced()
    if written:
        raise StillWritable(
            "the source was written after the last sync's snapshot, past the freeze: "
            + ", ".join(f"{table} ({rows:,} row{'' if rows == 1 else 's'})"
                        for table, rows in sorted(written.items()))
            + "; by a session that turned default_transaction_read_only off, or a transaction "
            "prepared before the freeze and committed in the window",
            "find and stop that writer (pg_stat_activity, pg_prepared_xacts)")
    reporter.line("Nothing reached the source's mapped tables after the last sync's snapshot")


def _record(target_url: str, result: CutoverResult) -> None:
    with connect(target_url, purpose="target") as conn:
        conn.execute("INSERT INTO migration.run_log (event, detail) VALUES ('cutover', %s)",
                     [Jsonb({key: value for key, value in result.to_dict().items()
                             if key != "rounds"} | {"rounds": len(result.rounds)})])
        conn.commit()
