"""`migrate --phase N --sql`: the statements a run of the phases would send, in the order it sends
them, with the as-of time and every parameter filled in, for a DBA to review before the window
(alembic's offline mode).

It reads edu_v2's catalogue and migration.state in a read-only session and never opens the
source: nothing is written anywhere. The script follows runner.run_phase step by step (keep the
two in step: the test runs the printed script with psql and compares the result with the run's).

What only the run can know is shown as comments: the rows it streams from the source snapshot
into the stage tables (phases/staging.py), the phone numbers it computes in Python, and each
statement's row count and time that it records. The rest runs with `psql -v ON_ERROR_STOP=1 -f`
against an edu_v2 whose stage tables hold a run's rows, and derives the same rows as the run.

The id secret is never printed: the script copies it from migration.state into the session's
setting inside the database, as the run does, and the query answers only whether it did.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import psycopg
from psycopg import sql

from edu_migrate import direction
from edu_migrate.errors import PreconditionFailed
from edu_migrate.mapping import LegacyMapping
from edu_migrate.phases import sqlfile
from edu_migrate.phases.as_of import planned_as_of, recorded_as_of
from edu_migrate.phases.marks import PARSE_SQL, WORK_TABLE, scope_marks_statement
from edu_migrate.phases.mirror_index import mirror_statements
from edu_migrate.phases.runner import (
    BANNER,
    PHASES,
    RUN_ORDER,
    SCOPED_PHASE,
    Phase,
    clear_statements,
    full_scope_statements,
    lost_copies,
    phase_states,
    rebuild_plan,
    source_default_statements,
    source_table_statements,
    vacuum_statement,
    vacuumed_after_load,
)
from edu_migrate.phases.session import ID_SECRET_SETTING, SESSION_SETTINGS
from edu_migrate.phases.staging import (
    MIRROR_SOURCE_COLUMNS,
    PARALLEL_THRESHOLD,
    STAGE_SCHEMA,
    copy_into_stage,
    source_rows,
    stage_ddl,
)
from edu_migrate.security.audit import paused_triggers, trigger_statements

# psql fills :'as_of' from `-v as_of=...` when no as-of time is known before the run.
AS_OF_VARIABLE = ":'as_of'"


class _Script:
    """The lines of the script, rendered against the target's connection (its quoting)."""

    def __init__(self, conn: psycopg.Connection) -> None:
        self.conn = conn
        self.lines: list[str] = []

    def text(self, statement: str | sql.Composable) -> str:
        return statement if isinstance(statement, str) else statement.as_string(self.conn)

    def comment(self, *lines: str) -> None:
        self.lines += [f"-- {line}".rstrip() for text in lines for line in text.splitlines()]

    def run(self, statement: str | sql.Composable) -> None:
        """A statement the run sends, as psql runs it."""
        self.lines.append(self.text(statement).rstrip().rstrip(";") + ";")

    def shown(self, statement: str | sql.Composable) -> None:
        """A statement the run sends that psql cannot (it needs the run's own values)."""
        self.comment(*(f"  {line}" for line in
                       (self.text(statement).rstrip() + ";").splitlines()))

    def blank(self) -> None:
        self.lines.append("")


def offline_script(conn: psycopg.Connection, numbers: Sequence[int], mapping: LegacyMapping, *,
                   requested_as_of: datetime | None = None, workers: int = 2) -> str:
    """The script of `migrate --sql` for the phases `numbers` (in run order), read from the
    target through `conn`, which should be read-only."""
    row = conn.execute("SELECT to_regclass('migration.state') IS NOT NULL").fetchone()
    if not (row and row[0]):
        raise PreconditionFailed("the target has no edu_v2 schema",
                                 "run `edu-migrate schema apply` first")
    as_of = planned_as_of(conn, requested_as_of)
    recorded = recorded_as_of(conn)
    states = phase_states(conn)
    script = _Script(conn)
    _header(script, numbers, as_of, states)
    if as_of is not None and as_of != recorded:
        script.comment("The run records its as-of time first (migration.state.as_of):")
        script.run(sql.SQL("UPDATE migration.state SET as_of = {}").format(sql.Literal(as_of)))
        script.blank()
    if recorded is None and as_of is None:
        script.comment("The run records the source snapshot's time as its as-of time first:")
        script.run(f"UPDATE migration.state SET as_of = {AS_OF_VARIABLE}")
        script.blank()
    as_of_text = AS_OF_VARIABLE if as_of is None else sql.Literal(as_of.isoformat()).as_string(
        conn)
    for number in numbers:
        _phase(script, PHASES[number], states, as_of_text, mapping, workers)
    script.comment(BANNER, "After the last phase, the unmapped legacy tables are archived "
                   "(phases/archive.py) by the `migrate` that leaves every phase done.")
    return "\n".join(script.lines) + "\n"


def _header(script: _Script, numbers: Sequence[int], as_of: datetime | None,
            states: dict[int, str]) -> None:
    script.comment(
        f"edu-migrate migrate --sql: the statements of phase {', '.join(map(str, numbers))}, in "
        "the order a run sends them to edu_v2.",
        "Nothing was run to print this: it read edu_v2's catalogue and migration.state only.",
        "The id secret is not in this file: each transaction copies it from migration.state "
        "into its own setting, as the run does.",
        "Comments indented under a step are what the run sends with values only it has (rows "
        "streamed from the source, computed phone numbers, row counts and times); the rest runs "
        "with",
        "  psql -v ON_ERROR_STOP=1 -f THIS_FILE EDU_V2_URL",
        "against an edu_v2 whose stage tables hold a run's rows. A phase run that way stays "
        "'running' in migration.phase_runs: `edu-migrate migrate` runs it again.")
    if as_of is None:
        script.comment("No as-of time is recorded or given: the run takes the source snapshot's "
                       "time. Give one with --as-of, or to psql with -v as_of=TIMESTAMP.")
    else:
        script.comment(f"As of {as_of.isoformat()} (migration.as_of() in every rule).")
    state = direction.current(script.conn)
    if state.cut_over:
        script.comment("edu_v2 is the system of record since the cutover: `migrate` refuses "
                       "without --override-cutover.")
    for number in numbers:
        phase = PHASES[number]
        missing = [n for n in phase.needs if states.get(n) != "done" and n not in numbers]
        if states.get(number) == "done":
            script.comment(f"Phase {number} is done: `migrate` skips it; after `edu-migrate "
                           f"rollback --phase {number}` it runs these statements.")
        elif missing:
            script.comment(f"Phase {number} needs phase {', '.join(map(str, missing))} done "
                           "first: `migrate` refuses it until then.")
    script.blank()


def _session(script: _Script, as_of_text: str) -> None:
    for setting in SESSION_SETTINGS:
        script.run(setting)
    script.run(ID_SECRET_SETTING)
    script.run(f"SELECT set_config('edu_migrate.as_of', {as_of_text}, true) IS NOT NULL "
               "AS as_of_set")


def _phase(script: _Script, phase: Phase, states: dict[int, str], as_of_text: str,
           mapping: LegacyMapping, workers: int) -> None:
    n = phase.number
    script.comment(BANNER, f"phase {n}: {phase.title}", BANNER)
    script.comment(f"phase {n}: start (its own transaction)")
    script.run(sql.SQL(
        "INSERT INTO migration.phase_runs (phase, status, started_at) "
        "VALUES ({0}, 'running', now()) ON CONFLICT (phase) DO UPDATE SET status = 'running', "
        "started_at = now(), finished_at = NULL, seconds = NULL, last_error = NULL").format(
            sql.Literal(n)))
    script.comment("It notes the source it reads, unless a phase before did (a sync checks "
                   "it):")
    script.shown("UPDATE migration.state SET source_system_id = coalesce(source_system_id, "
                 "<the source's system identifier>), source_database = coalesce("
                 "source_database, <the source database's name>)")
    script.blank()
    _stage(script, phase, states, mapping, workers)
    if n == SCOPED_PHASE:
        _parse_marks(script, phase, as_of_text, workers)
    _transform(script, phase, as_of_text, mapping)


def _stage(script: _Script, phase: Phase, states: dict[int, str], mapping: LegacyMapping,
           workers: int) -> None:
    """runner._stage_reads and staging.stage_tables: each table the phase reads, streamed from
    the source snapshot; for phases 1-4, a table a done phase read is kept while intact."""
    n = phase.number
    if n == SCOPED_PHASE:
        script.comment(f"phase {n}: stage (a `migrate --all` does this and the parse below in "
                       "the background, while phases 1-4 run)")
        kept: tuple[str, ...] = ()
    else:
        lost = set(lost_copies(script.conn, phase.reads))
        kept = tuple(t for t in phase.reads if t not in lost and any(
            m != n and states.get(m) == "done" and t in PHASES[m].reads for m in RUN_ORDER))
    for table in phase.reads:
        staged = sql.Identifier(STAGE_SCHEMA, table)
        if table in kept:
            script.comment(f"phase {n}: stage {table}: kept, as a done phase derived from it "
                           "(phases that share a table see one snapshot of it)")
            continue
        script.comment(f"phase {n}: stage {table}: the run streams the source's rows, as its "
                       f"snapshot of the source sees them, into {STAGE_SCHEMA}.{table}")
        script.shown(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(
            sql.Identifier(STAGE_SCHEMA)))
        script.shown(sql.SQL("DROP TABLE IF EXISTS {}, {}").format(
            staged, sql.Identifier(STAGE_SCHEMA, f"buckets_{table}")))
        script.shown(stage_ddl(table))
        script.comment(f"  on the source (above {PARALLEL_THRESHOLD:,} rows: in id ranges over "
                       f"{workers} sessions):")
        script.shown(source_rows(mapping[table]))
        script.comment("  into edu_v2, chunk by chunk:")
        script.shown(copy_into_stage(table))
        script.shown(sql.SQL("ANALYZE {}").format(staged))
        script.shown(sql.SQL(
            "INSERT INTO migration.mirror_state (table_name, rows, {}, stale_phases) VALUES ({}, "
            "<rows copied>, <where the snapshot read them>, <done phases that read an earlier "
            "copy>) ON CONFLICT (table_name) DO UPDATE SET ...").format(
                sql.SQL(MIRROR_SOURCE_COLUMNS), sql.Literal(table)))
        if n == SCOPED_PHASE:
            script.comment("  then, in a session of its own while the phase derives, what a sync "
                           "looks the mirror up by:")
        else:
            script.comment("  then what a sync looks the mirror up by:")
        for _, statement in mirror_statements(table):
            script.shown(statement)
    script.blank()


def _parse_marks(script: _Script, phase: Phase, as_of_text: str, workers: int) -> None:
    """phases/marks.py's parse_in_ranges, as one session: the same rows, in one piece."""
    (parse,) = [s for s in sqlfile.load(PARSE_SQL) if s.name == "parse_grades"]
    script.comment(f"phase {phase.number}: parse_grades: the work each mark owes to itself "
                   f"alone ({PARSE_SQL}), before the phase's transaction. The run fills",
                   f"{WORK_TABLE.as_string(script.conn)} in {workers} sessions, one range of "
                   "ids each (WITH NO DATA, then an INSERT per range); here it is one piece.")
    script.run("BEGIN")
    _session(script, as_of_text)
    script.run(sql.SQL("DROP TABLE IF EXISTS {}").format(WORK_TABLE))
    script.run(scope_marks_statement())
    script.run(sql.Composed([sql.SQL("CREATE UNLOGGED TABLE {} AS\n").format(WORK_TABLE),
                             sql.SQL(parse.text)]))
    script.run("COMMIT")
    script.run(sql.SQL("ANALYZE {}").format(WORK_TABLE))
    script.blank()


def _transform(script: _Script, phase: Phase, as_of_text: str, mapping: LegacyMapping) -> None:
    """runner._transform's statements, in its order."""
    n = phase.number
    conn = script.conn
    script.comment(f"phase {n}: the phase's transaction: all of it or nothing")
    script.run("SET temp_buffers = '256MB'")
    script.run("BEGIN")
    script.comment(f"phase {n}: first, the run checks that what it reads is still staged (a "
                   "crash of the server empties UNLOGGED tables): if not, it rolls back,",
                   "  stages again and starts over")
    _session(script, as_of_text)
    script.comment(f"phase {n}: clear what the phase writes")
    for clear in clear_statements(phase) + source_default_statements(phase, mapping):
        script.run(clear)
    for lookup in phase.lookups:
        doc = (lookup.__doc__ or lookup.__name__).strip().splitlines()[0]
        script.comment(f"phase {n}: {lookup.__name__}, in Python ({lookup.__module__}): {doc}",
                       "  (psql keeps the stage table the run built)")
    if phase.reads_scoped:
        script.comment(f"phase {n}: the legacy rows in scope: every staged row")
        for scope in full_scope_statements(phase):
            script.run(scope)
    paused = paused_triggers(conn, phase.writes)
    if paused:
        script.comment(f"phase {n}: pause the row triggers (one audit event for the load)")
    for pause in trigger_statements(paused, enable=False):
        script.run(pause)
    plan = rebuild_plan(conn, phase.rebuilt_after_load)
    if plan.drops:
        script.comment(f"phase {n}: drop the keys, indexes and foreign keys of "
                       f"{', '.join(phase.rebuilt_after_load)} before the load")
    for drop in plan.drops:
        script.run(drop)
    statements = sqlfile.load(phase.sql_file)
    for statement in (s for s in statements if not s.after_indexes):
        script.blank()
        script.comment(f"phase {n}: {statement.name}")
        script.run(statement.text)
    script.blank()
    script.comment(f"phase {n}: record_source_tables")
    for record in source_table_statements(phase, mapping):
        script.run(record)
    for name, rebuild in plan.rebuilds:
        script.comment(f"phase {n}: {name}")
        script.run(rebuild)
    for statement in (s for s in statements if s.after_indexes):
        script.blank()
        script.comment("(once the indexes are built, before the foreign keys)")
        script.comment(f"phase {n}: {statement.name}")
        script.run(statement.text)
    if plan.foreign_keys:
        script.blank()
    for name, rebuild in plan.foreign_keys:
        script.comment(f"phase {n}: {name}")
        script.run(rebuild)
    for resume in trigger_statements(paused, enable=True):
        script.run(resume)
    for table in phase.writes:
        script.run(sql.SQL("ANALYZE {}").format(sql.Identifier(table)))
    script.comment(f"phase {n}: record the phase done, with its time and each statement's row "
                   "count")
    script.shown(sql.SQL(
        "UPDATE migration.phase_runs SET status = 'done', finished_at = clock_timestamp(), "
        "seconds = <seconds>, row_counts = <each statement's row count> WHERE phase = {}"
    ).format(sql.Literal(n)))
    script.shown(sql.SQL("INSERT INTO migration.run_log (phase, event, detail) VALUES ({}, "
                         "'done', <each statement's row count>)").format(sql.Literal(n)))
    script.shown(sql.SQL("INSERT INTO audit.log (table_name, operation, new_values) VALUES "
                         "({}, 'MIGRATE', <the phase and its row counts>)").format(
        sql.Literal(", ".join(phase.writes))))
    script.run("COMMIT")
    vacuumed = vacuumed_after_load(phase)
    if vacuumed:
        script.comment(f"phase {n}: then, committed, what it bulk-loaded is vacuumed, so that "
                       "autovacuum's first pass never meets the next command")
    for table in vacuumed:
        script.comment(f"phase {n}: vacuum {table}")
        script.run(vacuum_statement(table))
    script.blank()
