"""One function per command. The CLI parses options, calls one of these and prints the result;
tests and scripts call them directly."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from edu_migrate import __version__, direction
from edu_migrate import backup as backups
from edu_migrate.aftercare import tune as tuning
from edu_migrate.aftercare.compare import CompareReport
from edu_migrate.aftercare.compare import compare_queries as time_both
from edu_migrate.aftercare.datadocs import DocsResult, write_docs
from edu_migrate.aftercare.decommission import DecommissionResult, record_cutover
from edu_migrate.aftercare.decommission import decommission as retire
from edu_migrate.aftercare.health import HealthReport, check_health
from edu_migrate.aftercare.monitoring import MonitoringSetup, write_setup
from edu_migrate.aftercare.pgbadger import (
    BadgerReport,
    LoggingReport,
    advise_logging,
    apply_logging,
    render_report,
)
from edu_migrate.aftercare.schedule import (
    BackupSchedule,
    install_cron,
    install_systemd,
    list_backups,
    plan_schedule,
)
from edu_migrate.aftercare.tune import TuneReport
from edu_migrate.checks import dashboards
from edu_migrate.checks.anomalies import Finding, find_anomalies
from edu_migrate.checks.endpoints import ROLES, Account, CutoverReport, demo_accounts, run_checks
from edu_migrate.checks.incremental import stale as baseline_stale
from edu_migrate.checks.incremental import validate_incremental
from edu_migrate.checks.preflight import (
    MINIMUM_SERVER_VERSION,
    WARN,
    PreflightReport,
    run_preflight,
)
from edu_migrate.checks.validation import SourceFacts, ValidationReport, source_facts
from edu_migrate.checks.validation import validate as run_validation
from edu_migrate.config import Settings
from edu_migrate.errors import (
    ConnectionFailed,
    MigrationError,
    PreconditionFailed,
    ValidationFailed,
)
from edu_migrate.mapping import LegacyMapping, load_mapping
from edu_migrate.mapping.draft import Draft, draft_mapping
from edu_migrate.mapping.fit import ColumnSamples, samples, verify
from edu_migrate.pg.connect import connect, create_database_if_missing
from edu_migrate.pg.embedded import EmbeddedServer, ServerStatus
from edu_migrate.pg.freeze import set_frozen
from edu_migrate.pg.locks import lock_holder, migration_lock
from edu_migrate.pg.urls import masked, redacted
from edu_migrate.phases.archive import (
    ARCHIVE_SCHEMA,
    ArchiveResult,
    TableEntry,
    archive_unmapped,
    archived_counts,
    last_archive,
    masked_columns,
    source_inventory,
)
from edu_migrate.phases.as_of import clear_as_of, parse_as_of, recorded_as_of, settle_as_of
from edu_migrate.phases.feed import DEFAULT_SLOT, FeedStatus, start_feed, stop_feed
from edu_migrate.phases.feed import feed_status as read_feed_status
from edu_migrate.phases.marks import MarksAhead
from edu_migrate.phases.offline import offline_script
from edu_migrate.phases.runner import (
    PHASES,
    RUN_ORDER,
    SCOPED_PHASE,
    PhaseResult,
    phase_states,
    rollback_phases,
    run_phase,
)
from edu_migrate.phases.staging import SourceSnapshot, require_legacy_tables
from edu_migrate.phases.sync import SyncResult, last_sync, unsynced_changes
from edu_migrate.phases.sync import sync as run_sync
from edu_migrate.runlog import Reporter
from edu_migrate.schema import (
    SchemaResult,
    applied_version,
    apply_schema,
    require_schema,
    schema_script,
)
from edu_migrate.switchover import CutoverResult, FallbackResult, FallbackSteps, Steps
from edu_migrate.switchover import cutover as run_cutover
from edu_migrate.switchover import fallback as run_fallback

if TYPE_CHECKING:
    from edu_migrate.report import ReportData

log = logging.getLogger("edu_migrate")


@dataclass(frozen=True)
class Endpoints:
    source_url: str
    target_url: str
    embedded: bool

    def describe(self) -> dict[str, str]:
        return {"source": masked(self.source_url), "target": masked(self.target_url)}


def embedded_server(settings: Settings) -> EmbeddedServer:
    return EmbeddedServer(settings.home)


def endpoints(settings: Settings) -> Endpoints:
    """The URLs given, or the embedded server's edu and edu_v2 (started when needed)."""
    if settings.source_url and settings.target_url:
        return Endpoints(settings.source_url, settings.target_url, False)
    status = embedded_server(settings).start()
    return Endpoints(settings.source_url or status.url("edu"),
                     settings.target_url or status.url("edu_v2"), True)


def target_url(settings: Settings) -> str:
    """The target URL given, or the embedded edu_v2: commands that need only the target do not
    start the embedded server when the target is elsewhere."""
    return settings.target_url or endpoints(settings).target_url


def source_url(settings: Settings) -> str:
    return settings.source_url or endpoints(settings).source_url


def db_start(settings: Settings) -> ServerStatus:
    return embedded_server(settings).start()


def db_stop(settings: Settings) -> ServerStatus:
    return embedded_server(settings).stop()


def db_status(settings: Settings) -> ServerStatus:
    return embedded_server(settings).status()


def db_url(settings: Settings, database: str) -> str:
    status = embedded_server(settings).status()
    if not status.running:
        raise PreconditionFailed("the embedded server is not running", "run `edu-migrate db start`")
    return status.url(database)


def generate(settings: Settings, *, scale: float = 1.0, profile: str = "clean", seed: int = 42,
             reporter: Reporter | None = None) -> Any:
    """(Re)create the legacy tables in the source database, filled with generated data."""
    from edu_migrate.legacy.generator import generate as fill

    reporter = reporter or Reporter()
    if scale <= 0:
        raise MigrationError(f"--scale must be positive, got {scale}", "try --scale 0.1 or 1")
    if profile not in ("clean", "dirty"):
        raise MigrationError(f"unknown profile {profile!r}", "use --profile clean or dirty")
    urls = endpoints(settings)
    create_database_if_missing(urls.source_url, purpose="source")
    with connect(urls.source_url, purpose="source") as conn:
        def progress(table: str, rows: int) -> None:
            reporter.line(f"  {table}: {rows:,} rows")
        summary = fill(conn, scale=scale, profile=profile, seed=seed, progress=progress)
        conn.commit()
    if summary.dirt:
        manifest = dirt_manifest_path(settings, seed)
        manifest.parent.mkdir(parents=True, exist_ok=True)
        manifest.write_text(json.dumps(
            {"seed": seed, "scale": scale, "kinds": [d.to_dict() for d in summary.dirt]},
            indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        reporter.line(f"  dirt: {sum(len(d.ids) for d in summary.dirt):,} rows of "
                      f"{len(summary.dirt)} kinds; manifest {manifest}")
    return summary


def dirt_manifest_path(settings: Settings, seed: int) -> Path:
    """Where `generate --profile dirty` writes what it injected (kind, table, rule, ids)."""
    return settings.log_dir / f"dirt_manifest_{seed}.json"


def schema_apply(settings: Settings) -> SchemaResult:
    return apply_schema(target_url(settings))


def schema_sql() -> str:
    """The whole edu_v2 schema as one psql script (the guide's new_database_schema.sql); needs
    no database."""
    return schema_script()


@dataclass
class MigrateResult:
    phases: list[PhaseResult] = field(default_factory=list)
    seconds: float = 0.0
    archive: ArchiveResult | None = None
    as_of: datetime | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"seconds": round(self.seconds, 2), "phases": [asdict(p) for p in self.phases],
                "archive": asdict(self.archive) if self.archive else None,
                "as_of": self.as_of.isoformat() if self.as_of else None}


def _parse_phases(phases: Sequence[int] | None) -> list[int]:
    if phases is None:
        return list(RUN_ORDER)
    unknown = [n for n in phases if n not in PHASES]
    if unknown:
        raise MigrationError(f"unknown phase {unknown[0]}",
                             "phases are 1 to 5 (6 is `edu-migrate validate`)")
    return [n for n in RUN_ORDER if n in phases]


def _preflight_for_migration(urls: Endpoints, snapshot: SourceSnapshot) -> None:
    source_version = snapshot.conn.info.server_version
    if source_version < MINIMUM_SERVER_VERSION:
        raise PreconditionFailed(
            f"the source server is PostgreSQL {source_version // 10000}; 15 or newer is needed",
            "upgrade the server")
    require_legacy_tables(snapshot.conn, mapping=snapshot.mapping)
    with connect(urls.target_url, purpose="target") as target:
        if target.info.server_version < MINIMUM_SERVER_VERSION:
            raise PreconditionFailed(
                f"the target server is PostgreSQL {target.info.server_version // 10000}; "
                "15 or newer is needed", "upgrade the server")
        require_schema(target)


def legacy_mapping(settings: Settings) -> LegacyMapping:
    """The mapping of the legacy tables onto the source's own: --mapping / EDU_MAPPING, else
    [mapping] of edu-migrate.toml, else the names of legacy-edu.md."""
    return load_mapping(settings.mapping_file, settings.mapping)


@contextmanager
def _source_snapshot(source_url: str, mapping: LegacyMapping) -> Iterator[SourceSnapshot]:
    snapshot = SourceSnapshot(source_url, mapping)
    try:
        yield snapshot
    finally:
        snapshot.close()


def preflight(settings: Settings) -> PreflightReport:
    """The guide's pre-migration checklist: ✓/✗/! per item."""
    mapping = legacy_mapping(settings)
    urls = endpoints(settings)
    return run_preflight(urls.source_url, urls.target_url, settings.backup_dir, mapping)


def _require_preflight(urls: Endpoints, settings: Settings, reporter: Reporter,
                       force: bool) -> list[str]:
    """Warn about each '!' finding; refuse on the first '✗' unless forced. Returns the
    overridden findings' lines."""
    report = run_preflight(urls.source_url, urls.target_url, settings.backup_dir,
                           legacy_mapping(settings))
    for finding in report.findings:
        if finding.status == WARN:
            reporter.warn(f"{finding.name}: {finding.detail}")
    blocking = report.blocking
    if blocking and not force:
        first = blocking[0]
        cause = first.cause or PreconditionFailed(f"{first.name}: {first.detail}")
        if len(blocking) > 1:
            raise type(cause)(f"{cause.message} (and {len(blocking) - 1} more failed checks)",
                              "see `edu-migrate preflight`")
        raise cause
    for finding in blocking:
        log.warning("preflight overridden by --force: %s", finding.line())
        reporter.warn(f"--force: starting although a preflight check failed: {finding.line()}")
    return [finding.line() for finding in blocking]


def _log_override(target_url: str, overridden: list[str]) -> None:
    with connect(target_url, purpose="target") as conn:
        conn.execute("INSERT INTO migration.run_log (event, detail) "
                     "VALUES ('preflight overridden', %s)", [Jsonb({"findings": overridden})])
        conn.commit()


def migrate(settings: Settings, phases: Sequence[int] | None = None,
            reporter: Reporter | None = None, *, force: bool = False,
            freeze_source: bool = False, as_of: datetime | str | None = None,
            override_cutover: bool = False) -> MigrateResult:
    """Run the given phases (all when None) in dependency order, under one source snapshot,
    once the preflight's blocking checks pass (or `force`). `as_of` (a datetime, or ISO 8601
    text, Baku time without an offset) is the run's "now"; by default the one recorded by an
    earlier phase, else the source snapshot's time (phases/as_of.py)."""
    reporter = reporter or Reporter()
    numbers = _parse_phases(phases)
    requested_as_of = parse_as_of(as_of) if isinstance(as_of, str) else as_of
    mapping = legacy_mapping(settings)
    urls = endpoints(settings)
    _require_forward(urls.target_url, "migrate", override_cutover, reporter)
    overridden = _require_preflight(urls, settings, reporter, force)
    if freeze_source:
        name = set_frozen(urls.source_url, True)
        reporter.line(f"Froze the source database {name}: new sessions are read-only until "
                      "`edu-migrate unfreeze-source`")
    result = MigrateResult()
    started = time.perf_counter()
    with _source_snapshot(urls.source_url, mapping) as snapshot:
        _preflight_for_migration(urls, snapshot)
        with migration_lock(urls.target_url):
            if overridden:
                _log_override(urls.target_url, overridden)
            with connect(urls.target_url, purpose="target") as conn:
                result.as_of = settle_as_of(conn, requested_as_of, snapshot.taken_at)
                states = phase_states(conn)
            reporter.line(f"As of {result.as_of.isoformat()} (migration.state.as_of)")
            ahead = _marks_ahead(numbers, states, snapshot, urls.target_url, settings, reporter)
            try:
                for number in numbers:
                    result.phases.append(run_phase(
                        PHASES[number], snapshot, urls.target_url,
                        batch_size=settings.batch_size, workers=settings.workers,
                        reporter=reporter, ahead=ahead))
            finally:
                if ahead is not None:
                    ahead.finish()
            result.archive = _archive_once_all_done(snapshot, urls.target_url, settings,
                                                    reporter)
    result.seconds = time.perf_counter() - started
    return result


def migrate_sql(settings: Settings, phases: Sequence[int] | None = None, *,
                as_of: datetime | str | None = None) -> str:
    """The statements `migrate` would send to edu_v2 for the given phases (all when None), in
    order, with the as-of time filled in, as a psql script to review (alembic's offline mode).
    Reads the target in a read-only session; never opens the source; changes nothing."""
    numbers = _parse_phases(phases)
    requested_as_of = parse_as_of(as_of) if isinstance(as_of, str) else as_of
    mapping = legacy_mapping(settings)
    with connect(target_url(settings), purpose="target", read_only=True) as conn:
        script = offline_script(conn, numbers, mapping, requested_as_of=requested_as_of,
                                workers=settings.workers)
        conn.rollback()
    return script


def _marks_ahead(numbers: list[int], states: dict[int, str], snapshot: SourceSnapshot,
                 target_url: str, settings: Settings, reporter: Reporter) -> MarksAhead | None:
    """While phases 1–4 run, phase 5's marks are staged and parsed on the other core; only when
    this run has phases to run before phase 5 (alone, phase 5 does that work itself)."""
    pending = [n for n in numbers if states.get(n) != "done"]
    if SCOPED_PHASE not in pending or pending[0] == SCOPED_PHASE:
        return None
    reporter.line(f"Staging and parsing phase {SCOPED_PHASE}'s marks in the background")
    return MarksAhead(snapshot, target_url, PHASES[SCOPED_PHASE].reads,
                      batch_size=settings.batch_size, workers=settings.workers)


def _archive_once_all_done(snapshot: SourceSnapshot, target_url: str, settings: Settings,
                           reporter: Reporter) -> ArchiveResult | None:
    """The unmapped tables are archived by the `migrate` command that leaves every phase done,
    whether it ran them all (`--all`) or the last one (`--phase N`): both ways end the same."""
    with connect(target_url, purpose="target") as conn:
        states = phase_states(conn)
    waiting = [n for n in RUN_ORDER if states.get(n) != "done"]
    if waiting:
        reporter.line(f"Unmapped tables are archived once every phase is done (phase "
                      f"{', '.join(map(str, waiting))} still to run)")
        return None
    return archive_unmapped(snapshot, target_url, settings.exclude, reporter,
                            keep_secrets=settings.archive_secrets)


def sync(settings: Settings, reporter: Reporter | None = None, *,
         as_of: datetime | str | None = None, override_cutover: bool = False) -> SyncResult:
    """Bring a migrated edu_v2 up to date with the source as it is now (the catch-up): the rows
    inserted, changed and deleted since the last migrate or sync, through the phases' own rules,
    in one transaction. `as_of` defaults to the new snapshot's time."""
    reporter = reporter or Reporter()
    urls = endpoints(settings)
    _require_forward(urls.target_url, "sync", override_cutover, reporter)
    with _source_snapshot(urls.source_url, legacy_mapping(settings)) as snapshot:
        _preflight_for_migration(urls, snapshot)
        with migration_lock(urls.target_url):
            result = run_sync(snapshot, urls.target_url,
                              as_of=parse_as_of(as_of) if isinstance(as_of, str) else as_of,
                              batch_size=settings.batch_size, reporter=reporter)
            with connect(urls.target_url, purpose="target") as target:
                archived_before = last_archive(target) is not None
            if archived_before:  # the unmapped tables the source changed, archived again
                archive_unmapped(snapshot, urls.target_url, settings.exclude, Reporter(),
                                 keep_secrets=settings.archive_secrets, skip_unchanged=True)
    reporter.line(f"Synced {result.changed_rows} changed legacy rows "
                  f"({', '.join(f'{t} {c.total}' for t, c in result.changes.items() if c.total)}"
                  f"{'' if result.changed_rows else 'none'}) as of {result.as_of.isoformat()} "
                  f"in {result.seconds:.1f}s")
    return result


def cutover(settings: Settings, reporter: Reporter | None = None, *,
            as_of: datetime | str | None = None, max_rounds: int = 5, settle_rows: int = 1000,
            writer_timeout: float = 60.0, terminate_writers: bool = False,
            override_cutover: bool = False) -> CutoverResult:
    """The guided downtime window: sync while the delta shrinks, freeze the source, wait for the
    sessions opened before the freeze (or end them), sync the last delta, validate. On any
    failure the source is unfrozen. Its success makes edu_v2 the system of record."""
    reporter = reporter or Reporter()
    urls = endpoints(settings)
    _require_forward(urls.target_url, "cutover", override_cutover, reporter)
    fixed = parse_as_of(as_of) if isinstance(as_of, str) else as_of
    result = run_cutover(urls.source_url, urls.target_url, cutover_steps(settings), reporter,
                         as_of=fixed,
                         max_rounds=max_rounds, settle_rows=settle_rows,
                         writer_timeout=writer_timeout, terminate_writers=terminate_writers)
    # edu_v2 is the system of record now: nothing syncs from edu any more, and a slot left on
    # it would keep its WAL without end.
    try:
        dropped = stop_feed(urls.source_url, urls.target_url, None)
    except (MigrationError, psycopg.Error) as exc:
        reporter.warn(f"the change feed's slot could not be dropped on the source "
                      f"({str(exc).strip().splitlines()[0]}): it keeps the source's WAL; drop it "
                      "with `edu-migrate feed stop`")
        return result
    if dropped:
        reporter.line(f"Dropped the change feed's slot {dropped} on the source")
    return result


def _require_forward(target_url: str, command: str, override: bool, reporter: Reporter) -> None:
    """Refuse to write edu_v2 from edu while edu_v2 is the system of record (direction.py); after
    a fallback, make edu_v2 writable again for the forward run."""
    try:
        with connect(target_url, purpose="target") as conn:
            handed_back = direction.require_forward(conn, command, override=override)
    except ConnectionFailed:
        return  # a target not created yet has no direction: the command says what it lacks
    if override:
        reporter.warn(f"--override-cutover: `{command}` writes edu_v2 from edu although edu_v2 "
                      "was the system of record (recorded in migration.system_of_record)")
    if handed_back:
        set_frozen(target_url, False)
        reporter.line("edu_v2 was read-only since the fallback: writable again for this run")


def fallback(settings: Settings, reporter: Reporter | None = None, *, max_rounds: int = 5,
             settle_rows: int = 1000, writer_timeout: float = 60.0,
             terminate_writers: bool = False) -> FallbackResult:
    """The guide's "switch back to old database" without losing a write: carry back into edu
    what the applications wrote on edu_v2 since the cutover, in rounds, then in a window with
    edu_v2 frozen; edu becomes the system of record again. Writes edu's business tables."""
    reporter = reporter or Reporter()
    urls = endpoints(settings)
    mapping = legacy_mapping(settings)

    def edu_changes() -> dict[str, int]:
        with _source_snapshot(urls.source_url, mapping) as snapshot:
            return {table: changes.total for table, changes in unsynced_changes(
                snapshot, urls.target_url, batch_size=settings.batch_size).items()}

    with connect(urls.target_url, purpose="target") as conn:
        require_schema(conn)
    with migration_lock(urls.target_url):
        return run_fallback(urls.source_url, urls.target_url, FallbackSteps(edu_changes, mapping),
                            reporter, max_rounds=max_rounds, settle_rows=settle_rows,
                            writer_timeout=writer_timeout, terminate_writers=terminate_writers)


def feed_start(settings: Settings, slot: str = DEFAULT_SLOT) -> FeedStatus:
    """Start the opt-in change feed: create a logical replication slot (test_decoding) on the
    source, and record it in the target (applying its schema first). Syncs then read the rows
    it names by id instead of scanning the tables. Writes the source's catalog: one slot."""
    urls = endpoints(settings)
    apply_schema(urls.target_url)
    with migration_lock(urls.target_url):
        return start_feed(urls.source_url, urls.target_url, slot, legacy_mapping(settings))


def feed_status(settings: Settings) -> FeedStatus:
    """The change feed: its slot, where the target left it, the WAL it keeps on the source."""
    urls = endpoints(settings)
    with connect(urls.target_url, purpose="target") as conn:
        require_schema(conn)
    return read_feed_status(urls.source_url, urls.target_url)


def feed_stop(settings: Settings, slot: str | None = None) -> str | None:
    """Drop the change feed's slot from the source (the recorded one, or `slot`) and its record
    from the target; syncs scan the tables again. The slot's name, or None if there was none."""
    urls = endpoints(settings)
    with connect(urls.target_url, purpose="target") as conn:
        require_schema(conn)
    with migration_lock(urls.target_url):
        return stop_feed(urls.source_url, urls.target_url, slot)


def cutover_steps(settings: Settings) -> Steps:
    """What the cutover window calls, bound to `settings` (a test wraps one to act at a precise
    moment of the window)."""
    return Steps(sync=lambda moment: sync(settings, Reporter(), as_of=moment),
                 source_facts=lambda: validation_facts(settings),
                 validate=lambda facts: require_valid(validate_in_window(settings, Reporter(),
                                                                         facts=facts)),
                 unsynced=lambda: unsynced_tables(settings),
                 baseline=lambda reporter: validation_baseline(settings, reporter))


def unsynced_tables(settings: Settings) -> dict[str, int]:
    """The source's mapped tables written since the last sync's snapshot (by the names reports
    give them), with their changed rows: what a sync now would apply. Nothing is applied."""
    urls = endpoints(settings)
    with _source_snapshot(urls.source_url, legacy_mapping(settings)) as snapshot, \
            migration_lock(urls.target_url):
        return {snapshot.mapping[table].source_name: changes.total
                for table, changes in unsynced_changes(
                    snapshot, urls.target_url, batch_size=settings.batch_size).items()}


def validation_facts(settings: Settings) -> SourceFacts:
    """What validation reads of the source, from a snapshot of its own: a cutover computes
    it while the last sync runs, the source being frozen."""
    with _source_snapshot(endpoints(settings).source_url, legacy_mapping(settings)) as snapshot:
        return source_facts(snapshot, settings.exclude)


def validate(settings: Settings, reporter: Reporter | None = None, *,
             facts: SourceFacts | None = None, baseline: bool = True) -> ValidationReport:
    """The guide's Phase 6. Raises ValidationFailed (after reporting) when a check fails.
    `facts`: the source's side, already read (validation_facts) from a source that has not
    changed since. `baseline`: keep what the cutover's window validates against
    (checks/incremental.py), unless the target is read-only or already the system of record."""
    reporter = reporter or Reporter()
    mapping = legacy_mapping(settings)
    urls = endpoints(settings)
    with _source_snapshot(urls.source_url, mapping) as snapshot, \
            connect(urls.target_url, purpose="target") as target:
        require_schema(target)
        report = run_validation(
            snapshot, target, settings.exclude, facts,
            second_target=lambda: connect(urls.target_url, purpose="target"),
            baseline=baseline)
        target.rollback()
    _print_validation(reporter, report, mapping)
    return report


def validate_in_window(settings: Settings, reporter: Reporter | None = None, *,
                       facts: SourceFacts | None = None) -> ValidationReport:
    """The cutover window's validation: what was written since the last full validation's
    baseline, added to it (the same checks and numbers as `validate`), or the full validation
    when that baseline cannot be trusted. Recorded in migration.run_log (event `validation`)."""
    reporter = reporter or Reporter()
    mapping = legacy_mapping(settings)
    urls = endpoints(settings)
    started = time.perf_counter()
    with _source_snapshot(urls.source_url, mapping) as snapshot, \
            connect(urls.target_url, purpose="target") as target:
        require_schema(target)
        report = validate_incremental(
            snapshot, target, settings.exclude, facts,
            second_target=lambda: connect(urls.target_url, purpose="target"))
        target.rollback()
        target.execute("INSERT INTO migration.run_log (event, detail) VALUES ('validation', %s)",
                       [Jsonb({"window": True, "method": report.method,
                               "fallback": report.fallback, "passed": report.passed,
                               "recomputed": report.recomputed,
                               "seconds": round(time.perf_counter() - started, 2)})])
        target.commit()
    if report.fallback:
        reporter.warn(f"validated in full, not incrementally: {report.fallback}")
    _print_validation(reporter, report, mapping)
    return report


def validation_baseline(settings: Settings, reporter: Reporter) -> None:
    """Before the cutover's freeze: a full validation to keep as the window's baseline, unless
    the stored one is usable and little was written since. Its verdict decides nothing here:
    the window's validation does."""
    urls = endpoints(settings)
    with connect(urls.target_url, purpose="target") as target:
        reason = baseline_stale(target)
        target.rollback()
    if reason is None:
        reporter.line("The last full validation's baseline holds: the window validates what "
                      "was written since")
        return
    started = time.perf_counter()
    validate(settings, Reporter(), baseline=True)
    reporter.line(f"Full validation before the freeze, as the window's baseline ({reason}), in "
                  f"{time.perf_counter() - started:.1f}s")


def _print_validation(reporter: Reporter, report: ValidationReport,
                      mapping: LegacyMapping) -> None:
    reporter.line("=" * 60)
    reporter.line("VALIDATION RESULTS" + (" (incremental)" if report.method == "incremental"
                                          else ""))
    reporter.line("=" * 60)
    renamed = {legacy: source for legacy, source in report.source_tables.items()
               if legacy != source}
    if renamed:
        reporter.line("Legacy tables read from the source's own (" + mapping.origin + "): "
                      + ", ".join(f"{legacy} ← {source}" for legacy, source in renamed.items()))
    for check in report.checks:
        reporter.line(check.line())
    if report.dispositions:
        reporter.line("Repaired, merged and set aside, by rule (migration.repairs, "
                      "migration.rejected_rows):")
        for disposition in report.dispositions:
            reporter.line(disposition.line())


def inventory(settings: Settings) -> list[TableEntry]:
    """Every table of the source with its rows and whether it is mapped, archived or excluded;
    for archived tables, the rows the target's legacy_archive holds (None before archiving)."""
    mapping = legacy_mapping(settings)
    urls = endpoints(settings)
    archived: dict[str, int] = {}
    recorded: dict[str, Any] | None = None
    try:
        with connect(urls.target_url, purpose="target") as target:
            archived = archived_counts(target)
            recorded = last_archive(target) if applied_version(target) else None
    except MigrationError:
        pass  # no target yet: the inventory is the source's alone
    with _source_snapshot(urls.source_url, mapping) as snapshot:
        entries = source_inventory(snapshot.conn, settings.exclude, mapping)
        masked = masked_columns(snapshot.conn, recorded, entries,
                                keep_secrets=settings.archive_secrets)
    return [replace(e, archived_rows=archived.get(e.archive_name),
                    masked=masked.get(e.table, ())) for e in entries]


def anomalies(settings: Settings) -> list[Finding]:
    """The anomalies of the source, per kind a count, sample ids and the migration's rule.
    Reads the source only, in one read-only transaction."""
    mapping = legacy_mapping(settings)
    urls = endpoints(settings)
    with connect(urls.source_url, purpose="source", read_only=True) as source:
        source.rollback()
        source.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        require_legacy_tables(source, mapping=mapping)
        try:
            return find_anomalies(source, mapping)
        finally:
            source.rollback()


@dataclass
class MappingCheck:
    mapping: LegacyMapping
    samples: list[ColumnSamples]

    def to_dict(self) -> dict[str, Any]:
        return {"origin": self.mapping.origin, "mapping": self.mapping.to_dict(),
                "samples": [asdict(s) for s in self.samples]}


def mapping_check(settings: Settings) -> MappingCheck:
    """Check the legacy mapping against the source, as preflight does (names, expressions, every
    value's cast), in one read-only transaction; then a few values of each mapped column."""
    mapping = legacy_mapping(settings)
    with connect(source_url(settings), purpose="source", read_only=True) as source:
        source.rollback()
        source.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        try:
            verify(source, mapping)
            return MappingCheck(mapping, samples(source, mapping))
        finally:
            source.rollback()


def mapping_draft(settings: Settings, out: Path | None = None) -> Draft:
    """Propose a mapping from the source's catalogue; written whole to `out` when given."""
    if out is not None and not out.resolve().parent.is_dir():
        raise MigrationError(f"cannot write {out}: its folder does not exist",
                             "create the folder or choose another path")
    with connect(source_url(settings), purpose="source", read_only=True) as source:
        drafted = draft_mapping(source)
        source.rollback()
    if out is not None:
        _write_whole(out, drafted.render())
    return drafted


def require_valid(report: ValidationReport) -> None:
    failed = [c.name for c in report.checks if not c.passed]
    if failed:
        raise ValidationFailed(f"validation failed: {', '.join(failed)}",
                               "see the lines above and migration.rejected_rows")


def rollback(settings: Settings, phase: int | None, reporter: Reporter | None = None, *,
             override_cutover: bool = False) -> list[int]:
    reporter = reporter or Reporter()
    if phase is not None:
        _parse_phases([phase])
    target = target_url(settings)
    with connect(target, purpose="target") as conn:
        require_schema(conn)
    _require_forward(target, "rollback", override_cutover, reporter)
    with migration_lock(target):
        undone = rollback_phases(target, phase, reporter)
        if phase is None:
            with connect(target, purpose="target") as conn:
                conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(
                    sql.Identifier(ARCHIVE_SCHEMA)))
                # Nothing is migrated any more: the next run takes a new as-of time.
                clear_as_of(conn)
                conn.commit()
        return undone


INTERRUPTED = ("stopped without finishing (process killed or connection lost): "
               "run the same command again to resume")


def status(settings: Settings) -> dict[str, Any]:
    """Each phase's state, rows, start, end and last error. A phase marked running while no
    migration holds the target's lock was interrupted: its transaction left nothing behind."""
    target = target_url(settings)
    with connect(target, purpose="target") as conn:
        require_schema(conn)
        rows = conn.execute(
            "SELECT phase, status, started_at, finished_at, seconds, row_counts, last_error "
            "FROM migration.phase_runs").fetchall()
        states = phase_states(conn)
        holder = lock_holder(conn)
        as_of = recorded_as_of(conn)
        synced = last_sync(conn)
        way = direction.current(conn)
        written = direction.writes_since(conn, way.audit_mark) if way.cut_over else {}
        fell_back = direction.last_fallback(conn)
    by_phase = {int(r[0]): r for r in rows}
    phases = []
    for number in RUN_ORDER:
        row = by_phase.get(number)
        state = states.get(number, "pending")
        interrupted = state == "running" and holder is None
        phases.append({
            "phase": number, "title": PHASES[number].title.split(": ", 1)[1],
            "status": "interrupted" if interrupted else state,
            "started_at": row[2].isoformat() if row and row[2] else None,
            "finished_at": row[3].isoformat() if row and row[3] else None,
            "seconds": round(row[4], 2) if row and row[4] is not None else None,
            "rows": {k: v for k, v in (row[5] or {}).items() if k.startswith("migrate_")}
            if row else {},
            "last_error": INTERRUPTED if interrupted else (row[6] if row else None),
        })
    return {"version": __version__, "target": masked(target), "running_now": holder,
            "as_of": as_of.isoformat() if as_of else None, "phases": phases,
            "last_sync": synced,
            "direction": way.to_dict() | {"writes_since": written}, "last_fallback": fell_back}


def freeze_source(settings: Settings) -> str:
    """The guide's optional read-only source, for every new session; returns the database."""
    return set_frozen(source_url(settings), True)


def unfreeze_source(settings: Settings) -> str:
    return set_frozen(source_url(settings), False)


def backup(settings: Settings, *, verify_restore: bool = False,
           reporter: Reporter | None = None, only: str | None = None,
           keep_days: int | None = None, dump_format: str = "custom"
           ) -> list[backups.BackupRecord]:
    """pg_dump -Fc of the source, and of the target when it holds data, each verified; `only`
    one of them; with `keep_days`, older dumps of the same database are removed afterwards.
    `dump_format` plain also writes each as SQL (a .sql file beside the .dump)."""
    reporter = reporter or Reporter()
    if dump_format not in ("custom", "plain"):
        raise MigrationError(f"--format takes custom or plain, not {dump_format!r}",
                             "plain writes the SQL dump beside the -Fc one")
    if only not in (None, "source", "target"):
        raise MigrationError(f"--only takes source or target, not {only!r}",
                             "e.g. --only target for edu_v2 after the cutover")
    if keep_days is not None and keep_days < 1:
        raise MigrationError("--keep-days must be at least 1", "e.g. --keep-days 14")
    urls = endpoints(settings)
    made = backups.backup(urls.source_url, urls.target_url, settings.backup_dir,
                          verify_restore=verify_restore, reporter=reporter,
                          roles=(only,) if only else ("source", "target"),
                          plain=dump_format == "plain")
    if keep_days is not None:
        for record in made:
            backups.prune(settings.backup_dir, record, keep_days, reporter)
    return made


def restore_plan(settings: Settings, file: Path, into: str | None = None) -> backups.RestorePlan:
    """Which database a dump would replace: `into`, else the one it came from."""
    urls = endpoints(settings)
    return backups.plan_restore(file, settings.backup_dir, urls.source_url, urls.target_url,
                                into)


def restore(plan: backups.RestorePlan, reporter: Reporter | None = None) -> dict[str, int]:
    return backups.restore(plan, reporter or Reporter())


@dataclass
class DemoResult:
    generation_seconds: float
    schema_seconds: float
    migration: MigrateResult
    validation: ValidationReport
    validation_seconds: float
    row_counts: dict[str, int]


def demo(settings: Settings, *, scale: float = 1.0, seed: int = 42,
         reporter: Reporter | None = None) -> DemoResult:
    """On the embedded server: generate → schema → all phases → validate, from scratch."""
    reporter = reporter or Reporter()
    if settings.source_url or settings.target_url:
        raise MigrationError("the demo runs on the embedded server only",
                             "unset EDU_SOURCE_URL / EDU_TARGET_URL or drop --source/--target")
    status = db_start(settings)
    reporter.line(f"Embedded PostgreSQL {status.version} on port {status.port}")
    started = time.perf_counter()
    reporter.line(f"Generating the legacy database edu at scale {scale} …")
    summary = generate(settings, scale=scale, seed=seed, reporter=reporter)
    generated = time.perf_counter()
    _drop_database(status.url("postgres"), "edu_v2")
    schema_apply(settings)
    schema_done = time.perf_counter()
    migration = migrate(settings, reporter=reporter)
    validation_started = time.perf_counter()
    report = validate(settings, reporter=reporter)
    return DemoResult(generated - started, schema_done - generated, migration, report,
                      time.perf_counter() - validation_started, dict(summary.row_counts))


def report(settings: Settings, *, html: Path | None = None, md: Path | None = None) -> ReportData:
    """The sign-off report of the run on the target: validation, accounting, checksums, plots.
    Both files are rendered before either is written, and each is written whole or not at all."""
    from edu_migrate.report import collect, render_html, render_markdown, require_a_run

    for path in (html, md):
        if path is not None and not path.resolve().parent.is_dir():
            raise MigrationError(f"cannot write {path}: its folder does not exist",
                                 "create the folder or choose another path")
    mapping = legacy_mapping(settings)
    urls = endpoints(settings)
    with connect(urls.target_url, purpose="target") as target:
        schema_version = require_schema(target)
        require_a_run(target, masked(urls.target_url))
        with _source_snapshot(urls.source_url, mapping) as snapshot:
            require_legacy_tables(snapshot.conn, mapping=mapping,
                                  hint="point --source at the database the migration read")
            data = collect(snapshot, target, urls.target_url,
                           source_url_shown=masked(urls.source_url),
                           target_url_shown=masked(urls.target_url),
                           schema_version=schema_version, exclude=settings.exclude)
        target.rollback()
    rendered = [(path, render(data)) for path, render in ((html, render_html),
                                                          (md, render_markdown)) if path]
    for path, text in rendered:
        _write_whole(path, text)
    return data


def _write_whole(path: Path, text: str) -> None:
    partial = path.with_name(f".{path.name}.partial")
    try:
        partial.write_text(text, encoding="utf-8")
        partial.replace(path)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise MigrationError(f"cannot write {path}: {exc.strerror}",
                             "choose a writable path") from exc


def _drop_database(admin_url: str, name: str) -> None:
    from psycopg import sql

    with connect(admin_url, purpose="target server", autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
            sql.Identifier(name)))


LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1", "[::1]")


def served_hosts(host: str, extra: Sequence[str] = ()) -> list[str]:
    """The Host headers `serve` answers: the address it listens on (every loopback name when
    that is a loopback one) and the names given; any when it listens on every interface and
    no name is given."""
    if host in ("0.0.0.0", "::", "") and not extra:
        return ["*"]
    names = list(LOOPBACK_NAMES) if host in LOOPBACK_NAMES else [host]
    return names + [name for name in extra if name not in names]


def server_config(app: Any, *, host: str, port: int,
                  forwarded_allow_ips: Sequence[str] = ()) -> Any:
    """uvicorn's configuration of `serve`. X-Forwarded-For and X-Forwarded-Proto are believed
    only from the proxies named: uvicorn's default believes them from 127.0.0.1, and then any
    local client picks its own address for the per-client login limit."""
    import uvicorn

    return uvicorn.Config(app, host=host, port=port, log_level="info",
                          proxy_headers=bool(forwarded_allow_ips),
                          forwarded_allow_ips=list(forwarded_allow_ips) or "",
                          server_header=False)


def serve(settings: Settings, *, host: str = "127.0.0.1", port: int = 8000,
          reporter: Reporter | None = None, forwarded_allow_ips: Sequence[str] = (),
          allowed_hosts: Sequence[str] = ()) -> None:
    """The reference API over edu_v2, until interrupted. Requests and password checks run as
    two login roles of the API's own, created (or brought back in line) first; the target URL's
    user, the owner of edu_v2, serves nothing."""
    import socket

    import uvicorn

    from edu_migrate.web.app import create_app
    from edu_migrate.web.logins import prepare_api_logins

    reporter = reporter or Reporter()
    # edu_v2 alone: the embedded server is started only when it is edu_v2's
    url = target_url(settings)
    with connect(url, purpose="target") as conn:
        require_schema(conn)
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise MigrationError(f"cannot listen on {host}:{port}: {exc.strerror}",
                                 "choose another --port or --host") from exc
    logins = prepare_api_logins(url)
    reporter.line(f"Serving {masked(url)}: {logins.describe()}")
    if logins.open_elsewhere:
        reporter.line(f"! The API's logins may also connect to {', '.join(logins.open_elsewhere)}"
                      " on this server: serve as a superuser (who confines them to this "
                      "database), or REVOKE CONNECT ON DATABASE … FROM PUBLIC there")
    app = create_app(url, logins=logins,
                     allowed_hosts=served_hosts(host, allowed_hosts))
    config = server_config(app, host=host, port=port, forwarded_allow_ips=forwarded_allow_ips)
    uvicorn.Server(config).run()


def _account(role: str, credentials: str) -> Account:
    username, colon, password = credentials.partition(":")
    if not colon or not username or not password:
        raise MigrationError(f"--{role} takes USER:PASSWORD", f"e.g. --{role} 'jdoe:secret'")
    return Account(role, username, password)


def credentials_file(path: Path) -> dict[str, str]:
    """The USER:PASS of each role in a file of `role=USER:PASS` lines (# comments), which must
    be readable by its owner alone: the way to give cutover-check passwords without putting
    them on a command line, which every local user can read (`ps`, /proc/<pid>/cmdline)."""
    try:
        info = path.stat()
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise MigrationError(f"cannot read the credentials file {path}: {exc.strerror}",
                             "give a file of role=USER:PASS lines") from exc
    if info.st_mode & 0o077:
        raise PreconditionFailed(
            f"the credentials file {path} may be read by others (mode {info.st_mode & 0o777:o})",
            f"chmod 600 {path}")
    found: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        role, equals, value = line.partition("=")
        if not equals or role.strip() not in ROLES:
            # The line is not quoted: it may hold a password.
            raise MigrationError(f"line {number} of {path} is not role=USER:PASS",
                                 f"role is one of {', '.join(ROLES)}")
        found[role.strip()] = value.strip()
    return found


def cutover_check(settings: Settings, api_url: str, credentials: dict[str, str | None],
                  reporter: Reporter | None = None, *, browser: bool = False,
                  pages: Sequence[str] = (), screenshots: Path | None = None,
                  credentials_path: Path | None = None) -> CutoverReport:
    """The guide's Phase 7 against the API at `api_url`. Each role signs in with the
    credentials given (an option or its environment variable), else those of the
    `credentials_path` file, else an account of the migrated demo data (the generator knows
    its password). The URLs are shown and recorded without their passwords.

    With `browser` (or `pages`, ROLE=URL each), each role also signs in to its dashboard in
    headless Chromium: those `edu-migrate serve` has at `api_url`, or the pages given; the
    database says what each must show. Screenshots go to `screenshots` when given."""
    from edu_migrate.legacy.generator import legacy_password

    reporter = reporter or Reporter()
    given_pages = dict(_page(value) for value in pages)
    if browser or given_pages:
        dashboards.find_chromium()
    from_file = credentials_file(credentials_path) if credentials_path else {}
    given = {role: credentials.get(role) or from_file.get(role) for role in ROLES}
    accounts = {role: _account(role, value) for role, value in given.items() if value}
    shown = redacted(api_url)
    if any(role not in accounts for role in ROLES):
        found = demo_accounts(endpoints(settings).target_url, legacy_password)
        accounts.update({role: found[role] for role in ROLES
                         if role not in accounts and role in found})
    report = run_checks(api_url, {role: accounts[role] for role in ROLES if role in accounts})
    if browser or given_pages:
        expected = dashboards.expectations(endpoints(settings).target_url, accounts)
        report.checks.extend(dashboards.check_pages(
            dashboards.page_urls(api_url, given_pages), accounts, expected,
            screenshots=screenshots))
    reporter.line("=" * 60)
    reporter.line(f"CUTOVER CHECKS against {shown}")
    reporter.line("=" * 60)
    for check in report.checks:
        reporter.line(check.line())
    if report.passed:
        # decommission counts its 30 days from the first passing check after the migration.
        try:
            record_cutover(target_url(settings), {"api": shown,
                                                  "checks": len(report.checks)})
            reporter.line("Recorded the cutover in migration.run_log: `edu-migrate "
                          "decommission` counts its days from the first one")
        except MigrationError as exc:
            reporter.warn(f"the cutover could not be recorded in migration.run_log: "
                          f"{exc.one_line()}")
    return report


def _page(value: str) -> tuple[str, str]:
    role, equals, url = value.partition("=")
    if not equals or role not in ROLES or urlsplit(url).scheme not in ("http", "https"):
        raise MigrationError(f"--page takes ROLE=URL with ROLE one of {', '.join(ROLES)} and "
                             f"an http(s) URL, not {redacted(value)!r}",
                             "e.g. --page student=https://lms.example.edu/dashboard")
    return role, url


def require_cutover_passed(report: CutoverReport) -> None:
    failed = [c.name for c in report.checks if not c.passed]
    if failed or not report.checks:
        raise ValidationFailed(f"cutover checks failed: {', '.join(failed) or 'none ran'}",
                               "see the lines above; the API or the migrated data need a look")


# After the cutover: the guide's day-1, week-1 and month-1 tasks (edu_migrate.aftercare).

def health(settings: Settings) -> HealthReport:
    """Connections, statements, indexes, statistics, row-level security and backups of edu_v2;
    each finding with its severity and the command that acts on it."""
    return check_health(target_url(settings), settings.backup_dir)


def tune(settings: Settings, *, memory: str | None = None, cores: int | None = None,
         storage: str | None = None, connections: int | None = None,
         write: Path | None = None, apply: bool = False,
         show: Callable[[TuneReport], None] | None = None,
         reporter: Reporter | None = None) -> TuneReport:
    """Configuration advice for edu_v2's server, computed for its size; `show` sees it first;
    written to an include file with `write`, set by ALTER SYSTEM with `apply`."""
    url = target_url(settings)
    report = tuning.advise(url, memory=tuning.parse_size(memory) if memory else None,
                           cores=cores, storage=storage, connections=connections)
    if show is not None:
        show(report)
    if write is not None:
        tuning.write_include(report, write)
    if apply:
        if report.server is None:
            raise PreconditionFailed("--apply needs the server, which is not reachable",
                                     "check --target, or use --write FILE")
        (reporter or Reporter()).line(
            f"Applying {len(report.changes)} change(s) with ALTER SYSTEM, then reloading …")
        tuning.apply(url, report)
    return report


def monitoring(settings: Settings, out: Path, *, exporter: str, api: str | None,
               runbook: str, scrape_interval: str = "30s") -> MonitoringSetup:
    """Week 1: the monitoring setup of edu_v2 (exporter queries, alerts and their tests,
    Prometheus configuration, Grafana dashboard) written into `out`."""
    return write_setup(out, target_url(settings), exporter=exporter, api=api, runbook=runbook,
                       scrape_interval=scrape_interval)


def docs(settings: Settings, out: Path) -> DocsResult:
    """Day 1: the data dictionary, the ER diagram and OLD_TO_NEW_SCHEMA_MAPPING.md of edu_v2,
    generated from its live catalogue, the legacy mapping and the phases' rules, into `out`."""
    return write_docs(target_url(settings), legacy_mapping(settings), out)


def monitoring_logging(settings: Settings, *, min_duration_ms: int, apply: bool = False,
                       show: Callable[[LoggingReport], None] | None = None,
                       reporter: Reporter | None = None) -> LoggingReport:
    """The logging settings pgBadger needs, against edu_v2's server; set with `apply`."""
    url = target_url(settings)
    report = advise_logging(url, min_duration_ms)
    if show is not None:
        show(report)
    if apply:
        (reporter or Reporter()).line(
            f"Applying {len(report.changes)} change(s) with ALTER SYSTEM, then reloading …")
        apply_logging(url, report)
    return report


def monitoring_pgbadger(settings: Settings, out: Path, *, log: Path | None = None,
                        prefix: str | None = None) -> BadgerReport:
    """pgBadger's HTML report of edu_v2's server log."""
    fallback = None if settings.target_url else embedded_server(settings).log_file
    url = target_url(settings) if log is None or prefix is None else settings.target_url
    return render_report(url, out, log=log, prefix=prefix, fallback_log=fallback)


def backup_schedule(settings: Settings, *, at: str = "02:30", keep_days: int = 14,
                    systemd: bool = False, install: bool = False,
                    config_file: Path | None = None) -> tuple[BackupSchedule, str | None]:
    """The nightly verified backup of edu_v2 as a cron line or systemd units; installed (and
    where) with `install`."""
    plan = plan_schedule(at, keep_days, settings.target_url, config_file)
    if not install:
        return plan, None
    return plan, install_systemd(plan) if systemd else install_cron(plan)


def backup_list(settings: Settings) -> list[dict[str, Any]]:
    return list_backups(settings.backup_dir)


def decommission(settings: Settings, *, min_days: int = 30, force: bool = False,
                 typed_name: str | None = None, ask_name: Callable[[str], str] | None = None,
                 dry_run: bool = False, reporter: Reporter | None = None) -> DecommissionResult:
    """Drop the old database (the source, edu) after a verified final backup, min_days after
    the cutover recorded by cutover-check."""
    urls = endpoints(settings)
    return retire(urls.source_url, urls.target_url, settings.backup_dir, min_days=min_days,
                  force=force, typed_name=typed_name, ask_name=ask_name, dry_run=dry_run,
                  reporter=reporter or Reporter())


def compare_queries(settings: Settings, *, queries_file: Path | None = None, repeats: int = 25,
                    threshold_percent: float = 25.0,
                    min_difference_ms: float = 1.0) -> CompareReport:
    """The everyday queries and the file's pairs, timed on edu and edu_v2, with index use."""
    urls = endpoints(settings)
    return time_both(urls.source_url, urls.target_url, queries_file=queries_file,
                     repeats=repeats, threshold_percent=threshold_percent,
                     min_difference_ms=min_difference_ms)


def require_no_slowdown(report: CompareReport) -> None:
    if report.slower:
        names = ", ".join(t.name for t in report.slower)
        raise ValidationFailed(
            f"slower on edu_v2 than on edu by more than {report.threshold_percent:g}%: {names}",
            "look at the plans above; `edu-migrate health` lists missing indexes")
