"""Every foreign key the schema declares must be there and validated, one by one: a missing or a
NOT VALID foreign key fails validation by name, however many others there are."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from edu_migrate import api
from edu_migrate.checks.validation import declared_foreign_keys
from edu_migrate.config import Settings
from tests.conftest import make_settings
from tests.integration.helpers import prepared

CATALOGUE_FOREIGN_KEYS = """
SELECT c.relname, array(SELECT a.attname FROM unnest(k.conkey) WITH ORDINALITY u(n, i)
                        JOIN pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = u.n
                        ORDER BY u.i),
       r.relname, array(SELECT a.attname FROM unnest(k.confkey) WITH ORDINALITY u(n, i)
                        JOIN pg_attribute a ON a.attrelid = k.confrelid AND a.attnum = u.n
                        ORDER BY u.i)
FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid JOIN pg_class r ON r.oid = k.confrelid
WHERE k.contype = 'f' AND c.relnamespace = 'public'::regnamespace
"""
# The foreign key the tests break: marks → the teacher who gave them.
GRADED_BY = "grades_graded_by_fkey"
GRADED_BY_LABEL = "grades.graded_by → staff_members.id"
GRADED_BY_DEFINITION = "FOREIGN KEY (graded_by) REFERENCES staff_members (id)"
DEFINITION = "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = %s"


@pytest.fixture(scope="module")
def migrated(admin_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    for settings in make_settings(admin_url, tmp_path_factory.mktemp("foreign-keys")):
        prepared(settings, scale=0.01)
        api.migrate(settings)
        yield settings


@pytest.fixture
def target(migrated: Settings) -> Iterator[psycopg.Connection]:
    """The migrated target; afterwards the foreign key the test broke is as it was."""
    with psycopg.connect(str(migrated.target_url), autocommit=True) as conn:
        row = conn.execute(DEFINITION, [GRADED_BY]).fetchone()
        assert row is not None
        yield conn
        conn.execute(f"ALTER TABLE grades DROP CONSTRAINT IF EXISTS {GRADED_BY}")
        conn.execute(f"ALTER TABLE grades ADD CONSTRAINT {GRADED_BY} {row[0]}")


def foreign_key_check(settings: Settings) -> tuple[bool, str]:
    check = next(c for c in api.validate(settings).checks if c.name == "Foreign Keys Valid")
    return check.passed, check.line()


def test_the_declared_foreign_keys_are_those_a_fresh_schema_has(migrated: Settings) -> None:
    with psycopg.connect(str(migrated.target_url)) as conn:
        catalogue = {(t, tuple(c), r, tuple(rc))
                     for t, c, r, rc in conn.execute(CATALOGUE_FOREIGN_KEYS).fetchall()}
    declared = {(k.table, k.columns, k.referenced_table, k.referenced_columns)
                for k in declared_foreign_keys()}
    assert len(declared) == 18
    assert declared == catalogue


def test_all_declared_foreign_keys_pass(migrated: Settings) -> None:
    passed, line = foreign_key_check(migrated)
    assert passed, line
    assert "Declared=18" in line and "Missing=0" in line and "Not validated=0" in line


def test_a_missing_foreign_key_fails_by_name(migrated: Settings,
                                            target: psycopg.Connection) -> None:
    target.execute(f"ALTER TABLE grades DROP CONSTRAINT {GRADED_BY}")
    passed, line = foreign_key_check(migrated)
    assert not passed
    assert "Missing=1" in line and f"missing: {GRADED_BY_LABEL}" in line


def test_a_foreign_key_not_validated_fails_by_name(migrated: Settings,
                                                  target: psycopg.Connection) -> None:
    target.execute(f"ALTER TABLE grades DROP CONSTRAINT {GRADED_BY}")
    target.execute(f"ALTER TABLE grades ADD CONSTRAINT {GRADED_BY} {GRADED_BY_DEFINITION} "
                   "NOT VALID")
    passed, line = foreign_key_check(migrated)
    assert not passed
    assert "Not validated=1" in line and f"not validated: {GRADED_BY_LABEL}" in line
