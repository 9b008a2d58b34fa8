"""`backup list` is newest first, also for backups taken within the same second."""

from __future__ import annotations

import json
from pathlib import Path

from edu_migrate.aftercare.schedule import list_backups
from edu_migrate.backup import MANIFEST


def test_backups_of_the_same_second_are_listed_later_entry_first(tmp_path: Path) -> None:
    """The manifest is appended to: of two backups stamped with the same second (a refused
    decommission's final backup, then the accepted one's), the later entry is the newer."""
    entry = {"role": "source", "database": "edu", "server": "localhost:5432",
             "created_at": "2026-11-30T06:35:14+00:00", "bytes": 1, "tables": 1, "rows": 1,
             "verified": "restored"}
    (tmp_path / MANIFEST).write_text(json.dumps({"backups": [
        {**entry, "file": "edu_20261130T063514Z.dump"},
        {**entry, "file": "edu_20261130T063514Z_2.dump"},
    ]}), encoding="utf-8")
    assert [b["file"] for b in list_backups(tmp_path)] == [
        "edu_20261130T063514Z_2.dump", "edu_20261130T063514Z.dump"]
