"""The bench's own measures: the step profile read from a run log, and a server's CPU seconds."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest
from bench.catchup import _statements
from bench.contenders import _pgloader_url, profile_from_log, steps_from_log
from bench.report import _run_of
from bench.run import scales_of
from bench.servers import server_cpu_seconds

LOG = """\
2026-11-30 02:19:39,699 INFO edu-migrate migrate --all
2026-11-30 02:19:40,000 INFO PHASE 1: MIGRATING USERS
2026-11-30 02:19:40,100 INFO stage users: 350 rows in 0.20s
2026-11-30 02:19:40,200 INFO step prepare_users: 350 rows in 0.13s
2026-11-30 02:19:41,000 INFO PHASE 5: MIGRATING ENROLLMENTS & GRADES
2026-11-30 02:19:42,000 INFO step prepare_grades: 160487 rows in 4.17s
2026-11-30 02:19:43,000 INFO   indexes and foreign keys rebuilt in 3.3s
2026-11-30 02:19:44,000 INFO ARCHIVING UNMAPPED TABLES
2026-11-30 02:19:45,000 INFO archive rooms: 120 rows in 0.05s
2026-11-30 02:19:46,000 INFO step prepare_users: 0 rows in 0.02s
"""


def test_steps_fall_under_the_phase_whose_banner_precedes_them(tmp_path: Path) -> None:
    (tmp_path / "migration_20261130_021939.log").write_text(LOG, encoding="utf-8")
    profile = profile_from_log(tmp_path)
    assert profile == {
        "phase 1": {"stage users": 0.20, "prepare_users": 0.13},
        "phase 5": {"prepare_grades": 4.17, "rebuild indexes and foreign keys": 3.3},
        "archive": {"archive rooms": 0.05, "prepare_users": 0.02},
    }
    assert steps_from_log(tmp_path)["prepare_users"] == 0.15


def test_a_cutover_log_splits_at_the_freeze(tmp_path: Path) -> None:
    (tmp_path / "migration_1.log").write_text(
        "x INFO step sync: scope_grades: 10 rows in 1.50s\n"
        "x INFO Froze the source at 2026-11-30T02:20:14: the downtime window starts\n"
        "x INFO step sync: scope_grades: 3 rows in 0.75s\n", encoding="utf-8")
    assert profile_from_log(tmp_path, first_section="cutover") == {
        "cutover": {"sync: scope_grades": 1.5},
        "inside the window": {"sync: scope_grades": 0.75},
    }


def test_server_cpu_counts_living_and_exited_children(tmp_path: Path) -> None:
    # This test process stands in for the postmaster: its children are the "backends".
    (tmp_path / "postmaster.pid").write_text(f"{os.getpid()}\n{tmp_path}\n", encoding="ascii")
    before = server_cpu_seconds(tmp_path)
    burn = ("import time\nend = time.process_time() + 0.4\nwhile time.process_time() < end: pass\n"
            "print('burnt', flush=True)\ntime.sleep(60)\n")
    child = subprocess.Popen([sys.executable, "-c", burn], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "burnt"  # a living child that used its CPU
        living = server_cpu_seconds(tmp_path)
    finally:
        child.kill()
        child.wait()
    exited = server_cpu_seconds(tmp_path)
    assert living - before >= 0.35
    assert exited - before >= 0.35


def test_no_server_running_reads_as_no_cpu(tmp_path: Path) -> None:
    assert server_cpu_seconds(tmp_path) == 0.0


def test_the_change_files_split_into_statements_without_comments() -> None:
    for name in ("day_of_changes.sql", "last_delta.sql"):
        statements = _statements(name)
        assert statements, name
        for statement in statements:
            assert statement.split()[0] in {"INSERT", "UPDATE", "DELETE", "CREATE"}, statement
            assert ";" not in statement, statement
            assert "--" not in statement, statement


def test_pgloader_gets_the_password_of_the_passfile_in_its_url(tmp_path: Path) -> None:
    """pgloader's URL grammar takes no `?passfile=`: the bench reads the matching line of the
    password file instead (a command file is all pgloader gets; it failed to parse before)."""
    passfile = tmp_path / "pgpass"
    passfile.write_text("otherhost:*:*:postgres:wrong\n127.0.0.1:*:*:postgres:s3cr:et/\n")
    url = _pgloader_url(f"postgresql://postgres@127.0.0.1:5433/edu?passfile={passfile}")
    assert url == "pgsql://postgres:s3cr%3Aet%2F@127.0.0.1:5433/edu"


def test_the_least_work_adds_raw_copy_through_and_says_what_pgloader_leaves() -> None:
    from bench.report import _least_work_cell, least_work_seconds

    result = {"raw_copy": {"median": 10.0}, "pgloader": {"median": 40.0},
              "least_work": [{"step": "write public.grades", "seconds": 5.25},
                        {"step": "index grades_pkey", "seconds": 2.0}]}
    assert least_work_seconds(result) == 17.25
    assert _least_work_cell(result) == "17.2 s (pgloader's time leaves 22.8 s for every rule)"
    result["pgloader"] = {"median": 15.0}
    assert _least_work_cell(result) == \
        "17.2 s (2.2 s above pgloader's time: faster than pgloader is out of reach)"
    assert least_work_seconds({"raw_copy": {"median": 10.0}}) is None


def test_one_run_takes_several_scales_and_refuses_what_is_not_one() -> None:
    assert scales_of("1") == [1.0]
    assert scales_of("1,10") == [1.0, 10.0]
    for bad in ("", "1,x", "0", "1,-2"):
        with pytest.raises(argparse.ArgumentTypeError):
            scales_of(bad)


def test_a_block_of_a_two_scale_run_names_the_other_scale_and_the_run() -> None:
    run = {"run": {"started": "2026-12-05T07:05:00", "scales": [1.0, 10.0]}}
    assert _run_of(run, 10.0) == ("; one `make bench` run, started 2026-12-05T07:05:00, "
                                  "with scale 1")
    assert _run_of({"run": {"started": "x", "scales": [1.0]}}, 1.0) == ""
    assert _run_of({}, 1.0) == ""
