"""ORMs pointed at edu_v2 find the UUID keys and the foreign keys between the guide's tables."""

from __future__ import annotations

import re

import pytest

from edu_migrate import api
from edu_migrate.config import Settings
from edu_migrate.pg.urls import parse

GUIDE_LINKS = {
    ("persons", "user_id", "users"),
    ("students", "user_id", "users"),
    ("students", "program_id", "organization_units"),
    ("staff_members", "user_id", "users"),
    ("organization_units", "parent_id", "organization_units"),
    ("course_offerings", "course_id", "courses"),
    ("course_offerings", "academic_term_id", "academic_terms"),
    ("course_enrollments", "student_id", "students"),
    ("course_enrollments", "course_offering_id", "course_offerings"),
    ("grades", "enrollment_id", "course_enrollments"),
    ("grades", "assessment_id", "assessments"),
}


def test_sqlalchemy_automap_finds_uuid_keys_and_foreign_keys(settings: Settings) -> None:
    sqlalchemy = pytest.importorskip("sqlalchemy")
    from sqlalchemy.dialects.postgresql import UUID
    from sqlalchemy.ext.automap import automap_base

    api.schema_apply(settings)
    url = str(settings.target_url)
    params = parse(url, purpose="target")
    # The embedded server's password is in the file its URL names.
    passfile = {"passfile": params["passfile"]} if "passfile" in params else {}
    engine = sqlalchemy.create_engine(
        f"postgresql+psycopg://{params.get('user', 'postgres')}@{params['host']}:"
        f"{params['port']}/{params['dbname']}", connect_args=passfile)
    base = automap_base()
    base.prepare(autoload_with=engine)
    tables = base.metadata.tables
    for table, column, referenced in GUIDE_LINKS:
        foreign_keys = tables[table].c[column].foreign_keys
        assert {fk.column.table.name for fk in foreign_keys} == {referenced}
    for name in ("users", "students", "grades", "course_offerings"):
        (key,) = tables[name].primary_key.columns
        assert isinstance(key.type, UUID)
    assert hasattr(base.classes, "students")
    engine.dispose()


def test_django_inspectdb_finds_uuid_keys_and_foreign_keys(settings: Settings) -> None:
    pytest.importorskip("django")
    import io

    import django
    from django.conf import settings as django_settings
    from django.core.management import call_command
    from django.db import connections

    api.schema_apply(settings)
    params = parse(str(settings.target_url), purpose="target")
    database = {"ENGINE": "django.db.backends.postgresql", "NAME": params["dbname"],
                "USER": params.get("user", "postgres"), "HOST": params["host"],
                "PORT": params["port"],
                # The embedded server's password is in the file its URL names.
                "OPTIONS": {"passfile": params["passfile"]} if "passfile" in params else {}}
    if not django_settings.configured:
        django_settings.configure(DATABASES={"default": database}, INSTALLED_APPS=[],
                                  USE_TZ=True)
        django.setup()
    else:
        connections["default"].close()
        connections.settings["default"] = database
    out = io.StringIO()
    call_command("inspectdb", "users", "students", "grades", "course_enrollments", stdout=out)
    connections["default"].close()
    models = out.getvalue()
    # Schema version 16 comments every column: inspectdb adds it as db_comment=… after the key.
    assert re.search(r"id = models\.UUIDField\(primary_key=True[,)]", models), models[:2000]
    assert "db_comment=" in models
    assert "user = models.OneToOneField(Users, " in models
    assert "program = models.ForeignKey('OrganizationUnits', " in models
    assert "student = models.ForeignKey(Students, " in models
    assert "enrollment = models.ForeignKey('CourseEnrollments', " in models
