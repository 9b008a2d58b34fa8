"""Phase 5's per-mark work (phase5_marks.sql) runs ahead of the phase's transaction, over ranges
of ids in parallel sessions, into a work table. The result must not depend on how many sessions
did it, and a work table that this run did not build must never be taken for current."""

from __future__ import annotations

import psycopg

from edu_migrate import api
from edu_migrate.config import Settings
from edu_migrate.phases.marks import parse_in_ranges
from edu_migrate.runlog import Reporter
from tests.integration.helpers import differences, result_rows


def test_marks_parsed_in_the_background_by_two_sessions_equal_one_session(
        settings: Settings) -> None:
    api.generate(settings, scale=0.02, profile="dirty", seed=11)
    api.schema_apply(settings)
    target = str(settings.target_url)
    api.migrate(settings)  # phases 1–4, while the marks are staged and parsed in the background
    parallel = result_rows(target)
    assert sum(parallel["rejected_rows"].values()) > 0 and sum(parallel["repairs"].values()) > 0
    api.rollback(settings, 5)
    # Phase 5 alone stages and parses its marks itself, here in one session.
    api.migrate(settings.model_copy(update={"workers": 1}), [5])
    assert differences(parallel, result_rows(target)) == []


def test_a_work_table_left_by_an_earlier_run_is_never_taken_for_current(
        settings: Settings) -> None:
    api.generate(settings, scale=0.02, seed=7)
    api.schema_apply(settings)
    target = str(settings.target_url)
    api.migrate(settings)
    api.rollback(settings, 5)
    # A run killed after its marks were parsed, before phase 5 committed: its work table is
    # complete, over the marks as they were staged then.
    assert parse_in_ranges(target, workers=2, reporter=Reporter()) > 0
    # Then a mark changes in the source: a number becomes an absence.
    with psycopg.connect(str(settings.source_url)) as conn:
        row = conn.execute("UPDATE grades SET value = 'q/b' WHERE id = (SELECT min(id) FROM "
                           "grades WHERE value ~ '^[0-9]+$') RETURNING id").fetchone()
        assert row is not None
        changed = int(row[0])
    api.migrate(settings)  # phases 1–4 are done: phase 5 stages and parses anew
    with psycopg.connect(target) as conn:
        absent = conn.execute(
            "SELECT g.is_absent, g.score FROM grades g JOIN migration.crosswalk_grades x "
            "ON x.target_id = g.id WHERE x.source_id = %s", [changed]).fetchone()
    assert absent == (True, None)
