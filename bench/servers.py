"""The servers the bench runs on, and the CPU time their processes use.

`tuned`: the embedded server with the settings edu-migrate gives it (edu_migrate.pg.embedded).
`stock`: the machine's PostgreSQL 15 with the settings initdb writes, plus only what a server of
the bench's own needs to be reached (loopback, no Unix socket): what users' servers run.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from edu_migrate.pg.embedded import SERVER_SETTINGS, EmbeddedServer, _system_bin_dir, find_bin_dir

STOCK_MAJOR = 15

# How a server of the bench's own is reached; nothing here changes how fast it is.
REACH_ONLY = """
listen_addresses = '127.0.0.1'
unix_socket_directories = ''
"""


class StockServer(EmbeddedServer):
    """An EmbeddedServer whose postgresql.conf keeps initdb's defaults (fsync, shared_buffers,
    wal_level, max_wal_size … as shipped)."""

    def _initdb(self) -> None:
        super()._initdb()
        conf = self.data_dir / "postgresql.conf"
        text = conf.read_text(encoding="utf-8")
        if SERVER_SETTINGS not in text:
            raise RuntimeError(f"{conf}: the embedded settings were not found where expected; "
                               "the stock server would not be stock")
        conf.write_text(text.replace(SERVER_SETTINGS, REACH_ONLY), encoding="utf-8")


@dataclass(frozen=True)
class ServerKind:
    name: str
    description: str
    server: EmbeddedServer


def server_kinds(work: Path, wanted: list[str]) -> tuple[list[ServerKind], list[str]]:
    """The servers asked for that this machine has; and, for each one it lacks, why."""
    kinds: list[ServerKind] = []
    skipped: list[str] = []
    for name in wanted:
        if name == "tuned":
            kinds.append(ServerKind("tuned", "the embedded server, edu-migrate's settings",
                                    EmbeddedServer(work / "server", bin_dir=find_bin_dir())))
        elif name == "stock":
            bin_dir = _system_bin_dir(STOCK_MAJOR)
            if bin_dir is None:
                skipped.append(f"stock: PostgreSQL {STOCK_MAJOR} binaries are not installed "
                               f"(/usr/lib/postgresql/{STOCK_MAJOR}/bin)")
                continue
            kinds.append(ServerKind("stock", f"the machine's PostgreSQL {STOCK_MAJOR}, stock "
                                    "settings", StockServer(work / "server-pg15",
                                                            bin_dir=bin_dir)))
        else:
            raise SystemExit(f"unknown server {name!r}: choose tuned, stock or both")
    return kinds, skipped


_TICKS = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
            text = handle.read()
    except OSError:
        return None
    # After the command name (in parentheses, may hold spaces): state is field 3.
    return text[text.rindex(")") + 2:].split()


def server_cpu_seconds(data_dir: Path) -> float:
    """CPU seconds (user + system) used so far by a server's processes: the postmaster's own,
    its exited children's (cutime/cstime, summed by the kernel when it reaps them), and its
    living children's (backends, parallel workers, checkpointer, walwriter …)."""
    pid_file = data_dir / "postmaster.pid"
    if not pid_file.exists():
        return 0.0
    postmaster = int(pid_file.read_text(encoding="ascii").split()[0])
    fields = _stat_fields(postmaster)
    if fields is None:
        return 0.0
    # Fields numbered from state (3): ppid 4, utime 14, stime 15, cutime 16, cstime 17.
    ticks = sum(int(fields[i - 3]) for i in (14, 15, 16, 17))
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        child = _stat_fields(int(entry.name))
        if child is not None and int(child[4 - 3]) == postmaster:
            ticks += int(child[14 - 3]) + int(child[15 - 3])
    return ticks / _TICKS


# What logical decoding needs (the change feed, bench/feed.py); the rest stays stock.
LOGICAL = """
wal_level = logical
max_replication_slots = 4
max_wal_senders = 4
"""


class LogicalStockServer(StockServer):
    """The stock server with logical decoding allowed: the change feed's bench."""

    def _initdb(self) -> None:
        super()._initdb()
        with (self.data_dir / "postgresql.conf").open("a", encoding="utf-8") as conf:
            conf.write("\n# the change feed's bench: logical decoding\n" + LOGICAL)
        with (self.data_dir / "pg_hba.conf").open("a", encoding="utf-8") as hba:
            hba.write("host  replication all 127.0.0.1/32 scram-sha-256\n")
