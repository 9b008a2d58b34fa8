"""After the cutover, against a real server: health, tune, backup schedule and list,
decommission and compare-queries, and their bad input (one line, non-zero exit)."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from edu_migrate import api
from edu_migrate.aftercare.schedule import plan_schedule
from edu_migrate.aftercare.tune import TuneReport
from edu_migrate.backup import read_manifest
from edu_migrate.config import Settings
from edu_migrate.errors import MigrationError, PreconditionFailed, ValidationFailed
from edu_migrate.pg.urls import database_name, with_database
from tests.conftest import make_settings
from tests.integration.helpers import prepared
from tests.integration.test_cli_errors import assert_one_line_error, run_cli

GUIDES_LIST = {"shared_buffers": "4GB", "effective_cache_size": "12GB",
               "maintenance_work_mem": "1GB", "checkpoint_completion_target": "0.9",
               "wal_buffers": "16MB", "default_statistics_target": "100",
               "random_page_cost": "1.1", "effective_io_concurrency": "200",
               "work_mem": "10MB", "min_wal_size": "2GB", "max_wal_size": "8GB"}


@pytest.fixture(scope="module")
def migrated(admin_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """One migrated pair for the read-only checks of this module (each test undoes its
    changes)."""
    for settings in make_settings(admin_url, tmp_path_factory.mktemp("aftercare")):
        prepared(settings, scale=0.01)
        api.migrate(settings)
        yield settings


@pytest.fixture
def role_without_rights(admin_url: str) -> Iterator[str]:
    """A login role that is neither superuser nor may create databases; its name."""
    name = f"edu_plain_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD 'plain-pw'").format(
            sql.Identifier(name)))
    yield name
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(name)))
        conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


def as_role(url: str, role: str) -> str:
    return make_conninfo(url, user=role, password="plain-pw")


# --- health -----------------------------------------------------------------------------------

def test_health_finds_an_index_dropped_on_purpose_and_its_command_restores_it(
        migrated: Settings) -> None:
    target = str(migrated.target_url)

    def fk_findings() -> list[str]:
        return [f.command for f in api.health(migrated).findings
                if f.check == "foreign key without index" and '"grades"' in f.command]

    assert fk_findings() == []
    with psycopg.connect(target, autocommit=True) as conn:
        conn.execute("DROP INDEX grades_enrollment_idx")
    try:
        report = api.health(migrated)
        found = [f for f in report.findings if f.check == "foreign key without index"]
        assert [f.command for f in found] == [
            'CREATE INDEX CONCURRENTLY "grades_enrollment_id_idx" ON "public"."grades" '
            '("enrollment_id");']
        assert found[0].severity == "critical" and report.needs_action  # ~32,000 marks
        with psycopg.connect(target, autocommit=True) as conn:
            conn.execute(found[0].command.encode())
        assert fk_findings() == []
    finally:
        with psycopg.connect(target, autocommit=True) as conn:
            conn.execute("DROP INDEX IF EXISTS grades_enrollment_id_idx")
            conn.execute("CREATE INDEX IF NOT EXISTS grades_enrollment_idx "
                         "ON grades (enrollment_id)")


def test_health_needs_action_when_row_security_is_no_longer_forced(migrated: Settings) -> None:
    target = str(migrated.target_url)
    before = [f for f in api.health(migrated).findings if f.check == "row-level security"]
    assert [f.severity for f in before] == ["info"]
    with psycopg.connect(target, autocommit=True) as conn:
        conn.execute("ALTER TABLE grades NO FORCE ROW LEVEL SECURITY")
    try:
        report = api.health(migrated)
        loose = [f for f in report.findings if f.check == "row-level security"]
        assert [(f.severity, f.command) for f in loose] == [
            ("critical", 'ALTER TABLE "public"."grades" ENABLE ROW LEVEL SECURITY, '
                         'FORCE ROW LEVEL SECURITY;')]
        assert report.needs_action
        with psycopg.connect(target, autocommit=True) as conn:
            conn.execute(loose[0].command.encode())
        assert [f.severity for f in api.health(migrated).findings
                if f.check == "row-level security"] == ["info"]
    finally:
        with psycopg.connect(target, autocommit=True) as conn:
            conn.execute("ALTER TABLE grades FORCE ROW LEVEL SECURITY")


def test_health_reports_the_redundant_index_and_the_missing_backup(migrated: Settings) -> None:
    report = api.health(migrated)
    redundant = [f.command for f in report.findings if f.check == "redundant index"]
    assert 'DROP INDEX CONCURRENTLY "public"."assessments_offering_idx";' in redundant
    backup = [f for f in report.findings if f.check == "backup"]
    assert [(f.severity, f.command) for f in backup] == [
        ("critical", "edu-migrate backup --verify-restore --only target")]
    result = run_cli("health", "--target", str(migrated.target_url), "--json", "-",
                     env={"EDU_BACKUP_DIR": str(migrated.backup_dir)})
    assert result.returncode == 1
    assert json.loads(result.stdout)["needs_action"] is True


# --- tune -------------------------------------------------------------------------------------

def advised(report: TuneReport) -> dict[str, str]:
    return {a.name: a.advised for a in report.advice}


def test_tune_reproduces_the_guides_list_for_its_machine_and_scales_with_the_size(
        migrated: Settings) -> None:
    guide = api.tune(migrated, memory="16GB", cores=8, storage="ssd", connections=100)
    assert {k: v for k, v in advised(guide).items() if k in GUIDES_LIST} == GUIDES_LIST
    assert guide.server is not None
    assert all(a.current is not None for a in guide.advice if a.name in GUIDES_LIST)
    small = advised(api.tune(migrated, memory="4GB", cores=2, storage="hdd", connections=50))
    large = advised(api.tune(migrated, memory="64GB", cores=32, storage="ssd", connections=100))
    assert (small["shared_buffers"], large["shared_buffers"]) == ("1GB", "16GB")
    assert (small["effective_cache_size"], large["effective_cache_size"]) == ("3GB", "48GB")
    assert (small["maintenance_work_mem"], large["maintenance_work_mem"]) == ("256MB", "2GB")
    assert (small["max_parallel_workers"], large["max_parallel_workers"]) == ("2", "32")
    assert (small["random_page_cost"], small["effective_io_concurrency"]) == ("4", "2")
    assert small["max_connections"] == "50"


def test_tune_refuses_when_it_cannot_read_the_size(migrated: Settings,
                                                   role_without_rights: str) -> None:
    plain = as_role(with_database(str(migrated.target_url), "postgres"), role_without_rights)
    with pytest.raises(PreconditionFailed, match="cannot read the server's size"):
        api.tune(migrated.model_copy(update={"target_url": plain}))
    unreachable = migrated.model_copy(
        update={"target_url": "postgresql://postgres@127.0.0.1:1/edu_v2"})
    with pytest.raises(PreconditionFailed, match="not reachable"):
        api.tune(unreachable, memory="8GB")
    offline = api.tune(unreachable, memory="8GB", cores=4)
    assert offline.server is None and advised(offline)["shared_buffers"] == "2GB"
    result = run_cli("tune", "--target", plain)
    assert_one_line_error(result, "cannot read the server's size", "--memory SIZE")


def auto_conf_entries(url: str) -> list[tuple[str, str]]:
    with psycopg.connect(url) as conn:
        return [tuple(r) for r in conn.execute(
            "SELECT name, setting FROM pg_file_settings WHERE sourcefile LIKE "
            "'%postgresql.auto.conf' ORDER BY 1").fetchall()]


def test_tune_apply_without_the_right_changes_nothing(migrated: Settings,
                                                      role_without_rights: str,
                                                      tmp_path: Path) -> None:
    plain = migrated.model_copy(update={"target_url": as_role(
        with_database(str(migrated.target_url), "postgres"), role_without_rights)})
    before = auto_conf_entries(str(migrated.target_url))
    with pytest.raises(PreconditionFailed, match="may not use ALTER SYSTEM"):
        api.tune(plain, memory="8GB", cores=2, apply=True)
    assert auto_conf_entries(str(migrated.target_url)) == before
    written = tmp_path / "tune.conf"
    api.tune(plain, memory="8GB", cores=2, write=written)
    assert "shared_buffers = '2GB'  # (restart)" in written.read_text()


def test_tune_apply_sets_the_values_on_a_server_of_its_own(tmp_path: Path) -> None:
    from edu_migrate.pg.embedded import EmbeddedServer, find_bin_dir

    server = EmbeddedServer(tmp_path / "own", bin_dir=find_bin_dir())
    url = server.start().url("postgres")
    try:
        own = Settings(target_url=url, source_url=url, home=tmp_path / "home",
                       log_dir=tmp_path / "logs", backup_dir=tmp_path / "backups")
        report = api.tune(own, memory="3GB", cores=2, storage="ssd", connections=40,
                          apply=True)
        entries = dict(auto_conf_entries(url))
        assert entries["shared_buffers"] == "768MB"
        assert entries["max_connections"] == "40"
        with psycopg.connect(url) as conn:  # a reloadable value is live at once
            row = conn.execute("SHOW random_page_cost").fetchone()
        assert row is not None and row[0] == "1.1"
        assert "work_mem" in report.applied
        # After a restart pg_stat_statements is loaded: health lists the statements.
        assert "shared_preload_libraries" in report.applied
        before = [f.message for f in api.health(own).findings if f.check == "statements"]
        assert "not loaded" in before[0]
        server.stop()
        # The restarted server takes another port when its old one is not free again yet.
        url = server.start().url("postgres")
        own = own.model_copy(update={"target_url": url, "source_url": url})
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION pg_stat_statements")
            for _ in range(3):
                conn.execute("SELECT count(*) FROM pg_class WHERE relname LIKE 'pg_%'")
        statements = api.health(own).statements
        assert any("FROM pg_class WHERE relname LIKE" in s["query"] and s["calls"] == 3
                   for s in statements if s["kind"] == "most frequent")
    finally:
        server.stop()


# --- backup schedule and list -----------------------------------------------------------------

def test_backup_schedule_runs_a_verified_target_backup_and_never_carries_a_password() -> None:
    plan = plan_schedule("03:15", 7, "postgresql://migrator@db-new/edu_v2", None)
    line = plan.cron_line()
    assert line.startswith("15 3 * * * cd ")
    assert ("backup --verify-restore --only target --keep-days 7 --target "
            "postgresql://migrator@db-new/edu_v2") in line
    assert "OnCalendar=*-*-* 03:15:00" in plan.systemd_units()["edu-migrate-backup.timer"]
    with pytest.raises(MigrationError, match="holds a password"):
        plan_schedule("03:15", 7, "postgresql://migrator:secret@db-new/edu_v2", None)
    result = run_cli("backup", "schedule", "--at", "25:00")
    assert_one_line_error(result, "cannot read the time '25:00'")


# --- decommission -----------------------------------------------------------------------------

@pytest.fixture
def old_and_new(settings: Settings) -> Settings:
    """A scratch 'old' database with a table of rows, and an edu_v2 with its schema."""
    with psycopg.connect(str(settings.source_url)) as conn:
        conn.execute("CREATE TABLE marks AS SELECT g AS id FROM generate_series(1, 500) g")
    api.schema_apply(settings)
    return settings


def record_cutover(settings: Settings, days_ago: float) -> None:
    with psycopg.connect(str(settings.target_url)) as conn:
        conn.execute("INSERT INTO migration.run_log (at, event) VALUES "
                     "(now() - make_interval(secs => %s), 'cutover')", [days_ago * 86400])


def database_exists(settings: Settings) -> bool:
    name = database_name(str(settings.source_url))
    with psycopg.connect(with_database(str(settings.source_url), "postgres")) as conn:
        return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                            [name]).fetchone() is not None


def test_decommission_refuses_without_a_recorded_cutover_and_within_30_days(
        old_and_new: Settings) -> None:
    with pytest.raises(PreconditionFailed, match="no cutover is recorded"):
        api.decommission(old_and_new, typed_name=database_name(str(old_and_new.source_url)))
    record_cutover(old_and_new, days_ago=3)
    with pytest.raises(PreconditionFailed, match="is kept for 30 days"):
        api.decommission(old_and_new, typed_name=database_name(str(old_and_new.source_url)))
    dry = api.decommission(old_and_new, force=True, dry_run=True)
    assert dry.forced and not dry.dropped and len(dry.steps) == 8
    assert database_exists(old_and_new)
    assert not old_and_new.backup_dir.exists()
    result = run_cli("decommission", "--source", str(old_and_new.target_url),
                     "--target", str(old_and_new.target_url))
    assert_one_line_error(result, "is the target database itself")


def test_decommission_never_drops_without_a_verified_final_backup(
        old_and_new: Settings, role_without_rights: str, admin_url: str) -> None:
    name = database_name(str(old_and_new.source_url))
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("ALTER DATABASE {} OWNER TO {}").format(
            sql.Identifier(name), sql.Identifier(role_without_rights)))
    with psycopg.connect(str(old_and_new.source_url)) as conn:
        conn.execute(sql.SQL("ALTER TABLE marks OWNER TO {}").format(
            sql.Identifier(role_without_rights)))
    record_cutover(old_and_new, days_ago=31)
    # The owner may dump and drop its database, but not create the scratch one to restore into.
    owner = old_and_new.model_copy(update={"source_url": as_role(str(old_and_new.source_url),
                                                                 role_without_rights)})
    try:
        with pytest.raises(PreconditionFailed, match="could not be verified by restore"):
            api.decommission(owner, typed_name=name)
        assert database_exists(old_and_new)
        assert [(r.verified, r.sha256) for r in read_manifest(old_and_new.backup_dir)] == [
            ("listed", None)]
    finally:
        with psycopg.connect(str(old_and_new.source_url)) as conn:
            conn.execute("ALTER TABLE marks OWNER TO CURRENT_USER")
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("ALTER DATABASE {} OWNER TO CURRENT_USER").format(
                sql.Identifier(name)))


def test_decommission_with_a_verified_backup_drops_the_old_database(
        old_and_new: Settings) -> None:
    record_cutover(old_and_new, days_ago=31)
    with pytest.raises(MigrationError, match="does not match"):
        api.decommission(old_and_new, ask_name=lambda _: "not-it")
    assert database_exists(old_and_new)
    result = api.decommission(old_and_new, ask_name=lambda shown: shown)
    assert result.dropped and not database_exists(old_and_new)
    assert result.backup is not None and result.backup.verified == "restored"
    # Both runs took a verified final backup; the refused one's is kept too.
    final = [r for r in read_manifest(old_and_new.backup_dir) if r.sha256]
    assert len(final) == 2 and final[-1].file == result.backup.file
    final = final[-1:]
    dump = (old_and_new.backup_dir / final[0].file).read_bytes()
    assert final[0].sha256 == hashlib.sha256(dump).hexdigest()
    assert final[0].table_counts == {"public.marks": 500}
    with psycopg.connect(str(old_and_new.target_url)) as conn:
        logged = conn.execute("SELECT detail ->> 'sha256' FROM migration.run_log "
                              "WHERE event = 'decommission'").fetchall()
    assert logged == [(final[0].sha256,)]
    listed = api.backup_list(old_and_new)
    assert (listed[0]["file"], listed[0]["verified"], listed[0]["sha256"]) == (
        final[0].file, "restored", final[0].sha256)


# --- compare-queries --------------------------------------------------------------------------

def test_compare_queries_exits_non_zero_past_the_threshold(migrated: Settings,
                                                           tmp_path: Path) -> None:
    queries = tmp_path / "queries.toml"
    queries.write_text('[[query]]\nname = "same"\nold = "SELECT 1"\nnew = "SELECT 1"\n\n'
                       '[[query]]\nname = "sleepy"\nold = "SELECT 1"\n'
                       'new = "SELECT pg_sleep(0.05)"\n')
    report = api.compare_queries(migrated, queries_file=queries, repeats=3,
                                 threshold_percent=1000, min_difference_ms=10)
    assert [t.name for t in report.timings][-2:] == ["same", "sleepy"]
    assert len(report.timings) == 7
    assert [t.name for t in report.slower] == ["sleepy"], [
        (t.name, t.old_ms, t.new_ms) for t in report.timings]
    transcript = report.timings[0]
    assert transcript.new_plan["indexes"]  # the student's enrollments through an index
    with pytest.raises(ValidationFailed, match="sleepy"):
        api.require_no_slowdown(report)


def test_compare_queries_refuses_a_file_whose_sql_does_not_parse(migrated: Settings,
                                                                 tmp_path: Path) -> None:
    queries = tmp_path / "queries.toml"
    queries.write_text('[[query]]\nname = "typo"\nold = "SELECT 1"\nnew = "SELEC 1"\n')
    with pytest.raises(MigrationError, match="the new SQL of 'typo' does not run on edu_v2"):
        api.compare_queries(migrated, queries_file=queries, repeats=1)
    result = run_cli("compare-queries", "--queries", str(queries), "--source",
                     str(migrated.source_url), "--target", str(migrated.target_url))
    assert_one_line_error(result, "does not run on edu_v2", "syntax error")
    queries.write_text('[[query]]\nold = "SELECT 1"\n')
    with pytest.raises(MigrationError, match="needs both old and new SQL"):
        api.compare_queries(migrated, queries_file=queries, repeats=1)


# --- the cutover, as decommission counts from it ----------------------------------------------

def test_a_passing_cutover_check_records_the_cutover_and_a_failing_one_does_not(
        migrated: Settings, tmp_path: Path) -> None:
    import os
    import socket
    import subprocess
    import sys
    import time

    import httpx

    from edu_migrate.aftercare.decommission import cutover_time

    target = str(migrated.target_url)
    assert cutover_time(target) is None
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "EDU_LOG_DIR": str(tmp_path / "logs"), "EDU_TARGET_URL": target,
           "EDU_SOURCE_URL": str(migrated.source_url)}
    server = subprocess.Popen([sys.executable, "-m", "edu_migrate", "serve", "--port",
                               str(port)], env=env, cwd=tmp_path, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(base + "/openapi.json", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        failing = api.cutover_check(migrated, base, {"student": "nobody:wrong"})
        assert not failing.passed and cutover_time(target) is None
        passing = api.cutover_check(migrated, base, {})
        assert passing.passed
        first = cutover_time(target)
        assert first is not None
        api.cutover_check(migrated, base, {})
        assert cutover_time(target) == first  # days count from the first passing check
    finally:
        server.terminate()
        server.wait(timeout=15)
        with psycopg.connect(target) as conn:
            conn.execute("DELETE FROM migration.run_log WHERE event = 'cutover'")


# --- retention --------------------------------------------------------------------------------

def test_keep_days_removes_old_dumps_but_never_the_newest_verified_or_a_final_one(
        migrated: Settings) -> None:
    from dataclasses import replace
    from datetime import UTC, datetime, timedelta

    from edu_migrate.backup import prune, record_backup
    from edu_migrate.runlog import Reporter

    made = api.backup(migrated, only="target", keep_days=14)
    assert [r.role for r in made] == ["target"]
    newest = made[0]
    folder = migrated.backup_dir
    now = datetime.now(UTC)

    def aged(name: str, days: int, verified: str, sha256: str | None = None) -> str:
        (folder / name).write_bytes(b"dump")
        record_backup(folder, replace(newest, file=name, verified=verified, sha256=sha256,
                                      created_at=(now - timedelta(days=days)).isoformat()),
                      None)
        return name

    old_verified = aged("old_verified.dump", 20, "restored")
    old_final = aged("old_final.dump", 40, "restored", sha256="ab" * 32)
    recent = aged("recent.dump", 2, "listed")
    removed = prune(folder, newest, 14, Reporter())
    # The newest dump is only listed (no --verify-restore): the newest verified one stays.
    assert removed == []
    verified_newest = aged("verified_newest.dump", 1, "restored")
    removed = prune(folder, newest, 14, Reporter())
    assert removed == [old_verified]
    kept = {r.file for r in read_manifest(folder)}
    assert kept == {newest.file, old_final, recent, verified_newest}
    assert not (folder / old_verified).exists() and (folder / old_final).exists()
