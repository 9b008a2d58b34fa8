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


def security_grants() -> str:
    """The grants of edu_v2's roles, whole (security/grants.sql)."""
    return resources.files("edu_migrate.security").joinpath("grants.sql").read_text("utf-8")


def apply_security_grants(conn: psycopg.Connection) -> None:
    """The grants, applied: after every schema apply, and after every restore of an edu_v2
    dump, which may have brought none back."""
    conn.execute(security_grants().encode())


# What a database needs before its first version: the table that records the versions applied.
_BOOTSTRAP = ("CREATE SCHEMA IF NOT EXISTS migration",
              "CREATE TABLE migration.schema_versions (version integer PRIMARY KEY, "
              "name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())")
_RECORD_VERSION = "INSERT INTO migration.schema_versions (version, name) VALUES (%s, %s)"
_ADD_SECRET = "INSERT INTO migration.state (id_secret) VALUES ({}) ON CONFLICT DO NOTHING"
# The script's own secret, drawn by the server that runs it (two v4 UUIDs come from its strong
# random source): the file holds no secret, and each database gets one of its own.
_SCRIPT_SECRET = ("encode(sha256(convert_to(gen_random_uuid()::text || gen_random_uuid()::text, "
                  "'UTF8')), 'hex')")


def schema_script() -> str:
    """The whole schema as one psql script (the guide's new_database_schema.sql): every version
    in order, recorded as `schema apply` records it, in one transaction. `psql -f` into an empty
    database gives what `schema apply` gives; a database that has a schema is refused."""
    parts = [f"-- new_database_schema.sql: the edu_v2 schema at version {LATEST_VERSION}, written "
             "by `edu-migrate schema sql`.\n"
             "-- Apply it to an empty database: psql --no-psqlrc -f new_database_schema.sql "
             "DBNAME\n"
             "-- (the same result as `edu-migrate schema apply`; it refuses a database that "
             "holds a schema).\n"
             "-- It holds no secret: the id secret is drawn by the server when it runs.\n",
             "\\set ON_ERROR_STOP on",
             "BEGIN;",
             "SET LOCAL client_min_messages = warning;",
             "DO $$ BEGIN IF to_regclass('migration.schema_versions') IS NOT NULL THEN "
             "RAISE EXCEPTION 'this database already has an edu_v2 schema' USING HINT = "
             "'run `edu-migrate schema apply` to upgrade it'; END IF; END $$;",
             *(f"{statement};" for statement in _BOOTSTRAP)]
    for version in versions():
        text = version.text.strip()
        parts.append(f"\n-- V{version.version:03d}__{version.name}\n{text}"
                     + ("" if text.endswith(";") else ";") + "\n")
        # Version names are \w+ (_VERSION_FILE): nothing to quote.
        parts.append(_RECORD_VERSION % (version.version, f"'{version.name}'") + ";")
    parts.append(f"\n-- The security grants, whole (as `schema apply` applies them)\n"
                 f"{security_grants().strip()}\n")
    parts += [_ADD_SECRET.format(_SCRIPT_SECRET) + ";", "COMMIT;"]
    return "\n".join(parts) + "\n"


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
            for statement in _BOOTSTRAP:
                conn.execute(statement)
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
            conn.execute(_RECORD_VERSION, [version.version, version.name])
            applied.append(f"V{version.version:03d}__{version.name}")
        apply_security_grants(conn)
        conn.execute(_ADD_SECRET.format("%s"), [secrets.token_hex(32)])
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
