"""The target's disk fills up during a phase: one clear line, the phase undone, and once there is
room again the same command finishes the job. Simulated with a tablespace on a tiny tmpfs, which
needs root and the right to mount: skipped elsewhere."""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from edu_migrate import api
from tests.faults.conftest import Reference
from tests.faults.harness import (
    admin_of,
    cli,
    one_error_line,
    phase_statuses,
    result_digests,
    url_args,
)

TABLESPACE = "edu_fault_tiny"


@pytest.fixture
def tiny_disk(reference: Reference) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip(f"mounting a tiny disk needs root; this runs as uid {os.geteuid()}")
    # Outside pytest's private temporary folder: the server's own user must reach it.
    mount_point = Path(tempfile.mkdtemp(prefix="edu-tiny-disk-"))
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs",
                              str(mount_point)], capture_output=True, check=False)
    if mounted.returncode != 0:
        mount_point.rmdir()
        why = mounted.stderr.decode(errors="replace").strip() or f"exit {mounted.returncode}"
        pytest.skip(f"cannot mount a tmpfs here (a container without CAP_SYS_ADMIN?): {why}")
    try:
        with psycopg.connect(admin_of(reference.settings), autocommit=True) as conn:
            row = conn.execute("SHOW data_directory").fetchone()
            assert row is not None
            owner = Path(str(row[0])).stat()
        os.chown(mount_point, owner.st_uid, owner.st_gid)
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], check=False)
        mount_point.rmdir()


def test_disk_full_mid_phase_then_resume(fresh: Reference, tiny_disk: Path) -> None:
    ref = fresh
    api.migrate(ref.settings, [1, 3, 2, 4])
    admin = admin_of(ref.settings)
    database = sql.Identifier(str(psycopg.conninfo.conninfo_to_dict(ref.target_url)["dbname"]))
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE TABLESPACE {} LOCATION {}").format(
            sql.Identifier(TABLESPACE), sql.Literal(str(tiny_disk))))
        conn.execute(sql.SQL("ALTER DATABASE {} SET default_tablespace = {}").format(
            database, sql.Identifier(TABLESPACE)))
    try:
        result = cli(ref.settings, "migrate", "--all", *url_args(ref.settings))
    finally:
        with psycopg.connect(ref.target_url, autocommit=True) as conn:
            conn.execute(sql.SQL("ALTER DATABASE {} RESET default_tablespace").format(database))
            for (table,) in conn.execute(
                    "SELECT c.oid::regclass::text FROM pg_class c JOIN pg_tablespace t "
                    "ON t.oid = c.reltablespace WHERE t.spcname = %s AND c.relkind = 'r'",
                    [TABLESPACE]).fetchall():
                conn.execute(sql.SQL("DROP TABLE {}").format(sql.SQL(table)))
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP TABLESPACE {}").format(sql.Identifier(TABLESPACE)))
    line = one_error_line(result.stderr)
    assert result.returncode != 0
    assert "phase 5 failed and was rolled back" in line and "No space left on device" in line
    assert "disk is full" in line
    assert phase_statuses(ref.target_url)[5] == "failed"
    again = cli(ref.settings, "migrate", "--all", *url_args(ref.settings))
    assert again.returncode == 0, again.stderr
    assert result_digests(ref.target_url) == ref.result
