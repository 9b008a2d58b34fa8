"""`edu-migrate backup schedule` and `backup list`: the guide's automated backups of edu_v2.

The scheduled job is `edu-migrate backup --verify-restore --only target --keep-days N`, run in
the folder it was scheduled from (where edu-migrate.toml, backups/ and logs/ are). It carries
no password: a URL with one is refused, its password belongs in ~/.pgpass or PGPASSFILE.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from psycopg.conninfo import conninfo_to_dict

from edu_migrate.backup import read_manifest
from edu_migrate.errors import MigrationError

UNIT = "edu-migrate-backup"
CRON_MARK = "# edu-migrate backup of edu_v2"
_TIME = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")


@dataclass(frozen=True)
class BackupSchedule:
    hour: int
    minute: int
    command: str
    workdir: Path

    def cron_line(self) -> str:
        return (f"{self.minute} {self.hour} * * * cd {shlex.quote(str(self.workdir))} && "
                f"{self.command}  {CRON_MARK}")

    def systemd_units(self) -> dict[str, str]:
        return {
            f"{UNIT}.service": "\n".join([
                "[Unit]", "Description=edu-migrate: verified backup of edu_v2", "",
                "[Service]", "Type=oneshot", f"WorkingDirectory={self.workdir}",
                f"ExecStart={self.command}", ""]),
            f"{UNIT}.timer": "\n".join([
                "[Unit]", "Description=edu-migrate: nightly verified backup of edu_v2", "",
                "[Timer]", f"OnCalendar=*-*-* {self.hour:02d}:{self.minute:02d}:00",
                "Persistent=true", "", "[Install]", "WantedBy=timers.target", ""]),
        }

    def to_dict(self) -> dict[str, Any]:
        return {"at": f"{self.hour:02d}:{self.minute:02d}", "command": self.command,
                "workdir": str(self.workdir), "cron": self.cron_line(),
                "systemd": self.systemd_units()}


def _program() -> str:
    beside = Path(sys.executable).parent / "edu-migrate"
    return str(beside if beside.exists() else shutil.which("edu-migrate") or "edu-migrate")


def plan_schedule(at: str, keep_days: int, target_url: str | None,
                  config_file: Path | None) -> BackupSchedule:
    match = _TIME.match(at)
    if not match:
        raise MigrationError(f"cannot read the time {at!r}", "give --at HH:MM, e.g. --at 02:30")
    if keep_days < 1:
        raise MigrationError("--keep-days must be at least 1", "e.g. --keep-days 14")
    command = [_program(), "backup", "--verify-restore", "--only", "target",
               "--keep-days", str(keep_days)]
    if config_file is not None:
        command += ["--config", str(config_file.resolve())]
    if target_url:
        if conninfo_to_dict(target_url).get("password"):
            raise MigrationError("the target URL holds a password, which must not go into a "
                                 "cron line or a unit file",
                                 "put it in ~/.pgpass and give the URL without it")
        command += ["--target", target_url]
    return BackupSchedule(int(match.group(1)), int(match.group(2)),
                          shlex.join(command), Path.cwd())


def _run(args: list[str], what: str, stdin: str | None = None) -> str:
    if shutil.which(args[0]) is None:
        raise MigrationError(f"{args[0]} is not installed, so {what} cannot be installed",
                             "use the other kind (--systemd or not), or install the lines "
                             "printed without --install yourself")
    result = subprocess.run(args, input=stdin, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        reason = (result.stderr.strip().splitlines() or [f"exit status {result.returncode}"])[0]
        raise MigrationError(f"{' '.join(args)} failed: {reason}",
                             "install the lines printed without --install yourself")
    return result.stdout


def install_cron(schedule: BackupSchedule) -> str:
    """Replace our line in the user's crontab (or add it); returns where it went."""
    listed = subprocess.run(["crontab", "-l"], capture_output=True, text=True, check=False) \
        if shutil.which("crontab") else None
    current = listed.stdout if listed is not None and listed.returncode == 0 else ""
    kept = [line for line in current.splitlines() if not line.endswith(CRON_MARK)]
    _run(["crontab", "-"], "the cron line", "\n".join([*kept, schedule.cron_line()]) + "\n")
    return "the crontab of this user"


def install_systemd(schedule: BackupSchedule) -> str:
    """Write the user units and enable the timer; returns the folder."""
    base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    folder = base / "systemd" / "user"
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in schedule.systemd_units().items():
        (folder / name).write_text(text, encoding="utf-8")
    _run(["systemctl", "--user", "daemon-reload"], "the systemd timer")
    _run(["systemctl", "--user", "enable", "--now", f"{UNIT}.timer"], "the systemd timer")
    return str(folder)


def list_backups(backup_dir: Path, now: datetime | None = None) -> list[dict[str, Any]]:
    """Every backup of the manifest, newest first: age, size, verified, still on disk."""
    now = now or datetime.now(UTC)
    return [{"file": r.file, "role": r.role, "database": r.database, "server": r.server,
             "created_at": r.created_at,
             "age_hours": round((now - r.created).total_seconds() / 3600, 1),
             "bytes": r.bytes, "rows": r.rows, "verified": r.verified, "sha256": r.sha256,
             "present": (backup_dir / r.file).is_file()}
            for _, r in sorted(enumerate(read_manifest(backup_dir)),
                               # two backups in the same second: the later entry is newer
                               key=lambda entry: (entry[1].created, entry[0]), reverse=True)]
