"""`edu-migrate tune`: the guide's configuration list, computed for the server's size.

The guide's values (shared_buffers = 4GB, effective_cache_size = 12GB, …) are those of one
16 GB machine with SSDs. Here each value is a rule of the server's memory, cores, storage and
connections, the rules that give exactly the guide's list for 16 GB, 8 cores, SSD and 100
connections. The size is read from the server when it runs on this machine, else given.
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from edu_migrate.aftercare.sqlfiles import query
from edu_migrate.checks.preflight import LOCAL_HOSTS
from edu_migrate.errors import ConnectionFailed, MigrationError, PreconditionFailed
from edu_migrate.pg.connect import connect
from edu_migrate.pg.urls import masked, parse

KB, MB, GB = 1024, 1024**2, 1024**3
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": KB, "m": MB, "g": GB, "t": 1024 * GB}
STORAGE_KINDS = ("ssd", "hdd")
STATEMENTS_LIBRARY = "pg_stat_statements"


def parse_size(text: str) -> int:
    """'16GB', '512MB', '16G', '16GiB' → bytes."""
    match = _SIZE.match(text)
    if not match or float(match.group(1)) <= 0:
        raise MigrationError(f"cannot read the size {text!r}", "write it like 16GB or 512MB")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


def shown_size(value: int) -> str:
    """Bytes as PostgreSQL writes them: whole GB or MB, else kB."""
    for unit, size in (("GB", GB), ("MB", MB)):
        if value >= size and value % size == 0:
            return f"{value // size}{unit}"
    return f"{value // KB}kB"


@dataclass(frozen=True)
class ServerSize:
    memory: int
    cores: int
    storage: str
    connections: int
    # Where each number came from: "server", "option" or "assumed".
    sources: dict[str, str] = field(default_factory=dict)

    def describe(self) -> str:
        return (f"{self.memory / GB:,.1f} GB memory, {self.cores} cores, {self.storage}, "
                f"{self.connections} connections")


@dataclass(frozen=True)
class Advice:
    name: str
    advised: str
    current: str | None
    needs_restart: bool
    differs: bool
    why: str


@dataclass
class TuneReport:
    server: str | None
    size: ServerSize
    advice: list[Advice]
    applied: list[str] = field(default_factory=list)
    written: str | None = None

    @property
    def changes(self) -> list[Advice]:
        return [a for a in self.advice if a.differs]

    def to_dict(self) -> dict[str, Any]:
        return {"server": self.server, "size": asdict(self.size),
                "advice": [asdict(a) for a in self.advice], "applied": self.applied,
                "written": self.written}


def _mb_floor(value: float) -> int:
    return max(MB, int(value) // MB * MB)


def compute(size: ServerSize, preload: str | None = None) -> list[tuple[str, str, str]]:
    """(parameter, value, why) for a server of this size. `preload` is the current
    shared_preload_libraries when pg_stat_statements is to be added to it."""
    memory, cores, connections = size.memory, size.cores, size.connections
    ssd = size.storage == "ssd"
    shared_buffers = _mb_floor(memory / 4)
    per_gather = max(1, min(4, cores // 2))
    work_mem = max(4 * MB, int((memory - shared_buffers) / (connections * 3 * per_gather))
                   // MB * MB)
    max_wal = min(16 * GB, max(GB, _mb_floor(memory / 2)))
    advice = [
        ("max_connections", str(connections), "the connections the applications need"),
        ("shared_buffers", shown_size(shared_buffers), "a quarter of the memory"),
        ("effective_cache_size", shown_size(_mb_floor(memory * 3 / 4)),
         "three quarters of the memory: what the planner may expect to find cached"),
        ("maintenance_work_mem", shown_size(min(2 * GB, _mb_floor(memory / 16))),
         "a sixteenth of the memory, at most 2GB: index builds and VACUUM"),
        ("work_mem", shown_size(work_mem),
         "memory left after shared_buffers, over 3 sorts per connection and parallel workers"),
        ("wal_buffers", shown_size(min(16 * MB, max(MB, shared_buffers * 3 // 100 // MB * MB))),
         "3% of shared_buffers, at most 16MB"),
        ("checkpoint_completion_target", "0.9", "spread checkpoints over the interval"),
        ("min_wal_size", shown_size(max_wal // 4), "a quarter of max_wal_size"),
        ("max_wal_size", shown_size(max_wal), "half the memory, 1GB to 16GB"),
        ("default_statistics_target", "100", "the default: enough for these tables"),
        ("random_page_cost", "1.1" if ssd else "4",
         "SSD: a random read costs about a sequential one" if ssd
         else "HDD: a random read costs a seek"),
        ("effective_io_concurrency", "200" if ssd else "2",
         "SSD: serves many reads at once" if ssd else "HDD: one head, few reads at once"),
        ("max_worker_processes", str(max(8, cores)), "the default 8, or one per core"),
        ("max_parallel_workers", str(cores), "one per core"),
        ("max_parallel_workers_per_gather", str(per_gather), "half the cores, at most 4"),
        ("max_parallel_maintenance_workers", str(per_gather), "half the cores, at most 4"),
    ]
    if preload is not None:
        libraries = [p.strip() for p in preload.split(",") if p.strip()]
        if STATEMENTS_LIBRARY not in libraries:
            libraries.append(STATEMENTS_LIBRARY)
        advice.append(("shared_preload_libraries", ",".join(libraries),
                       "pg_stat_statements, for `edu-migrate health`'s slowest statements"))
    return advice


_SIZE_UNITS = {"B": 1, "kB": KB, "MB": MB, "GB": GB, "TB": 1024 * GB, "8kB": 8 * KB}


@dataclass(frozen=True)
class _Setting:
    shown: str
    unit: str | None
    comparable: float | str
    context: str


def _comparable(value: str, unit: str | None) -> float | str:
    """A value in comparable form: bytes for sizes (`value` in `unit`, or with its own unit
    suffix when `unit` is a size but the value is written like 4GB), numbers, or a list."""
    try:
        number = float(value)
    except ValueError:
        if unit in _SIZE_UNITS:
            return float(parse_size(value))
        return ",".join(p.strip() for p in value.split(",") if p.strip())
    return number * _SIZE_UNITS.get(unit or "", 1)


def _current_settings(conn: psycopg.Connection, names: list[str]) -> dict[str, _Setting]:
    found = {}
    for name, setting, unit, context in conn.execute(query("tune_settings"),
                                                     {"names": names}).fetchall():
        comparable = _comparable(setting, unit)
        sized = unit in _SIZE_UNITS and isinstance(comparable, float) and comparable >= 0
        # -1 means "computed by the server" (wal_buffers): shown as PostgreSQL writes it.
        shown = shown_size(int(comparable)) if sized else setting or "''"
        found[name] = _Setting(shown, unit, comparable, context)
    return found


def _on_this_machine(conn: psycopg.Connection, url: str) -> bool:
    """The server runs here when it is reached on a local address and its data directory is
    a directory of this machine."""
    host = str(parse(url, purpose="target").get("host") or "")
    if host not in LOCAL_HOSTS and not host.startswith("/"):
        return False
    try:
        row = conn.execute("SHOW data_directory").fetchone()
    except psycopg.errors.InsufficientPrivilege:
        conn.rollback()
        return False
    return row is not None and (Path(str(row[0])) / "PG_VERSION").is_file()


def _memory_of_this_machine() -> int | None:
    try:
        text = Path("/proc/meminfo").read_text(encoding="ascii")
    except OSError:
        return None
    match = re.search(r"^MemTotal:\s+(\d+) kB", text, re.MULTILINE)
    return int(match.group(1)) * KB if match else None


def _storage_of(data_directory: Path) -> str | None:
    """ssd or hdd from the kernel's `rotational` flag of the data directory's disk."""
    device = os.stat(data_directory).st_dev
    block = Path(f"/sys/dev/block/{os.major(device)}:{os.minor(device)}")
    for candidate in (block / "queue" / "rotational", block / ".." / "queue" / "rotational"):
        try:
            return "hdd" if candidate.read_text().strip() == "1" else "ssd"
        except OSError:
            continue
    return None


def server_size(conn: psycopg.Connection | None, url: str | None, *, memory: int | None,
                cores: int | None, storage: str | None, connections: int | None) -> ServerSize:
    """The options where given, else what this machine says when the server runs on it."""
    if storage is not None and storage not in STORAGE_KINDS:
        raise MigrationError(f"unknown storage {storage!r}", "use --storage ssd or hdd")
    if connections is not None and connections < 1:
        raise MigrationError("--connections must be at least 1", "e.g. --connections 100")
    if cores is not None and cores < 1:
        raise MigrationError("--cores must be at least 1", "e.g. --cores 8")
    sources = {"memory": "option", "cores": "option", "storage": "option",
               "connections": "option"}
    local = conn is not None and url is not None and _on_this_machine(conn, url)
    if memory is None or cores is None:
        where = ("the server is not reachable" if conn is None else
                 "the server is not on this machine" if not local else "")
        found_memory = _memory_of_this_machine() if local else None
        if (memory is None and found_memory is None) or (cores is None and not local):
            missing = " and ".join(n for n, v in (("--memory SIZE", memory),
                                                  ("--cores N", cores)) if v is None)
            raise PreconditionFailed(f"cannot read the server's size: "
                                     f"{where or 'its memory is unknown'}",
                                     f"give {missing} (e.g. --memory 16GB --cores 8)")
        if memory is None:
            memory, sources["memory"] = found_memory, "server"
        if cores is None:
            cores, sources["cores"] = os.cpu_count() or 1, "server"
    if storage is None:
        found_storage = None
        if local and conn is not None:
            row = conn.execute("SHOW data_directory").fetchone()
            found_storage = _storage_of(Path(str(row[0]))) if row else None
        storage = found_storage or "ssd"
        sources["storage"] = "server" if found_storage else "assumed (give --storage)"
    if connections is None:
        if conn is not None:
            row = conn.execute("SELECT current_setting('max_connections')::int").fetchone()
            connections = int(row[0]) if row else 100
            sources["connections"] = "server"
        else:
            connections, sources["connections"] = 100, "assumed (give --connections)"
    assert memory is not None and cores is not None
    return ServerSize(memory, cores, storage, connections, sources)


def _advice(size: ServerSize, conn: psycopg.Connection | None) -> list[Advice]:
    preload = None
    if conn is not None:
        available = conn.execute("SELECT 1 FROM pg_available_extensions WHERE name = %s",
                                 [STATEMENTS_LIBRARY]).fetchone()
        # pg_settings hides the row from a role that may not read it: then no advice on it.
        row = conn.execute("SELECT setting FROM pg_settings "
                           "WHERE name = 'shared_preload_libraries'").fetchone()
        if available and row is not None:
            preload = str(row[0])
    return advice_against(conn, compute(size, preload))


def advice_against(conn: psycopg.Connection | None, computed: list[tuple[str, str, str]]
                   ) -> list[Advice]:
    """(parameter, value, why) against the server's current values, when it is reachable."""
    current = _current_settings(conn, [n for n, _, _ in computed]) if conn else {}
    result = []
    for name, value, why in computed:
        setting = current.get(name)
        differs = setting is None or setting.comparable != _comparable(value, setting.unit)
        result.append(Advice(name, value, setting.shown if setting else None,
                             setting.context == "postmaster" if setting
                             else name in _RESTART_ONLY, differs, why))
    return result


# Without a server to ask: the parameters PostgreSQL reads only at start.
_RESTART_ONLY = {"max_connections", "shared_buffers", "wal_buffers", "max_worker_processes",
                 "shared_preload_libraries"}


def include_file(report: TuneReport) -> str:
    lines = [f"# edu-migrate tune: {report.size.describe()}",
             "# Include it from postgresql.conf: include_if_exists = 'edu-migrate-tune.conf'",
             "# Parameters marked (restart) take effect at the next restart; the others on "
             "reload."]
    for advice in report.advice:
        restart = "  # (restart)" if advice.needs_restart else ""
        lines.append(f"{advice.name} = '{advice.advised}'{restart}")
    return "\n".join(lines) + "\n"


def write_include(report: TuneReport, path: Path) -> None:
    if not path.resolve().parent.is_dir():
        raise MigrationError(f"cannot write {path}: its folder does not exist",
                             "create the folder or choose another path")
    partial = path.with_name(f".{path.name}.partial")
    try:
        partial.write_text(include_file(report), encoding="utf-8")
        partial.replace(path)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise MigrationError(f"cannot write {path}: {exc.strerror}",
                             "choose a writable path") from exc
    report.written = str(path)


def advise(url: str | None, *, memory: int | None, cores: int | None, storage: str | None,
           connections: int | None) -> TuneReport:
    """Advice for the server at `url` (current values read there when it is reachable)."""
    if url is None:
        size = server_size(None, None, memory=memory, cores=cores, storage=storage,
                           connections=connections)
        return TuneReport(None, size, _advice(size, None))
    try:
        with connect(url, purpose="target", read_only=True) as conn:
            size = server_size(conn, url, memory=memory, cores=cores, storage=storage,
                               connections=connections)
            return TuneReport(masked(url), size, _advice(size, conn))
    except ConnectionFailed:
        size = server_size(None, None, memory=memory, cores=cores, storage=storage,
                           connections=connections)
        return TuneReport(None, size, _advice(size, None))


def apply(url: str, report: TuneReport) -> list[str]:
    """ALTER SYSTEM for each advised value that differs, then reload; all or nothing: the right
    to set every one of them is checked first."""
    names = apply_changes(url, report.changes)
    report.applied = names
    return names


def apply_changes(url: str, changes: list[Advice]) -> list[str]:
    """ALTER SYSTEM for each of `changes`, then reload; all or nothing (the right to set every
    one of them is checked first). The names set."""
    if not changes:
        return []
    with connect(url, purpose="target", autocommit=True) as conn:
        names = [a.name for a in changes]
        denied = [name for name, allowed in conn.execute(
            "SELECT n, has_parameter_privilege(n, 'ALTER SYSTEM') FROM unnest(%s::text[]) n",
            [names]).fetchall() if not allowed]
        if denied:
            row = conn.execute("SELECT current_user").fetchone()
            user = row[0] if row else "this role"
            raise PreconditionFailed(
                f"{user} may not use ALTER SYSTEM on {', '.join(denied[:3])}"
                + (f" (and {len(denied) - 3} more)" if len(denied) > 3 else "")
                + "; nothing was changed",
                "run as a superuser, GRANT ALTER SYSTEM ON PARAMETER … to this role, or "
                "use --write FILE and include it from postgresql.conf")
        for advice in changes:
            conn.execute(sql.SQL("ALTER SYSTEM SET {} = {}").format(
                sql.Identifier(advice.name), sql.Literal(advice.advised)))
        conn.execute("SELECT pg_reload_conf()")
    return names
