"""Does a mapping fit the source? Names, expressions and values, checked in read-only sessions.

Every statement that may fail runs in a savepoint, so that the check can run inside the run's
snapshot transaction as well as on its own. Values are read only where their cast to the staged
type can fail (a text date, a boolean flag, an expression); a column whose source type always
casts is not scanned, so the default mapping costs a look at the catalogue and nothing more.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import psycopg
from psycopg import sql

from edu_migrate.errors import MappingError, PreconditionFailed
from edu_migrate.mapping import (
    SAFE_CASTS,
    SAMPLES,
    SECRET_COLUMNS,
    LegacyMapping,
    MappedColumn,
    MappedTable,
)

DEMO_HINT = "point --source at edu, or run `edu-migrate generate` for a demo"
MAPPING_HINT = ("describe your tables in a mapping file (docs/mapping.md; `edu-migrate mapping "
                "draft` proposes one)")
FIX_HINT = "fix the mapping, then run `edu-migrate mapping check`"

RELATION_COLUMNS = """
SELECT n.nspname, c.relname, a.attname
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f') AND n.nspname = ANY(%s) AND c.relname = ANY(%s)
"""


def _chosen(mapping: LegacyMapping, tables: Sequence[str] | None) -> list[MappedTable]:
    return [mapping[t] for t in (tables or [t.legacy for t in mapping])]


def missing_names(conn: psycopg.Connection, mapping: LegacyMapping,
                  tables: Sequence[str] | None = None) -> list[str]:
    """What the mapping names that the source lacks: 'table' or 'table.column' in legacy-edu.md's
    names where the mapping keeps them, else the source's name with the legacy one beside it."""
    chosen = [t for t in _chosen(mapping, tables) if t.todo is None]
    rows = conn.execute(RELATION_COLUMNS, [sorted({t.schema for t in chosen}),
                                           sorted({t.name for t in chosen})]).fetchall()
    present: dict[tuple[str, str], set[str]] = {}
    for schema, name, column in rows:
        present.setdefault((schema, name), set()).add(column)
    missing: list[str] = []
    for table in chosen:
        columns = present.get((table.schema, table.name))
        if columns is None:
            missing.append(table.legacy if table.canonical
                           else f"{table.shown} (for {table.legacy})")
            continue
        for column in table.columns:
            if column.kind == "column" and column.text not in columns:
                missing.append(f"{table.legacy}.{column.name}" if table.canonical else
                               f"{table.shown}.{column.text} (for {table.legacy}.{column.name})")
    return missing


def require_names(conn: psycopg.Connection, mapping: LegacyMapping,
                  tables: Sequence[str] | None = None, hint: str | None = None) -> None:
    """Refuse, naming what is missing, a source that lacks what the mapping reads."""
    todo = _todos(_chosen(mapping, tables))
    if todo:
        raise MappingError(f"{mapping.origin} leaves {', '.join(todo[:5])} as TODO", FIX_HINT)
    missing = missing_names(conn, mapping, tables)
    if missing:
        shown = ", ".join(missing[:8]) + (" …" if len(missing) > 8 else "")
        if mapping.canonical:
            raise PreconditionFailed(f"the source is not the legacy database: it lacks {shown}",
                                     hint or f"{DEMO_HINT}; or {MAPPING_HINT}")
        raise MappingError(f"{mapping.origin} names what the source lacks: {shown}", FIX_HINT)


def _todos(tables: Sequence[MappedTable]) -> list[str]:
    found = [t.legacy for t in tables if t.todo is not None]
    found += [f"{t.legacy}.{c.name}" for t in tables for c in t.columns if c.kind == "todo"]
    return found


def _fails(conn: psycopg.Connection, statement: sql.Composed,
           params: Sequence[object] | None = None) -> psycopg.Error | None:
    """Run a statement in a savepoint; the error it raised, or None."""
    try:
        with conn.transaction():
            conn.execute(statement, params)
    except psycopg.Error as exc:
        return exc
    return None


def _first_line(exc: psycopg.Error) -> str:
    primary = exc.diag.message_primary if exc.diag else None
    return primary or (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _source_types(conn: psycopg.Connection, table: MappedTable) -> list[str]:
    """The type of each column's source, as format_type writes it."""
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(sql.SQL("SELECT {} FROM {} LIMIT 0").format(
            sql.SQL(", ").join(c.expression for c in table.columns), table.relation))
        result = cur.pgresult
        assert result is not None
        kinds = [(result.ftype(i), result.fmod(i)) for i in range(result.nfields)]
    row = conn.execute("SELECT array_agg(format_type(t, m) ORDER BY n) "
                       "FROM unnest(%s::oid[], %s::int[]) WITH ORDINALITY u(t, m, n)",
                       [[k for k, _ in kinds], [m for _, m in kinds]]).fetchone()
    assert row is not None
    return list(row[0])


def _check_expressions(conn: psycopg.Connection, table: MappedTable) -> None:
    if _fails(conn, sql.SQL("SELECT {} FROM {} LIMIT 0").format(
            table.select_list(), table.relation)) is None:
        return
    for column in table.columns:
        error = _fails(conn, sql.SQL("SELECT {} FROM {} LIMIT 0").format(
            column.staged(), table.relation))
        if error is not None:
            raise MappingError(
                f"{table.legacy}.{column.name} ({column.shown()}) fails on {table.shown}: "
                f"{_first_line(error)}", FIX_HINT)


def _may_not_cast(column: MappedColumn, source_type: str) -> bool:
    if column.staged_type == "text" or source_type == column.staged_type:
        return False
    return source_type not in SAFE_CASTS.get(column.staged_type, frozenset())


def _count_cast(column: MappedColumn) -> sql.Composed:
    return sql.SQL("count({})").format(column.staged())


def _first_bad_id(conn: psycopg.Connection, table: MappedTable,
                  column: MappedColumn) -> int | None:
    """The lowest id whose value does not cast, by halving the id range (each half is read with
    the id's index, when the source has one); None when the ids are not integers."""
    row = conn.execute(sql.SQL("SELECT min({0}), max({0}) FROM {1}").format(
        table.id.expression, table.relation)).fetchone()
    if row is None or not all(isinstance(v, int) for v in row):
        return None
    low, high = int(row[0]), int(row[1])
    probe = sql.SQL("SELECT {} FROM {} WHERE {} BETWEEN %s AND %s").format(
        _count_cast(column), table.relation, table.id.expression)
    while low < high:
        middle = (low + high) // 2
        if _fails(conn, probe, [low, middle]) is not None:
            high = middle
        else:
            low = middle + 1
    return low


def _check_casts(conn: psycopg.Connection, table: MappedTable) -> None:
    types = _source_types(conn, table)
    doubtful = [c for c, t in zip(table.columns, types, strict=True) if _may_not_cast(c, t)]
    if not doubtful or _fails(conn, sql.SQL("SELECT {} FROM {}").format(
            sql.SQL(", ").join(_count_cast(c) for c in doubtful), table.relation)) is None:
        return
    for column in doubtful:
        error = _fails(conn, sql.SQL("SELECT {} FROM {}").format(
            _count_cast(column), table.relation))
        if error is None:
            continue
        where = ""
        bad_id = None if column.name == "id" else _first_bad_id(conn, table, column)
        if bad_id is not None:
            found = conn.execute(sql.SQL("SELECT ({})::text FROM {} WHERE {} = %s LIMIT 1")
                                 .format(column.expression, table.relation,
                                         table.id.expression), [bad_id]).fetchone()
            value = "a value not shown" if (table.legacy, column.name) in SECRET_COLUMNS \
                else repr(found[0]) if found else "?"
            where = f" at id {bad_id}: found {value}"
        raise MappingError(
            f"{table.legacy}.{column.name} ({column.shown()}) does not cast to "
            f"{column.staged_type} on {table.shown}{where} ({_first_line(error)})", FIX_HINT)


def verify(conn: psycopg.Connection, mapping: LegacyMapping,
           tables: Sequence[str] | None = None) -> None:
    """Everything the migration will read works: no TODO, every name exists, every expression
    runs, and every value casts to its staged type. Raises a MappingError naming the first
    table and column that does not."""
    require_names(conn, mapping, tables)
    for table in _chosen(mapping, tables):
        _check_expressions(conn, table)
        _check_casts(conn, table)


@dataclass
class ColumnSamples:
    legacy_table: str
    column: str
    staged_type: str
    source: str
    values: list[str] = field(default_factory=list)


def _shown(value: object, secret: bool) -> str:
    if value is None:
        return "NULL"
    text = str(value)
    return f"‹hidden, {len(text)} characters›" if secret else text


def samples(conn: psycopg.Connection, mapping: LegacyMapping) -> list[ColumnSamples]:
    """A few staged values of every mapped column (passwords hidden), from the first rows."""
    found: list[ColumnSamples] = []
    for table in mapping:
        rows = conn.execute(sql.SQL("SELECT {} FROM {} LIMIT %s").format(
            table.select_list(), table.relation), [SAMPLES]).fetchall()
        for i, column in enumerate(table.columns):
            secret = (table.legacy, column.name) in SECRET_COLUMNS
            found.append(ColumnSamples(table.legacy, column.name, column.staged_type,
                                       f"{table.shown}: {column.shown()}",
                                       [_shown(row[i], secret) for row in rows]))
    return found
