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
