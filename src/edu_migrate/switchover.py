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
from psycopg import sql
from psycopg.types.json import Jsonb

from edu_migrate.aftercare import deprecation
from edu_migrate.checks.validation import SourceFacts
from edu_migrate.direction import EDU, EDU_V2, require_cut_over
from edu_migrate.direction import current as current_direction
from edu_migrate.direction import record as record_direction
from edu_migrate.errors import MigrationError, PreconditionFailed, StillWritable
from edu_migrate.mapping import LegacyMapping
from edu_migrate.pg.connect import connect
from edu_migrate.pg.freeze import set_frozen
from edu_migrate.pg.urls import database_name
from edu_migrate.pg.writers import require_no_writers, require_not_overridden, settle_writers
from edu_migrate.phases import carry_back
from edu_migrate.phases.sync import SyncResult
from edu_migrate.runlog import Reporter

# Rows the applications create on edu_v2 after the cutover get legacy ids above every id the
# frozen source holds (the mirror is the source as the last sync read it), and above any id
# migrated, set aside or created before.
_RESERVE_LEGACY_IDS = """
SELECT setval(format('migration.legacy_ids_%%s', %(t)s::text)::regclass, greatest(
    (SELECT max(id) FROM {stage}),
    (SELECT max(source_id) FROM migration.crosswalk WHERE source_table = %(t)s::text),
    (SELECT max(source_id) FROM migration.rejected_rows WHERE source_table = %(t)s::text),
    (SELECT max(source_id) FROM migration.created_rows WHERE source_table = %(t)s::text), 1))
"""


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
    # Before the freeze: make sure a full validation's baseline is there for the window's
    # incremental validation (checks/incremental.py).
    baseline: Callable[[Reporter], None] = lambda reporter: None


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
    steps.baseline(reporter)
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
        _record(source_url, target_url, result, reporter)
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


def _record(source_url: str, target_url: str, result: CutoverResult,
            reporter: Reporter) -> None:
    # edu's comment before the deprecation mark, recorded with the cutover: a fallback puts it
    # back (aftercare/deprecation.py).
    before = deprecation.database_comment(source_url)
    with connect(target_url, purpose="target") as conn:
        detail = {key: value for key, value in result.to_dict().items()
                  if key != "rounds"} | {"rounds": len(result.rounds), "edu_comment": before}
        conn.execute("INSERT INTO migration.run_log (event, detail) VALUES ('cutover', %s)",
                     [Jsonb(detail)])
        for (table,) in conn.execute("SELECT source_table FROM migration.legacy_tables"
                                     ).fetchall():
            conn.execute(sql.SQL(_RESERVE_LEGACY_IDS).format(
                stage=sql.Identifier("stage", table)), {"t": table})
        record_direction(conn, EDU_V2, "cutover", detail)
        row = conn.execute("SELECT at FROM migration.system_of_record ORDER BY id DESC LIMIT 1"
                           ).fetchone()
        conn.commit()
    assert row is not None
    # Dated with the cutover's recorded time; never fails the cutover, which has succeeded.
    deprecation.mark_deprecated(source_url, row[0], database_name(target_url), reporter)


@dataclass
class FallbackResult:
    """What a fallback carried back, and its window."""
    rounds: list[Round] = field(default_factory=list)
    frozen_at: datetime | None = None
    writers_waited_seconds: float = 0.0
    writers_terminated: int = 0
    final_rows: int = 0
    applied: dict[str, dict[str, int]] = field(default_factory=dict)
    losses: dict[str, dict[str, Any]] = field(default_factory=dict)
    password_resets: list[str] = field(default_factory=list)
    window_seconds: float = 0.0
    nothing_to_do: bool = False

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["frozen_at"] = self.frozen_at.isoformat() if self.frozen_at else None
        return data


@dataclass(frozen=True)
class FallbackSteps:
    """What a fallback asks of the API: whether edu changed since the cutover (per table)."""
    edu_changes: Callable[[], dict[str, int]]
    mapping: LegacyMapping


def fallback(source_url: str, target_url: str, steps: FallbackSteps, reporter: Reporter, *,
             max_rounds: int, settle_rows: int, writer_timeout: float,
             terminate_writers: bool) -> FallbackResult:
    """The guide's "switch back to old database", losing nothing: carry back what the
    applications wrote on edu_v2 in rounds while they still write, freeze edu_v2, carry back the
    last delta, write edu in one transaction, then unfreeze edu. On any failure edu is left as it
    was and edu_v2 is unfrozen: the applications stay on edu_v2."""
    result = FallbackResult()
    with connect(target_url, purpose="target") as conn:
        state = current_direction(conn)
        if state.event == "fallback":
            reporter.line("Nothing to carry back: edu is the system of record since the fallback "
                          f"of {state.since.isoformat(timespec='seconds') if state.since else '?'}")
            result.nothing_to_do = True
            return result
        state = require_cut_over(conn)
    changed = steps.edu_changes()
    if changed:
        shown = ", ".join(f"{table} {count:,}" for table, count in changed.items())
        raise PreconditionFailed(
            f"edu was written after the cutover ({shown} rows): a fallback would mix those "
            "writes with edu_v2's",
            "find what wrote edu while it was frozen and reconcile by hand (or restore edu from "
            "the cutover's backup); nothing was changed")
    require_not_overridden(target_url, purpose="target")
    carry_back.start(target_url)
    since: int | None = None
    previous: int | None = None
    for number in range(1, max_rounds + 1):
        carried = carry_back.carry_round(target_url, state.audit_mark, since, Reporter())
        since = carried.horizon
        result.rounds.append(Round(carried.keys, carried.seconds))
        reporter.line(f"Round {number}: {carried.keys:,} rows written on edu_v2 derived into "
                      f"legacy rows in {carried.seconds:.1f}s")
        if carried.keys <= settle_rows or (previous is not None and carried.keys >= previous):
            break
        previous = carried.keys
    frozen = time.perf_counter()
    set_frozen(target_url, True)
    result.frozen_at = _server_now(target_url)
    reporter.line(f"Froze edu_v2 at {result.frozen_at.isoformat()}: the window starts")
    try:
        settled = settle_writers(target_url, result.frozen_at, reporter, timeout=writer_timeout,
                                 terminate=terminate_writers, purpose="target")
        result.writers_waited_seconds = settled.waited_seconds
        result.writers_terminated = settled.terminated
        last = carry_back.carry_round(target_url, state.audit_mark, since, Reporter())
        result.final_rows = last.keys
        # The same tests as the cutover's, once more: no writer left, and no row written after
        # the last round's snapshot (a write that got past the freeze is named, never lost).
        result.writers_terminated += require_no_writers(
            target_url, reporter, terminate=terminate_writers, purpose="target")
        check = carry_back.carry_round(target_url, state.audit_mark, last.horizon, Reporter())
        if check.keys:
            raise PreconditionFailed(
                f"{check.keys} rows were written on edu_v2 after its freeze",
                "find the session that turned read-only off, stop it, then run the fallback "
                "again")
        result.losses = carry_back.losses(target_url)
        result.password_resets = carry_back.password_resets(target_url)
        with connect(target_url, purpose="target") as conn:
            carry_back.writable(conn)
            applied = carry_back.apply_images(source_url, target_url, steps.mapping,
                                                 reporter)
            result.applied = applied.to_dict()
            result.window_seconds = round(time.perf_counter() - frozen, 2)
            carry_back.record_carried(conn)
            record_direction(conn, EDU, "fallback", {
                key: value for key, value in result.to_dict().items()
                if key not in ("rounds", "password_resets")} | {"rounds": len(result.rounds)})
            conn.commit()
    except (MigrationError, psycopg.Error) as exc:
        set_frozen(target_url, False)
        cause = exc.message if isinstance(exc, MigrationError) else str(exc).strip()
        raise MigrationError(
            "fallback aborted, edu is as it was, edu_v2 is writable again and the applications "
            f"stay on edu_v2: {cause.splitlines()[0] if cause else type(exc).__name__}",
            "fix the cause, then run `edu-migrate fallback` again") from exc
    set_frozen(source_url, False)
    deprecation.unmark(source_url, target_url, reporter)
    total = sum(sum(counts.values()) for counts in result.applied.values())
    reporter.line(f"Fallback window: {result.window_seconds:.1f}s from edu_v2's freeze to edu "
                  f"written ({total:,} legacy rows). edu is writable and the system of record "
                  "again; edu_v2 stays read-only: point the applications at edu.")
    for column, loss in result.losses.items():
        reporter.warn(f"edu cannot hold {loss['count']:,} values of {column}: {loss['reason']}")
    return result
