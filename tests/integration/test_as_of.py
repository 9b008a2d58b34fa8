"""The run's as-of time: every rule that asks "now" asks it, so the same legacy data at the same
as-of time gives the same edu_v2 at any wall-clock time, in any server time zone."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from edu_migrate import api
from edu_migrate.config import Settings
from edu_migrate.errors import MigrationError, PreconditionFailed
from edu_migrate.phases import sqlfile
from edu_migrate.phases.runner import PHASES
from edu_migrate.report.facts import TARGET_TABLES
from tests.conftest import make_settings
from tests.integration.small_legacy import write_small_legacy
from tests.integration.test_cli_errors import assert_one_line_error, run_cli, urls

AS_OF = datetime(2020, 1, 1, 8, 0, tzinfo=UTC)  # 12:00 in Baku


@pytest.fixture(scope="module")
def as_of_2020(admin_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    for settings in make_settings(admin_url, tmp_path_factory.mktemp("asof")):
        write_small_legacy(str(settings.source_url))
        api.schema_apply(settings)
        api.migrate(settings, as_of="2020-01-01T12:00:00")  # no offset: Baku time
        yield settings


def _rows(settings: Settings, query: str, params: Any = None) -> list[tuple[Any, ...]]:
    with psycopg.connect(str(settings.target_url)) as conn:
        return conn.execute(query.encode(), params).fetchall()


def _one(settings: Settings, query: str, params: Any = None) -> Any:
    rows = _rows(settings, query, params)
    assert len(rows) == 1, rows
    return rows[0][0]


def test_the_as_of_time_is_recorded_and_shown(as_of_2020: Settings) -> None:
    assert _one(as_of_2020, "SELECT as_of FROM migration.state") == AS_OF
    assert datetime.fromisoformat(api.status(as_of_2020)["as_of"]) == AS_OF


def test_in_the_future_means_after_the_as_of_day(as_of_2020: Settings) -> None:
    # Born 2021-05-05, hired 2021-06-01, marked 2020-06-01: all after 2020-01-01.
    assert _one(as_of_2020, "SELECT rule FROM migration.repairs WHERE source_table = 'persons' "
                "AND source_id = 60 AND column_name = 'birthdate'") == "in the future: dropped"
    assert _one(as_of_2020, "SELECT rule FROM migration.repairs WHERE source_table = 'teachers' "
                "AND source_id = 2 AND column_name = 'hire_date'") == "in the future: dropped"
    assert _one(as_of_2020, "SELECT reason FROM migration.rejected_rows WHERE "
                "source_table = 'grades' AND source_id = 4") == "lesson_date in the future"


def test_the_current_term_is_the_as_of_one(as_of_2020: Settings) -> None:
    assert _rows(as_of_2020, "SELECT academic_year, term_type FROM academic_terms "
                 "WHERE is_current") == [("2019-2020", "fall")]


def test_missing_timestamps_are_the_as_of_time_and_recorded(as_of_2020: Settings) -> None:
    user = _rows(as_of_2020, "SELECT u.created_at, u.updated_at FROM users u "
                 "JOIN migration.crosswalk_users x ON x.target_id = u.id WHERE x.source_id = 5")
    assert user == [(AS_OF, AS_OF)]
    assert _one(as_of_2020, "SELECT o.created_at FROM course_offerings o "
                "JOIN migration.crosswalk_courses x ON x.target_id = o.id "
                "WHERE x.source_id = 1 AND x.target_table = 'course_offerings'") == AS_OF
    assert _one(as_of_2020, "SELECT e.enrolled_at FROM course_enrollments e "
                "JOIN migration.crosswalk_course_students x ON x.target_id = e.id "
                "WHERE x.source_id = 5") == AS_OF
    # a mark without created_at is of its lesson's day; without a lesson date, of the as-of time
    assert _one(as_of_2020, "SELECT g.created_at FROM grades g JOIN migration.crosswalk_grades x "
                "ON x.target_id = g.id WHERE x.source_id = 5") == AS_OF
    recorded = _rows(as_of_2020, "SELECT source_table, source_id, column_name, new_value "
                     "FROM migration.repairs WHERE rule = 'missing: filled with the as-of time'")
    assert set(recorded) >= {
        ("users", 5, "created_at", "2020-01-01 12:00:00"),
        ("users", 5, "updated_at", "2020-01-01 12:00:00"),
        ("persons", 50, "created_at", "2020-01-01 12:00:00"),
        ("courses", 1, "created_at", "2020-01-01 12:00:00"),
        ("course_students", 5, "enrolled_at", "2020-01-01 12:00:00"),
        ("grades", 5, "created_at", "2020-01-01 12:00:00"),
    }


def test_no_phase_statement_asks_the_wall_clock() -> None:
    for phase in PHASES.values():
        for file_name in phase.sql_files:
            for statement in sqlfile.load(file_name):
                text = statement.text.lower()
                for clock in ("now()", "current_date", "current_timestamp", "localtimestamp",
                              "clock_timestamp", "statement_timestamp", "transaction_timestamp"):
                    assert clock not in text, (file_name, statement.name, clock)


def test_the_as_of_time_lives_until_rollback_all(admin_url: str, tmp_path: Path) -> None:
    for settings in make_settings(admin_url, tmp_path):
        write_small_legacy(str(settings.source_url))
        api.schema_apply(settings)
        with psycopg.connect(str(settings.source_url)) as source:
            before = source.execute("SELECT now()").fetchone()
        api.migrate(settings, [1])
        with psycopg.connect(str(settings.source_url)) as source:
            after = source.execute("SELECT now()").fetchone()
        assert before is not None and after is not None
        recorded = _one(settings, "SELECT as_of FROM migration.state")
        # by default, the source snapshot's time
        assert before[0] <= recorded <= after[0]
        # a rerun after a rollback, and a later phase, keep it
        api.rollback(settings, 1)
        api.migrate(settings, [1, 3])
        assert _one(settings, "SELECT as_of FROM migration.state") == recorded
        # another --as-of is refused while phases are done
        with pytest.raises(PreconditionFailed, match="would mix two times"):
            api.migrate(settings, [2], as_of=AS_OF)
        api.migrate(settings, [2], as_of=recorded)
        assert api.status(settings)["as_of"] is not None
        api.rollback(settings, None)
        assert _one(settings, "SELECT as_of FROM migration.state") is None
        assert api.status(settings)["as_of"] is None
        api.migrate(settings, [1], as_of=AS_OF)
        assert _one(settings, "SELECT as_of FROM migration.state") == AS_OF


def test_a_malformed_as_of_is_refused_before_anything_runs(admin_url: str,
                                                           tmp_path: Path) -> None:
    for settings in make_settings(admin_url, tmp_path):
        write_small_legacy(str(settings.source_url))
        api.schema_apply(settings)
        with pytest.raises(MigrationError, match="is not a date or timestamp"):
            api.migrate(settings, as_of="next tuesday")
        assert _rows(settings, "SELECT * FROM migration.phase_runs") == []
        assert _one(settings, "SELECT as_of FROM migration.state") is None


def test_a_malformed_as_of_on_the_command_line_is_one_line(settings: Settings) -> None:
    result = run_cli("migrate", "--all", "--as-of", "next tuesday", *urls(settings))
    assert_one_line_error(result, "--as-of 'next tuesday' is not a date or timestamp",
                          "ISO 8601")


# --- the same legacy data at the same as-of time, migrated twice --------------------------

def _make_wall_clock_rows(source_url: str) -> None:
    """Rows whose outcome, without an as-of time, depends on when and where the run happens:
    no timestamps (filled with "now"), dated today (in the future tomorrow, or in a time zone
    ahead)."""
    with psycopg.connect(source_url) as conn:
        conn.execute("UPDATE users SET created_at = NULL, updated_at = NULL "
                     "WHERE id IN (SELECT id FROM users ORDER BY id LIMIT 5)")
        conn.execute("UPDATE persons SET created_at = NULL, birthdate = to_char(current_date, "
                     "'YYYY-MM-DD') WHERE id IN (SELECT id FROM persons ORDER BY id LIMIT 5)")
        conn.execute("UPDATE teachers SET hire_date = current_date "
                     "WHERE id IN (SELECT id FROM teachers ORDER BY id LIMIT 3)")
        conn.execute("UPDATE course_students SET enrolled_at = NULL "
                     "WHERE id IN (SELECT id FROM course_students ORDER BY id LIMIT 5)")
        conn.execute("UPDATE grades SET created_at = NULL, lesson_date = current_date "
                     "WHERE id IN (SELECT id FROM grades ORDER BY id LIMIT 5)")
        conn.execute("UPDATE grades SET created_at = NULL, lesson_date = NULL "
                     "WHERE id IN (SELECT id FROM grades ORDER BY id DESC LIMIT 5)")


# Every id of edu_v2 as what it stands for: the legacy row (via the crosswalk), the term's
# year and type, the assessment's offering and type.
KEYS_OF_IDS = """
CREATE TEMP TABLE key_of_id AS
WITH legacy AS (
    SELECT target_id AS id, min(source_table || ':' || source_id) AS key
    FROM migration.crosswalk GROUP BY target_id
)
SELECT id::text, key FROM legacy
UNION ALL
SELECT id::text, 'term:' || academic_year || '/' || term_type FROM academic_terms
UNION ALL
SELECT a.id::text, 'assessment:' || l.key || '/' || a.assessment_type
FROM assessments a JOIN legacy l ON l.id = a.course_offering_id;
CREATE UNIQUE INDEX ON key_of_id (id);
ANALYZE key_of_id;
"""

ROWS_BY_KEY = """
SELECT (SELECT jsonb_object_agg(e.k, coalesce(to_jsonb(k.key), e.v))
        FROM jsonb_each(to_jsonb(t)) e (k, v)
        LEFT JOIN key_of_id k ON jsonb_typeof(e.v) = 'string' AND k.id = e.v #>> '{{}}'
       )::text
FROM {} t
"""


def _set_time_zone(admin_url: str, settings: Settings, zone: str) -> None:
    target = conninfo_to_dict(str(settings.target_url))["dbname"]
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(sql.SQL("ALTER DATABASE {} SET TimeZone = {}").format(
            sql.Identifier(str(target)), sql.Literal(zone)))


def _business_rows(target_url: str) -> dict[str, Counter[str]]:
    with psycopg.connect(target_url) as conn:
        conn.execute("SET TimeZone = 'UTC'")
        conn.execute(KEYS_OF_IDS)
        found = {table: Counter(r[0] for r in conn.execute(
            sql.SQL(ROWS_BY_KEY).format(sql.Identifier(table)))) for table in TARGET_TABLES}
        found["migration.rejected_rows"] = Counter(
            r[0] for r in conn.execute(
                "SELECT (to_jsonb(r) - 'rejected_at')::text FROM migration.rejected_rows r"))
        return found


def test_same_as_of_gives_the_same_edu_v2_at_another_time_and_zone(
        admin_url: str, tmp_path: Path) -> None:
    for first in make_settings(admin_url, tmp_path / "first"):
        api.generate(first, scale=0.01, profile="dirty", seed=5)
        _make_wall_clock_rows(str(first.source_url))
        as_of = datetime.now(UTC).replace(microsecond=0)
        api.schema_apply(first)
        _set_time_zone(admin_url, first, "Etc/GMT+12")
        api.migrate(first, as_of=as_of)
        for second in make_settings(admin_url, tmp_path / "second"):
            # the same legacy database as the source, another target, later, in a time zone
            # 26 hours away from the first's
            second = second.model_copy(update={"source_url": first.source_url})
            api.schema_apply(second)
            _set_time_zone(admin_url, second, "Pacific/Kiritimati")
            time.sleep(1.5)
            api.migrate(second, as_of=as_of)
            one, other = _business_rows(str(first.target_url)), _business_rows(
                str(second.target_url))
            assert sum(len(rows) for rows in one.values()) > 1000
            for table in one:
                assert one[table] == other[table], (
                    table, list((one[table] - other[table]).elements())[:3],
                    list((other[table] - one[table]).elements())[:3])
            # and the rows without timestamps took the as-of time
            assert _one(first, "SELECT count(*) FROM users WHERE created_at = %s", [as_of]) > 0
