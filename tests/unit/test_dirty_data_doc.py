"""docs/dirty-data.md speaks of the code as it is: every statement or function its tables name
in their "where" column exists, and every reason or rule text they quote in their "reason /
repair rule" column is written in a phase file."""

from __future__ import annotations

import re
from pathlib import Path

from edu_migrate.phases import sqlfile
from edu_migrate.phases.runner import PHASES
from edu_migrate.schema import versions

DOC = Path(__file__).resolve().parents[2] / "docs" / "dirty-data.md"
CODE_SPAN = re.compile(r"`([^`]+)`")


def _table_rows() -> list[list[str]]:
    rows = []
    for line in DOC.read_text("utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| ") and len(cells) == 4 and cells[0] != "kind":
            rows.append(cells)
    return rows


def _phase_text() -> str:
    return "\n".join(s.text for p in PHASES.values() for f in p.sql_files
                     for s in sqlfile.load(f))


def test_every_place_named_exists() -> None:
    statements = {s.name for p in PHASES.values() for f in p.sql_files for s in sqlfile.load(f)}
    functions = set(re.findall(r"FUNCTION (migration\.\w+)", "\n".join(v.text for v in versions())))
    rows = _table_rows()
    assert len(rows) > 60
    for _, _, _, where in rows:
        for name in CODE_SPAN.findall(where):
            if name.endswith(".py") or "/" in name:
                continue
            assert name in statements or name in functions, name


# Reasons the code composes from a value ('org_id is a ' || unit type || ', not a program').
COMPOSED = {"org_id is a department, not a program"}


def test_every_rule_text_quoted_is_in_the_code() -> None:
    text = _phase_text().replace("''", "'")
    missing = []
    for _, rule, quoted, _ in _table_rows():
        if rule not in ("repair", "set aside", "merge"):
            continue
        for span in CODE_SPAN.findall(quoted):
            if "<" in span or "…" in span or " " not in span or span in COMPOSED:
                continue
            if span not in text:
                missing.append(span)
    assert missing == []
