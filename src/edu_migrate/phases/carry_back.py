"""The carry-back: what the applications wrote on edu_v2 since the cutover, back into edu.

The reverse of the catch-up (phases/sync.py), with the same shape. edu_v2 is ours, so its change
capture is its own audit log: every business table's row trigger records each write with the row's
image before it (a phase records one bulk event instead). The audited writes after the cutover's
mark are the applications'. A round:

1. reads, in one snapshot of edu_v2, the keys of the audit rows written since the previous
   round's snapshot (their xmin is at least that snapshot's horizon, so a write that commits while
   a round reads is in this round or the next, never in neither), each with its image at the
   cutover (the first audit row after the mark);
2. derives each key's legacy row with the inverse rules (phases/sql/phaseN_inverse.sql): the
   legacy columns whose value changed, in the form the forward rules read back to the same value;
   and lists what edu cannot hold;
3. keeps them in migration.fallback_images, replacing what an earlier round derived for the same
   edu_v2 rows.

edu is written once, in the window (`apply_images`): one transaction applies every image, so a
failure anywhere leaves edu exactly as the cutover left it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from edu_migrate.errors import PreconditionFailed
from edu_migrate.mapping import LEGACY_COLUMNS, LegacyMapping
from edu_migrate.pg.connect import connect
from edu_migrate.phases.runner import run_statements
from edu_migrate.phases.session import set_session
from edu_migrate.runlog import Reporter
from edu_migrate.security.audit import row_audit_paused

# Phase order: a legacy id an inverse rule names is known whatever the round (ids come from the
# crosswalk and migration.created_rows, not from each other's images).
INVERSE_FILES = ("phase1_inverse.sql", "phase3_inverse.sql", "phase2_inverse.sql",
                 "phase4_inverse.sql", "phase5_inverse.sql")

_DELTA = """
CREATE TEMP TABLE reverse_delta ON COMMIT DROP AS
WITH touched AS (
    SELECT DISTINCT l.table_name, l.row_id FROM audit.log l
    WHERE l.id > %(mark)s AND l.row_id IS NOT NULL
      AND (%(since)s::text IS NULL OR age(l.xmin) <= age(%(since)s::text::xid))
)
SELECT t.table_name, t.row_id, f.before, f.created, false AS assigned_here,
       CASE WHEN t.table_name IN (SELECT target_table FROM migration.legacy_tables)
            THEN coalesce(
                (SELECT k.source_id FROM migration.legacy_keys k
                 WHERE k.target_table = t.table_name AND k.target_id = t.row_id LIMIT 1),
                -- a mark deleted on edu_v2 takes its derived crosswalk row with it (schema
                -- V026): its image in the audit log still names its legacy id
                (f.before ->> 'legacy_id')::bigint)
       END AS legacy_id
FROM touched t
CROSS JOIN LATERAL (
    SELECT l.old_values AS before, l.operation = 'INSERT' AS created FROM audit.log l
    WHERE l.table_name = t.table_name AND l.row_id = t.row_id AND l.id > %(mark)s
    ORDER BY l.id LIMIT 1) f
"""

# A row created on edu_v2 under an id of the application's own has no legacy id yet: it gets the
# next one now (the cutover moved the sequences above the legacy ids).
_ASSIGN = """
WITH assigned AS (
    INSERT INTO migration.created_rows (target_table, target_id, source_table, source_id)
    SELECT d.table_name, d.row_id, l.source_table,
           nextval(format('migration.legacy_ids_%s', l.source_table)::regclass)
    FROM reverse_delta d JOIN migration.legacy_tables l ON l.target_table = d.table_name
    WHERE d.created AND d.legacy_id IS NULL
    RETURNING target_table, target_id, source_id
)
UPDATE reverse_delta d SET legacy_id = a.source_id, assigned_here = true
FROM assigned a WHERE a.target_table = d.table_name AND a.target_id = d.row_id
"""

_KEEP = tuple(f"DELETE FROM migration.{kept} f USING reverse_delta d "
              "WHERE f.target_table = d.table_name AND f.target_id = d.row_id"
              for kept in ("fallback_images", "fallback_losses"))

# One row per legacy row: a deletion wins, then an insertion; the columns of every image merged.
MERGED_IMAGES = """
SELECT i.source_table, i.source_id,
       CASE WHEN bool_or(i.action = 'delete') THEN 'delete'
            WHEN bool_or(i.action = 'insert') THEN 'insert' ELSE 'update' END,
       -- jsonb keeps the last value of a key: a row's own image comes after the closures'
       (SELECT coalesce(jsonb_object_agg(e.key, e.value ORDER BY m.n), '{}'::jsonb)
        FROM unnest(array_agg(i.image ORDER BY i.closure DESC)) WITH ORDINALITY AS m (image, n),
             jsonb_each(m.image) e)
FROM migration.fallback_images i
GROUP BY i.source_table, i.source_id
-- a row changed and changed back writes nothing
HAVING bool_or(i.action <> 'update') OR bool_or(i.image <> '{}'::jsonb)
"""


@dataclass
class CarryRound:
    keys: int
    seconds: float
    horizon: int


@dataclass
class Applied:
    inserted: dict[str, int] = field(default_factory=dict)
    updated: dict[str, int] = field(default_factory=dict)
    deleted: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.inserted.values()) + sum(self.updated.values()) \
            + sum(self.deleted.values())

    def to_dict(self) -> dict[str, Any]:
        return {"inserted": self.inserted, "updated": self.updated, "deleted": self.deleted}


def writable(conn: psycopg.Connection) -> None:
    """This session may write, whatever the database's frozen default says (the window freezes
    the database it reads; the tool's own sessions are the ones that must still write)."""
    conn.execute("SET default_transaction_read_only = off")
    conn.commit()


def start(target_url: str) -> None:
    """A fallback starts over from the cutover's mark: nothing an earlier one derived is kept."""
    with connect(target_url, purpose="target") as conn:
        writable(conn)
        conn.execute("TRUNCATE migration.fallback_images, migration.fallback_losses")
        conn.commit()


def carry_round(target_url: str, mark: int, since: int | None, reporter: Reporter) -> CarryRound:
    """One round: the edu_v2 rows written since the snapshot of horizon `since` (every row since
    the cutover's audit mark when None), derived into legacy images and kept."""
    started = time.perf_counter()
    with connect(target_url, purpose="target") as conn:
        writable(conn)
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        set_session(conn)
        row = conn.execute(
            "SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint").fetchone()
        assert row is not None
        horizon = int(row[0])
        conn.execute(_DELTA, {"mark": mark,
                              "since": None if since is None else str(since % 2**32)})
        conn.execute(_ASSIGN)
        conn.execute("ANALYZE reverse_delta")
        row = conn.execute("SELECT count(*) FROM reverse_delta").fetchone()
        keys = int(row[0]) if row else 0
        conn.execute(
            "CREATE TEMP TABLE round_images (LIKE migration.fallback_images INCLUDING DEFAULTS) "
            "ON COMMIT DROP")
        conn.execute(
            "CREATE TEMP TABLE round_losses (LIKE migration.fallback_losses) ON COMMIT DROP")
        for file_name in INVERSE_FILES:
            run_statements(conn, file_name, reporter)
        for statement in _KEEP:
            conn.execute(statement)
        conn.execute("INSERT INTO migration.fallback_images SELECT * FROM round_images")
        conn.execute("INSERT INTO migration.fallback_losses SELECT DISTINCT ON "
                     "(target_table, target_id, column_name) * FROM round_losses")
        conn.commit()
    return CarryRound(keys, round(time.perf_counter() - started, 3), horizon)


def losses(target_url: str) -> dict[str, dict[str, Any]]:
    """Per edu_v2 table and column, how many values edu cannot hold, and why."""
    with connect(target_url, purpose="target") as conn:
        rows = conn.execute(
            "SELECT target_table || '.' || column_name, count(*), min(reason) "
            "FROM migration.fallback_losses GROUP BY 1 ORDER BY 1").fetchall()
    return {str(r[0]): {"count": int(r[1]), "reason": str(r[2])} for r in rows}


def password_resets(target_url: str) -> list[str]:
    """The accounts whose password edu cannot verify after the fallback (usernames only)."""
    with connect(target_url, purpose="target") as conn:
        return [str(r[0]) for r in conn.execute(
            "SELECT u.username FROM migration.fallback_losses f JOIN users u ON u.id = f.target_id "
            "WHERE f.target_table = 'users' AND f.column_name = 'password' ORDER BY 1")]


def apply_images(source_url: str, target_url: str, mapping: LegacyMapping,
                 reporter: Reporter | None = None) -> Applied:
    """Write every kept image into edu, in one transaction: inserted, updated and deleted legacy
    rows, and each legacy id sequence moved past the ids used. Raises (and writes nothing) when
    a row to update or delete is missing, or a new row's id is taken."""
    if not mapping.canonical:
        raise PreconditionFailed(
            "fallback writes the legacy tables of legacy-edu.md, but this source is read "
            "through a mapping of its own",
            "carry the changes back by hand from migration.fallback_images, or map the source "
            "with its default tables")
    applied = Applied()
    reporter = reporter or Reporter()
    clock = time.perf_counter()

    def step(name: str, rows: int) -> None:
        nonlocal clock
        now = time.perf_counter()
        reporter.step(name, now - clock, rows)
        clock = now

    with connect(target_url, purpose="target") as target, \
            connect(source_url, purpose="source") as source:
        writable(source)
        source.execute("CREATE TEMP TABLE images (source_table text, source_id bigint, "
                       "action text, image jsonb) ON COMMIT DROP")
        with target.cursor() as out_cur, source.cursor() as in_cur, \
                out_cur.copy(f"COPY ({MERGED_IMAGES}) TO STDOUT (FORMAT binary)") as out, \
                in_cur.copy("COPY images FROM STDIN (FORMAT binary)") as into:
            for chunk in out:
                into.write(chunk)
        target.rollback()
        source.execute("CREATE INDEX ON images (source_table, action, source_id)")
        source.execute("ANALYZE images")
        step("copy the images to edu", applied.total)
        for table, columns in LEGACY_COLUMNS.items():
            relation = mapping[table].relation
            before = applied.total
            _apply_table(source, table, relation, [c for c, _ in columns if c != "id"], applied)
            step(f"write {table}", applied.total - before)
        for table in LEGACY_COLUMNS:
            _read_back(source, table, mapping[table].relation)
        step("read back what edu holds", applied.total)
        source.commit()
        step("commit edu", applied.total)
    return applied


def _read_back(conn: psycopg.Connection, table: str, relation: sql.Identifier) -> None:
    """Before edu commits, what it holds must be what the images say: every value an image
    names, read back from its row through the same coercion that wrote it, and no deleted row
    left. A trigger or rule on edu that rewrites a carried value (or a column type that rounds
    it) would otherwise leave edu holding what edu_v2 never had, and the fallback would report
    success. The cost grows with the images, not with edu."""
    names = {"rel": relation, "t": sql.Literal(table)}
    # One comparison per row: the row against itself with the image laid over it. Only when
    # some row differs is each column looked at, to name it.
    differs = conn.execute(sql.SQL(
        "SELECT EXISTS (SELECT FROM images i LEFT JOIN {rel} r ON r.id = i.source_id "
        "WHERE i.source_table = {t} AND i.action IN ('insert', 'update') "
        "AND (r.id IS NULL OR r IS DISTINCT FROM jsonb_populate_record(r, i.image "
        "- 'id')))").format(**names)).fetchone()
    differing = [] if differs and not differs[0] else conn.execute(sql.SQL(
        "SELECT k.key, count(*) FROM images i "
        "LEFT JOIN {rel} r ON r.id = i.source_id "
        "CROSS JOIN LATERAL jsonb_populate_record(NULL::{rel}, i.image) n "
        "CROSS JOIN LATERAL jsonb_object_keys(i.image) k (key) "
        "WHERE i.source_table = {t} AND i.action IN ('insert', 'update') AND k.key <> 'id' "
        "AND (r.id IS NULL OR to_jsonb(r) -> k.key IS DISTINCT FROM to_jsonb(n) -> k.key) "
        "GROUP BY k.key ORDER BY k.key").format(**names)).fetchall()
    left = conn.execute(sql.SQL(
        "SELECT count(*) FROM images i JOIN {rel} r ON r.id = i.source_id "
        "WHERE i.source_table = {t} AND i.action = 'delete'").format(**names)).fetchone()
    problems = [f"{table}.{column} differs in {count:,} rows" for column, count in differing]
    if left and left[0]:
        problems.append(f"{left[0]:,} rows of {table} to delete are still there")
    if problems:
        raise PreconditionFailed(
            f"edu does not hold what the fallback wrote ({'; '.join(problems)}): a trigger or "
            "rule on edu changes the rows written to it",
            "find it (psql: \\d+ of the table), disable it for the fallback, then run "
            "`edu-migrate fallback` again; nothing was written")


def _apply_table(conn: psycopg.Connection, table: str, relation: sql.Identifier,
                 columns: list[str], applied: Applied) -> None:
    wanted = {action: _count(conn, table, action) for action in ("insert", "update", "delete")}
    names = {"rel": relation, "t": sql.Literal(table)}
    deleted = conn.execute(sql.SQL(
        "DELETE FROM {rel} r USING images i WHERE i.source_table = {t} AND i.action = 'delete' "
        "AND r.id = i.source_id").format(**names)).rowcount
    taken = conn.execute(sql.SQL(
        "SELECT count(*) FROM {rel} r JOIN images i ON r.id = i.source_id "
        "WHERE i.source_table = {t} AND i.action = 'insert'").format(**names)).fetchone()
    if taken and taken[0]:
        raise PreconditionFailed(
            f"{taken[0]} rows created on edu_v2 would take legacy ids already used in {table}",
            "a row was added to edu after the cutover: find it, then run the fallback again")
    inserted = conn.execute(sql.SQL(
        "INSERT INTO {rel} SELECT r.* FROM images i, LATERAL jsonb_populate_record("
        "NULL::{rel}, i.image || jsonb_build_object('id', i.source_id)) r "
        "WHERE i.source_table = {t} AND i.action = 'insert'").format(**names)).rowcount
    # A column the image does not name keeps its legacy value: only what changed is written.
    assignments = sql.SQL(", ").join(
        sql.SQL("{c} = CASE WHEN i.image ? {name} THEN n.{c} ELSE r.{c} END").format(
            c=sql.Identifier(column), name=sql.Literal(column)) for column in columns)
    updated = conn.execute(sql.SQL(
        "UPDATE {rel} r SET {assignments} FROM images i, LATERAL jsonb_populate_record("
        "NULL::{rel}, i.image) n WHERE i.source_table = {t} AND i.action = 'update' "
        "AND r.id = i.source_id").format(assignments=assignments, **names)).rowcount
    if updated != wanted["update"]:
        raise PreconditionFailed(
            f"{wanted['update'] - updated} legacy rows of {table} that edu_v2 changed are "
            "missing in edu",
            "edu was changed after the cutover: restore it from the cutover's backup, or "
            "carry the changes back by hand")
    conn.execute(sql.SQL(
        "SELECT setval(s, greatest((SELECT max(id) FROM {rel}), 1)) "
        "FROM pg_get_serial_sequence({name}, 'id') s WHERE s IS NOT NULL").format(
        rel=relation, name=sql.Literal(relation.as_string(conn))))
    for into, count in ((applied.inserted, inserted), (applied.updated, updated),
                        (applied.deleted, deleted)):
        if count:
            into[table] = count


def _count(conn: psycopg.Connection, table: str, action: str) -> int:
    row = conn.execute("SELECT count(*) FROM images WHERE source_table = %s AND action = %s",
                       [table, action]).fetchone()
    return int(row[0]) if row else 0


# The crosswalk follows what was carried back: a row created on edu_v2 is now a legacy row (the
# next forward run derives it to the same id), and a legacy row deleted (a deleted row, or one
# merged in edu) no longer maps anything.
_CROSSWALK_CARRIED = (
    """
    DELETE FROM migration.crosswalk_rows x USING migration.fallback_images i
    WHERE i.action = 'delete' AND x.source_table = i.source_table AND x.source_id = i.source_id
    """,
    """
    DELETE FROM migration.crosswalk_grades_deleted x USING migration.fallback_images i
    WHERE i.action = 'delete' AND i.source_table = 'grades' AND x.source_id = i.source_id
    """,
    """
    INSERT INTO migration.crosswalk_rows (source_table, source_id, target_table, target_id,
                                          source_relation)
    SELECT c.source_table, c.source_id, c.target_table, c.target_id,
           (SELECT x.source_relation FROM migration.crosswalk x
            WHERE x.source_table = c.source_table AND x.source_relation IS NOT NULL LIMIT 1)
    FROM migration.created_rows c
    JOIN migration.fallback_images i ON i.action = 'insert' AND i.target_table = c.target_table
                                    AND i.target_id = c.target_id
    WHERE c.source_table <> 'grades'
    """,
    # a mark's crosswalk is its own legacy_id (schema V026); the caller pauses its row triggers
    """
    UPDATE grades g SET legacy_id = c.source_id
    FROM migration.created_rows c
    JOIN migration.fallback_images i ON i.action = 'insert' AND i.target_table = c.target_table
                                    AND i.target_id = c.target_id
    WHERE c.source_table = 'grades' AND g.id = c.target_id
    """,
    "DELETE FROM migration.created_rows",
)


def record_carried(conn: psycopg.Connection) -> None:
    """In the fallback's own transaction on edu_v2, once edu holds the images. The marks given
    their legacy ids are the tool's bookkeeping, not an application's write: no audit rows."""
    with row_audit_paused(conn, ["grades"]):
        for statement in _CROSSWALK_CARRIED:
            conn.execute(statement)
