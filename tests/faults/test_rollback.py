"""Rollback of any phase, then a rerun, gives back the original edu_v2; destructive commands ask
first; the source is never touched (the `fresh` fixture compares every table of it after each
test)."""

from __future__ import annotations

import psycopg
import pytest

from edu_migrate import api
from edu_migrate.phases.runner import RUN_ORDER, dependents_of
from tests.faults.conftest import Reference
from tests.faults.harness import cli, phase_statuses, result_digests
from tests.integration.helpers import scalar, table_digest

WRITES = {1: ("users", "persons"), 3: ("organization_units", "academic_terms"),
          2: ("students", "staff_members"), 4: ("courses", "course_offerings"),
          5: ("course_enrollments", "assessments", "grades")}


@pytest.mark.parametrize("phase", RUN_ORDER)
def test_rollback_of_a_phase_then_rerun_gives_the_original(fresh: Reference, phase: int) -> None:
    ref = fresh
    api.migrate(ref.settings)
    undone = api.rollback(ref.settings, phase)
    assert undone == dependents_of(phase)
    kept = [n for n in RUN_ORDER if n not in undone]
    assert phase_statuses(ref.target_url) == {n: "done" for n in kept}
    for number in undone:
        for table in WRITES[number]:
            assert scalar(ref.target_url, f"SELECT count(*) FROM {table}") == 0
    for number in kept:
        for table in WRITES[number]:
            assert table_digest(ref.target_url, table) == ref.result[table]
    api.migrate(ref.settings)
    assert result_digests(ref.target_url) == ref.result


def _id_secret(target_url: str) -> str:
    # The id secret only: rollback --all clears the state's as-of time, by design.
    with psycopg.connect(target_url) as conn:
        row = conn.execute("SELECT id_secret FROM migration.state").fetchone()
    assert row is not None
    return str(row[0])


def test_rollback_all_keeps_the_schema_and_the_id_secret(fresh: Reference) -> None:
    ref = fresh
    api.migrate(ref.settings)
    secret = _id_secret(ref.target_url)
    result = cli(ref.settings, "rollback", "--all", "--yes", "--target", ref.target_url)
    assert result.returncode == 0, result.stderr
    assert phase_statuses(ref.target_url) == {}
    assert all(scalar(ref.target_url, f"SELECT count(*) FROM {t}") == 0
               for tables in WRITES.values() for t in tables)
    assert scalar(ref.target_url, "SELECT count(*) FROM migration.crosswalk") == 0
    assert _id_secret(ref.target_url) == secret
    api.migrate(ref.settings)
    assert result_digests(ref.target_url) == ref.result


def test_rollback_asks_first(fresh: Reference) -> None:
    ref = fresh
    api.migrate(ref.settings)
    declined = cli(ref.settings, "rollback", "--phase", "4", "--target", ref.target_url,
                   input_text="n\n")
    assert declined.returncode != 0
    assert "Remove phase 4 and the phases that need it" in declined.stdout
    assert set(phase_statuses(ref.target_url)) == {1, 2, 3, 4, 5}
    accepted = cli(ref.settings, "rollback", "--phase", "4", "--target", ref.target_url,
                   input_text="y\n")
    assert accepted.returncode == 0, accepted.stderr
    assert "Rolled back phase 4, 5" in accepted.stdout
    assert set(phase_statuses(ref.target_url)) == {1, 2, 3}


def test_unknown_phase_to_roll_back_changes_nothing(fresh: Reference) -> None:
    ref = fresh
    api.migrate(ref.settings)
    result = cli(ref.settings, "rollback", "--phase", "7", "--yes", "--target", ref.target_url)
    assert result.returncode != 0
    assert "unknown phase 7" in result.stderr
    assert result_digests(ref.target_url) == ref.result
