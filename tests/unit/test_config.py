from __future__ import annotations

from pathlib import Path

import pytest

from edu_migrate.config import load_settings
from edu_migrate.errors import MigrationError
from edu_migrate.pg.urls import masked


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("EDU_SOURCE_URL", "EDU_TARGET_URL", "EDU_BATCH_SIZE", "EDU_WORKERS",
                 "EDU_EXCLUDE", "EDU_MIGRATE_HOME", "EDU_MIGRATE_CONFIG", "EDU_MAPPING"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)


def test_flags_override_env_which_overrides_file(monkeypatch: pytest.MonkeyPatch,
                                                 tmp_path: Path) -> None:
    (tmp_path / "edu-migrate.toml").write_text(
        '[edu-migrate]\nbatch_size = 10\nworkers = 3\nsource_url = "postgresql://f/edu"\n')
    monkeypatch.setenv("EDU_BATCH_SIZE", "20")
    settings = load_settings({"workers": 4})
    assert (settings.batch_size, settings.workers) == (20, 4)
    assert settings.source_url == "postgresql://f/edu"


def test_invalid_values_are_one_clear_error() -> None:
    with pytest.raises(MigrationError, match="batch_size"):
        load_settings({"batch_size": 0})
    with pytest.raises(MigrationError, match="batch_size"):
        load_settings({"batch_size": -5})


def test_broken_config_file(tmp_path: Path) -> None:
    (tmp_path / "edu-migrate.toml").write_text("batch_size = = 3")
    with pytest.raises(MigrationError, match="not valid TOML"):
        load_settings()


def test_missing_explicit_config_file(tmp_path: Path) -> None:
    with pytest.raises(MigrationError, match="does not exist"):
        load_settings(config_file=tmp_path / "nope.toml")


def test_exclusions_from_a_comma_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDU_EXCLUDE", "sessions, login_%")
    assert load_settings().exclude == ("sessions", "login_%")


@pytest.mark.parametrize("url", [
    "postgresql://admin:s3cr3t@db:5432/edu",
    "host=db user=admin password=s3cr3t dbname=edu",
])
def test_masked_urls_never_show_the_password(url: str) -> None:
    shown = masked(url)
    assert "s3cr3t" not in shown
    assert "admin" in shown and "edu" in shown
