"""While phases 1–4 run, phase 5's marks are staged and parsed in background sessions. A run
killed while that work waits, or whose background fails, leaves nothing that the next run
trusts: the same command then ends with exactly the result of an uninterrupted run, and the
background's failure is the run's, in one line."""

from __future__ import annotations

import signal

import psycopg

from edu_migrate.phases.runner import RUN_ORDER
from tests.faults.conftest import Reference
from tests.faults.harness import (
    admin_of,
    cli,
    holding,
    one_error_line,
    phase_statuses,
    result_digests,
    sessions_of,
    start_cli,
    url_args,
    wait_for,
    waiting_backend,
)


def _resume_and_compare(ref: Reference) -> None:
    again = cli(ref.settings, "migrate", "--all", *url_args(ref.settings))
    assert again.returncode == 0, again.stderr
    assert set(phase_statuses(ref.target_url).values()) == {"done"}
    assert result_digests(ref.target_url) == ref.result


def test_sigkill_while_the_background_parses_then_rerun(fresh: Reference) -> None:
    ref = fresh
    admin = admin_of(ref.settings)
    # A work table as a killed run leaves it: the background drops it before it parses, and
    # waits here for the lock the test holds.
    with psycopg.connect(ref.target_url, autocommit=True) as conn:
        conn.execute("CREATE UNLOGGED TABLE stage.parsed_grades (source_id bigint)")
    with holding(ref.target_url, "stage.parsed_grades", "ACCESS SHARE"):
        child = start_cli(ref.settings, "migrate", "--all", *url_args(ref.settings))
        backend = wait_for(lambda: waiting_backend(admin, child.pid), "the background's parse")
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
        wait_for(lambda: sessions_of(admin, child.pid) == 0, "the orphaned sessions to end",
                 timeout=15)
    assert "parsed_grades" in str(backend)
    assert phase_statuses(ref.target_url).get(5) != "done"
    _resume_and_compare(ref)


def test_a_failure_in_the_background_is_the_runs_failure(fresh: Reference) -> None:
    ref = fresh
    # Something in the way of the background's work table: it cannot drop a view as a table.
    with psycopg.connect(ref.target_url, autocommit=True) as conn:
        conn.execute("CREATE VIEW stage.parsed_grades AS SELECT 1 AS source_id")
    failed = cli(ref.settings, "migrate", "--all", *url_args(ref.settings))
    assert failed.returncode != 0
    line = one_error_line(failed.stderr)
    assert "staging and parsing the marks in the background failed" in line
    assert "is not a table" in line
    assert "run the same command again" in line
    assert phase_statuses(ref.target_url) == {**{n: "done" for n in RUN_ORDER[:-1]},
                                              5: "failed"}
    with psycopg.connect(ref.target_url, autocommit=True) as conn:
        conn.execute("DROP VIEW stage.parsed_grades")
    _resume_and_compare(ref)
