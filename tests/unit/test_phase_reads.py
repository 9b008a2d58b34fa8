"""What each phase reads of the legacy data it stages itself: stage tables are UNLOGGED, so a
server crash empties them, and a phase that read another phase's stage tables would see no
rows when resumed. The runbook's examples of dependency errors say what the code says."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from edu_migrate.phases import sqlfile
from edu_migrate.phases.runner import PHASES, RUN_ORDER

RUNBOOK = Path(__file__).resolve().parents[2] / "docs" / "RUNBOOK.md"
STAGE_TABLE = re.compile(r"\bstage\.(\w+)")
CREATED = re.compile(r"CREATE (?:UNLOGGED |TEMP )?TABLE stage\.(\w+)")
# Lookups that a phase builds in the stage schema from its own staged rows, before its SQL
# (phase 5's marks parsed by phases/marks.py, always anew in the run that uses them).
LOOKUP_TABLES = {1: {"phone_numbers"}, 5: {"parsed_grades"}}


@pytest.mark.parametrize("number", sorted(PHASES))
def test_each_phase_reads_only_the_stage_tables_it_stages(number: int) -> None:
    phase = PHASES[number]
    text = "\n".join(s.text for f in phase.sql_files for s in sqlfile.load(f))
    created = set(CREATED.findall(text)) | LOOKUP_TABLES.get(number, set())
    read = set(STAGE_TABLE.findall(text)) - created
    assert read <= set(phase.reads), f"phase {number} reads {read - set(phase.reads)} unstaged"


def test_the_runbooks_dependency_errors_name_the_phase_to_run() -> None:
    examples = re.findall(r"phase (\d) needs phase ([\d, ]+) done first — run "
                          r"`edu-migrate migrate --phase (\d)`", RUNBOOK.read_text("utf-8"))
    assert examples
    for phase, missing, to_run in examples:
        needed = {int(n) for n in missing.split(",")}
        assert needed <= set(PHASES[int(phase)].needs)
        assert int(to_run) == next(n for n in RUN_ORDER if n in needed), (phase, missing)
