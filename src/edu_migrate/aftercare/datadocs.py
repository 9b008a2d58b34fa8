"""Day 1, "Update Documentation": the documentation generated from the databases, so that it
cannot drift from them.

- `DATA_DICTIONARY.md`, from the live edu_v2 catalogue: every table and column with its type,
  constraints, comment (schema version 16 comments every business table and column), exact row
  count, and the row-level security policies that apply;
- `ER_DIAGRAM.md`, the business tables and their foreign keys as a Mermaid diagram;
- `OLD_TO_NEW_SCHEMA_MAPPING.md`, the guide's file: each legacy table and column, where the
  legacy mapping in use reads it, where it goes in edu_v2, how it is transformed, and which
  dirty-data rule may repair, merge or set it aside, with the phase statements that apply it.
  It is built from mapping/columns.toml, checked against the code as it is written: every column
  the migration reads has an entry, every target named is a column of edu_v2, and every rule's
  reason is a text the phases' SQL writes. A mismatch refuses to write anything.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import psycopg
from jinja2 import Environment, PackageLoader, StrictUndefined
from psycopg import sql

from edu_migrate.aftercare.sqlfiles import query
from edu_migrate.errors import MigrationError
from edu_migrate.mapping import LEGACY_COLUMNS, LegacyMapping
from edu_migrate.pg.connect import connect
from edu_migrate.pg.urls import database_name
from edu_migrate.phases import sqlfile
from edu_migrate.phases.runner import PHASES, RUN_ORDER

DICTIONARY_FILE = "DATA_DICTIONARY.md"
DIAGRAM_FILE = "ER_DIAGRAM.md"
MAPPING_FILE = "OLD_TO_NEW_SCHEMA_MAPPING.md"
README_FILE = "README.md"
BUSINESS_SCHEMA = "public"
RULE_KINDS = ("repair", "merge", "set aside")
_PLACEHOLDER = re.compile(r"<[^>]+>")


@dataclass
class Column:
    name: str
    type: str
    not_null: bool
    default: str | None
    comment: str | None


@dataclass
class Constraint:
    name: str
    kind: str
    definition: str
    references: str | None


@dataclass
class Policy:
    name: str
    command: str
    roles: str
    permissive: str
    using: str | None
    check: str | None


@dataclass
class Table:
    schema: str
    name: str
    kind: str
    comment: str | None
    row_security: bool
    forced: bool
    rows: int | None = None
    columns: list[Column] = field(default_factory=list)
    constraints: list[Constraint] = field(default_factory=list)
    policies: list[Policy] = field(default_factory=list)

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"

    @property
    def anchor(self) -> str:
        return re.sub(r"[^a-z0-9_-]", "", self.qualified.replace(".", "-").lower())


@dataclass
class Rule:
    kind: str
    reason: str
    statements: list[str]


@dataclass
class LegacyColumn:
    name: str
    read_from: str
    to: list[str]
    how: str
    rules: list[Rule]


@dataclass
class LegacyTable:
    name: str
    source: str
    phases: list[int]
    to: list[str]
    columns: list[LegacyColumn]


@dataclass
class DocsResult:
    out: Path
    files: dict[str, str]
    tables: int
    columns: int
    legacy_columns: int

    def to_dict(self) -> dict[str, Any]:
        return {"out": str(self.out), "files": self.files, "tables": self.tables,
                "columns": self.columns, "legacy_columns": self.legacy_columns}


def read_catalogue(conn: psycopg.Connection) -> list[Table]:
    """Every table of edu_v2 with its columns, constraints, policies and exact row count, in
    the connection's snapshot."""
    tables = [Table(str(s), str(n), str(k), c, bool(rls), bool(forced))
              for s, n, k, c, rls, forced in conn.execute(query("datadocs_tables")).fetchall()]
    for table in tables:
        oid = sql.Identifier(table.schema, table.name).as_string(conn)
        table.columns = [Column(str(n), str(t), bool(nn), d, c) for n, t, nn, d, c in
                         conn.execute(query("datadocs_columns"), {"oid": oid}).fetchall()]
        table.constraints = [Constraint(str(n), str(k), str(d), r) for n, k, d, r in
                             conn.execute(query("datadocs_constraints"), {"oid": oid})]
        table.policies = [Policy(str(n), str(c), str(r), str(p), u, w) for n, c, r, p, u, w in
                          conn.execute(query("datadocs_policies"),
                                       {"schema": table.schema, "table": table.name})]
        if table.kind == "table":
            row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(
                sql.Identifier(table.schema, table.name))).fetchone()
            table.rows = int(row[0]) if row else 0
    return tables


def _phase_statements() -> list[tuple[int, str, str]]:
    """(phase, statement name, text with '' read as ') of every forward rule, in run order."""
    return [(number, statement.name, statement.text.replace("''", "'"))
            for number in RUN_ORDER for file in PHASES[number].sql_files
            for statement in sqlfile.load(file)]


def _column_map() -> dict[str, Any]:
    text = resources.files("edu_migrate.mapping").joinpath("columns.toml").read_text("utf-8")
    return tomllib.loads(text)


def legacy_columns(mapping: LegacyMapping, catalogue: list[Table]) -> list[LegacyTable]:
    """Each legacy table and column with its destination, transformation and rules, checked
    against the code: a column read without an entry, a destination that is not an edu_v2
    column or a rule the phases do not write is refused, naming it."""
    described = _column_map()
    statements = _phase_statements()
    targets = {f"{t.name}.{c.name}" for t in catalogue for c in t.columns
               if t.schema == BUSINESS_SCHEMA} | {"migration.crosswalk"}
    problems: list[str] = []
    result: list[LegacyTable] = []
    for legacy, read in LEGACY_COLUMNS.items():
        phases = [n for n in RUN_ORDER if legacy in PHASES[n].reads]
        entry = described.get(legacy, {})
        columns = entry.get("columns", {})
        table_columns: list[LegacyColumn] = []
        for name, _ in read:
            spec = columns.get(name)
            if spec is None:
                problems.append(f"{legacy}.{name} has no entry")
                continue
            problems += [f"{legacy}.{name} goes to {to}, which is not an edu_v2 column"
                         for to in spec["to"] if to not in targets]
            rules = []
            for text in spec["rules"]:
                kind, _, reason = text.partition(": ")
                fragments = [f for f in _PLACEHOLDER.split(reason) if f.strip()]
                # Only the phases that read this table apply its rules.
                where = [statement for phase, statement, body in statements
                         if phase in phases and fragments and all(f in body for f in fragments)]
                if kind not in RULE_KINDS or not where:
                    problems.append(f"{legacy}.{name}: rule {text!r} is not written by a phase")
                rules.append(Rule(kind, reason, where))
            table_columns.append(LegacyColumn(name, mapping[legacy].column(name).shown(),
                                              list(spec["to"]), str(spec["how"]), rules))
        result.append(LegacyTable(legacy, mapping[legacy].shown, phases,
                                  list(entry.get("to", [])), table_columns))
    if problems:
        raise MigrationError(f"mapping/columns.toml does not match the code: {problems[0]}"
                             + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""),
                             "fix mapping/columns.toml beside the phase that changed")
    return result


def _environment() -> Environment:
    env = Environment(loader=PackageLoader("edu_migrate.aftercare", "templates"),
                      autoescape=False, undefined=StrictUndefined, trim_blocks=True,
                      lstrip_blocks=True, keep_trailing_newline=True)
    # A Markdown table cell: no line breaks, no bare pipes.
    env.filters["cell"] = lambda value: ("" if value is None else str(value)) \
        .replace("|", "\\|").replace("\n", " ")
    env.filters["mermaid"] = lambda value: re.sub(r"[^A-Za-z0-9_]", "_", str(value))
    return env


def write_docs(target_url: str, mapping: LegacyMapping, out: Path) -> DocsResult:
    """Read edu_v2's catalogue in one read-only snapshot and write the three documents and a
    README into `out`. Everything is checked before the first file is written."""
    with connect(target_url, purpose="target", read_only=True) as conn:
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        catalogue = read_catalogue(conn)
        conn.rollback()
    business = [t for t in catalogue if t.schema == BUSINESS_SCHEMA and t.kind == "table"]
    if not business:
        raise MigrationError(f"{database_name(target_url)} has no edu_v2 business tables",
                             "run `edu-migrate schema apply` (and migrate) first")
    legacy = legacy_columns(mapping, catalogue)
    context = {"database": database_name(target_url), "catalogue": catalogue,
               "business": business, "legacy": legacy, "mapping_origin": mapping.origin,
               }
    env = _environment()
    texts = {name: env.get_template(f"{name}.j2").render(context)
             for name in (DICTIONARY_FILE, DIAGRAM_FILE, MAPPING_FILE, README_FILE)}
    try:
        out.mkdir(parents=True, exist_ok=True)
        for name, text in texts.items():
            scratch = out / f".{name}.tmp"
            scratch.write_text(text, encoding="utf-8")
            scratch.replace(out / name)
    except OSError as exc:
        raise MigrationError(f"cannot write into {out}: {exc.strerror}",
                             "choose a folder you may write to with --out") from exc
    return DocsResult(out, {
        DICTIONARY_FILE: "every table and column: type, constraints, comment, rows, policies",
        DIAGRAM_FILE: "the business tables and their foreign keys (Mermaid)",
        MAPPING_FILE: "each legacy column: where it goes, how, and its dirty-data rules",
        README_FILE: "what these files are and how they were made"},
        len(catalogue), sum(len(t.columns) for t in catalogue),
        sum(len(t.columns) for t in legacy))
