"""The guide's files, made by edu-migrate against a real server: new_database_schema.sql
(`schema sql`), the SQL backup beside the -Fc one (`backup --format plain`), a phase's
statements for review (`migrate --phase N --sql`), and the documentation generated from the
databases (`docs --out DIR`: data dictionary, ER diagram, OLD_TO_NEW_SCHEMA_MAPPING.md)."""

from __future__ import annotations

import json
import re
import tomllib
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from edu_migrate import api
from edu_migrate.aftercare.datadocs import legacy_columns
from edu_migrate.backup import table_row_counts
from edu_migrate.config import Settings
from edu_migrate.errors import MigrationError
from edu_migrate.mapping import DEFAULT_MAPPING, LEGACY_COLUMNS
from edu_migrate.pg.tools import client_program, run_client
from edu_migrate.pg.urls import with_database
from edu_migrate.phases import sqlfile
from edu_migrate.phases.as_of import recorded_as_of
from edu_migrate.phases.runner import (
    PHASES,
    RUN_ORDER,
    SCOPED_PHASE,
    rebuild_plan,
    vacuumed_after_load,
)
from tests.conftest import make_settings
from tests.faults.harness import cli, url_args
from tests.integration.helpers import (
    BUSINESS_TABLES,
    admin_sql,
    clone_database,
    differences,
    drop_databases,
    id_secret,
    result_rows,
    scalar,
    table_digest,
)
from tests.integration.test_cli_errors import assert_one_line_error, run_cli

# pg_dump marks each dump with a random key (\restrict KEY, PostgreSQL 17.6 and later).
_RESTRICT = re.compile(r"^\\(un)?restrict \S+$", re.MULTILINE)


def _schema_of(url: str) -> str:
    """pg_dump --schema-only of a database, without what differs between any two dumps."""
    with psycopg.connect(url) as conn:
        version = conn.info.server_version
    dump = run_client(client_program("pg_dump", version), ["--schema-only"], url,
                      what="pg_dump --schema-only").stdout
    return _RESTRICT.sub("", dump)


@pytest.fixture(scope="module")
def migrated(admin_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """One dirty legacy database migrated, for this module's tests: each leaves it as it was."""
    for settings in make_settings(admin_url, tmp_path_factory.mktemp("guide")):
        api.generate(settings, scale=0.01, profile="dirty", seed=11)
        api.schema_apply(settings)
        api.migrate(settings, force=True)
        yield settings


@pytest.fixture
def two_empty_databases(admin_url: str) -> Iterator[tuple[str, str]]:
    names = [f"schema_{kind}_{uuid.uuid4().hex[:8]}" for kind in ("apply", "file")]
    for name in names:
        admin_sql(admin_url, sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield with_database(admin_url, names[0]), with_database(admin_url, names[1])
    finally:
        drop_databases(admin_url, *names)


def test_schema_sql_applied_by_psql_gives_what_schema_apply_gives(
        two_empty_databases: tuple[str, str], tmp_path: Path) -> None:
    applied, scripted = two_empty_databases
    assert run_cli("schema", "apply", "--target", applied).returncode == 0
    printed = run_cli("schema", "sql")
    assert printed.returncode == 0, printed.stderr
    script = tmp_path / "new_database_schema.sql"
    script.write_text(printed.stdout, encoding="utf-8")
    psql = client_program("psql", 0)
    run_client(psql, ["--no-psqlrc", "--quiet", "--file", str(script)], scripted,
               what="psql -f new_database_schema.sql")

    assert _schema_of(scripted) == _schema_of(applied)
    versions = "SELECT array_agg((version, name)::text ORDER BY version) FROM " \
               "migration.schema_versions"
    secrets = "SELECT id_secret FROM migration.state"
    with psycopg.connect(applied) as left, psycopg.connect(scripted) as right:
        assert right.execute(versions).fetchone() == left.execute(versions).fetchone()
        (left_secret,), (right_secret,) = (c.execute(secrets).fetchone() or ("",)
                                           for c in (left, right))
    # Each database draws its own secret; the file holds none.
    assert re.fullmatch(r"[0-9a-f]{64}", str(right_secret))
    assert right_secret != left_secret and str(right_secret) not in printed.stdout
    # Applied once more, the file refuses and changes nothing.
    again = run_cli("schema", "sql")
    script.write_text(again.stdout, encoding="utf-8")
    with pytest.raises(Exception, match="already has an edu_v2 schema"):
        run_client(psql, ["--no-psqlrc", "--quiet", "--file", str(script)], scripted,
                   what="psql -f new_database_schema.sql")
    assert _schema_of(scripted) == _schema_of(applied)


def test_backup_format_plain_writes_the_sql_dump_beside_the_custom_one(
        migrated: Settings, admin_url: str) -> None:
    wrong = cli(migrated, "backup", "--format", "xml", *url_args(migrated))
    assert_one_line_error(wrong, "--format takes custom or plain")
    assert not migrated.backup_dir.exists() or not any(migrated.backup_dir.iterdir())

    made = cli(migrated, "backup", "--format", "plain", "--only", "source", "--json", "-",
               *url_args(migrated))
    assert made.returncode == 0, made.stderr
    (record,) = json.loads(made.stdout)
    folder = migrated.backup_dir
    dump, plain = folder / record["file"], folder / record["plain"]
    assert plain == dump.with_suffix(".sql") and plain.stat().st_size == record["plain_bytes"]
    assert folder.stat().st_mode & 0o777 == 0o700
    assert plain.stat().st_mode & 0o777 == 0o600 == dump.stat().st_mode & 0o777
    (entry,) = json.loads((folder / "manifest.json").read_text())["backups"]
    assert (entry["file"], entry["plain"]) == (dump.name, plain.name)
    assert "COPY public.grades " in plain.read_text(encoding="utf-8")

    # The SQL dump is the source: psql -f into an empty database gives every table's rows.
    name = f"plain_{uuid.uuid4().hex[:8]}"
    admin_sql(admin_url, sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        restored = with_database(admin_url, name)
        run_client(client_program("psql", 0), ["--no-psqlrc", "--quiet", "--set",
                                                "ON_ERROR_STOP=1", "--file", str(plain)],
                   restored, what="psql -f of the SQL dump")
        with psycopg.connect(restored) as conn:
            assert table_row_counts(conn) == entry["table_counts"]
    finally:
        drop_databases(admin_url, name)


# --- migrate --sql -------------------------------------------------------------------------


def _everything(url: str) -> dict[str, object]:
    """All that a database holds: each table's and sequence's content, the schema, and the run's
    bookkeeping in full (equal before and after: nothing was written)."""
    with psycopg.connect(url) as conn:
        tables = [str(r[0]) for r in conn.execute(
            "SELECT n.nspname || '.' || c.relname FROM pg_class c JOIN pg_namespace n "
            "ON n.oid = c.relnamespace WHERE c.relkind = 'r' AND n.nspname NOT IN "
            "('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%' "
            "ORDER BY 1")]
        sequences = conn.execute("SELECT schemaname, sequencename, last_value FROM pg_sequences "
                                 "ORDER BY 1, 2").fetchall()
    assert tables
    return {"tables": {t: table_digest(url, t) for t in tables}, "sequences": sequences,
            "schema": _schema_of(url)}


def _bookkeeping(conn: psycopg.Connection) -> list[list[tuple[str]]]:
    return [conn.execute(sql.SQL("SELECT t::text FROM {} t ORDER BY 1").format(
        sql.Identifier("migration", table))).fetchall()
        for table in ("run_log", "phase_runs", "state")]


def _markers(text: str) -> list[str]:
    return [line for line in text.splitlines() if re.match(r"^-- phase \d: ", line)]


def test_migrate_sql_prints_every_phase_in_run_order_and_changes_nothing(
        migrated: Settings) -> None:
    target, source = str(migrated.target_url), str(migrated.source_url)
    with psycopg.connect(target) as conn:
        logged = _bookkeeping(conn)
        as_of = recorded_as_of(conn)
    assert as_of is not None
    before = {"target": _everything(target), "source": _everything(source)}

    printed = cli(migrated, "migrate", "--all", "--sql", *url_args(migrated))
    assert printed.returncode == 0, printed.stderr
    script = printed.stdout
    # The mirror's look-ups, built by the run once a table is staged (phases/mirror_index.py).
    assert '--   CREATE INDEX IF NOT EXISTS "grades_teacher_id_idx" ON "stage"."grades" ' \
        '("teacher_id");' in script
    assert '--   CREATE UNLOGGED TABLE IF NOT EXISTS "stage"."buckets_users" AS ' in script

    # Every statement of every phase file, in the runner's order, each under its name; phase 5's
    # marks parsed before its transaction, its indexes built again after its statements.
    expected: list[str] = []
    for number in RUN_ORDER:
        phase = PHASES[number]
        expected.append(f"-- phase {number}: start (its own transaction)")
        expected += [f"-- phase {number}: stage {table}: " for table in phase.reads]
        if number == SCOPED_PHASE:
            expected.append(f"-- phase {number}: parse_grades: ")
        expected.append(f"-- phase {number}: the phase's transaction: all of it or nothing")
        statements = sqlfile.load(phase.sql_file)
        expected += [f"-- phase {number}: {s.name}" for s in statements if not s.after_indexes]
        expected.append(f"-- phase {number}: record_source_tables")
        with psycopg.connect(target) as conn:
            plan = rebuild_plan(conn, phase.rebuilt_after_load)
        expected += [f"-- phase {number}: {name}" for name, _ in plan.rebuilds]
        # what needs the indexes and precedes the foreign keys (phase 5's assessments)
        expected += [f"-- phase {number}: {s.name}" for s in statements if s.after_indexes]
        expected += [f"-- phase {number}: {name}" for name, _ in plan.foreign_keys]
        expected.append(f"-- phase {number}: record the phase done")
        # after its commit, the VACUUM of what it bulk-loaded (runner.vacuum_after_load)
        expected += [f"-- phase {number}: vacuum {table}"
                     for table in vacuumed_after_load(phase)]
    found = _markers(script)
    position = 0
    for marker in expected:
        position = next((i for i, line in enumerate(found[position:], position)
                         if line.startswith(marker)), -1) + 1
        assert position, f"{marker!r} missing or out of order"
    assert any(line.startswith("-- phase 5: rebuild ") for line in found)
    assert 'VACUUM "public"."grades";' in script
    assert any(s.after_indexes for s in sqlfile.load(PHASES[SCOPED_PHASE].sql_file))
    for number in RUN_ORDER:
        for statement in sqlfile.load(PHASES[number].sql_file):
            assert f"-- phase {number}: {statement.name}\n{statement.text.rstrip(';')};" \
                in script

    # The recorded as-of time filled in; the id secret nowhere; nothing written anywhere.
    literal = f"set_config('edu_migrate.as_of', '{as_of.isoformat()}', true)"
    assert script.count(literal) == len(RUN_ORDER) + 1  # each transaction and the marks' parse
    assert ":'as_of'" not in script
    assert id_secret(target) not in script
    with psycopg.connect(target) as conn:
        assert _bookkeeping(conn) == logged
    assert {"target": _everything(target), "source": _everything(source)} == before

    # One phase alone: its statements only, and the same ones.
    alone = cli(migrated, "migrate", "--phase", "5", "--sql", *url_args(migrated))
    assert alone.returncode == 0, alone.stderr
    assert {m.split(":")[0] for m in _markers(alone.stdout)} == {"-- phase 5"}
    assert [m for m in found if m.startswith("-- phase 5:")] == _markers(alone.stdout)


def test_migrate_sql_refuses_what_the_run_would_refuse_in_one_line(migrated: Settings) -> None:
    other_time = cli(migrated, "migrate", "--phase", "5", "--sql", "--as-of", "2020-01-01",
                     *url_args(migrated))
    assert_one_line_error(other_time, "would mix two times")
    frozen = cli(migrated, "migrate", "--all", "--sql", "--freeze-source", *url_args(migrated))
    assert_one_line_error(frozen, "--sql runs nothing")
    assert other_time.stdout == frozen.stdout == ""


def test_migrate_sql_before_any_phase_shows_the_as_of_time_it_would_record(
        two_empty_databases: tuple[str, str]) -> None:
    target, _ = two_empty_databases
    assert run_cli("schema", "apply", "--target", target).returncode == 0
    # The source is never opened: none listens there.
    nowhere = "postgresql://nobody@127.0.0.1:9/edu"
    given = run_cli("migrate", "--phase", "2", "--sql", "--as-of", "2024-06-30T18:00:00",
                    "--target", target, "--source", nowhere)
    assert given.returncode == 0, given.stderr
    # Without an offset, Baku time; recorded by the run first, then in every transaction.
    assert "UPDATE migration.state SET as_of = '2024-06-30 18:00:00+04:00'::timestamptz;" \
        in given.stdout
    assert "set_config('edu_migrate.as_of', '2024-06-30T18:00:00+04:00', true)" in given.stdout
    assert "-- Phase 2 needs phase 1, 3 done first" in given.stdout
    unknown = run_cli("migrate", "--phase", "1", "--sql", "--target", target, "--source", nowhere)
    assert unknown.returncode == 0, unknown.stderr
    assert "set_config('edu_migrate.as_of', :'as_of', true)" in unknown.stdout
    assert "-v as_of=TIMESTAMP" in unknown.stdout
    with psycopg.connect(target) as conn:
        assert conn.execute("SELECT as_of FROM migration.state").fetchone() == (None,)
        assert conn.execute("SELECT count(*) FROM migration.phase_runs").fetchone() == (0,)


def test_migrate_sql_run_by_psql_derives_what_the_run_derived(
        migrated: Settings, admin_url: str, tmp_path: Path) -> None:
    """The printed script is the run: psql runs it against a copy of the migrated edu_v2 (whose
    stage tables hold the run's rows) and every phase derives the same rows again."""
    printed = cli(migrated, "migrate", "--all", "--sql", *url_args(migrated))
    assert printed.returncode == 0, printed.stderr
    script = tmp_path / "migrate.sql"
    script.write_text(printed.stdout, encoding="utf-8")
    target = str(migrated.target_url)
    clone = clone_database(admin_url, str(conninfo_to_dict(target)["dbname"]))
    try:
        copy = with_database(admin_url, clone)
        # What psql derives must come from its own statements: it starts from empty tables.
        emptied = [*BUSINESS_TABLES, "migration.crosswalk_rows", "migration.rejected_rows",
                   "migration.repairs"]
        admin_sql(copy, sql.SQL("TRUNCATE {} CASCADE").format(sql.SQL(", ").join(
            sql.Identifier(*t.split(".")) for t in emptied)))
        assert scalar(copy, "SELECT count(*) FROM grades") == 0
        run_client(client_program("psql", 0), ["--no-psqlrc", "--quiet", "--set",
                                                "ON_ERROR_STOP=1", "--file", str(script)],
                   copy, what="psql -f of migrate --sql")
        assert differences(result_rows(target), result_rows(copy)) == []
        with psycopg.connect(copy) as conn:
            assert conn.execute("SELECT array_agg(status ORDER BY phase) FROM "
                                "migration.phase_runs").fetchone() == (["running"] * 5,)
    finally:
        drop_databases(admin_url, clone)


# --- docs -------------------------------------------------------------------------------------

REPOSITORY = Path(__file__).resolve().parents[2]
_DIRTY_ROW = re.compile(r"^\| (.+?) \| (repair|merge|set aside|kept) \| (.+?) \| (.+?) \|$")


def _section(text: str, heading: str) -> str:
    """The text of one `## heading` section of a generated document."""
    start = text.index(f"\n## {heading}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end > 0 else len(text)]


def _documented_rules() -> set[tuple[str, str]]:
    """(kind, quoted reason) of every rule docs/dirty-data.md's tables state."""
    found = set()
    for line in (REPOSITORY / "docs" / "dirty-data.md").read_text("utf-8").splitlines():
        if match := _DIRTY_ROW.match(line):
            found |= {(match.group(2), span) for span in re.findall(r"`([^`]+)`", match.group(3))}
    return found


def test_docs_describe_every_business_table_and_every_legacy_column_with_its_rules(
        migrated: Settings, tmp_path: Path) -> None:
    out = tmp_path / "generated"
    made = cli(migrated, "docs", "--out", str(out), "--target", str(migrated.target_url),
               "--json", "-")
    assert made.returncode == 0, made.stderr
    assert sorted(json.loads(made.stdout)["files"]) == sorted(
        ["DATA_DICTIONARY.md", "ER_DIAGRAM.md", "OLD_TO_NEW_SCHEMA_MAPPING.md", "README.md"])
    dictionary = (out / "DATA_DICTIONARY.md").read_text("utf-8")
    diagram = (out / "ER_DIAGRAM.md").read_text("utf-8")
    mapping = (out / "OLD_TO_NEW_SCHEMA_MAPPING.md").read_text("utf-8")

    with psycopg.connect(migrated.target_url) as conn:
        tables = [str(r[0]) for r in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1")]
        assert len(tables) == len(BUSINESS_TABLES) and set(BUSINESS_TABLES) <= set(tables)
        for table in tables:
            section = _section(dictionary, f"public.{table}")
            rows = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(
                sql.Identifier(table))).fetchone()
            assert rows is not None and f"Rows: {rows[0]:,}." in section
            for column, comment in conn.execute(
                    "SELECT attname, col_description(attrelid, attnum) FROM pg_attribute "
                    "WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped",
                    [table]).fetchall():
                # Schema version 16 comments every business column; the dictionary shows it.
                assert comment, f"{table}.{column} has no comment"
                assert re.search(rf"^\| `{column}` \|.*\| {re.escape(comment)} \|$", section,
                                 re.MULTILINE), (table, column)
            for (policy,) in conn.execute("SELECT policyname FROM pg_policies WHERE "
                                          "schemaname = 'public' AND tablename = %s", [table]):
                assert f"| `{policy}` |" in section, (table, policy)
            assert re.search(rf"^    {table} \{{$", diagram, re.MULTILINE), table
        for child, parent, column in conn.execute(
                "SELECT conrelid::regclass::text, confrelid::regclass::text, a.attname "
                "FROM pg_constraint c JOIN pg_attribute a ON a.attrelid = c.conrelid "
                "AND a.attnum = c.conkey[1] WHERE c.contype = 'f' "
                "AND c.connamespace = 'public'::regnamespace").fetchall():
            assert f'    {parent} ||--o{{ {child} : "{column}"' in diagram

    documented = {text for _, text in _documented_rules()}
    undocumented = []
    described = tomllib.loads((REPOSITORY / "src" / "edu_migrate" / "mapping" /
                               "columns.toml").read_text("utf-8"))
    for table, columns in LEGACY_COLUMNS.items():
        section = _section(mapping, f"{table} → " + ", ".join(described[table]["to"]))
        for column, _ in columns:
            (row,) = [line for line in section.splitlines()
                      if line.startswith(f"| `{table}.{column}` |")]
            rules_cell = row.rstrip(" |").rsplit(" | ", 1)[1]
            rules = described[table]["columns"][column]["rules"]
            if not rules:
                assert rules_cell == "none: no dirty-data rule applies", row
            for rule in rules:
                kind, _, reason = rule.partition(": ")
                assert f"{kind}: `{reason}` — " in rules_cell, (table, column, rule)
                # The column map quotes only rules that docs/dirty-data.md states (a row there
                # may state a repair and the set-aside it falls back to).
                if not any(reason.split("<")[0] in text for text in documented):
                    undocumented.append(f"{table}.{column}: {rule}")
    assert undocumented == []
    # The generated documents live only where they were written.
    for name in ("DATA_DICTIONARY.md", "OLD_TO_NEW_SCHEMA_MAPPING.md", "ER_DIAGRAM.md"):
        assert not [p for p in (REPOSITORY / "docs").rglob(name)] + \
            [p for p in (REPOSITORY / "src").rglob(name)]


def test_docs_refuse_a_column_map_that_names_what_edu_v2_lacks() -> None:
    with pytest.raises(MigrationError, match=r"columns.toml does not match the code: users\.id "
                       r"goes to users\.id, which is not an edu_v2 column"):
        legacy_columns(DEFAULT_MAPPING, [])
