"""The five phases of the guide: what each reads, writes and needs, and how one is run.

A phase is one transaction on the target: it empties what it writes, loads it set-based from the
staged legacy tables, rebuilds the indexes and foreign keys of its large tables after the load,
and records itself as done. Killed half-way, it leaves nothing behind, and running it again
finishes the job. Before that transaction, phase 5's marks are staged and their per-mark work
done in parallel sessions (phases/marks.py), work that the phase's rerun does anew.

The guide runs students (phase 2) before organizations (phase 3), but a student belongs to a
program and a teacher to a department. Rather than load them with an unchecked or nullable link,
phase 2 needs phase 3: `--all` runs 1, 3, 2, 4, 5, and the phase numbers stay the guide's.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from edu_migrate.errors import MigrationError, PreconditionFailed
from edu_migrate.mapping import LegacyMapping
from edu_migrate.pg.connect import connect
from edu_migrate.phases import sqlfile
from edu_migrate.phases.marks import PARSE_SQL, MarksAhead, prepare_marks
from edu_migrate.phases.mirror_index import MirrorIndexer, index_mirror_now
from edu_migrate.phases.phones import phones_parsed_anew, stage_phone_numbers
from edu_migrate.phases.session import set_session as set_session
from edu_migrate.phases.staging import STAGE_SCHEMA, SourceSnapshot, stage_tables
from edu_migrate.runlog import Reporter
from edu_migrate.security.audit import record_bulk_event, row_audit_paused


@dataclass(frozen=True)
class Phase:
    number: int
    title: str
    needs: tuple[int, ...]
    reads: tuple[str, ...]
    writes: tuple[str, ...]
    crosswalk_partitions: tuple[str, ...]
    # Legacy tables whose crosswalk is derived from the target rows (each row's legacy_id, the
    # views of schema V026), not written: their rows set aside and repairs are still recorded.
    derived_crosswalks: tuple[str, ...] = ()
    rebuilt_after_load: tuple[str, ...] = ()
    # Lookups that only a Python library can compute, built from the staged rows before the SQL.
    lookups: tuple[Callable[[psycopg.Connection], int], ...] = ()
    # For each, whether it will compute every entry anew (another library version): what it
    # says may then differ for any row, and a sync derives the phase whole.
    lookups_anew: tuple[Callable[[psycopg.Connection], bool], ...] = ()
    # Rules run before the phase's transaction, in sessions of their own (phases/marks.py).
    ahead_sql_files: tuple[str, ...] = ()
    # Its rules read scoped_<table> for each table it reads (define_scope): every staged row in
    # a full run, the rows in scope in a sync.
    reads_scoped: bool = False
    # The file that names a sync's scope of phases 1-4 (phase 5's is sync.sql): a phase with
    # one is derived again in part, for the rows in scope and their groups.
    scope_file: str | None = None
    # The phases it needs whose changed outcomes its scope file follows by key: one of those
    # coming out differently still lets it be derived in part.
    needs_followed: tuple[int, ...] = ()

    @property
    def crosswalk_tables(self) -> tuple[sql.Identifier, ...]:
        """Where its crosswalk records are written: its partitions, and the rows of its derived
        crosswalks whose target row was deleted on edu_v2 before schema V026 (after it, the
        audit log keeps them). What a rerun, a rollback or a sync clears."""
        return (*(sql.Identifier("migration", f"crosswalk_{table}")
                  for table in self.crosswalk_partitions),
                *(sql.Identifier("migration", f"crosswalk_{table}_deleted")
                  for table in self.derived_crosswalks))

    @property
    def sql_file(self) -> str:
        return f"phase{self.number}.sql"

    @property
    def sql_files(self) -> tuple[str, ...]:
        """Every file of the phase's rules."""
        return (*self.ahead_sql_files, self.sql_file)


PHASES: dict[int, Phase] = {
    1: Phase(1, "PHASE 1: MIGRATING USERS", (), ("users", "persons"), ("persons", "users"),
             ("users", "persons"), lookups=(stage_phone_numbers,),
             lookups_anew=(phones_parsed_anew,), reads_scoped=True,
             scope_file="phase1_scope.sql"),
    3: Phase(3, "PHASE 3: MIGRATING ORGANIZATIONS", (), ("organizations", "courses"),
             ("academic_terms", "organization_units"), ("organizations",)),
    2: Phase(2, "PHASE 2: MIGRATING STUDENTS", (1, 3), ("students", "teachers"),
             ("staff_members", "students"), ("students", "teachers")),
    4: Phase(4, "PHASE 4: MIGRATING COURSES", (2, 3), ("courses",),
             ("course_offerings", "courses"), ("courses",), reads_scoped=True,
             scope_file="phase4_scope.sql", needs_followed=(2, 3)),
    5: Phase(5, "PHASE 5: MIGRATING ENROLLMENTS & GRADES", (2, 4),
             ("course_students", "grades"), ("grades", "assessments", "course_enrollments"),
             ("course_students",), derived_crosswalks=("grades",),
             rebuilt_after_load=("public.grades", "public.course_enrollments",
                                 "migration.crosswalk_course_students"),
             ahead_sql_files=(PARSE_SQL,), reads_scoped=True),
}
RUN_ORDER: tuple[int, ...] = (1, 3, 2, 4, 5)
DERIVED_CROSSWALKS: tuple[str, ...] = tuple(
    table for phase in PHASES.values() for table in phase.derived_crosswalks)
# The phase whose large tables a sync derives again only in part (phases/sync.py).
SCOPED_PHASE = 5
BANNER = "=" * 60


def dependents_of(number: int) -> list[int]:
    """The phase and every phase that needs it, directly or not, in run order."""
    closure = {number}
    changed = True
    while changed:
        changed = False
        for phase in PHASES.values():
            if phase.number not in closure and closure.intersection(phase.needs):
                closure.add(phase.number)
                changed = True
    return [n for n in RUN_ORDER if n in closure]


@dataclass
class PhaseResult:
    number: int
    status: str
    seconds: float = 0.0
    row_counts: dict[str, int] = field(default_factory=dict)


def phase_states(conn: psycopg.Connection) -> dict[int, str]:
    return {int(row[0]): str(row[1]) for row in conn.execute(
        "SELECT phase, status FROM migration.phase_runs")}


@dataclass(frozen=True)
class RebuildPlan:
    """What a load drops before it and builds again after it, from the catalogue: the statements
    only, run by _indexes_rebuilt_after and printed by `migrate --sql` (phases/offline.py)."""
    drops: tuple[sql.Composed, ...]
    # (step name, statement), in the order they run: keys, then indexes; then, after the
    # statements marked `-- after: indexes` (sqlfile.py), the foreign keys.
    rebuilds: tuple[tuple[str, sql.Composed], ...]
    foreign_keys: tuple[tuple[str, sql.Composed], ...] = ()


def rebuild_plan(conn: psycopg.Connection, tables: tuple[str, ...]) -> RebuildPlan:
    """The keys, indexes and foreign keys of `tables` to drop and build again; reads only."""
    if not tables:
        return RebuildPlan((), (), ())
    foreign_keys = conn.execute(
        "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint "
        "WHERE contype = 'f' AND (conrelid = ANY(%(t)s::regclass[]) "
        "OR confrelid = ANY(%(t)s::regclass[])) ORDER BY conrelid::regclass::text, conname",
        {"t": list(tables)}).fetchall()
    keys = conn.execute(
        "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint "
        "WHERE contype IN ('p', 'u') AND conrelid = ANY(%(t)s::regclass[]) ORDER BY 1, 2",
        {"t": list(tables)}).fetchall()
    indexes = conn.execute(
        "SELECT i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid) FROM pg_index i "
        "WHERE i.indrelid = ANY(%(t)s::regclass[]) AND NOT EXISTS ("
        "  SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid "
        "  AND c.contype IN ('p', 'u')) ORDER BY 1",
        {"t": list(tables)}).fetchall()
    drops = [sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(
        sql.SQL(table), sql.Identifier(name)) for table, name, _ in foreign_keys + keys]
    drops += [sql.SQL("DROP INDEX {}").format(sql.SQL(index)) for index, _ in indexes]
    rebuilds = [(f"rebuild {name}", sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} {}").format(
        sql.SQL(table), sql.Identifier(name), sql.SQL(definition)))
        for table, name, definition in keys]
    rebuilds += [(f"rebuild {index}", sql.Composed([sql.SQL(definition)]))
                 for index, definition in indexes]
    rebuilt_keys = [(f"rebuild {name}", sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} {}").format(
        sql.SQL(table), sql.Identifier(name), sql.SQL(definition)))
        for table, name, definition in foreign_keys]
    return RebuildPlan(tuple(drops), tuple(rebuilds), tuple(rebuilt_keys))


@contextmanager
def _indexes_rebuilt_after(conn: psycopg.Connection, tables: tuple[str, ...],
                           reporter: Reporter,
                           between: Callable[[], None] = lambda: None) -> Iterator[None]:
    """Drop the keys, indexes and foreign keys of `tables`, load, then build them again from the
    catalogue's own definitions: one sort per index instead of millions of random inserts.
    `between` runs once the keys and indexes are built, before the foreign keys."""
    if not tables:
        yield
        between()
        return
    plan = rebuild_plan(conn, tables)
    for statement in plan.drops:
        conn.execute(statement)
    yield
    started = time.perf_counter()
    for name, statement in plan.rebuilds:
        _timed(conn, reporter, name, statement)
    between_started = time.perf_counter()
    between()
    between_seconds = time.perf_counter() - between_started
    for name, statement in plan.foreign_keys:
        _timed(conn, reporter, name, statement)
    reporter.line("  indexes and foreign keys rebuilt in "
                  f"{time.perf_counter() - started - between_seconds:.1f}s")


def _timed(conn: psycopg.Connection, reporter: Reporter, name: str,
           statement: sql.SQL | sql.Composed) -> None:
    started = time.perf_counter()
    conn.execute(statement)
    reporter.step(name, time.perf_counter() - started, 0)


# The runner's own statements are built once, by the *_statements functions below: the runner
# executes them and `migrate --sql` (phases/offline.py) prints them.

def clear_statements(phase: Phase) -> list[sql.Composed]:
    """What clears the phase's results before it runs again."""
    # CASCADE reaches only the tables of phases that need this one, which are empty: a phase
    # cannot start while one of those is done (see _check_dependencies).
    n = sql.Literal(phase.number)
    return [
        sql.SQL("TRUNCATE {} CASCADE").format(
            sql.SQL(", ").join(sql.Identifier(t) for t in phase.writes)),
        *(sql.SQL("TRUNCATE {}").format(table) for table in phase.crosswalk_tables),
        sql.SQL("DELETE FROM migration.rejected_rows WHERE phase = {}").format(n),
        sql.SQL("DELETE FROM migration.repairs WHERE phase = {}").format(n),
    ]


def _clear_phase(conn: psycopg.Connection, phase: Phase) -> None:
    for statement in clear_statements(phase):
        conn.execute(statement)


def record_source(conn: psycopg.Connection, snapshot: SourceSnapshot) -> None:
    """The first phase notes which source the target is derived from; a sync checks it."""
    system_id, database = snapshot.identity()
    conn.execute("UPDATE migration.state SET source_system_id = coalesce(source_system_id, %s), "
                 "source_database = coalesce(source_database, %s)", [system_id, database])


def _check_dependencies(conn: psycopg.Connection, phase: Phase) -> None:
    states = phase_states(conn)
    missing = [n for n in phase.needs if states.get(n) != "done"]
    if missing:
        first = next(n for n in RUN_ORDER if n in missing)
        raise PreconditionFailed(
            f"phase {phase.number} needs phase {', '.join(map(str, missing))} done first",
            f"run `edu-migrate migrate --phase {first}` (or `migrate --all`)")
    blocking = [n for n in dependents_of(phase.number)[1:] if states.get(n) == "done"]
    if blocking:
        raise PreconditionFailed(
            f"phase {phase.number} cannot run while phase {blocking[0]}, which uses its rows, "
            "is done", f"run `edu-migrate rollback --phase {phase.number}` first")


def run_phase(phase: Phase, snapshot: SourceSnapshot, target_url: str, *, batch_size: int,
              workers: int, reporter: Reporter,
              ahead: MarksAhead | None = None) -> PhaseResult:
    """Stage what the phase reads, then derive it in one transaction. Phase 5 finds its marks
    staged and parsed by `ahead` (this run's, same snapshot), else does that work itself."""
    reporter.line(BANNER)
    reporter.line(phase.title)
    reporter.line(BANNER)
    with connect(target_url, purpose="target") as conn:
        states = phase_states(conn)
        conn.commit()
        if states.get(phase.number) == "done":
            reporter.line(f"Phase {phase.number} is already done: nothing to do "
                          f"(`edu-migrate rollback --phase {phase.number}` to redo it)")
            return PhaseResult(phase.number, "skipped")
        _check_dependencies(conn, phase)
        record_source(conn, snapshot)
        conn.execute(
            "INSERT INTO migration.phase_runs (phase, status, started_at) "
            "VALUES (%s, 'running', now()) ON CONFLICT (phase) DO UPDATE SET status = 'running', "
            "started_at = now(), finished_at = NULL, seconds = NULL, last_error = NULL",
            [phase.number])
        conn.commit()
    started = time.perf_counter()
    try:
        if phase.number != SCOPED_PHASE:
            _stage_reads(phase, snapshot, target_url, batch_size=batch_size, workers=workers,
                         reporter=reporter)
        elif ahead is not None and ahead.snapshot is snapshot:
            ahead.result()
            reporter.line(f"Marks staged and parsed in the background ({ahead.seconds:.1f}s, "
                          "while phases 1–4 ran)")
        else:
            prepare_marks(snapshot, target_url, phase.reads, batch_size=batch_size,
                          workers=workers, reporter=reporter)
        # The marks' mirror indexes and buckets (a sync's look-ups), in a session of their own
        # while the phase derives: its transaction only reads the stage tables. (Lines of a
        # background thread go to the run's log only.)
        indexer = MirrorIndexer(target_url, phase.reads, Reporter()) \
            if phase.number == SCOPED_PHASE else None
        try:
            counts = _transform(phase, target_url, reporter, started, snapshot.mapping)
        except StagedCopyLost as lost:
            # The target restarted after a crash since the tables were staged: stage them
            # again from this run's snapshot and derive once more (a second loss fails).
            reporter.warn(f"the staged copy of {', '.join(lost.tables)} is gone (the target "
                          "server restarted after a crash): staging it again")
            if phase.number == SCOPED_PHASE:
                if indexer is not None:
                    indexer.join()  # it indexed the copy that is gone
                prepare_marks(snapshot, target_url, phase.reads, batch_size=batch_size,
                              workers=workers, reporter=reporter)
                indexer = MirrorIndexer(target_url, phase.reads, Reporter())
            else:
                _stage_reads(phase, snapshot, target_url, batch_size=batch_size,
                             workers=workers, reporter=reporter)
            counts = _transform(phase, target_url, reporter, started, snapshot.mapping)
        finally:
            failure = None if indexer is None else indexer.join()
    except (psycopg.Error, MigrationError) as exc:
        _record_failure(target_url, phase, exc)
        if isinstance(exc, MigrationError):
            raise
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise MigrationError(f"phase {phase.number} failed and was rolled back: {first_line}",
                             _hint_for(exc)) from exc
    if failure is not None:
        # The phase is done; only the sync's look-ups lack their indexes, and a sync builds
        # what is missing.
        why = str(failure).strip().splitlines()[0] if str(failure).strip() else repr(failure)
        reporter.warn(f"building the mirror's indexes on {', '.join(phase.reads)} failed "
                      f"({why}): the next sync builds them")
    vacuum_after_load(phase, target_url, reporter)
    return PhaseResult(phase.number, "done", time.perf_counter() - started, counts)


class StagedCopyLost(MigrationError):
    """A staged table the phase derives from was emptied by a crash of the target server (stage
    tables are UNLOGGED) after it was staged."""

    def __init__(self, tables: list[str]) -> None:
        super().__init__(f"the staged copy of {', '.join(tables)} was emptied by a restart of "
                         "the target server after a crash, twice",
                         "run the same command again; it stages the tables anew")
        self.tables = tables


def lost_copies(conn: psycopg.Connection, tables: tuple[str, ...]) -> list[str]:
    """The tables whose staged copy is not what migration.mirror_state recorded: missing, or
    empty where rows were staged (a crash resets an UNLOGGED table to empty, never part-way)."""
    recorded = {str(r[0]): int(r[1]) for r in conn.execute(
        "SELECT table_name, rows FROM migration.mirror_state WHERE table_name = ANY(%s)",
        [list(tables)])}
    lost = []
    for table in tables:
        exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL",
                              [f"{STAGE_SCHEMA}.{table}"]).fetchone()
        if table not in recorded or not (exists and exists[0]):
            lost.append(table)
            continue
        if recorded[table] > 0:
            empty = conn.execute(sql.SQL("SELECT NOT EXISTS (SELECT 1 FROM {})").format(
                sql.Identifier(STAGE_SCHEMA, table))).fetchone()
            if empty and empty[0]:
                lost.append(table)
    return lost


def _work_table_lost(conn: psycopg.Connection) -> bool:
    """Phase 5's parsed marks (one row per staged mark) gone or emptied while marks are staged."""
    row = conn.execute(sql.SQL(
        "SELECT to_regclass('stage.parsed_grades') IS NULL OR (EXISTS (SELECT 1 FROM {}) "
        "AND NOT EXISTS (SELECT 1 FROM stage.parsed_grades))").format(
            sql.Identifier(STAGE_SCHEMA, "grades"))).fetchone()
    return bool(row and row[0])


def _require_staged(conn: psycopg.Connection, phase: Phase) -> None:
    """In the phase's transaction, before it derives anything: what it reads is still staged."""
    lost = lost_copies(conn, phase.reads)
    if not lost and phase.number == SCOPED_PHASE and _work_table_lost(conn):
        lost = ["parsed_grades"]
    if lost:
        conn.rollback()
        raise StagedCopyLost(lost)


def _stage_reads(phase: Phase, snapshot: SourceSnapshot, target_url: str, *, batch_size: int,
                 workers: int, reporter: Reporter) -> None:
    """Stage what a phase of 1–4 reads. A table that a done phase read (courses: phases 3 and
    4) and whose staged copy is intact is kept: phases that share a table derive from one
    snapshot of it, whatever run each is in, and its horizon stays the one they both saw. A
    copy a crash emptied is staged again; a done phase that read it on another snapshot is
    then noted as stale, for the next sync to derive again."""
    with connect(target_url, purpose="target") as conn:
        states = phase_states(conn)
        lost = set(lost_copies(conn, phase.reads))
        snapshots = {str(r[0]): r[1] for r in conn.execute(
            "SELECT table_name, source_snapshot::text FROM migration.mirror_state")}
        conn.commit()
    readers = {table: [n for n in RUN_ORDER if n != phase.number and states.get(n) == "done"
                       and table in PHASES[n].reads] for table in phase.reads}
    kept = tuple(t for t in phase.reads if readers[t] and t not in lost)
    for table in kept:
        reporter.line(f"stage.{table} kept: phase {', '.join(map(str, readers[table]))} "
                      "derived from it, and phases that share a table see one snapshot of it")
    stale = {t: readers[t] for t in phase.reads
             if t not in kept and readers[t] and snapshots.get(t) != snapshot.snapshot_text}
    staged = tuple(t for t in phase.reads if t not in kept)
    stage_tables(snapshot, target_url, staged, batch_size=batch_size, workers=workers,
                 reporter=reporter, stale_phases=stale)
    # A kept copy has its indexes from the phase that staged it.
    index_mirror_now(target_url, staged, reporter)


def _hint_for(exc: psycopg.Error) -> str:
    if isinstance(exc, psycopg.errors.QueryCanceled):
        return ("a statement ran into statement_timeout or was cancelled: raise the timeout for "
                "the migration (e.g. PGOPTIONS='-c statement_timeout=0') and run the same "
                "command again")
    if isinstance(exc, psycopg.errors.DiskFull):
        return ("the server's disk is full: free space (`edu-migrate preflight` estimates the "
                "need) and run the same command again")
    if isinstance(exc, psycopg.OperationalError):
        return ("the connection was lost or ended by the server; run the same command again "
                "to resume")
    return "see the log; fix the cause and run the same command again"


def source_default_statements(phase: Phase, mapping: LegacyMapping) -> list[sql.Composed]:
    """Before the load: each crosswalk partition of the phase records its source table by
    default, so that rows written straight into a partition (3 million marks) cost nothing more.
    Rows routed through the partitioned parent get the parent's default (none) instead."""
    return [_source_default(table, mapping)
            for table in (*phase.crosswalk_partitions, *phase.derived_crosswalks)]


def _source_default(table: str, mapping: LegacyMapping) -> sql.Composed:
    if table in DERIVED_CROSSWALKS:
        # one row names the relation of every derived record (migration.crosswalk_grades)
        return sql.SQL(
            "INSERT INTO migration.source_relations (source_table, relation) VALUES ({}, {}) "
            "ON CONFLICT (source_table) DO UPDATE SET relation = excluded.relation "
            "WHERE migration.source_relations.relation IS DISTINCT FROM excluded.relation"
        ).format(sql.Literal(table), sql.Literal(mapping[table].shown))
    return sql.SQL("ALTER TABLE {} ALTER COLUMN source_relation SET DEFAULT {}").format(
        sql.Identifier("migration", f"crosswalk_{table}"), sql.Literal(mapping[table].shown))


def _source_tables_by_default(conn: psycopg.Connection, phase: Phase,
                              mapping: LegacyMapping) -> None:
    for statement in source_default_statements(phase, mapping):
        conn.execute(statement)


def source_relation_followed(table: str, mapping: LegacyMapping) -> list[sql.Composed]:
    """In a sync whose mapping may read `table` from another relation (its definitions
    changed): the partition's default and every record of its rows name the relation the
    mapping reads it from now, as a full run's would, whether or not the rows changed (a table
    moved to another relation with the same rows is derived again for none of them). Reads
    the whole partition, and the default takes its lock: only run when the definitions
    changed."""
    shown = sql.Literal(mapping[table].shown)
    return [
        _source_default(table, mapping),
        *([] if table in DERIVED_CROSSWALKS else [
            sql.SQL("UPDATE {} SET source_relation = {} WHERE source_relation IS DISTINCT FROM {}"
                    ).format(sql.Identifier("migration", f"crosswalk_{table}"), shown, shown)]),
        sql.SQL("UPDATE migration.rejected_rows SET source_relation = {} "
                "WHERE source_table = {} AND source_relation IS DISTINCT FROM {}").format(
            shown, sql.Literal(table), shown),
    ]


def source_table_statements(phase: Phase, mapping: LegacyMapping) -> list[sql.Composed]:
    """After the load: the source table beside each legacy name, for the crosswalk rows that came
    through the parent and for the rows set aside."""
    return [
        *(sql.SQL("UPDATE {} SET source_relation = {} WHERE source_relation IS NULL").format(
            sql.Identifier("migration", f"crosswalk_{table}"), sql.Literal(mapping[table].shown))
          for table in phase.crosswalk_partitions),
        sql.SQL("UPDATE migration.rejected_rows r SET source_relation = m.relation "
                "FROM unnest({}::text[], {}::text[]) m(legacy, relation) "
                "WHERE r.phase = {} AND r.source_table = m.legacy "
                "AND r.source_relation IS DISTINCT FROM m.relation").format(
            sql.Literal([t.legacy for t in mapping]), sql.Literal([t.shown for t in mapping]),
            sql.Literal(phase.number)),
    ]


def record_source_tables(conn: psycopg.Connection, phase: Phase,
                         mapping: LegacyMapping) -> None:
    for statement in source_table_statements(phase, mapping):
        conn.execute(statement)


def run_statements(conn: psycopg.Connection, file_name: str, reporter: Reporter,
                   statements: Iterable[sqlfile.Statement] | None = None) -> dict[str, int]:
    """Run the named statements of one SQL file in order (or those of `statements`); each one's
    row count by name."""
    counts: dict[str, int] = {}
    for statement in sqlfile.load(file_name) if statements is None else statements:
        step_started = time.perf_counter()
        with reporter.progress(statement.name, None) as advance:
            cursor = conn.execute(statement.text.encode())
            n = _count_of(cursor)
            advance(n)
        counts[statement.name] = n
        if statement.say is not None:
            reporter.line(statement.say.format(n=n))
        reporter.step(statement.name, time.perf_counter() - step_started, n)
    return counts


def define_scope(conn: psycopg.Connection, phase: Phase, *, scoped: bool) -> None:
    """The legacy rows a phase's rules run over, as scoped_<table> for this session: a view of
    every staged row, or (`scoped`, in a sync) a table of those whose ids are in scope_<table>,
    copied once so that no rule scans the whole mirror to find them. Phases 1 and 5 read
    scoped_<table> (Phase.reads_scoped); phases 2-4 read their staged tables whole."""
    if not scoped:
        for statement in full_scope_statements(phase):
            conn.execute(statement)
        return
    if not phase.reads_scoped:
        return
    for table in phase.reads:
        scoped_table = sql.Identifier(f"scoped_{table}")
        conn.execute(sql.SQL("CREATE TEMP TABLE {} ON COMMIT DROP AS SELECT s.* FROM {} s "
                             "JOIN {} k ON k.id = s.id").format(
            scoped_table, sql.Identifier(STAGE_SCHEMA, table),
            sql.Identifier(f"scope_{table}")))
        conn.execute(sql.SQL("ANALYZE {}").format(scoped_table))
    if phase.number == SCOPED_PHASE:
        conn.execute(_TOUCHED_ASSESSMENTS)
        conn.execute(_MARKED_RUNS_SCOPED)


# The assessments whose marks this run removed before deriving them again: none in a full run,
# which starts from empty tables.
_TOUCHED_ASSESSMENTS = sql.SQL(
    "CREATE TEMP TABLE IF NOT EXISTS touched_assessments (id uuid) ON COMMIT DROP")
# The course runs whose assessments the marks in scope can name (phase5.sql's assessment_keys,
# a look-up table that no mark is decided by unless it joins it). A full run takes every run
# with an enrollment: a superset, one pass over the enrollments and no join to the marks. A sync
# takes the runs of the enrollments of its marks, by key: with every run, the last sync of the
# cutover's window at scale 10 derived 361,200 keys, and probed as many assessments, for 202
# marks (1.4 s).
_MARKED_RUNS_FULL = sql.SQL(
    "CREATE OR REPLACE TEMP VIEW scoped_mark_runs AS SELECT DISTINCT course_id "
    "FROM stage.course_students WHERE course_id IS NOT NULL")
_MARKED_RUNS_SCOPED = sql.SQL(
    "CREATE TEMP TABLE scoped_mark_runs ON COMMIT DROP AS SELECT DISTINCT e.course_id "
    "FROM scoped_grades g JOIN stage.course_students e ON e.id = g.course_student_id "
    "WHERE e.course_id IS NOT NULL")


def full_scope_statements(phase: Phase) -> list[sql.Composed | sql.SQL]:
    """A full run's scope: every staged row, as a view per legacy table (the phases that read
    scoped_<table>)."""
    if not phase.reads_scoped:
        return []
    views: list[sql.Composed | sql.SQL] = [
        sql.SQL("CREATE OR REPLACE TEMP VIEW {} AS SELECT s.* FROM {} s").format(
            sql.Identifier(f"scoped_{table}"), sql.Identifier(STAGE_SCHEMA, table))
        for table in phase.reads]
    return [*views, _TOUCHED_ASSESSMENTS, _MARKED_RUNS_FULL] if phase.number == SCOPED_PHASE \
        else views


def _transform(phase: Phase, target_url: str, reporter: Reporter, started: float,
               mapping: LegacyMapping) -> dict[str, int]:
    with connect(target_url, purpose="target") as conn:
        conn.execute("SET temp_buffers = '256MB'")
        _require_staged(conn, phase)
        set_session(conn)
        _clear_phase(conn, phase)
        _source_tables_by_default(conn, phase, mapping)
        for build_lookup in phase.lookups:
            build_lookup(conn)
        define_scope(conn, phase, scoped=False)
        statements = sqlfile.load(phase.sql_file)
        counts: dict[str, int] = {}

        def after_indexes() -> None:
            counts.update(run_statements(conn, phase.sql_file, reporter,
                                         [s for s in statements if s.after_indexes]))

        with row_audit_paused(conn, phase.writes), \
                _indexes_rebuilt_after(conn, phase.rebuilt_after_load, reporter, after_indexes):
            counts.update(run_statements(conn, phase.sql_file, reporter,
                                         [s for s in statements if not s.after_indexes]))
            step_started = time.perf_counter()
            record_source_tables(conn, phase, mapping)
            reporter.step("record_source_tables", time.perf_counter() - step_started, 0)
        for table in phase.writes:
            conn.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(table)))
        conn.execute(
            "UPDATE migration.phase_runs SET status = 'done', finished_at = clock_timestamp(), "
            "seconds = %s, "
            "row_counts = %s WHERE phase = %s",
            [time.perf_counter() - started, Jsonb(counts), phase.number])
        conn.execute("INSERT INTO migration.run_log (phase, event, detail) VALUES (%s, 'done', %s)",
                     [phase.number, Jsonb(counts)])
        record_bulk_event(conn, "MIGRATE", phase.writes, {"phase": phase.number, "rows": counts})
        # This backend's insert counts reach the statistics when it goes idle after the commit,
        # not up to a second later: the VACUUM after the phase must see them to reset them.
        conn.execute("SELECT pg_stat_force_next_flush()")
        conn.commit()
    return counts


def vacuum_after_load(phase: Phase, target_url: str, reporter: Reporter) -> None:
    """VACUUM the large tables a phase has just loaded, and their staged copies, as pgcopydb
    does after its copy: otherwise autovacuum's first pass over millions of new rows comes
    within a minute or two, and meets whatever a person runs next (validate, the first sync,
    the cutover), on a 2-core server costing those seconds each (issue 21). The phase is done
    and committed; a VACUUM that fails only leaves the work to autovacuum."""
    tables = vacuumed_after_load(phase)
    if not tables:
        return
    try:
        with connect(target_url, purpose="target") as conn:
            conn.autocommit = True
            for table in tables:
                step_started = time.perf_counter()
                conn.execute(vacuum_statement(table))
                reporter.step(f"vacuum {table}", time.perf_counter() - step_started, 0)
    except psycopg.Error as exc:
        why = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        reporter.warn(f"VACUUM after phase {phase.number} failed ({why}): autovacuum will do it")


def vacuumed_after_load(phase: Phase) -> list[str]:
    """The tables vacuum_after_load vacuums, schema-qualified: what the phase bulk-loads and its
    staged copies; none for phases 1-4 (thousands of rows, which autovacuum settles in
    milliseconds)."""
    if not phase.rebuilt_after_load:
        return []
    return [*phase.rebuilt_after_load, *(f"{STAGE_SCHEMA}.{t}" for t in phase.reads)]


def vacuum_statement(table: str) -> sql.Composed:
    schema, name = table.split(".")
    return sql.SQL("VACUUM {}").format(sql.Identifier(schema, name))


def _count_of(cursor: psycopg.Cursor[tuple[object, ...]]) -> int:
    if cursor.description is not None:
        row = cursor.fetchone()
        value = row[0] if row else 0
        return int(value) if isinstance(value, int) else 0
    return max(cursor.rowcount, 0)


def _record_failure(target_url: str, phase: Phase, exc: BaseException) -> None:
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    try:
        with connect(target_url, purpose="target", autocommit=True) as conn:
            conn.execute("UPDATE migration.phase_runs SET status = 'failed', last_error = %s, "
                         "finished_at = now() WHERE phase = %s", [message, phase.number])
    except MigrationError:
        pass  # the target is gone too; the caller reports the original failure


def rollback_phases(target_url: str, number: int | None, reporter: Reporter) -> list[int]:
    """Remove what phase `number` and every phase that needs it wrote; None means all."""
    numbers = list(RUN_ORDER) if number is None else dependents_of(number)
    with connect(target_url, purpose="target") as conn:
        tables = [t for n in numbers for t in PHASES[n].writes]
        conn.execute(sql.SQL("TRUNCATE {} CASCADE").format(
            sql.SQL(", ").join(sql.Identifier(t) for t in tables)))
        for n in numbers:
            for table in PHASES[n].crosswalk_tables:
                conn.execute(sql.SQL("TRUNCATE {}").format(table))
        conn.execute("DELETE FROM migration.rejected_rows WHERE phase = ANY(%s)", [numbers])
        conn.execute("DELETE FROM migration.repairs WHERE phase = ANY(%s)", [numbers])
        conn.execute("DELETE FROM migration.phase_runs WHERE phase = ANY(%s)", [numbers])
        if number is None:
            conn.execute("UPDATE migration.state SET source_system_id = NULL, "
                         "source_database = NULL")
        conn.execute("INSERT INTO migration.run_log (event, detail) VALUES ('rollback', %s)",
                     [Jsonb({"phases": numbers})])
        record_bulk_event(conn, "ROLLBACK", tables, {"phases": numbers})
        conn.commit()
    reporter.line(f"Rolled back phase {', '.join(map(str, numbers))}")
    return numbers
