"""Unmapped tables: listed by inventory, archived as they are by the `migrate` command that
finishes the last phase (`--all` or `--phase N`), excluded by pattern with the exclusion
reported, and checked by validate and the report."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from edu_migrate import api
from edu_migrate.config import Settings
from edu_migrate.legacy.generator import UNMAPPED_TABLES
from tests.integration.helpers import prepared, scalar, table_digest

COLUMNS = ("SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a "
           "WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped "
           "ORDER BY a.attnum")


def test_unmapped_tables_archived_and_excluded(settings: Settings) -> None:
    prepared(settings, scale=0.01)
    source, target = str(settings.source_url), str(settings.target_url)
    with psycopg.connect(source, autocommit=True) as conn:
        conn.execute("CREATE TYPE mood AS ENUM ('ok', 'sad')")
        conn.execute('CREATE TABLE "Odd Name" (id integer, feeling mood, tags text[])')
        conn.execute("""INSERT INTO "Odd Name" VALUES (1, 'ok', '{a,b}'), (2, NULL, NULL)""")
    settings = settings.model_copy(update={"exclude": ("login%",)})

    before = {e.table: e for e in api.inventory(settings)}
    assert {t for t, e in before.items() if e.status == "mapped"} == {
        "users", "persons", "organizations", "students", "teachers", "courses",
        "course_students", "grades"}
    assert before["login_logs"].status == "excluded"
    assert before["Odd Name"].status == "archived" and before["Odd Name"].rows == 2
    assert all(e.archived_rows is None for e in before.values())

    result = api.migrate(settings)
    assert result.archive is not None
    assert result.archive.excluded == ["login_logs"]
    archived = set(UNMAPPED_TABLES) - {"login_logs"} | {"Odd Name"}
    assert set(result.archive.archived) == archived
    with psycopg.connect(source) as src, psycopg.connect(target) as tgt:
        for table in archived - {"Odd Name"}:
            assert tgt.execute(COLUMNS, [f'legacy_archive."{table}"']).fetchall() == \
                src.execute(COLUMNS, [f'public."{table}"']).fetchall()
        assert tgt.execute(COLUMNS, ['legacy_archive."Odd Name"']).fetchall() == [
            ("id", "integer"), ("feeling", "text"), ("tags", "text[]")]
        logged = tgt.execute("SELECT detail FROM migration.run_log WHERE event = 'archive'"
                             ).fetchone()
        assert logged is not None and logged[0]["excluded"] == ["login_logs"]
    assert table_digest(target, "legacy_archive.rooms") == table_digest(source, "public.rooms")
    assert scalar(target, "SELECT count(*) FROM pg_tables WHERE tablename = 'login_logs'") == 0

    report = api.validate(settings)
    assert report.passed, [c.line() for c in report.checks if not c.passed]
    assert any(c.name == "Archived messages" for c in report.checks)
    # The report validates with the same `exclude` setting, so it says what validate says.
    assert api.report(settings).verdict == "PASS"

    with psycopg.connect(target, autocommit=True) as conn:
        conn.execute("DELETE FROM legacy_archive.news WHERE id IN (SELECT min(id) FROM "
                     "legacy_archive.news)")
    assert not api.validate(settings).passed
    api.migrate(settings)  # again: archives afresh, the same result
    assert api.validate(settings).passed
    after = {e.table: e for e in api.inventory(settings)}
    assert after["news"].archived_rows == after["news"].rows
    api.rollback(settings, None)
    assert scalar(target, "SELECT count(*) FROM pg_namespace WHERE nspname = 'legacy_archive'") \
        == 0


def test_phase_by_phase_ends_archived_as_all_does(settings: Settings) -> None:
    """The runbook's other way: one phase at a time. The command that finishes the last phase
    archives, so both ways end in the same state."""
    prepared(settings, scale=0.01)
    source, target = str(settings.source_url), str(settings.target_url)
    for number in (1, 3, 2, 4):
        assert api.migrate(settings, [number]).archive is None
    assert scalar(target, "SELECT count(*) FROM pg_namespace WHERE nspname = 'legacy_archive'") \
        == 0
    last = api.migrate(settings, [5])
    assert last.archive is not None
    assert set(last.archive.archived) == set(UNMAPPED_TABLES)
    assert table_digest(target, "legacy_archive.rooms") == table_digest(source, "public.rooms")
    report = api.validate(settings)
    assert report.passed, [c.line() for c in report.checks if not c.passed]


def test_validation_fails_while_unmapped_tables_are_neither_archived_nor_excluded(
        settings: Settings) -> None:
    prepared(settings, scale=0.01)
    api.migrate(settings)
    with psycopg.connect(str(settings.target_url), autocommit=True) as conn:
        conn.execute("DROP SCHEMA legacy_archive CASCADE")
        conn.execute("DELETE FROM migration.run_log WHERE event = 'archive'")
    failed = {c.name: c for c in api.validate(settings).checks if not c.passed}
    assert set(failed) == {"Unmapped Tables Archived"} | {f"Archived {t}"
                                                          for t in UNMAPPED_TABLES}
    assert "news" in failed["Unmapped Tables Archived"].line()
    # Excluding them is the other way to a pass, and the report agrees with validate.
    excluded = settings.model_copy(update={"exclude": tuple(UNMAPPED_TABLES)})
    assert api.validate(excluded).passed
    assert api.report(excluded).verdict == "PASS"


def test_archive_masks_credentials_and_session_secrets_unless_asked(
        settings: Settings, tmp_path: Path) -> None:
    prepared(settings, scale=0.01)
    source, target = str(settings.source_url), str(settings.target_url)
    with psycopg.connect(source, autocommit=True) as conn:
        # Named innocently, shaped like secrets: found by their values.
        conn.execute("CREATE TABLE api_clients (id integer, label text, credential text)")
        conn.execute("INSERT INTO api_clients SELECT n, 'client ' || n, md5(n::text) "
                     "FROM generate_series(1, 20) n")
    result = api.migrate(settings)
    assert result.archive is not None
    assert result.archive.masked == {"api_clients": ["credential"],
                                     "login_logs": ["ip_address"],
                                     "user_sessions": ["session_key", "ip_address"],
                                     "users_old": ["password"]}
    for table, column in (("users_old", "password"), ("user_sessions", "session_key"),
                          ("user_sessions", "ip_address"), ("api_clients", "credential")):
        assert scalar(target, f"SELECT count({column}) FROM legacy_archive.{table}") == 0
        assert scalar(source, f"SELECT count({column}) FROM public.{table}") > 0
    assert table_digest(target, "legacy_archive.news") == table_digest(source, "public.news")
    assert scalar(target, "SELECT count(label) FROM legacy_archive.api_clients") == 20
    # No application role reads the archive.
    for role in ("edu_app", "edu_admin"):
        with psycopg.connect(target) as conn:
            conn.execute(f"SET ROLE {role}")
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute("SELECT count(*) FROM legacy_archive.users_old")
    # inventory and the report say what was masked.
    entries = {e.table: e for e in api.inventory(settings)}
    assert entries["users_old"].masked == ("password",)
    assert entries["news"].masked == ()
    report_md = tmp_path / "report.md"
    api.report(settings, md=report_md)
    assert "users_old" in report_md.read_text("utf-8")
    assert "'password'" in report_md.read_text("utf-8")
    # --archive-secrets keeps them.
    kept = api.migrate(settings.model_copy(update={"archive_secrets": True}))
    assert kept.archive is not None and kept.archive.masked == {}
    assert table_digest(target, "legacy_archive.users_old") == \
        table_digest(source, "public.users_old")
    assert api.inventory(settings)[0].masked == ()


def test_columns_named_as_secrets_are_masked_whatever_their_values(settings: Settings) -> None:
    """Plaintext passwords look like any word: the name alone must mask them, in Azerbaijani,
    Russian and camelCase too (issue 23)."""
    from edu_migrate.phases.archive import TableEntry, secret_columns

    names = ["parol", "şifrə", "sifre", "passwordHash", "authToken", "auth_key", "reset_code",
             "security_answer", "пароль"]
    columns = ", ".join(f'"{name}" text' for name in names)
    with psycopg.connect(str(settings.source_url), autocommit=True) as conn:
        conn.execute(f"CREATE TABLE old_accounts (id integer, label text, {columns})")
        values = ", ".join(["'gunes2024'"] * len(names))
        conn.execute(f"INSERT INTO old_accounts SELECT n, 'label ' || n, {values} "
                     "FROM generate_series(1, 20) n")
        found = secret_columns(conn, TableEntry("old_accounts", 20, "archived"))
    assert found == names
