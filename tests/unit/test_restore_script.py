"""The restore script handed to an older server: settings it does not know are left out, COPY
data never touched."""

from __future__ import annotations

from edu_migrate.pg.tools import _script_lines_for

SCRIPT = [
    b"SET statement_timeout = 0;\n",
    b"SET transaction_timeout = 0;\n",
    b"COPY public.notes (body) FROM stdin;\n",
    b"SET transaction_timeout = 0;\n",
    b"\\.\n",
    b"SELECT 1;\n",
]


def test_older_server_loses_the_newer_setting_but_not_the_data() -> None:
    kept = list(_script_lines_for(150000, iter(SCRIPT)))
    assert kept == [SCRIPT[0], *SCRIPT[2:]]


def test_newer_server_gets_the_script_unchanged() -> None:
    assert list(_script_lines_for(180000, iter(SCRIPT))) == SCRIPT
