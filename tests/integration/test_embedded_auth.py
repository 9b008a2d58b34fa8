"""The embedded server asks every login for its password, the superuser's included; the
password file that holds it is its owner's alone, and the server's URL finds it."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from edu_migrate.pg.embedded import find_bin_dir


def test_the_embedded_superuser_needs_the_password_kept_in_a_private_file(
        admin_url: str) -> None:
    params = conninfo_to_dict(admin_url)
    if params.get("host") != "127.0.0.1" or "passfile" not in params:
        pytest.skip("EDU_TEST_ADMIN_URL names a server the tests did not start: "
                    f"{params.get('host')}")
    passfile = Path(str(params["passfile"]))
    assert stat.S_IMODE(passfile.stat().st_mode) == 0o600
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
