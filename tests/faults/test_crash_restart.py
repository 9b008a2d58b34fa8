"""A real crash of the target server between phases: `pg_ctl stop -m immediate`, then a start.
The crash empties every UNLOGGED table, the staged copies and phase 5's parsed marks among
them, while the run that staged them goes on (its next phase opens a new session). No phase
may derive from a staged table a crash emptied.

The target runs on a server of its own (the one crashed); the source stays on the session's
server, so the run's source snapshot outlives the crash, as it would in production."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from edu_migrate import api
from edu_migrate.config import Settings
from edu_migrate.pg.embedded import EmbeddedServer, find_bin_dir
from edu_migrate.pg.urls import with_database
from edu_migrate.phases.runner import PHASES
from edu_migrate.runlog import Reporter
from tests.integration.helpers import admin_sql, drop_databases
from tests.integration.helpers import scalar as _scalar


@pytest.fixture(scope="module")
def crashable(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedServer]:
    """A server of this module's own, to crash."""
    server = EmbeddedServer(tmp_path_factory.mktemp("crashable"), bin_dir=find_bin_dir())
    server.start()
    yield server
    server.stop()


def crash_and_restart(server: EmbeddedServer) -> None:
    """What a power cut does to the server: no shutdown checkpoint; the start recovers from the
    WAL and resets every UNLOGGED table to empty."""
    port = server.status().port
    stopped = server._run(str(server.bin_dir / "pg_ctl"), "-D", str(server.data_dir), "-w",
                          "-m", "immediate", "stop")
    assert stopped.returncode == 0, stopped.stderr
    # On the same port (the server binds it again at once, where a test's bind would wait
    # out the crashed sessions' TIME_WAIT): the run's next phase connects to its URL.
    started = server._run(str(server.bin_dir / "pg_ctl"), "-D", str(server.data_dir), "-w",
                          "-l", str(server.log_file), "-o", f"-p {port}", "start")
    assert started.returncode == 0, started.stderr


class CrashBeforePhase(Reporter):
    """Crashes the target server when the run announces `title`: between two phases, once the
    marks staged and parsed in the background are committed and no session of the run is
    open on the target but the one holding the migration lock."""

    def __init__(self, server: EmbeddedServer, target_url: str, title: str) -> None:
        self.server, self.target_url, self.title = server, target_url, title
        self.crashed = False

    def line(self, text: str) -> None:
        super().line(text)
        if text != self.title or self.crashed:
            return
        admin = self.server.status().url("postgres")
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            with psycopg.connect(admin, autocommit=True) as conn:
                row = conn.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE %s "
                    "AND query NOT LIKE '%%pg_try_advisory_lock%%'",  # but the run's lock
                    [f"edu-migrate % pid={os.getpid()}"]).fetchone()
            with psycopg.connect(self.target_url, autocommit=True) as conn:
                parsed = conn.execute(
                    "SELECT coalesce((SELECT analyze_count FROM pg_stat_user_tables WHERE "
                    "schemaname = 'stage' AND relname = 'parsed_grades'), 0)").fetchone()
            if row and row[0] == 0 and parsed and parsed[0] > 0:
                break
            time.sleep(0.1)
        else:
            raise AssertionError("the marks were not staged and parsed in the background")
        crash_and_restart(self.server)
        self.crashed = True


def test_a_crash_between_phases_never_leaves_a_phase_deriving_from_emptied_copies(
        admin_url: str, crashable: EmbeddedServer, tmp_path: Path) -> None:
    """`migrate --all`: the marks are staged and parsed in the background while phases 1–3
    run; the target crashes before phase 4. Phase 4's courses and phase 5's marks, their
    enrollments and the parsed marks are empty now: each phase finds that out against
    migration.mirror_state in its own transaction and stages again, and the result validates
    with every legacy mark accounted for (not a phase 5 done with no marks)."""
    suffix = uuid.uuid4().hex[:8]
    source, target = f"crash_src_{suffix}", f"crash_dst_{suffix}"
    admin_sql(admin_url, sql.SQL("CREATE DATABASE {}").format(
        sql.Identifier(source)))
    target_url = crashable.status().url(target)
    settings = Settings(source_url=with_database(admin_url, source), target_url=target_url,
                        home=tmp_path / "home", log_dir=tmp_path / "logs",
                        backup_dir=tmp_path / "backups", batch_size=5_000)
    try:
        api.generate(settings, scale=0.005, seed=5)
        api.schema_apply(settings)
        reporter = CrashBeforePhase(crashable, target_url, PHASES[4].title)
        api.migrate(settings, reporter=reporter, force=True)
        assert reporter.crashed
        marks = _scalar(str(settings.source_url), "SELECT count(*) FROM grades")
        assert _scalar(target_url, "SELECT count(*) FROM stage.grades") == marks
        api.require_valid(api.validate(settings))
    finally:
        drop_databases(admin_url, source)
        drop_databases(crashable.status().url("postgres"), target)
