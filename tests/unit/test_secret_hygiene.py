"""No secret in the run log, in an error line or on a client program's command line; the run
log and its folder are the owner's alone."""

from __future__ import annotations

import logging
import stat
from pathlib import Path

import pytest

from edu_migrate.errors import MigrationError
from edu_migrate.pg.connect import connect
from edu_migrate.pg.tools import client_call
from edu_migrate.pg.urls import parse, redacted
from edu_migrate.runlog import loggable_command, open_run_log

SECRET = "s3cr3t"


@pytest.mark.parametrize("text", [
    f"--target postgresql://admin:{SECRET} with spaces@db:5432/edu_v2",
    f"postgresql://admin:{SECRET}\twith tab@db/edu",
    f"--target 'host=db sslpassword={SECRET} dbname=edu_v2'",
    f"postgresql://db/edu?sslpassword={SECRET}&sslmode=require",
])
def test_passwords_with_spaces_and_other_secret_parameters_are_redacted(text: str) -> None:
    shown = redacted(text)
    assert SECRET not in shown and "with spaces" not in shown and "with tab" not in shown
    assert "***" in shown


def test_credential_options_never_reach_the_logged_command_line() -> None:
    argv = ["cutover-check", "--api", "http://h", "--student", f"ali:{SECRET}",
            f"--teacher=vali:{SECRET} x", "--admin", "noColon" + SECRET,
            "--target", f"postgresql://u:{SECRET} x@h/db"]
    shown = loggable_command(argv, frozenset({"--student", "--teacher", "--admin"}))
    assert SECRET not in shown
    assert "--student ali:***" in shown and "--teacher=vali:***" in shown
    assert "--api http://h" in shown


def test_run_log_and_its_folder_are_the_owners_alone(tmp_path: Path) -> None:
    folder = tmp_path / "logs"
    path = open_run_log(folder, "status")
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    # A message quoting a URL (a program's output, say) is redacted on its way into the file.
    logging.getLogger("edu_migrate").info("pg_dump: postgresql://u:%s x@h/db", SECRET)
    for handler in logging.getLogger("edu_migrate").handlers:
        handler.flush()
    text = path.read_text("utf-8")
    assert "pg_dump: postgresql://u:***@h/db" in text and SECRET not in text


@pytest.mark.parametrize("url", [
    f"postgresql://u:{SECRET}%zz@127.0.0.1/db",
    f"postgresql://u:{SECRET}@[::1/db",
    f"host=127.0.0.1 password={SECRET}%zz port=notaport",
])
def test_driver_errors_quoting_the_connection_string_do_not_show_the_password(url: str) -> None:
    with pytest.raises(MigrationError) as caught:
        parse(url, purpose="target")
        with connect(url, purpose="target"):
            pass
    assert SECRET not in caught.value.one_line()


def test_client_programs_get_no_secret_on_their_command_line() -> None:
    url = f"postgresql://u:{SECRET}@127.0.0.1:5/db?sslpassword=key-{SECRET}&sslmode=require"
    with client_call(url) as call:
        assert SECRET not in call.conninfo
        assert call.env["PGPASSWORD"] == SECRET
        service_file = Path(call.env["PGSERVICEFILE"])
        assert stat.S_IMODE(service_file.stat().st_mode) == 0o600
        assert f"sslpassword=key-{SECRET}" in service_file.read_text("utf-8")
        assert "service=edu_migrate" in call.conninfo
    assert not service_file.exists()
