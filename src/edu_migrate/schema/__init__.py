"""The edu_v2 schema: versioned SQL files, applied in order, each once."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from importlib import resources

import psycopg

from edu_migrate.errors import PreconditionFailed
from edu_migrate.pg.connect import connect, create_database_if_missing
from edu_migrate.pg.urls import database_name

_VERSION_FILE = re.compile(r"^V(\d{3})__(\w+)\.sql$")


@dataclass(frozen=True)
class SchemaVersion:
    version: int
    name: str
    text: str


def versions() -> list[SchemaVersion]:
    found: list[SchemaVersion] = []
    for entry in resources.files("edu_migrate.schema").iterdir():
        match = _VERSION_FILE.match(entry.name)
        if match:
            found.append(SchemaVersion(int(match.group(1)), match.group(2),
                                       entry.read_text("utf-8")))
    return sorted(found, key=lambda v: v.version)


LATEST_VERSION = max(v.version for v in versions())


@dataclass(frozen=True)
class SchemaResult:
    database_created: bool
    applied: list[str]
    current_version: int


def applied_version(conn: psycopg.Connection) -> int | None:
    """The schema version of an edu_v2 database, or None when it is not one."""
    row = conn.execute("SELECT to_regclass('migration.schema_versions') IS NOT NULL").fetchone()
    if not row or not row[0]:
        return None
    version = conn.execute("SELECT max(version) FROM migration.schema_versions").fetchone()
    return int(version[0]) if version and version[0] is not None else None


def foreign_tables(conn: psycopg.Connection) -> list[str]:
    """Tables in the target's public schema that edu-migrate did not create."""
    ours = set(re.findall(r"CREATE TABLE (\w+) \(", "\n".join(v.text for v in versions())))
    rows = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'").fetchall()
    return sorted(r[0] for r in rows if r[0] not in ours)


def apply_security_grants(conn: psycopg.Connection) -> None:
    """The grants of edu_v2's roles, whole (security/grants.sql): after every schema apply, and
    after every restore of an edu_v2 dump, which may have brought none back."""
    text = resources.files("edu_migrate.security").joinpath("grants.sql").read_bytes()
    conn.execute(text)


def apply_schema(target_url: str) -> SchemaResult:
    created = create_database_if_missing(target_url, purpose="target")
    applied: list[str] = []
    with connect(target_url, purpose="target") as conn:
        current = applied_version(conn)
        if current is None:
            strangers = foreign_tables(conn)
            if strangers:
                raise PreconditionFailed(
                    f"the target {database_name(target_url)} holds tables that are not "
                    f"edu-migrate's: {', '.join(strangers[:5])}"
                    + (" …" if len(strangers) > 5 else ""),
                    "point --target at an empty database (it is created when missing)")
            conn.execute("CREATE SCHEMA IF NOT EXISTS migration")
            conn.execute("CREATE TABLE migration.schema_versions (version integer PRIMARY KEY, "
                         "name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())")
            current = 0
        for version in versions():
            if version.version <= current:
                continue
            try:
                conn.execute(version.text.encode())
            except psycopg.errors.RaiseException as exc:
                # A version's own precondition (RAISE … USING HINT): one line, nothing applied.
                raise PreconditionFailed(exc.diag.message_primary or str(exc),
                                         exc.diag.message_hint) from exc
            conn.execute("INSERT INTO migration.schema_versions (version, name) VALUES (%s, %s)",
                         [version.version, version.name])
            applied.append(f"V{version.version:03d}__{version.name}")
        apply_security_grants(conn)
        conn.execute("INSERT INTO migration.state (id_secret) VALUES (%s) ON CONFLICT DO NOTHING",
                     [secrets.token_hex(32)])
        conn.commit()
    return SchemaResult(created, applied, LATEST_VERSION)


def require_schema(conn: psycopg.Connection) -> int:
    version = applied_version(conn)
    if version is None:
        raise PreconditionFailed("the target has no edu_v2 schema",
                                 "run `edu-migrate schema apply` first")
    if version < LATEST_VERSION:
        raise PreconditionFailed(
            f"the target's schema is at version {version}, this tool needs {LATEST_VERSION}",
            "run `edu-migrate schema apply` to upgrade it")
    return version
