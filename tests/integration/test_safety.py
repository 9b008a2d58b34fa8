"""Safe to run, stop and undo: the source untouched and freezable, preflight, backup and restore,
status and rollback, through the command line, on the default server and on PostgreSQL 15."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
import pytest

from edu_migrate import api
from edu_migrate.checks import preflight
from edu_migrate.config import Settings
from edu_migrate.errors import PreconditionFailed
from tests.faults.harness import cli, database_digest, one_error_line, result_digests, url_args
from tests.integration.helpers import prepared, scalar


def _json(path: Path) -> object:
    return json.loads(path.read_text(encoding="utf-8"))


def _findings(settings: Settings, name: str) -> dict[str, dict[str, str]]:
    result = cli(settings, "preflight", *url_args(settings), "--json",
                 str(settings.log_dir / name))
    report = _json(settings.log_dir / name)
    assert isinstance(report, dict)
    assert result.returncode == (0 if report["ready"] else 1), result.stderr
    return {f["name"]: f for f in report["findings"]}


def test_full_run_leaves_the_source_untouched_and_frozen_on_request(settings: Settings) -> None:
    prepared(settings)
    source = str(settings.source_url)
    before = database_digest(source)
    run = cli(settings, "migrate", "--all", "--freeze-source", *url_args(settings))
    assert run.returncode == 0, run.stderr
    assert "Froze the source database" in run.stdout
    with psycopg.connect(source) as conn:
        assert conn.execute("SHOW default_transaction_read_only").fetchone() == ("on",)
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            conn.execute("DELETE FROM users")
    assert _findings(settings, "frozen.json")["source read-only"]["detail"].startswith("frozen")
    for command in (["validate", *url_args(settings)],
                    ["backup", "--verify-restore", *url_args(settings)],
                    ["rollback", "--all", "--yes", "--target", str(settings.target_url)]):
        done = cli(settings, *command)
        assert done.returncode == 0, (command, done.stderr)
    assert database_digest(source) == before
    thawed = cli(settings, "unfreeze-source", "--source", source)
    assert thawed.returncode == 0, thawed.stderr
    with psycopg.connect(source) as conn:
        assert conn.execute("SHOW default_transaction_read_only").fetchone() == ("off",)
    assert database_digest(source) == before


def test_preflight_backup_status_rollback_restore(settings_any_server: Settings) -> None:
    settings = settings_any_server
    api.generate(settings, scale=0.02, seed=7)
    first = _findings(settings, "first.json")
    assert first["source version"]["status"] == "ok"
    assert first["legacy tables"]["status"] == "ok"
    assert first["target schema"]["status"] == "warn"
    assert first["backup"]["status"] == "warn"
    assert first["disk space"]["status"] == "ok"

    backed = cli(settings, "backup", "--verify-restore", *url_args(settings))
    assert backed.returncode == 0, backed.stderr
    assert "only the source is dumped" in backed.stdout
    manifest = _json(settings.backup_dir / "manifest.json")
    assert isinstance(manifest, dict)
    (source_dump,) = manifest["backups"]
    assert source_dump["verified"] == "restored" and source_dump["role"] == "source"
    assert (settings.backup_dir / source_dump["file"]).stat().st_mode & 0o077 == 0

    api.schema_apply(settings)
    ready = _findings(settings, "ready.json")
    assert {f["status"] for f in ready.values()} == {"ok"}, ready

    assert cli(settings, "migrate", "--all", *url_args(settings)).returncode == 0
    target = str(settings.target_url)
    migrated = result_digests(target)
    status = cli(settings, "status", "--target", target, "--json", "-")
    assert status.returncode == 0, status.stderr
    state = json.loads(status.stdout[status.stdout.index("{"):])
    assert [p["status"] for p in state["phases"]] == ["done"] * 5
    assert state["phases"][0]["rows"]["migrate_users"] > 0
    assert all(p["started_at"] and p["finished_at"] for p in state["phases"])

    backed = cli(settings, "backup", *url_args(settings))
    assert backed.returncode == 0, backed.stderr
    target_dump = next(r for r in _json(settings.backup_dir / "manifest.json")["backups"]
                       if r["role"] == "target")
    assert target_dump["verified"] == "listed"
    assert scalar(target, "SELECT count(*) FROM migration.run_log WHERE event = 'backup'") == 2

    rolled = cli(settings, "rollback", "--phase", "2", "--yes", "--target", target)
    assert rolled.returncode == 0, rolled.stderr
    assert scalar(target, "SELECT count(*) FROM grades") == 0
    state = api.status(settings)
    assert [p["status"] for p in state["phases"]] == ["done", "done", "pending", "pending",
                                                      "pending"]

    declined = cli(settings, "restore", str(settings.backup_dir / target_dump["file"]),
                   *url_args(settings), input_text="n\n")
    assert declined.returncode != 0
    assert scalar(target, "SELECT count(*) FROM grades") == 0
    restored = cli(settings, "restore", str(settings.backup_dir / target_dump["file"]), "--yes",
                   *url_args(settings))
    assert restored.returncode == 0, restored.stderr
    assert "every count equal to the backup's" in restored.stdout
    assert result_digests(target) == migrated
    assert [p["status"] for p in api.status(settings)["phases"]] == ["done"] * 5

    copy_url = target.replace(str(psycopg.conninfo.conninfo_to_dict(target)["dbname"]),
                              "edu_restored_copy")
    try:
        into = cli(settings, "restore", source_dump["file"], "--into", copy_url, "--yes",
                   *url_args(settings))
        assert into.returncode == 0, into.stderr
        assert scalar(copy_url, "SELECT count(*) FROM users") == source_dump["table_counts"][
            "public.users"]
    finally:
        with psycopg.connect(str(settings.source_url), autocommit=True) as conn:
            conn.execute("DROP DATABASE IF EXISTS edu_restored_copy WITH (FORCE)")


def test_foreign_tables_block_migrate_and_preflight(settings: Settings) -> None:
    prepared(settings)
    target = str(settings.target_url)
    with psycopg.connect(target, autocommit=True) as conn:
        conn.execute("CREATE TABLE public.payroll (id int)")
    findings = _findings(settings, "foreign.json")
    assert findings["foreign tables"]["status"] == "fail"
    assert "payroll" in findings["foreign tables"]["detail"]
    result = cli(settings, "migrate", "--all", *url_args(settings))
    line = one_error_line(result.stderr)
    assert result.returncode != 0 and "not edu-migrate's: payroll" in line
    assert scalar(target, "SELECT count(*) FROM migration.phase_runs") == 0


def test_too_little_disk_refuses_unless_forced(settings: Settings,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    prepared(settings)
    monkeypatch.setattr(preflight, "DISK_NEED_FACTOR", 10**9)
    with pytest.raises(PreconditionFailed, match="too little disk"):
        api.migrate(settings)
    target = str(settings.target_url)
    assert scalar(target, "SELECT count(*) FROM migration.phase_runs") == 0
    api.migrate(settings, [1], force=True)
    assert scalar(target, "SELECT count(*) FROM migration.run_log "
                          "WHERE event = 'preflight overridden' "
                          "AND detail::text LIKE '%disk space%'") == 1
