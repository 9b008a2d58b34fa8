"""edu-migrate's command line: each command parses its options, calls one function of
edu_migrate.api, and prints what it returns."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import Annotated, Any

import psycopg
import typer
from rich.console import Console
from rich.table import Table

from edu_migrate import __version__, api
from edu_migrate.aftercare.monitoring import DEFAULT_API, DEFAULT_EXPORTER, DEFAULT_RUNBOOK
from edu_migrate.aftercare.pgbadger import DEFAULT_MIN_DURATION_MS, LoggingReport
from edu_migrate.aftercare.tune import TuneReport
from edu_migrate.config import Settings, load_settings
from edu_migrate.console import ConsoleReporter
from edu_migrate.errors import MigrationError
from edu_migrate.pg.urls import masked, redacted
from edu_migrate.runlog import loggable_command, open_run_log

HELP = """Move the legacy LMS database **edu** into **edu_v2**: phased, validated, resumable.

With no URLs, edu-migrate runs its own embedded PostgreSQL (databases edu and edu_v2).
Against real servers, give --source/--target or EDU_SOURCE_URL/EDU_TARGET_URL.

A first look:    edu-migrate demo --scale 0.1

The runbook:     edu-migrate preflight · backup · schema apply · migrate --all ·
                 validate · report --html report.html
"""

app = typer.Typer(help=HELP, rich_markup_mode="markdown", no_args_is_help=True,
                  add_completion=False, pretty_exceptions_enable=False)
db_app = typer.Typer(help="Manage the embedded PostgreSQL server.", no_args_is_help=True)
schema_app = typer.Typer(help="The edu_v2 schema.", no_args_is_help=True)
config_app = typer.Typer(help="The effective configuration.", no_args_is_help=True)
mapping_app = typer.Typer(help="""Map the legacy tables onto your source's own, when it differs
from legacy-edu.md (docs/mapping.md): `mapping draft --out mapping.toml`, edit, then
`mapping check --mapping mapping.toml`, then `preflight --mapping mapping.toml`.""",
                          no_args_is_help=True)
app.add_typer(mapping_app, name="mapping")
app.add_typer(db_app, name="db")
app.add_typer(schema_app, name="schema")
app.add_typer(config_app, name="config")
feed_app = typer.Typer(help="""The opt-in change feed: a logical replication slot on the source
(test_decoding, which PostgreSQL ships) that tells `sync` which rows were written, so that it
reads those by id instead of scanning every table. The source needs `wal_level = logical`, a
free replication slot, a `replication` line in pg_hba.conf, and a role with REPLICATION. Start it
before `migrate --all`; `cutover` drops it.""", no_args_is_help=True)
app.add_typer(feed_app, name="feed")

# Piped into a file or a CI log, lines may be as wide as a table needs, up to 120 columns.
out = Console(highlight=False, width=None if sys.stdout.isatty() else 120)

SourceOpt = Annotated[str | None, typer.Option(
    "--source", help="libpq URL of the legacy database (env EDU_SOURCE_URL).",
    show_default=False)]
TargetOpt = Annotated[str | None, typer.Option(
    "--target", help="libpq URL of edu_v2 (env EDU_TARGET_URL).", show_default=False)]
ConfigOpt = Annotated[Path | None, typer.Option(
    "--config", help="Configuration file (default ./edu-migrate.toml).", show_default=False)]
MappingOpt = Annotated[Path | None, typer.Option(
    "--mapping", help="TOML file mapping the legacy tables and columns onto the source's own "
    "(env EDU_MAPPING; default: [mapping] of edu-migrate.toml, else legacy-edu.md's names).",
    metavar="FILE", show_default=False)]
JsonOpt = Annotated[str | None, typer.Option(
    "--json", help="Also write the result as JSON to FILE ('-' for standard output).",
    metavar="FILE", show_default=False)]


# Options whose value holds a password (USER:PASS): the run log shows the user name only.
SECRET_OPTIONS = frozenset({"--student", "--teacher", "--admin"})


def _settings(config: Path | None = None, **overrides: Any) -> Settings:
    settings = load_settings(overrides, config)
    open_run_log(settings.log_dir, loggable_command(sys.argv[1:], SECRET_OPTIONS))
    return settings


def _write_json(target: str | None, payload: Any) -> None:
    if target is None:
        return
    text = json.dumps(payload, indent=2, ensure_ascii=False, default=str)
    if target == "-":
        sys.stdout.write(text + "\n")
    else:
        Path(target).write_text(text + "\n", encoding="utf-8")


def _json_owns_stdout(target: str | None) -> None:
    """With `--json -`, standard output carries the JSON alone; the human lines go to stderr."""
    if target == "-":
        out.file = sys.stderr


def _reporter(quiet: bool = False) -> ConsoleReporter:
    return ConsoleReporter(out, quiet=quiet)


def _print_version(value: bool) -> None:
    if value:
        out.print(f"edu-migrate {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False,
    # Eager: answered while the options are parsed, before click asks for the missing command
    # (as a plain option it never ran: `edu-migrate --version` failed with "Missing command").
    version: Annotated[bool, typer.Option("--version", help="Print the version.",
                                          callback=_print_version, is_eager=True)] = False,
) -> None:
    pass


@db_app.command("start")
def db_start(config: ConfigOpt = None) -> None:
    """Start the embedded server (initialising it on first use) with databases edu and edu_v2."""
    status = api.db_start(_settings(config))
    out.print(f"embedded PostgreSQL {status.version} running on port {status.port}")
    out.print(f"  edu:    {status.url('edu')}")
    out.print(f"  edu_v2: {status.url('edu_v2')}")


@db_app.command("stop")
def db_stop(config: ConfigOpt = None) -> None:
    """Stop the embedded server; its data stays."""
    api.db_stop(_settings(config))
    out.print("embedded server stopped")


@db_app.command("status")
def db_status(config: ConfigOpt = None, json_file: JsonOpt = None) -> None:
    """Is the embedded server running, where, and which version."""
    _json_owns_stdout(json_file)
    status = api.db_status(_settings(config))
    payload = {"running": status.running, "port": status.port, "version": status.version,
               "data_dir": str(status.data_dir)}
    state = f"running on port {status.port}" if status.running else "stopped"
    out.print(f"embedded server: {state} (PostgreSQL {status.version or '?'}, "
              f"data in {status.data_dir})")
    _write_json(json_file, payload)
    if not status.running:
        raise typer.Exit(1)


@db_app.command("url")
def db_url(
    database: Annotated[str, typer.Argument(help="edu, edu_v2 or postgres")] = "edu_v2",
    config: ConfigOpt = None,
) -> None:
    """Print the URL of an embedded database, for psql or EDU_*_URL."""
    sys.stdout.write(api.db_url(_settings(config), database) + "\n")


@app.command()
def generate(
    scale: Annotated[float, typer.Option(help="1 gives the guide's counts (3.2M marks).")] = 1.0,
    profile: Annotated[str, typer.Option(help="clean, or dirty (realistic anomalies).")] = "clean",
    seed: Annotated[int, typer.Option(help="Same seed, same data.")] = 42,
    source: SourceOpt = None, config: ConfigOpt = None,
) -> None:
    """(Re)create the legacy tables in the source database with realistic generated data."""
    settings = _settings(config, source_url=source)
    summary = api.generate(settings, scale=scale, profile=profile, seed=seed,
                           reporter=_reporter())
    out.print(f"✓ Generated the legacy database ({profile}, scale {scale}, seed {seed}) "
              f"in {summary.seconds:.1f}s")


@schema_app.command("apply")
def schema_apply(target: TargetOpt = None, config: ConfigOpt = None) -> None:
    """Create edu_v2 when missing and apply the schema versions it lacks."""
    result = api.schema_apply(_settings(config, target_url=target))
    if result.database_created:
        out.print("✓ Created database edu_v2")
    for name in result.applied:
        out.print(f"✓ Applied {name}")
    out.print(f"Schema at version {result.current_version}")


@schema_app.command("sql")
def schema_sql() -> None:
    """Print the whole edu_v2 schema as one file, the guide's new_database_schema.sql, to review
    or to apply by hand: `edu-migrate schema sql > new_database_schema.sql`, then
    `psql -f new_database_schema.sql DBNAME` into an empty database (the same result as
    `schema apply`). It holds no secret."""
    sys.stdout.write(api.schema_sql())


AsOfOpt = Annotated[str | None, typer.Option(
    "--as-of", metavar="TIMESTAMP",
    help="The run's \"now\" for every rule (a date in the future, the current term, a missing "
    "timestamp), ISO 8601, e.g. 2024-06-30T18:00:00+04:00; without an offset, Baku time. "
    "migrate: default the time already recorded by an earlier phase, else the source "
    "snapshot's, kept until `rollback --all`; sync: default the new snapshot's time.",
    show_default=False)]


OverrideCutoverOpt = Annotated[bool, typer.Option(
    "--override-cutover", help="Write edu_v2 from edu although the cutover made edu_v2 the "
    "system of record: the applications' writes there since are overwritten. Recorded; "
    "`fallback` is the way back that loses nothing.")]


@app.command()
def migrate(
    phase: Annotated[list[int] | None, typer.Option(
        "--phase", help="Phase to run (1-5); repeat for several.", show_default=False)] = None,
    all_phases: Annotated[bool, typer.Option(
        "--all", help="Run every phase not yet done.")] = False,
    batch_size: Annotated[int | None, typer.Option(
        help="Rows per COPY chunk of a large table.", show_default=False)] = None,
    workers: Annotated[int | None, typer.Option(
        help="Parallel sessions for large tables.", show_default=False)] = None,
    freeze_source: Annotated[bool, typer.Option(
        "--freeze-source", help="Make the source read-only for new sessions first "
        "(`unfreeze-source` lifts it).")] = False,
    force: Annotated[bool, typer.Option(
        "--force", help="Start even when a blocking preflight check fails (logged).")] = False,
    as_of: AsOfOpt = None,
    archive_secrets: Annotated[bool | None, typer.Option(
        "--archive-secrets", help="Archive the unmapped tables' password, token, session-key "
        "and IP columns as they are; by default they are archived empty (masked).",
        show_default=False)] = None,
    source: SourceOpt = None, target: TargetOpt = None, config: ConfigOpt = None,
    mapping: MappingOpt = None, json_file: JsonOpt = None,
    override_cutover: OverrideCutoverOpt = False,
    print_sql: Annotated[bool, typer.Option(
        "--sql", help="Print the statements the phases would send to edu_v2, in order, with "
        "the as-of time filled in, and run nothing: a psql script to review before the window "
        "(no secret in it).")] = False,
) -> None:
    """Run migration phases: 1 users & persons, 2 students & staff, 3 organizations & terms,
    4 courses & offerings, 5 enrollments & grades. Done phases are skipped. With --sql, print
    what they would run instead: `edu-migrate migrate --phase 5 --sql > phase5.sql`."""
    _json_owns_stdout(json_file)
    if not phase and not all_phases:
        raise MigrationError("say which phases to run", "use --phase N or --all")
    if print_sql:
        if freeze_source or json_file is not None:
            raise MigrationError("--sql runs nothing: it cannot freeze the source or write "
                                 "--json", "leave out --freeze-source and --json")
        settings = _settings(config, source_url=source, target_url=target, workers=workers,
                             mapping_file=mapping)
        sys.stdout.write(api.migrate_sql(settings, None if all_phases else phase, as_of=as_of))
        return
    settings = _settings(config, source_url=source, target_url=target, batch_size=batch_size,
                         workers=workers, archive_secrets=archive_secrets or None,
                         mapping_file=mapping)
    result = api.migrate(settings, None if all_phases else phase, reporter=_reporter(),
                         force=force, freeze_source=freeze_source, as_of=as_of,
                         override_cutover=override_cutover)
    out.print(f"\nDone in {result.seconds:.1f}s")
    _write_json(json_file, result.to_dict())


@app.command()
def sync(
    as_of: AsOfOpt = None,
    batch_size: Annotated[int | None, typer.Option(
        help="Changed rows fetched per request to the source.", show_default=False)] = None,
    source: SourceOpt = None, target: TargetOpt = None, config: ConfigOpt = None,
    json_file: JsonOpt = None, override_cutover: OverrideCutoverOpt = False,
) -> None:
    """Catch up with the live source after `migrate --all`: only the legacy rows inserted,
    changed or deleted since the last migrate or sync are read and derived again, through the
    same rules, in one transaction. The source is only read; nothing is installed on it."""
    _json_owns_stdout(json_file)
    settings = _settings(config, source_url=source, target_url=target, batch_size=batch_size)
    result = api.sync(settings, reporter=_reporter(), as_of=as_of,
                      override_cutover=override_cutover)
    _write_json(json_file, result.to_dict())


SlotOpt = Annotated[str, typer.Option("--slot", help="The replication slot's name.")]


@feed_app.command("start")
def feed_start(slot: SlotOpt = "edu_migrate_feed", source: SourceOpt = None,
               target: TargetOpt = None, config: ConfigOpt = None,
               json_file: JsonOpt = None) -> None:
    """Create the slot on the source (this writes the source's catalog: one replication slot,
    which keeps WAL until a sync advances it) and record it in edu_v2."""
    _json_owns_stdout(json_file)
    status = api.feed_start(_settings(config, source_url=source, target_url=target), slot)
    out.print(f"Started the change feed: slot {status.slot} on the source, at "
              f"{status.confirmed_lsn}. Syncs read the rows it names instead of scanning.")
    _write_json(json_file, status.to_dict())


@feed_app.command("status")
def feed_status(source: SourceOpt = None, target: TargetOpt = None, config: ConfigOpt = None,
                json_file: JsonOpt = None) -> None:
    """Where the feed stands: its slot, the position the last sync left it at, the WAL it
    keeps on the source, and what stops syncs from using it."""
    _json_owns_stdout(json_file)
    status = api.feed_status(_settings(config, source_url=source, target_url=target))
    if not status.started:
        out.print("No change feed: syncs scan the tables (`edu-migrate feed start`).")
    else:
        kept = "unknown" if status.retained_wal_bytes is None else \
            f"{status.retained_wal_bytes / 2**20:,.1f} MiB"
        out.print(f"Change feed: slot {status.slot}, left at {status.confirmed_lsn} by the last "
                  f"sync (the slot at {status.slot_confirmed_lsn}), keeping {kept} of WAL on "
                  f"the source ({status.wal_status}).")
        if status.problem:
            out.print(f"[red]✗[/red] {status.problem}")
    _write_json(json_file, status.to_dict())


@feed_app.command("stop")
def feed_stop(slot: Annotated[str | None, typer.Option(
        "--slot", help="Drop this slot, when the target no longer records it.",
        show_default=False)] = None,
              source: SourceOpt = None, target: TargetOpt = None,
              config: ConfigOpt = None) -> None:
    """Drop the slot from the source (this writes the source's catalog) and the feed's record
    from edu_v2; syncs scan the tables again."""
    dropped = api.feed_stop(_settings(config, source_url=source, target_url=target), slot)
    out.print(f"Dropped the change feed's slot {dropped} on the source." if dropped
              else "No change feed was started.")


@app.command()
def cutover(
    as_of: AsOfOpt = None,
    max_rounds: Annotated[int, typer.Option(
        help="Sync rounds at most before the freeze.")] = 5,
    settle_rows: Annotated[int, typer.Option(
        help="Freeze once a round applies this many changed rows or fewer.")] = 1000,
    writer_timeout: Annotated[float, typer.Option(
        help="Seconds to wait, after the freeze, for the sessions that can still write "
        "(opened before it, or in a write transaction) and the prepared transactions to "
        "end.")] = 60.0,
    terminate_writers: Annotated[bool, typer.Option(
        "--terminate-writers", help="End the sessions that can still write instead of waiting "
        "for them (a prepared transaction cannot be ended: COMMIT or ROLLBACK PREPARED "
        "it).")] = False,
    source: SourceOpt = None, target: TargetOpt = None, config: ConfigOpt = None,
    json_file: JsonOpt = None, override_cutover: OverrideCutoverOpt = False,
) -> None:
    """The near-zero-downtime window, after `migrate --all` on the live source: sync while the
    delta shrinks, freeze the source (read-only for new sessions), wait for the sessions opened
    before it, apply the last delta, validate, and print the window from the freeze to the
    validated result. On any failure the source is unfrozen and the applications stay on edu."""
    _json_owns_stdout(json_file)
    settings = _settings(config, source_url=source, target_url=target)
    result = api.cutover(settings, reporter=_reporter(), as_of=as_of, max_rounds=max_rounds,
                         settle_rows=settle_rows, writer_timeout=writer_timeout,
                         terminate_writers=terminate_writers, override_cutover=override_cutover)
    _write_json(json_file, result.to_dict())


@app.command()
def fallback(
    max_rounds: Annotated[int, typer.Option(
        help="Rounds at most before edu_v2 is frozen.")] = 5,
    settle_rows: Annotated[int, typer.Option(
        help="Freeze edu_v2 once a round finds this many written rows or fewer.")] = 1000,
    writer_timeout: Annotated[float, typer.Option(
        help="Seconds to wait, after edu_v2's freeze, for sessions opened before it.")] = 60.0,
    terminate_writers: Annotated[bool, typer.Option(
        "--terminate-writers", help="End the sessions opened before edu_v2's freeze instead of "
        "waiting for them.")] = False,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
    source: SourceOpt = None, target: TargetOpt = None, config: ConfigOpt = None,
    json_file: JsonOpt = None,
) -> None:
    """The guide's "switch back to old database", after a cutover, losing nothing: every
    insert, update and delete the applications made on edu_v2 since the cutover is carried back
    into edu through the inverse of each phase's rules (in rounds while they still write, then
    in a window with edu_v2 frozen), in one transaction on edu. Then edu is unfrozen and is the
    system of record again. Values edu cannot hold, and accounts that need a password reset on
    edu, are listed. Writes edu's business tables (only this command, restore and
    freeze-source write edu). On any failure edu is left as it was."""
    _json_owns_stdout(json_file)
    settings = _settings(config, source_url=source, target_url=target)
    if not yes and not typer.confirm(
            f"Carry edu_v2's writes back into {masked(settings.source_url)} and make it the "
            "system of record again?"):
        raise typer.Exit(1)
    result = api.fallback(settings, reporter=_reporter(), max_rounds=max_rounds,
                          settle_rows=settle_rows, writer_timeout=writer_timeout,
                          terminate_writers=terminate_writers)
    for username in result.password_resets[:20]:
        out.print(f"needs a password reset on edu: {username}", markup=False)
    if len(result.password_resets) > 20:
        out.print(f"… and {len(result.password_resets) - 20} more (--json lists them all)")
    _write_json(json_file, result.to_dict())


@app.command()
def validate(source: SourceOpt = None, target: TargetOpt = None, config: ConfigOpt = None,
             mapping: MappingOpt = None, json_file: JsonOpt = None) -> None:
    """Phase 6: counts, orphans, foreign keys and the accounting of every legacy row.
    Exits 0 only when every check passes."""
    _json_owns_stdout(json_file)
    settings = _settings(config, source_url=source, target_url=target, mapping_file=mapping)
    report = api.validate(settings, reporter=_reporter())
    _write_json(json_file, report.to_dict())
    api.require_valid(report)


@app.command()
def inventory(source: SourceOpt = None, target: TargetOpt = None, config: ConfigOpt = None,
              mapping: MappingOpt = None, json_file: JsonOpt = None) -> None:
    """Every table of the source: its rows, and whether the migration maps it, archives it into
    legacy_archive, or excludes it (`exclude` patterns); archived rows once archived, and the
    columns archived empty because they hold secrets (`migrate --archive-secrets` keeps them)."""
    settings = _settings(config, source_url=source, target_url=target, mapping_file=mapping)
    entries = api.inventory(settings)
    schemas = sorted({e.schema for e in entries}, key=lambda s: (s != "public", s))
    table = Table(title=f"Tables of the source (schema {', '.join(schemas) or 'public'})")
    for column, justify in (("table", "left"), ("rows", "right"), ("status", "left"),
                            ("in legacy_archive", "right"), ("masked (secrets)", "left")):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for entry in entries:
        archived = "" if entry.archived_rows is None else f"{entry.archived_rows:,}"
        status = entry.status if entry.maps in (None, entry.table) \
            else f"{entry.status} as {entry.maps}"
        table.add_row(entry.table, f"{entry.rows:,}", status, archived, ", ".join(entry.masked))
    out.print(table)
    counts = {status: sum(1 for e in entries if e.status == status)
              for status in ("mapped", "archived", "excluded")}
    out.print(f"{len(entries)} tables: {counts['mapped']} mapped, {counts['archived']} archived, "
              f"{counts['excluded']} excluded" + (f" (exclude = {list(settings.exclude)})"
                                                  if settings.exclude else ""))
    _write_json(json_file, [e.to_dict() for e in entries])


@app.command()
def rollback(
    phase: Annotated[int | None, typer.Option(
        "--phase", help="Undo this phase and every later phase that needs it.",
        show_default=False)] = None,
    all_phases: Annotated[bool, typer.Option(
        "--all", help="Empty edu_v2 back to its schema.")] = False,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
    target: TargetOpt = None, config: ConfigOpt = None,
    override_cutover: OverrideCutoverOpt = False,
) -> None:
    """Remove what a phase (and the phases after it) wrote to edu_v2. The source is untouched."""
    if (phase is None) == (not all_phases):
        raise MigrationError("say what to roll back", "use --phase N or --all")
    settings = _settings(config, target_url=target)
    what = "every phase" if all_phases else f"phase {phase} and the phases that need it"
    if not yes and not typer.confirm(f"Remove {what} from {masked(settings.target_url)}?"):
        raise typer.Exit(1)
    api.rollback(settings, None if all_phases else phase, reporter=_reporter(),
                 override_cutover=override_cutover)


@app.command()
def status(target: TargetOpt = None, source: SourceOpt = None, config: ConfigOpt = None,
           json_file: JsonOpt = None) -> None:
    """Each phase's state, rows, start, end and last error."""
    _json_owns_stdout(json_file)
    settings = _settings(config, source_url=source, target_url=target)
    state = api.status(settings)
    table = Table(title=f"edu-migrate {state['version']} → {state['target']}")
    for column in ("phase", "step", "status", "rows", "seconds", "started", "finished"):
        table.add_column(column, justify="right" if column in ("rows", "seconds") else "left",
                         no_wrap=column == "status")
    for row in state["phases"]:
        rows = "\n".join(f"{k.removeprefix('migrate_')} {v:,}" for k, v in row["rows"].items())
        table.add_row(str(row["phase"]), row["title"].lower().removeprefix("migrating "),
                      row["status"], rows,
                      f"{row['seconds']:.1f}" if row["seconds"] is not None else "",
                      (row["started_at"] or "")[:19].replace("T", " "),
                      (row["finished_at"] or "")[:19].replace("T", " "))
    out.print(table)
    out.print(f"As of: {state['as_of'] or 'not recorded yet (set by the first phase)'}",
              markup=False)
    # Errors below the table, whole: they are the lines an operator acts on.
    for row in state["phases"]:
        if row["last_error"]:
            out.print(f"phase {row['phase']} {row['status']}: {row['last_error']}",
                      markup=False, soft_wrap=True)
    if state["last_sync"]:
        synced = state["last_sync"]
        applied = ", ".join(f"{t} {n:,}" for t, n in synced["rows_applied"].items()) or "none"
        out.print(f"Last sync: {synced['finished_at'][:19].replace('T', ' ')}, "
                  f"{synced['seconds']:.1f}s, rows applied: {applied}; edu_v2 holds the source "
                  f"as it was {synced['behind_seconds']:,}s ago", markup=False, soft_wrap=True)
    way = state["direction"]
    if way["system_of_record"] == "edu_v2":
        written = ", ".join(f"{t} {n:,}" for t, n in way["writes_since"].items()) or "none yet"
        out.print(f"System of record: edu_v2 since {way['since'][:19].replace('T', ' ')} (the "
                  f"cutover); application writes since: {written}. `sync`, `migrate`, "
                  "`cutover` and `rollback` refuse; `fallback` switches back to edu.",
                  markup=False, soft_wrap=True)
    else:
        since = f" since {way['since'][:19].replace('T', ' ')} ({way['event']})" \
            if way["since"] else " (no cutover yet)"
        out.print(f"System of record: edu{since}", markup=False, soft_wrap=True)
    if state["last_fallback"]:
        fell = state["last_fallback"]
        out.print(f"Last fallback: {fell['at'][:19].replace('T', ' ')}, window "
                  f"{fell.get('window_seconds', 0):.1f}s", markup=False, soft_wrap=True)
    if state["running_now"]:
        out.print(f"A migration is running now: {state['running_now']}", markup=False,
                  soft_wrap=True)
    _write_json(json_file, state)


@app.command()
def preflight(source: SourceOpt = None, target: TargetOpt = None, config: ConfigOpt = None,
              mapping: MappingOpt = None, json_file: JsonOpt = None) -> None:
    """Before migrating. The guide's checklist: ✓ ready, ! look at it, ✗ blocks `migrate`. Then
    the anomalies of the source, per kind a count, sample ids and what the migration will do
    with them (repair, merge or set aside). Only reads the source. Exits 1 when a blocking
    check fails."""
    _json_owns_stdout(json_file)
    settings = _settings(config, source_url=source, target_url=target, mapping_file=mapping)
    report = api.preflight(settings)
    styles = {"ok": "green", "warn": "yellow", "fail": "red"}
    out.print("=" * 60)
    out.print("PRE-MIGRATION CHECKLIST")
    out.print("=" * 60)
    for finding in report.findings:
        out.print(finding.line(), style=styles[finding.status], markup=False, soft_wrap=True)
    findings = api.anomalies(settings) if report.source_readable else []
    if findings:
        out.print("=" * 60)
        out.print("ANOMALIES OF THE SOURCE")
        out.print("=" * 60)
        for anomaly in findings:
            out.print(anomaly.line(), markup=False, soft_wrap=True)
        found = [f for f in findings if f.found]
        out.print(f"{len(found)} of {len(findings)} kinds of anomaly found, "
                  f"{sum(f.count for f in found):,} rows; each is repaired, merged or set aside "
                  "with its reason by `migrate` (docs/dirty-data.md)")
    _write_json(json_file, report.to_dict() | {"anomalies": [f.to_dict() for f in findings]})
    if not report.ready:
        out.print(f"{len(report.blocking)} blocking check(s) failed: `migrate` refuses to start "
                  "(--force overrides, and is logged)")
        raise typer.Exit(1)


backup_app = typer.Typer(invoke_without_command=True, no_args_is_help=False)
app.add_typer(backup_app, name="backup")


@backup_app.callback()
def backup(
    ctx: typer.Context,
    verify_restore: Annotated[bool, typer.Option(
        "--verify-restore", help="Also restore each dump into a scratch database and compare "
        "every table's row count.")] = False,
    only: Annotated[str | None, typer.Option(
        "--only", help="Dump only the source or only the target (after the cutover: target).",
        metavar="source|target", show_default=False)] = None,
    keep_days: Annotated[int | None, typer.Option(
        "--keep-days", help="Afterwards remove this database's dumps older than N days (never "
        "the newest verified one, nor a final backup).", metavar="N",
        show_default=False)] = None,
    dump_format: Annotated[str, typer.Option(
        "--format", help="plain: also write each dump as SQL, for inspection (a .sql file "
        "beside the -Fc .dump, from the same snapshot, private like it, recorded in the "
        "manifest and checked to hold every table's data).",
        metavar="custom|plain")] = "custom",
    source: SourceOpt = None, target: TargetOpt = None, config: ConfigOpt = None,
    json_file: JsonOpt = None,
) -> None:
    """pg_dump -Fc of the source, and of the target when it holds data, into the backup folder
    with timestamps; each checked with pg_restore --list. `--format plain` adds the guide's SQL
    backup beside each. `backup schedule` runs it nightly, `backup list` shows what there is."""
    if ctx.invoked_subcommand is not None:
        return
    _json_owns_stdout(json_file)
    settings = _settings(config, source_url=source, target_url=target)
    records = api.backup(settings, verify_restore=verify_restore, reporter=_reporter(),
                         only=only, keep_days=keep_days, dump_format=dump_format)
    for record in records:
        out.print(f"{record.role}: {settings.backup_dir / record.file} ({record.verified})",
                  markup=False)
        if record.plain:
            out.print(f"{record.role}: {settings.backup_dir / record.plain} (SQL)", markup=False)
    _write_json(json_file, [record.summary() for record in records])


@app.command()
def restore(
    file: Annotated[Path, typer.Argument(help="A dump made by `edu-migrate backup`.")],
    into: Annotated[str | None, typer.Option(
        "--into", help="Restore into this database instead of the one the dump came from.",
        show_default=False)] = None,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
    source: SourceOpt = None, target: TargetOpt = None, config: ConfigOpt = None,
) -> None:
    """Put a backup back: its objects replace the destination's, in one transaction."""
    settings = _settings(config, source_url=source, target_url=target)
    plan = api.restore_plan(settings, file, into)
    if not yes and not typer.confirm(f"Restore {plan.describe()}? What the dump holds "
                                     "replaces what is there."):
        raise typer.Exit(1)
    api.restore(plan, reporter=_reporter())


@app.command("unfreeze-source")
def unfreeze_source(source: SourceOpt = None, config: ConfigOpt = None) -> None:
    """Lift `migrate --freeze-source`: new sessions of the source may write again."""
    name = api.unfreeze_source(_settings(config, source_url=source))
    out.print(f"✓ The source database {name} is writable again for new sessions")


@config_app.command("show")
def config_show(source: SourceOpt = None, target: TargetOpt = None,
                config: ConfigOpt = None, json_file: JsonOpt = None) -> None:
    """The effective configuration (flags > env > edu-migrate.toml), passwords masked."""
    _json_owns_stdout(json_file)
    settings = load_settings({"source_url": source, "target_url": target}, config)
    shown = settings.model_dump(mode="json")
    shown["source_url"] = masked(settings.source_url)
    shown["target_url"] = masked(settings.target_url)
    for key, value in shown.items():
        out.print(f"{key} = {value}", markup=False)
    _write_json(json_file, shown)


@app.command()
def demo(
    scale: Annotated[float, typer.Option(help="1 is the guide's size: 3.2 million marks.")] = 1.0,
    seed: Annotated[int, typer.Option(help="Seed of the generated data.")] = 42,
    config: ConfigOpt = None, json_file: JsonOpt = None,
) -> None:
    """The whole migration on the embedded server: generate edu, apply the schema, run every
    phase, validate, and summarise."""
    _json_owns_stdout(json_file)
    settings = _settings(config)
    result = api.demo(settings, scale=scale, seed=seed, reporter=_reporter())
    counts = Table(title="What moved")
    for column in ("check", "legacy edu", "edu_v2", "set aside", "merged"):
        counts.add_column(column, justify="left" if column == "check" else "right")
    for check in result.validation.checks:
        if check.old is not None and check.new is not None and check.name.endswith("Count"):
            counts.add_row(f"{'✓' if check.passed else '✗'} {check.name}", f"{check.old:,}",
                           f"{check.new:,}", f"{check.detail.get('Set aside', 0):,}",
                           f"{check.detail.get('Merged', 0):,}")
    out.print(counts)
    timings = Table(title="How long it took")
    timings.add_column("step")
    timings.add_column("seconds", justify="right")
    timings.add_row("generate legacy edu", f"{result.generation_seconds:.1f}")
    timings.add_row("apply schema", f"{result.schema_seconds:.1f}")
    for phase in result.migration.phases:
        timings.add_row(f"phase {phase.number}", f"{phase.seconds:.1f}")
    timings.add_row("validate (phase 6)", f"{result.validation_seconds:.1f}")
    timings.add_row("migration, phases 1-5", f"{result.migration.seconds:.1f}")
    out.print(timings)
    passed = sum(check.passed for check in result.validation.checks)
    verdict = (f"✓ all {passed} validation checks passed" if result.validation.passed
               else f"✗ {len(result.validation.checks) - passed} validation checks FAILED")
    out.print(f"{verdict}.\nNext: `edu-migrate report --html report.html` for the sign-off "
              "report; `edu-migrate status`; psql \"$(edu-migrate db url)\" to look around")
    _write_json(json_file, {"migration": result.migration.to_dict(),
                            "validation": result.validation.to_dict()})
    api.require_valid(result.validation)


@app.command()
def report(
    html: Annotated[Path | None, typer.Option(
        "--html", help="Write the HTML report (one self-contained page) to FILE.", metavar="FILE",
        show_default=False)] = None,
    md: Annotated[Path | None, typer.Option(
        "--md", help="Write the Markdown report to FILE.", metavar="FILE",
        show_default=False)] = None,
    source: SourceOpt = None, target: TargetOpt = None, config: ConfigOpt = None,
    mapping: MappingOpt = None, json_file: JsonOpt = None,
) -> None:
    """The sign-off report: run metadata, validation, accounting of every legacy row, rows set
    aside, checksums, plots and the approval block. With no file named, writes report.html.
    Exits 1 when the verdict is FAIL (the report is written either way)."""
    _json_owns_stdout(json_file)
    if html is None and md is None and json_file is None:
        html = Path("report.html")
    settings = _settings(config, source_url=source, target_url=target, mapping_file=mapping)
    data = api.report(settings, html=html, md=md)
    style = "bold green" if data.passed else "bold red"
    out.print(f"[{style}]{data.verdict}[/]: {len(data.validation.checks) - len(data.checks_failed)}"
              f" of {len(data.validation.checks)} checks passed, phases done: "
              f"{', '.join(map(str, data.phases_done)) or 'none'}; "
              f"{data.rows_set_aside:,} legacy rows set aside "
              f"(collected in {data.collect_seconds:.1f}s)")
    for path in (html, md):
        if path is not None:
            out.print(f"✓ Wrote {path}", markup=False)
    _write_json(json_file, data.to_dict())
    if not data.passed:
        raise typer.Exit(1)


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    target: TargetOpt = None, config: ConfigOpt = None,
    forwarded_allow_ips: Annotated[list[str] | None, typer.Option(
        "--forwarded-allow-ips", metavar="ADDRESS",
        help="A reverse proxy whose X-Forwarded-For (the client's address, which the login "
        "limits count by) is believed; repeat for several. None by default: then every "
        "request's address is the one that connected.", show_default=False)] = None,
    allowed_host: Annotated[list[str] | None, typer.Option(
        "--allowed-host", metavar="NAME",
        help="A name clients reach the API by (its Host header), besides the address it "
        "listens on; repeat for several. Requests naming another host are refused.",
        show_default=False)] = None,
) -> None:
    """The reference API over edu_v2 (FastAPI), with row-level security doing the access control.
    OpenAPI at /openapi.json, interactive docs at /docs. Creates the API's own login roles
    first (<database>_api for requests, <database>_login for password checks) and says so;
    the target URL's user must own edu_v2 and may create roles."""
    api.serve(_settings(config, target_url=target), host=host, port=port, reporter=_reporter(),
              forwarded_allow_ips=[ip.strip() for value in forwarded_allow_ips or ()
                                   for ip in value.split(",") if ip.strip()],
              allowed_hosts=allowed_host or ())


def _credentials_option(role: str) -> Any:
    return typer.Option(
        metavar="USER:PASS", show_default=False, envvar=f"EDU_{role.upper()}_CREDENTIALS",
        help=f"The {role} account to sign in with; by default one from the migrated demo data. "
        f"Better in the environment variable EDU_{role.upper()}_CREDENTIALS or a "
        "--credentials-file: a command line is readable by every local user.")


@app.command("cutover-check")
def cutover_check(
    api_url: Annotated[str, typer.Option("--api", help="Base URL of the running API.")],
    student: Annotated[str | None, _credentials_option("student")] = None,
    teacher: Annotated[str | None, _credentials_option("teacher")] = None,
    admin: Annotated[str | None, _credentials_option("admin")] = None,
    credentials_file: Annotated[Path | None, typer.Option(
        "--credentials-file", show_default=False,
        help="A file of role=USER:PASS lines (student, teacher, admin), readable by its owner "
        "only (chmod 600); an option or variable of a role wins over it.")] = None,
    target: TargetOpt = None, config: ConfigOpt = None, json_file: JsonOpt = None,
    browser: Annotated[bool, typer.Option(
        "--browser", help="Also sign in as each role in headless Chromium (Debian's `chromium`) "
        "and check their dashboards: no HTTP error, no console error, and what the database "
        "says they have is on the page (a student's marks, a teacher's rosters, the admin's "
        "counts and search).")] = False,
    page: Annotated[list[str] | None, typer.Option(
        metavar="ROLE=URL", show_default=False,
        help="A dashboard of your own to check instead of `serve`'s, e.g. "
        "student=https://lms.example.edu/me (repeat for teacher, admin); only the roles given "
        "are checked. Implies --browser.",
    )] = None,
    screenshots: Annotated[Path | None, typer.Option(
        help="Folder for a screenshot of each dashboard (with --browser).",
        show_default=False)] = None,
) -> None:
    """Phase 7: the critical endpoints answer and a student, a teacher and an administrator can
    sign in and see what they should. Exits 0 only when every check passes."""
    settings = _settings(config, target_url=target)
    report = api.cutover_check(settings, api_url,
                               {"student": student, "teacher": teacher, "admin": admin},
                               reporter=_reporter(), browser=browser, pages=page or (),
                               screenshots=screenshots, credentials_path=credentials_file)
    _write_json(json_file, report.to_dict())
    api.require_cutover_passed(report)


# After the cutover: the guide's day-1, week-1 and month-1 tasks.

@backup_app.command("schedule")
def backup_schedule(
    at: Annotated[str, typer.Option(help="Time of day (HH:MM, server's local time).")] = "02:30",
    keep_days: Annotated[int, typer.Option(
        "--keep-days", help="Keep the dumps of the last N days (and always the newest "
        "verified one).")] = 14,
    systemd: Annotated[bool, typer.Option(
        "--systemd", help="A systemd timer and service instead of a cron line.")] = False,
    install: Annotated[bool, typer.Option(
        "--install", help="Install it: into this user's crontab, or as systemd user units "
        "(enabled).")] = False,
    target: TargetOpt = None, config: ConfigOpt = None, json_file: JsonOpt = None,
) -> None:
    """The guide's automated backups: each night `edu-migrate backup --verify-restore --only
    target --keep-days N` of edu_v2, run from this folder. Prints the cron line (or systemd
    units); `--install` installs it. A target URL with a password is refused: use ~/.pgpass."""
    _json_owns_stdout(json_file)
    settings = _settings(config, target_url=target)
    plan, where = api.backup_schedule(settings, at=at, keep_days=keep_days, systemd=systemd,
                                      install=install, config_file=config)
    if systemd:
        for name, text in plan.systemd_units().items():
            out.print(f"# {name}\n{text}", markup=False)
    else:
        out.print(plan.cron_line(), markup=False, soft_wrap=True)
    if where:
        out.print(f"✓ Installed in {where}", markup=False)
    _write_json(json_file, plan.to_dict() | {"installed": where})


@backup_app.command("list")
def backup_list(config: ConfigOpt = None, json_file: JsonOpt = None) -> None:
    """Every backup of the manifest, newest first: its age, size, and whether a restore of it
    was verified (`restored`) or only its listing (`listed`)."""
    _json_owns_stdout(json_file)
    settings = _settings(config)
    entries = api.backup_list(settings)
    table = Table(title=f"Backups in {settings.backup_dir}")
    for column in ("file", "database", "age", "size", "verified"):
        table.add_column(column, justify="right" if column in ("age", "size") else "left")
    for entry in entries:
        verified = entry["verified"] + (" (final, SHA-256 recorded)" if entry["sha256"] else "")
        table.add_row(entry["file"] + ("" if entry["present"] else " (file missing)"),
                      f"{entry['role']} {entry['database']}", f"{entry['age_hours']:,.1f} h",
                      f"{entry['bytes'] / 1e6:,.1f} MB", verified)
    out.print(table)
    if not entries:
        out.print("No backups yet: `edu-migrate backup --verify-restore`")
    _write_json(json_file, entries)


@app.command()
def health(target: TargetOpt = None, config: ConfigOpt = None,
           json_file: JsonOpt = None) -> None:
    """Day 1 and week 1 on edu_v2: connections by state and application, the slowest and most
    frequent statements (pg_stat_statements), foreign keys without an index, unused and
    redundant indexes, tables never analysed or full of dead rows, row-level security, and the
    age of the last verified backup. Each finding gives the command that acts on it. Exits 1
    when a finding is critical (act now). Only reads."""
    _json_owns_stdout(json_file)
    settings = _settings(config, target_url=target)
    report = api.health(settings)
    out.print(f"HEALTH of {report.database} at {report.checked_at}", markup=False)
    sessions = sum(c["sessions"] for c in report.connections)
    by_state: dict[str, int] = {}
    for c in report.connections:
        by_state[c["state"]] = by_state.get(c["state"], 0) + c["sessions"]
    out.print(f"connections: {sessions} other session(s) — "
              + (", ".join(f"{state} {n}" for state, n in by_state.items()) or "none"),
              markup=False, soft_wrap=True)
    for c in report.connections:
        out.print(f"  {c['sessions']:>4}  {c['state']:<20} {c['application']}", markup=False)
    for statement in report.statements:
        out.print(f"  {statement['kind']:<13} {statement['calls']:>8,} calls "
                  f"{statement['mean_ms']:>9,.1f} ms  {statement['query'][:80]}", markup=False)
    styles = {"critical": "red", "warning": "yellow", "info": ""}
    for finding in report.findings:
        out.print(finding.line(), style=styles[finding.severity], markup=False, soft_wrap=True)
        out.print(f"    → {finding.command}", markup=False, soft_wrap=True)
    counts = {s: sum(1 for f in report.findings if f.severity == s) for s in styles}
    out.print(f"{counts['critical']} critical, {counts['warning']} warning(s), "
              f"{counts['info']} for the record")
    _write_json(json_file, report.to_dict())
    if report.needs_action:
        raise typer.Exit(1)


@app.command()
def tune(
    memory: Annotated[str | None, typer.Option(
        help="The server's memory, e.g. 16GB (read from /proc/meminfo when the server runs "
        "here).", metavar="SIZE", show_default=False)] = None,
    cores: Annotated[int | None, typer.Option(
        help="The server's CPU cores (this machine's when the server runs here).",
        metavar="N", show_default=False)] = None,
    storage: Annotated[str | None, typer.Option(
        help="ssd or hdd (the data directory's disk when the server runs here).",
        metavar="ssd|hdd", show_default=False)] = None,
    connections: Annotated[int | None, typer.Option(
        help="The connections the applications need (default: the current max_connections).",
        metavar="N", show_default=False)] = None,
    write: Annotated[Path | None, typer.Option(
        "--write", help="Write the advice as an include file for postgresql.conf.",
        metavar="FILE", show_default=False)] = None,
    apply: Annotated[bool, typer.Option(
        "--apply", help="Set the advised values with ALTER SYSTEM and reload (those marked "
        "restart take effect at the next restart).")] = False,
    target: TargetOpt = None, config: ConfigOpt = None, json_file: JsonOpt = None,
) -> None:
    """Month 1: the guide's configuration list, computed for the server's memory, cores, storage
    and connections instead of one 16 GB machine's. Shows current against advised values and
    which need a restart. Nothing changes without --apply."""
    _json_owns_stdout(json_file)
    settings = _settings(config, target_url=target)
    report = api.tune(settings, memory=memory, cores=cores, storage=storage,
                      connections=connections, write=write, apply=apply, show=_print_tune,
                      reporter=_reporter())
    if apply:
        restart = [a.name for a in report.changes if a.needs_restart]
        out.print(f"✓ Set {len(report.applied)} parameter(s) with ALTER SYSTEM and reloaded"
                  + (f"; restart the server for {', '.join(restart)}" if restart else ""),
                  markup=False, soft_wrap=True)
    if write is not None:
        out.print(f"✓ Wrote {write}: include it from postgresql.conf with "
                  f"include_if_exists = '{write.resolve()}'", markup=False, soft_wrap=True)
    _write_json(json_file, report.to_dict())


def _print_tune(report: TuneReport) -> None:
    sources = ", ".join(f"{k} from {v}" for k, v in report.size.sources.items())
    out.print(f"Server: {report.server or '(not reachable: advice from the options)'}; "
              f"{report.size.describe()} ({sources})", markup=False, soft_wrap=True)
    table = Table()
    for column in ("parameter", "current", "advised", "takes effect", "why"):
        table.add_column(column)
    for advice in report.advice:
        mark = "→ " if advice.differs else "  "
        table.add_row(mark + advice.name, advice.current or "?", advice.advised,
                      "restart" if advice.needs_restart else "reload", advice.why)
    out.print(table)
    out.print(f"{len(report.changes)} of {len(report.advice)} differ (→); "
              "`edu-migrate tune --apply` sets them", markup=False)


monitoring_app = typer.Typer(invoke_without_command=True, no_args_is_help=False)
app.add_typer(monitoring_app, name="monitoring")


@monitoring_app.callback()
def monitoring(
    ctx: typer.Context,
    out_dir: Annotated[Path | None, typer.Option(
        "--out", help="Folder to write the setup into (created when missing; its files are "
        "replaced).", metavar="DIR", show_default=False)] = None,
    exporter: Annotated[str, typer.Option(
        "--exporter", help="Where Prometheus reaches postgres_exporter.",
        metavar="HOST:PORT")] = DEFAULT_EXPORTER,
    api_address: Annotated[str, typer.Option(
        "--api", help="Where Prometheus reaches the API's /metrics (`edu-migrate serve`).",
        metavar="HOST:PORT")] = DEFAULT_API,
    no_api: Annotated[bool, typer.Option(
        "--no-api", help="Do not scrape the API (its alerts then never fire).")] = False,
    runbook: Annotated[str, typer.Option(
        "--runbook", help="The runbook's address in the alerts' runbook_url (each alert adds "
        "its #section).", metavar="URL")] = DEFAULT_RUNBOOK,
    scrape_interval: Annotated[str, typer.Option(
        "--scrape-interval", help="Prometheus's scrape and evaluation interval.",
        metavar="DURATION")] = "30s",
    target: TargetOpt = None, config: ConfigOpt = None, json_file: JsonOpt = None,
) -> None:
    """Week 1: write a ready monitoring setup of edu_v2 into --out DIR, a README there
    explaining each file: postgres_exporter's queries (connections against max_connections,
    long transactions, replication, backup age, dead rows and last analyse per table, cache
    hits, audit writes) and its environment file (no password), Prometheus's configuration
    (the exporter and the API's /metrics), the alert rules with their promtool tests, and a
    Grafana dashboard. Then: `monitoring logging` and `monitoring pgbadger` for pgBadger.

    Example: edu-migrate monitoring --out monitoring --exporter db1:9187 --api api1:8000"""
    if ctx.invoked_subcommand is not None:
        return
    if out_dir is None:
        raise MigrationError("monitoring needs --out DIR", "e.g. edu-migrate monitoring --out "
                             "monitoring (or a sub-command: logging, pgbadger; see --help)")
    _json_owns_stdout(json_file)
    settings = _settings(config, target_url=target)
    setup = api.monitoring(settings, out_dir, exporter=exporter,
                           api=None if no_api else api_address, runbook=runbook,
                           scrape_interval=scrape_interval)
    for name, what in setup.files.items():
        out.print(f"  {name:<32} {what}", markup=False)
    out.print(f"✓ Wrote the monitoring setup into {out_dir}: read its README.md; check with "
              f"`promtool check config {out_dir / 'prometheus.yml'}`", markup=False,
              soft_wrap=True)
    _write_json(json_file, setup.to_dict())


@monitoring_app.command("logging")
def monitoring_logging(
    min_duration: Annotated[int, typer.Option(
        "--min-duration", help="Log statements slower than this many milliseconds (0: every "
        "statement, for a short survey).", metavar="MS")] = DEFAULT_MIN_DURATION_MS,
    apply: Annotated[bool, typer.Option(
        "--apply", help="Set them with ALTER SYSTEM and reload (none needs a restart).")] = False,
    target: TargetOpt = None, config: ConfigOpt = None, json_file: JsonOpt = None,
) -> None:
    """Week 1: the logging settings pgBadger needs (log_min_duration_statement,
    log_line_prefix, log_checkpoints, log_lock_waits, log_temp_files,
    log_autovacuum_min_duration, lc_messages), current against proposed. Nothing changes
    without --apply, which checks the right to set each first, as `tune --apply` does."""
    _json_owns_stdout(json_file)
    settings = _settings(config, target_url=target)
    report = api.monitoring_logging(settings, min_duration_ms=min_duration, apply=apply,
                                    show=_print_logging, reporter=_reporter())
    if apply:
        out.print(f"✓ Set {len(report.applied)} parameter(s) with ALTER SYSTEM and reloaded",
                  markup=False)
    _write_json(json_file, report.to_dict())


def _print_logging(report: LoggingReport) -> None:
    out.print(f"Server: {report.server or '(not reachable: the settings alone)'}", markup=False)
    table = Table()
    for column in ("parameter", "current", "proposed", "why"):
        table.add_column(column)
    for advice in report.advice:
        table.add_row(("→ " if advice.differs else "  ") + advice.name, advice.current or "?",
                      repr(advice.advised) if advice.advised.endswith(" ") else advice.advised,
                      advice.why)
    out.print(table)
    out.print(f"{len(report.changes)} of {len(report.advice)} differ (→); "
              "`edu-migrate monitoring logging --apply` sets them", markup=False)


@monitoring_app.command("pgbadger")
def monitoring_pgbadger(
    report_file: Annotated[Path, typer.Option(
        "--out", help="The HTML report to write.", metavar="FILE")] = Path("pgbadger.html"),
    log: Annotated[Path | None, typer.Option(
        "--log", help="The server's log file (default: the one the server writes now, when "
        "it runs on this machine).", metavar="FILE", show_default=False)] = None,
    prefix: Annotated[str | None, typer.Option(
        "--prefix", help="The log_line_prefix the log was written with (default: the "
        "server's).", show_default=False)] = None,
    target: TargetOpt = None, config: ConfigOpt = None, json_file: JsonOpt = None,
) -> None:
    """Week 1: pgBadger's HTML report (slowest and most frequent queries, connections, locks,
    checkpoints, temporary files, autovacuum) of the server's log. When the log is not on this
    machine, it says how to make the report on the server. Run `monitoring logging --apply`
    first, and the LMS for a while."""
    _json_owns_stdout(json_file)
    settings = _settings(config, target_url=target)
    made = api.monitoring_pgbadger(settings, report_file, log=log, prefix=prefix)
    out.print(f"✓ Wrote {made.html} ({made.bytes / 1e6:,.1f} MB) from {made.log}",
              markup=False, soft_wrap=True)
    _write_json(json_file, made.to_dict())


@app.command()
def docs(
    out_dir: Annotated[Path, typer.Option(
        "--out", help="Folder to write the documents into (created when missing; its files "
        "are replaced).", metavar="DIR")],
    target: TargetOpt = None, config: ConfigOpt = None, mapping: MappingOpt = None,
    json_file: JsonOpt = None,
) -> None:
    """Day 1: documentation generated from the databases, so it cannot drift: a data
    dictionary of edu_v2 (every table and column with type, constraints, comment, row count and
    row-level security policies), an ER diagram (Mermaid), and OLD_TO_NEW_SCHEMA_MAPPING.md (each
    legacy column: where it goes, how it is transformed, which dirty-data rule applies). Only
    reads edu_v2.

    Example: edu-migrate docs --out docs/generated"""
    _json_owns_stdout(json_file)
    settings = _settings(config, target_url=target, mapping_file=mapping)
    made = api.docs(settings, out_dir)
    for name, what in made.files.items():
        out.print(f"  {name:<32} {what}", markup=False)
    out.print(f"✓ Wrote the documentation of {made.tables} tables ({made.columns} columns) and "
              f"{made.legacy_columns} legacy columns into {out_dir}", markup=False,
              soft_wrap=True)
    _write_json(json_file, made.to_dict())


@app.command()
def decommission(
    min_days: Annotated[int, typer.Option(
        "--min-days", help="Days after the cutover before the old database may go.")] = 30,
    force: Annotated[bool, typer.Option(
        "--force", help="Go on within --min-days of the cutover (logged in "
        "migration.run_log).")] = False,
    yes_i_typed: Annotated[str | None, typer.Option(
        "--yes-i-typed", help="The database's name, instead of typing it when asked.",
        metavar="NAME", show_default=False)] = None,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Print every step and change nothing.")] = False,
    source: SourceOpt = None, target: TargetOpt = None, config: ConfigOpt = None,
    json_file: JsonOpt = None,
) -> None:
    """Month 1: drop the old database (the source, edu). Refused within 30 days of the cutover
    (recorded by a passing `cutover-check`), while sessions still use it, and for edu_v2
    itself. First a final backup, restored into a scratch database and counted, its SHA-256
    recorded in the manifest; then the database's name is asked for; then DROP DATABASE."""
    _json_owns_stdout(json_file)
    settings = _settings(config, source_url=source, target_url=target)

    def ask(name: str) -> str:
        return str(typer.prompt(f"Type the name of the database to drop ({name})"))

    result = api.decommission(settings, min_days=min_days, force=force,
                              typed_name=yes_i_typed, ask_name=ask, dry_run=dry_run,
                              reporter=_reporter())
    _write_json(json_file, result.to_dict())


@app.command("compare-queries")
def compare_queries(
    queries: Annotated[Path | None, typer.Option(
        "--queries", help="TOML file of your own pairs: [[query]] name = \"…\", old = \"SQL "
        "for edu\", new = \"SQL for edu_v2\".", metavar="FILE", show_default=False)] = None,
    repeats: Annotated[int, typer.Option(help="Timed runs per query (after 3 warm-ups).")] = 25,
    threshold: Annotated[float, typer.Option(
        help="Percent by which edu_v2 may be slower than edu.", metavar="PCT")] = 25.0,
    min_difference_ms: Annotated[float, typer.Option(
        "--min-difference-ms", help="Differences below this are noise, never a "
        "failure.")] = 1.0,
    source: SourceOpt = None, target: TargetOpt = None, config: ConfigOpt = None,
    json_file: JsonOpt = None,
) -> None:
    """The guide's "no performance degradation", measured: the LMS's five everyday queries and
    your pairs, on edu and on edu_v2 (read-only sessions), medians side by side with each
    plan's index use. Exits 1 when a query is slower on edu_v2 past the threshold."""
    _json_owns_stdout(json_file)
    settings = _settings(config, source_url=source, target_url=target)
    report = api.compare_queries(settings, queries_file=queries, repeats=repeats,
                                 threshold_percent=threshold,
                                 min_difference_ms=min_difference_ms)
    table = Table(title=f"Median of {report.repeats} runs (ms)")
    for column in ("query", "edu", "edu_v2", "ratio", "plan on edu", "plan on edu_v2"):
        table.add_column(column, justify="right" if column in ("edu", "edu_v2", "ratio")
                         else "left", overflow="fold")
    for timing in report.timings:
        old_plan, new_plan = timing.shown_plans()
        table.add_row(("✗ " if timing.slower else "✓ ") + timing.name, f"{timing.old_ms:.2f}",
                      f"{timing.new_ms:.2f}", f"{timing.ratio:.2f}×", old_plan, new_plan)
    out.print(table)
    _write_json(json_file, report.to_dict())
    api.require_no_slowdown(report)


@mapping_app.command("draft")
def mapping_draft(
    out_file: Annotated[Path | None, typer.Option(
        "--out", help="Write the drafted mapping to FILE (default: print it).", metavar="FILE",
        show_default=False)] = None,
    source: SourceOpt = None, config: ConfigOpt = None,
) -> None:
    """Propose a mapping from the source's catalogue: per legacy table the source table, per
    column the source column (names, synonyms in English, Azerbaijani and Russian, types), with a
    confidence and the rejected candidates. What it cannot map is a TODO, which preflight
    refuses. Only reads the source's catalogue."""
    settings = _settings(config, source_url=source)
    drafted = api.mapping_draft(settings, out_file)
    if out_file is None:
        sys.stdout.write(drafted.render())
        return
    out.print(f"✓ Wrote {out_file}: {len(drafted.renamed())} columns under other names",
              markup=False)
    for line in drafted.renamed():
        out.print(f"  {line}", markup=False)
    if drafted.todo:
        out.print(f"! {len(drafted.todo)} TODO to map by hand: {', '.join(drafted.todo)}",
                  markup=False, soft_wrap=True)
    out.print(f"Next: read {out_file}, then `edu-migrate mapping check --mapping {out_file}`",
              markup=False)


@mapping_app.command("check")
def mapping_check(source: SourceOpt = None, config: ConfigOpt = None,
                  mapping: MappingOpt = None, json_file: JsonOpt = None) -> None:
    """Check the mapping against the source, as preflight does: every table and column exists,
    every expression runs, every value casts to its staged type (else: the table, the column, a
    row id and what was found). Then three values of each mapped column. Only reads."""
    _json_owns_stdout(json_file)
    settings = _settings(config, source_url=source, mapping_file=mapping)
    checked = api.mapping_check(settings)
    table = Table(title=f"Legacy mapping: {checked.mapping.origin}")
    for column in ("legacy column", "staged as", "read from", "sample values"):
        table.add_column(column)
    for found in checked.samples:
        table.add_row(f"{found.legacy_table}.{found.column}", found.staged_type, found.source,
                      " | ".join(found.values))
    out.print(table)
    out.print(f"✓ The mapping fits the source: {len(checked.mapping.tables)} tables, "
              f"{len(checked.samples)} columns, every value casts", markup=False)
    _write_json(json_file, checked.to_dict())


def _interrupt(signum: int, frame: object) -> None:
    """SIGTERM stops a run like Ctrl-C: the open transaction is rolled back on the way out."""
    raise KeyboardInterrupt


def main() -> None:
    """Entry point: domain errors become one line on stderr and an exit code."""
    debug = "--debug" in sys.argv or os.environ.get("EDU_MIGRATE_DEBUG") == "1"
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        app()
    except MigrationError as exc:
        if debug:
            raise
        sys.stderr.write(f"error: {exc.one_line()}\n")
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.stderr.write("interrupted: the phase in progress was rolled back; run the same "
                         "command again to resume\n")
        sys.exit(130)
    except psycopg.Error as exc:
        if debug:
            raise
        first = redacted(str(exc).strip().splitlines()[0]) if str(exc).strip() \
            else type(exc).__name__
        hint = ("raise statement_timeout for the migration (e.g. PGOPTIONS='-c "
                "statement_timeout=0') and run again"
                if isinstance(exc, psycopg.errors.QueryCanceled)
                else "rerun with --debug for details")
        sys.stderr.write(f"error: database: {first} — {hint}\n")
        sys.exit(5)
