"""The legacy mapping: which source table and which expressions the migration reads for each
legacy table of legacy-edu.md.

The real database may differ from legacy-edu.md: other table names, another schema, renamed
columns, a flag stored as a boolean, a date kept as text. The mapping says, per legacy table, where
its rows are (`table = "lms.auth_user"`) and, per column the migration reads, which source column,
SQL expression or constant gives it. What is not mapped keeps the name of legacy-edu.md, so the
default mapping reads exactly today's tables and columns.

It is read from `[mapping.<legacy table>]` in edu-migrate.toml, or from a file of its own
(`--mapping FILE`, EDU_MAPPING) with the same tables at the top. Checking it against a source
(`verify`) runs in read-only sessions only: names must exist, expressions must run, and every
value must cast to the type it is staged as.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from psycopg import sql
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from edu_migrate.errors import MappingError

CANONICAL_SCHEMA = "public"
ID_COLUMN = "id"

# What the migration reads of each legacy table: column and the type it is staged as. Text
# columns are staged as text whatever their legacy length; numbers keep their legacy types.
LEGACY_COLUMNS: dict[str, tuple[tuple[str, str], ...]] = {
    "users": (("id", "bigint"), ("username", "text"), ("email", "text"), ("password", "text"),
              ("user_type", "smallint"), ("is_active", "smallint"), ("last_login", "timestamp"),
              ("created_at", "timestamp"), ("updated_at", "timestamp")),
    "persons": (("id", "bigint"), ("user_id", "bigint"), ("firstname", "text"),
                ("lastname", "text"), ("patronymic", "text"), ("birthdate", "text"),
                ("gender", "text"), ("pin", "text"), ("phone", "text"), ("address", "text"),
                ("created_at", "timestamp")),
    "organizations": (("id", "bigint"), ("parent_id", "bigint"), ("type_id", "smallint"),
                      ("code", "text"), ("name_az", "text"), ("name_ru", "text"),
                      ("name_en", "text"), ("is_active", "smallint")),
    "students": (("id", "bigint"), ("user_id", "bigint"), ("person_id", "bigint"),
                 ("org_id", "bigint"), ("student_no", "text"), ("admission_year", "smallint"),
                 ("status", "text"), ("gpa", "text"), ("group_name", "text"),
                 ("education_form", "text"), ("created_at", "timestamp")),
    "teachers": (("id", "bigint"), ("user_id", "bigint"), ("person_id", "bigint"),
                 ("org_id", "bigint"), ("position", "text"), ("degree", "text"),
                 ("hire_date", "date"), ("is_active", "smallint")),
    "courses": (("id", "bigint"), ("code", "text"), ("name_az", "text"), ("name_ru", "text"),
                ("name_en", "text"), ("credits", "text"), ("org_id", "bigint"),
                ("teacher_id", "bigint"), ("edu_year", "text"), ("semester", "smallint"),
                ("section", "text"), ("max_students", "integer"), ("created_at", "timestamp")),
    "course_students": (("id", "bigint"), ("course_id", "bigint"), ("student_id", "bigint"),
                        ("status", "text"), ("final_score", "numeric(5,2)"), ("letter", "text"),
                        ("enrolled_at", "timestamp")),
    "grades": (("id", "bigint"), ("course_student_id", "bigint"), ("grade_type", "smallint"),
               ("value", "text"), ("lesson_date", "date"), ("teacher_id", "bigint"),
               ("created_at", "timestamp")),
}

# A source table may hold two legacy tables only where one row is naturally both: an account row
# that also carries the person's names. Any other sharing would stage the same rows twice.
MAY_SHARE_A_TABLE = frozenset({frozenset({"users", "persons"})})

# Source types whose cast to a staged type can never fail: no value needs to be read to know.
# Any value casts to text.
SAFE_CASTS: dict[str, frozenset[str]] = {
    "bigint": frozenset({"smallint", "integer", "bigint"}),
    "integer": frozenset({"smallint", "integer"}),
    "smallint": frozenset({"smallint"}),
    "timestamp": frozenset({"timestamp without time zone", "date"}),
    "date": frozenset({"date", "timestamp without time zone"}),
    "numeric(5,2)": frozenset({"numeric(5,2)", "numeric(4,2)", "numeric(3,2)", "smallint"}),
}
SECRET_COLUMNS = frozenset({("users", "password")})
SAMPLES = 3


def _dollar_tag(text: str, at: int) -> str | None:
    """The dollar-quote opener (`$$`, `$tag$`) that starts at `at`, or None ($1 is no quote)."""
    end = at + 1
    while end < len(text) and (text[end].isalnum() or text[end] == "_"):
        end += 1
    if end < len(text) and text[end] == "$" and not text[at + 1:end][:1].isdigit():
        return text[at:end + 1]
    return None


def expression_problem(text: str) -> str | None:
    """Why `text` is not one SQL expression that can be put in parentheses, or None.

    Strings, quoted names, dollar quotes and comments are skipped as PostgreSQL reads them;
    outside them no `;` may occur and the parentheses must balance, never closing one that the
    text did not open. So the text cannot end the statement it is pasted into or reach past
    its own parentheses (the server refuses anything that is still not an expression).
    """
    if not text.strip():
        return "it is empty"
    depth, i, n = 0, 0, len(text)
    while i < n:
        ch = text[i]
        if ch == "'":
            escapes = i > 0 and text[i - 1] in "eE" and not (
                i > 1 and (text[i - 2].isalnum() or text[i - 2] in "_$"))
            i += 1
            while True:
                if i >= n:
                    return "a string is not closed"
                if escapes and text[i] == "\\":
                    i += 2
                    continue
                if text[i] == "'":
                    if i + 1 < n and text[i + 1] == "'":
                        i += 2
                        continue
                    break
                i += 1
        elif ch == '"':
            close = text.find('"', i + 1)
            while close != -1 and text[close + 1:close + 2] == '"':
                close = text.find('"', close + 2)
            if close == -1:
                return "a quoted name is not closed"
            i = close
        elif ch == "$" and not (i > 0 and (text[i - 1].isalnum() or text[i - 1] in "_$")) \
                and (tag := _dollar_tag(text, i)) is not None:
            close = text.find(tag, i + len(tag))
            if close == -1:
                return f"the dollar quote {tag} is not closed"
            i = close + len(tag) - 1
        elif text.startswith("--", i):
            newline = text.find("\n", i)
            if newline == -1:
                return "a -- comment runs to its end and would hide what follows (use /* */)"
            i = newline
        elif text.startswith("/*", i):
            nesting, i = 1, i + 2
            while nesting:
                if i >= n:
                    return "a comment is not closed"
                if text.startswith("/*", i):
                    nesting, i = nesting + 1, i + 2
                elif text.startswith("*/", i):
                    nesting, i = nesting - 1, i + 2
                else:
                    i += 1
            continue
        elif ch == ";":
            return "it holds a ';' (one expression, not statements)"
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                return "it closes a parenthesis it did not open"
        i += 1
    return "a parenthesis is not closed" if depth else None


class _Spec(BaseModel):
    """One column's source, as written in the file: exactly one of the four forms."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    column: str | None = None
    sql: str | None = None
    value: str | int | float | bool | None = None
    todo: str | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> _Spec:
        given = [k for k in ("column", "sql", "value", "todo") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of column, sql, value or todo")
        return self


class _TableSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    table: str | None = None
    todo: str | None = None
    columns: dict[str, Any] = {}


@dataclass(frozen=True)
class MappedColumn:
    """A column the migration reads, and what the source gives for it."""

    name: str
    staged_type: str
    kind: str  # column, sql, value or todo
    text: str  # the source column, the expression, the constant or the TODO's note

    @property
    def expression(self) -> sql.Composable:
        """The value over one source row (unqualified names: the row's own columns)."""
        if self.kind == "column":
            return sql.Identifier(self.text)
        if self.kind == "sql":
            # build_mapping refused any text that is not one expression (expression_problem).
            return sql.SQL("(") + sql.SQL(self.text) + sql.SQL(")")
        if self.kind == "value":
            return sql.SQL("NULL") if self.text.upper() == "NULL" else sql.Literal(self.text)
        raise MappingError(f"{self.name} is a TODO in the mapping: {self.text}",
                           "map it in the mapping file, then run `edu-migrate mapping check`")

    def staged(self) -> sql.Composed:
        return sql.SQL("{}::{}").format(self.expression, sql.SQL(self.staged_type))

    def shown(self) -> str:
        return {"column": self.text, "sql": f"sql: {self.text}", "value": f"value: {self.text}",
                "todo": f"TODO: {self.text}"}[self.kind]


@dataclass(frozen=True)
class MappedTable:
    """One legacy table: the source relation that holds its rows and its columns' sources."""

    legacy: str
    schema: str
    name: str
    columns: tuple[MappedColumn, ...]
    todo: str | None = None

    @property
    def relation(self) -> sql.Identifier:
        if self.todo is not None:
            raise MappingError(f"the source table of {self.legacy} is a TODO in the mapping: "
                               f"{self.todo}", "name it with table = \"schema.table\"")
        return sql.Identifier(self.schema, self.name)

    @property
    def shown(self) -> str:
        return f"{self.schema}.{self.name}" if self.todo is None else f"TODO ({self.legacy})"

    @property
    def source_name(self) -> str:
        """The source table's name as reports give it: the legacy name when it is that table."""
        return self.legacy if (self.schema, self.name) == (CANONICAL_SCHEMA, self.legacy) \
            else self.shown

    @property
    def id(self) -> MappedColumn:
        return self.column(ID_COLUMN)

    def column(self, name: str) -> MappedColumn:
        return next(c for c in self.columns if c.name == name)

    @property
    def canonical(self) -> bool:
        return (self.todo is None and (self.schema, self.name) == (CANONICAL_SCHEMA, self.legacy)
                and all(c.kind == "column" and c.text == c.name for c in self.columns))

    def select_list(self) -> sql.Composed:
        """Every column the migration reads, cast to its staged type, in staged order."""
        return sql.SQL(", ").join(c.staged() for c in self.columns)

    def as_select(self) -> sql.Composed:
        """A SELECT of the legacy table as the migration sees it: the source table as it is when
        the mapping is today's names, else its mapped columns under their legacy names."""
        if self.canonical:
            return sql.SQL("SELECT * FROM {}").format(self.relation)
        items = sql.SQL(", ").join(sql.SQL("{} AS {}").format(c.staged(), sql.Identifier(c.name))
                                   for c in self.columns)
        return sql.SQL("SELECT {} FROM {}").format(items, self.relation)

    def rows(self) -> sql.Composed:
        """The legacy table as the migration sees it, for use in FROM: a subquery with the
        legacy column names, or the source table itself when the mapping is today's names."""
        if self.canonical:
            return sql.SQL("{}").format(self.relation)
        return sql.SQL("({})").format(self.as_select())


@dataclass(frozen=True)
class LegacyMapping:
    tables: dict[str, MappedTable]
    origin: str

    def __getitem__(self, legacy: str) -> MappedTable:
        return self.tables[legacy]

    def __iter__(self) -> Iterator[MappedTable]:
        return iter(self.tables.values())

    @property
    def canonical(self) -> bool:
        return all(t.canonical for t in self)

    def schemas(self) -> list[str]:
        """The source schemas the mapping reads from, public first."""
        found = {t.schema for t in self if t.todo is None}
        return [CANONICAL_SCHEMA, *sorted(found - {CANONICAL_SCHEMA})]

    def legacy_tables_of(self, schema: str, name: str) -> list[str]:
        """The legacy tables a source table holds (none for a table the mapping does not read)."""
        return [t.legacy for t in self if t.todo is None and (t.schema, t.name) == (schema, name)]

    def to_dict(self) -> dict[str, Any]:
        return {t.legacy: {"table": t.shown, "columns": {c.name: c.shown() for c in t.columns}}
                for t in self}


def _split_relation(text: str, legacy: str) -> tuple[str, str]:
    parts = text.split(".")
    if len(parts) == 1 and parts[0]:
        return CANONICAL_SCHEMA, parts[0]
    if len(parts) == 2 and all(parts):
        return parts[0], parts[1]
    raise MappingError(f"mapping.{legacy}.table = {text!r} is not a table name",
                       "write it as \"table\" or \"schema.table\"")


COLUMN_FORMS = ("a column is \"name\", { sql = \"…\" }, { value = … } or { todo = \"…\" } "
                "(docs/mapping.md)")
TABLE_FORMS = ("a table takes table = \"schema.table\", todo = \"…\" and "
               "[mapping.<table>.columns] (docs/mapping.md)")


def _entry_error(exc: ValidationError, where: str, hint: str) -> MappingError:
    first = exc.errors()[0]
    inner = ".".join(str(part) for part in first["loc"])
    message = str(first["msg"]).removeprefix("Value error, ")
    return MappingError(f"{where}{'.' + inner if inner else ''}: {message}", hint)


def build_mapping(data: Mapping[str, Any], origin: str) -> LegacyMapping:
    """The mapping a file describes, over the defaults; refuses unknown tables and columns,
    malformed entries, and two legacy tables read from one source table."""
    unknown = sorted(set(data) - set(LEGACY_COLUMNS))
    if unknown:
        raise MappingError(f"{origin}: mapping.{unknown[0]} is not a legacy table the migration "
                           "reads", f"map one of {', '.join(LEGACY_COLUMNS)}")
    tables: dict[str, MappedTable] = {}
    for legacy, staged_columns in LEGACY_COLUMNS.items():
        try:
            spec = _TableSpec.model_validate(data.get(legacy, {}))
        except ValidationError as exc:
            raise _entry_error(exc, f"{origin}: mapping.{legacy}", TABLE_FORMS) from exc
        wrong = sorted(set(spec.columns) - {name for name, _ in staged_columns})
        if wrong:
            raise MappingError(f"{origin}: mapping.{legacy}.columns.{wrong[0]} is not a column "
                               f"the migration reads of {legacy}",
                               f"map one of {', '.join(n for n, _ in staged_columns)}")
        if spec.table is not None:
            schema, name = _split_relation(spec.table, legacy)
        elif spec.todo is not None:
            schema, name = "", ""
        else:
            schema, name = CANONICAL_SCHEMA, legacy
        columns = []
        for column, staged_type in staged_columns:
            given = spec.columns.get(column, column)
            if not isinstance(given, str | dict):
                raise MappingError(f"{origin}: mapping.{legacy}.columns.{column} = {given!r} is "
                                   "not a column entry", COLUMN_FORMS)
            try:
                entry = _Spec(column=given) if isinstance(given, str) else \
                    _Spec.model_validate(given)
            except ValidationError as exc:
                raise _entry_error(exc, f"{origin}: mapping.{legacy}.columns.{column}",
                                   COLUMN_FORMS) from exc
            kind = next(k for k in ("column", "sql", "value", "todo")
                        if getattr(entry, k) is not None)
            text = getattr(entry, kind)
            problem = expression_problem(str(text)) if kind == "sql" else None
            if problem is not None:
                raise MappingError(
                    f"{origin}: {legacy}.{column} (mapping.{legacy}.columns.{column}) is not a "
                    f"single expression: {problem}",
                    "give one SQL expression over the row's columns, e.g. "
                    "{ sql = \"lower(email)\" }")
            columns.append(MappedColumn(column, staged_type, kind,
                                        str(text).lower() if isinstance(text, bool) else str(text)))
        tables[legacy] = MappedTable(legacy, schema, name, tuple(columns), spec.todo)
    mapping = LegacyMapping(tables, origin)
    _refuse_shared_tables(mapping)
    return mapping


def _refuse_shared_tables(mapping: LegacyMapping) -> None:
    by_relation: dict[tuple[str, str], list[str]] = {}
    for table in mapping:
        if table.todo is None:
            by_relation.setdefault((table.schema, table.name), []).append(table.legacy)
    for (schema, name), legacy in by_relation.items():
        if len(legacy) > 1 and frozenset(legacy) not in MAY_SHARE_A_TABLE:
            raise MappingError(
                f"{mapping.origin}: {' and '.join(legacy)} are both mapped to {schema}.{name}: "
                "its rows would be migrated twice, as two different things",
                "map each legacy table to its own source table (only users and persons may "
                "share one)")


DEFAULT_MAPPING = build_mapping({}, "the default mapping (legacy-edu.md)")


def read_mapping_file(path: Path) -> dict[str, Any]:
    """The tables of a mapping file: at its top, or under [mapping] as in edu-migrate.toml."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise MappingError(f"mapping file {path} does not exist",
                           "check --mapping / EDU_MAPPING, or draft one with "
                           "`edu-migrate mapping draft --out FILE`") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise MappingError(f"mapping file {path} is not valid TOML: {exc}",
                           "fix the file at that line") from exc
    tables = data.get("mapping", data)
    if not isinstance(tables, dict):
        raise MappingError(f"mapping file {path}: [mapping] must be a table")
    return tables


def load_mapping(mapping_file: Path | None, section: Mapping[str, Any]) -> LegacyMapping:
    """The mapping of a run: the file when one is given, else edu-migrate.toml's section, else
    legacy-edu.md's names."""
    if mapping_file is not None:
        return build_mapping(read_mapping_file(mapping_file), f"mapping file {mapping_file}")
    if section:
        return build_mapping(section, "edu-migrate.toml [mapping]")
    return DEFAULT_MAPPING
