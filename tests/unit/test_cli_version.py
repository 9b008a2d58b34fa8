"""The command line's `--version`: it answers alone, with no command after it."""

from __future__ import annotations

import subprocess
import sys

from edu_migrate import __version__


def _python(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=120,
                          check=False)


def test_version_prints_the_version_and_exits_zero_without_a_command() -> None:
    result = _python("-m", "edu_migrate", "--version")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == f"edu-migrate {__version__}"
    assert result.stderr == ""

