"""An edu_v2 made by an earlier version, upgraded by `schema apply`: its records come through."""

from __future__ import annotations

import hashlib
import uuid

import psycopg
import pytest

from edu_migrate import schema
from edu_migrate.config import Settings
from edu_migrate.pg.connect import create_database_if_missing

SECRET = "s" * 40


def _derived(kind: str, legacy_id: int) -> uuid.UUID:
    """migration.derive_id under SECRET."""
    return uuid.UUID(hashlib.md5(f"{SECRET}/{kind}/{legacy_id}".encode()).hexdigest())


MARKS = [(101, _derived("grades", 101)), (102, _derived("grades", 102))]
# The crosswalk row of a mark deleted on edu_v2 after a cutover, before version 26.
DELETED = (103, _derived("grades", 103))
USER = (7, _derived("users", 7))


def _at_version(url: str, last: int) -> None:
    """The schema as `schema apply` of a release whose last version was `last` left it."""
    create_database_if_missing(url, purpose="target")
    with psycopg.connect(url) as conn:
        for statement in schema._BOOTSTRAP:
            conn.execute(statement.encode())
        for version in schema.versions():
            if version.version <= last:
                conn.execute(version.text.encode())
                conn.execute(schema._RECORD_VERSION.encode(), [version.version, version.name])
        schema.apply_security_grants(conn)


def test_version_26_puts_the_marks_crosswalk_on_the_marks_and_loses_no_row(
        settings: Settings) -> None:
    url = str(settings.target_url)
    _at_version(url, 25)
    with psycopg.connect(url) as conn:
        # the marks' parents are not what this is about: no foreign key checks
        conn.execute("SET session_replication_role = replica")
        conn.execute("INSERT INTO migration.state (id_secret) VALUES (%s)", [SECRET])
        for _, mark in MARKS:
            conn.execute("INSERT INTO grades (id, enrollment_id, assessment_id, score, "
                         "created_at) VALUES (%s, %s, %s, 5, now())",
                         [mark, uuid.uuid4(), uuid.uuid4()])
        for source_id, target_id in [*MARKS, DELETED]:
            conn.execute("INSERT INTO migration.crosswalk (source_table, source_id, "
                         "target_table, target_id, source_relation) "
                         "VALUES ('grades', %s, 'grades', %s, 'public.grades')",
                         [source_id, target_id])
        conn.execute("INSERT INTO migration.crosswalk (source_table, source_id, target_table, "
                     "target_id, source_relation) VALUES ('users', %s, 'users', %s, "
                     "'public.users')", list(USER))
        audited = conn.execute("SELECT count(*) FROM audit.log").fetchone()

    result = schema.apply_schema(url)
    assert "V026__marks_crosswalk_derived" in result.applied

    with psycopg.connect(url) as conn:
        assert conn.execute(
            "SELECT source_table, source_id, target_table, target_id, source_relation "
            "FROM migration.crosswalk ORDER BY source_table, source_id").fetchall() == [
            *[("grades", s, "grades", t, "public.grades") for s, t in [*MARKS, DELETED]],
            ("users", USER[0], "users", USER[1], "public.users")]
        assert conn.execute("SELECT legacy_id, id FROM grades ORDER BY legacy_id").fetchall() \
            == MARKS
        # the fallback's look-up of a deleted mark's legacy id still finds it
        conn.execute("SELECT set_config('edu_migrate.id_secret', %s, false)", [SECRET])
        assert conn.execute("SELECT source_id FROM migration.legacy_keys WHERE target_id = %s",
                            [DELETED[1]]).fetchone() == (DELETED[0],)
        # the tool's bookkeeping is not an application's write
        assert conn.execute("SELECT count(*) FROM audit.log").fetchone() == audited
        # a DELETE meant for the marks' crosswalk cannot delete marks
        with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState):
            conn.execute("DELETE FROM migration.crosswalk_grades")
        conn.rollback()
        assert conn.execute("SELECT count(*) FROM grades").fetchone() == (len(MARKS),)
