"""`cutover-check --student USER:PASS` and friends: the run log records the user names, never a
password, and is readable by its owner only."""

from __future__ import annotations

import stat
from pathlib import Path

from tests.integration.test_secrets_and_json import run_in

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
