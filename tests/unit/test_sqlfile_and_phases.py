from __future__ import annotations

import pytest

from edu_migrate.phases import sqlfile
from edu_migrate.phases.phones import to_e164
from edu_migrate.phases.runner import PHASES, RUN_ORDER, dependents_of


@pytest.mark.parametrize("number", sorted(PHASES))
def test_every_phase_file_parses_into_named_statements(number: int) -> None:
    statements = sqlfile.load(PHASES[number].sql_file)
    names = [s.name for s in statements]
    assert len(names) == len(set(names))
    assert any(s.say and "✓" in s.say for s in statements)
    assert all(s.text.strip() for s in statements)


def test_run_order_respects_dependencies() -> None:
    for position, number in enumerate(RUN_ORDER):
        assert set(PHASES[number].needs) <= set(RUN_ORDER[:position])


def test_rolling_back_a_phase_takes_its_dependents() -> None:
    assert dependents_of(3) == [3, 2, 4, 5]
    assert dependents_of(4) == [4, 5]
    assert dependents_of(5) == [5]
    assert dependents_of(1) == [1, 2, 4, 5]


@pytest.mark.parametrize(("raw", "expected"), [
    ("+994 50 123 45 67", "+994501234567"),
    ("050-123-45-67", "+994501234567"),
    ("0501234567", "+994501234567"),
    ("  ", None),
    ("not a phone", None),
    (None, None),
])
def test_phone_numbers_to_e164(raw: str | None, expected: str | None) -> None:
    assert to_e164(raw) == expected


def test_a_statement_marked_after_indexes_is_parsed_apart_and_closes_the_file() -> None:
    text = ("-- name: load\n-- say: loaded {n}\nINSERT INTO t SELECT 1;\n\n"
            "-- name: derive\n-- after: indexes\n-- why it waits\nSELECT 2;\n")
    load, derive = sqlfile.parse(text)
    assert (load.name, load.say, load.after_indexes) == ("load", "loaded {n}", False)
    assert (derive.after_indexes, derive.text) == (True, "-- why it waits\nSELECT 2;")
    with pytest.raises(ValueError, match="after: indexes"):
        sqlfile.parse(text + "\n-- name: late\nSELECT 3;\n")


def test_phase_5_derives_its_assessments_once_the_indexes_are_built() -> None:
    # The sync runs the file in order; the full run sends these after its index builds.
    marked = [s.name for s in sqlfile.load(PHASES[5].sql_file) if s.after_indexes]
    assert marked == ["migrate_assessments", "drop_assessments_without_marks"]
    assert not any(s.after_indexes for n in PHASES if n != 5
                   for s in sqlfile.load(PHASES[n].sql_file))
