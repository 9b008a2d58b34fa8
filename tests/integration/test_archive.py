"""Unmapped tables: listed by inventory, archived as they are by `migrate --all`, excluded by
pattern with the exclusion reported, and checked by validate."""

from __future__ import annotations

import psycopg

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
