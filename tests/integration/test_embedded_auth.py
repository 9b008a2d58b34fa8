"""The embedded server asks every login for its password, the superuser's included; the
password file that holds it is its owner's alone, and the server's URL finds it."""

from __future__ import annotations

import os
import stat
import subprocess

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from edu_migrate.pg.embedded import find_bin_dir
from tests.conftest import EMBEDDED_HOMES


def test_the_embedded_superuser_needs_the_password_kept_in_a_private_file(
        admin_url: str) -> None:
    if not EMBEDDED_HOMES:
        pytest.skip("EDU_TEST_ADMIN_URL names a server this test session did not start")
    passfile = EMBEDDED_HOMES[0] / "pgpass"
    assert stat.S_IMODE(passfile.stat().st_mode) == 0o600
    params = conninfo_to_dict(admin_url)
    without = make_conninfo(**{k: v for k, v in params.items() if k != "passfile"})
    clean_env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    psql = str(find_bin_dir() / "psql")
    refused = subprocess.run([psql, "--no-password", "-tAc", "SELECT 1", without],
                             env=clean_env, capture_output=True, text=True, timeout=60)
    assert refused.returncode != 0
    assert "password" in refused.stderr
    with pytest.raises(psycopg.OperationalError, match="password"):
        psycopg.connect(without, connect_timeout=5)
    # The owner, with the URL the tool prints (`db url`), gets in.
    allowed = subprocess.run([psql, "--no-password", "-tAc", "SELECT current_user", admin_url],
                             env=clean_env, capture_output=True, text=True, timeout=60)
    assert allowed.returncode == 0, allowed.stderr
    assert allowed.stdout.strip() == "postgres"
