"""A run stopped in the middle of any phase (process killed, connection ended, statement timed out,
disk full) leaves the phase undone, says so, and the same command then finishes the job with
exactly the result of an uninterrupted run. Two runs at once: the second is refused."""

from __future__ import annotations

import signal
import time

import psycopg
import pytest

from edu_migrate import api
from edu_migrate.phases.runner import RUN_ORDER
from tests.faults.conftest import Reference
from tests.faults.harness import (
    Backend,
    admin_of,
    cli,
    hold_target,
    holding,
    one_error_line,
    phase_statuses,
    result_digests,
    sessions_of,
    start_cli,
    status_json,
    url_args,
    wait_for,
    waiting_backend,
)


def _run_phases_before(ref: Reference, phase: int) -> None:
    earlier = list(RUN_ORDER[:RUN_ORDER.index(phase)])
    if earlier:
        api.migrate(ref.settings, earlier)


def _resume_and_compare(ref: Reference) -> None:
    again = cli(ref.settings, "migrate", "--all", *url_args(ref.settings))
    assert again.returncode == 0, again.stderr
    assert set(phase_statuses(ref.target_url).values()) == {"done"}
    assert result_digests(ref.target_url) == ref.result


# Every phase at its first write and one statement before its commit; staging, the same code for
# every phase, once.
KILL_POINTS = [(phase, point) for phase in RUN_ORDER for point in ("start", "commit")] + [
    (5, "staging")]


@pytest.mark.parametrize(("phase", "point"), KILL_POINTS)
def test_sigkill_mid_phase_then_rerun(fresh: Reference, phase: int, point: str) -> None:
    ref = fresh
    _run_phases_before(ref, phase)
    admin = admin_of(ref.settings)
    table, mode = hold_target(point, phase)
    with holding(ref.target_url, table, mode):
        child = start_cli(ref.settings, "migrate", "--all", *url_args(ref.settings))
        backend = wait_for(lambda: waiting_backend(admin, child.pid), f"phase {phase} at {point}")
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
        assert f"PHASE {phase}:" in (child.stdout.read() if child.stdout else "")
        # The server notices the dead client and ends its sessions, locks and all, without
        # waiting for the statement to finish.
        wait_for(lambda: sessions_of(admin, child.pid) == 0, "the orphaned sessions to end",
                 timeout=15)
    assert backend
    assert phase_statuses(ref.target_url).get(phase) == "running"
    shown = {p["phase"]: p for p in api.status(ref.settings)["phases"]}
    assert shown[phase]["status"] == "interrupted"
    assert "run the same command again" in shown[phase]["last_error"]
    assert all(shown[n]["status"] == "pending" for n in RUN_ORDER[RUN_ORDER.index(phase) + 1:])
    _resume_and_compare(ref)


@pytest.mark.parametrize("phase", [1, 5])
def test_target_connection_terminated_mid_phase(fresh: Reference, phase: int) -> None:
    ref = fresh
    _run_phases_before(ref, phase)
    admin = admin_of(ref.settings)
    table, mode = hold_target("commit", phase)
    with holding(ref.target_url, table, mode):
        child = start_cli(ref.settings, "migrate", "--all", *url_args(ref.settings))
        backend = wait_for(lambda: waiting_backend(admin, child.pid), f"phase {phase}")
        assert isinstance(backend, Backend)
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute("SELECT pg_terminate_backend(%s)", [backend.pid])
        _, stderr = child.communicate(timeout=60)
    assert child.returncode != 0
    line = one_error_line(stderr)
    assert f"phase {phase} failed and was rolled back" in line
    assert "run the same command again" in line
    shown = {p["phase"]: p for p in status_json(ref.settings)["phases"]}
    assert shown[phase]["status"] == "failed"
    assert "terminating connection" in shown[phase]["last_error"]
    _resume_and_compare(ref)


def test_statement_timeout_then_resume(fresh: Reference) -> None:
    ref = fresh
    table, mode = hold_target("start", 1)
    with holding(ref.target_url, table, mode):
        result = cli(ref.settings, "migrate", "--all", *url_args(ref.settings),
                     env={"PGOPTIONS": "-c statement_timeout=1500"})
    line = one_error_line(result.stderr)
    assert result.returncode != 0
    assert "phase 1 failed and was rolled back: canceling statement due to statement timeout" \
        in line
    assert "statement_timeout" in line.split(" — ", 1)[1]
    assert phase_statuses(ref.target_url) == {1: "failed"}
    _resume_and_compare(ref)


def test_second_run_is_refused_naming_the_first(fresh: Reference) -> None:
    ref = fresh
    admin = admin_of(ref.settings)
    table, mode = hold_target("commit", 1)
    with holding(ref.target_url, table, mode):
        first = start_cli(ref.settings, "migrate", "--all", *url_args(ref.settings))
        wait_for(lambda: waiting_backend(admin, first.pid), "the first run inside phase 1")
        started = time.monotonic()
        second = cli(ref.settings, "migrate", "--all", *url_args(ref.settings))
        assert time.monotonic() - started < 30
        line = one_error_line(second.stderr)
        assert second.returncode != 0
        assert "another migration is running against this target" in line
        assert f"edu-migrate target pid={first.pid}" in line
        state = status_json(ref.settings)
        assert f"pid={first.pid}" in str(state["running_now"])
        shown = {p["phase"]: p["status"] for p in state["phases"]}
        assert shown[1] == "running"
    _, stderr = first.communicate(timeout=120)
    assert first.returncode == 0, stderr
    assert result_digests(ref.target_url) == ref.result
