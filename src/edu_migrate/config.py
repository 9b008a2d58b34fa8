"""Effective configuration: flags > environment variables > edu-migrate.toml > defaults."""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from edu_migrate.errors import MigrationError

CONFIG_FILE_NAME = "edu-migrate.toml"

ENV_VARS: Mapping[str, str] = {
    "source_url": "EDU_SOURCE_URL",
    "target_url": "EDU_TARGET_URL",
    "batch_size": "EDU_BATCH_SIZE",
    "workers": "EDU_WORKERS",
    "exclude": "EDU_EXCLUDE",
    "home": "EDU_MIGRATE_HOME",
    "log_dir": "EDU_LOG_DIR",
    "backup_dir": "EDU_BACKUP_DIR",
    "archive_secrets": "EDU_ARCHIVE_SECRETS",
    "mapping_file": "EDU_MAPPING",
}


class Settings(BaseModel):
    """Everything a run needs to know; passwords stay inside the URLs and are masked on display."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source_url: str | None = Field(None, description="libpq URL of the legacy database edu")
    target_url: str | None = Field(None, description="libpq URL of the new database edu_v2")
    batch_size: int = Field(100_000, gt=0, description="rows per COPY chunk of a large table")
    workers: int = Field(2, ge=1, le=64, description="parallel sessions for large tables")
    exclude: tuple[str, ...] = Field(
        (), description="unmapped tables not to archive (LIKE patterns)")
    home: Path = Field(Path(".edu-migrate"), description="folder of the embedded server and state")
    log_dir: Path = Field(Path("logs"), description="folder of the run logs")
    backup_dir: Path = Field(Path("backups"), description="folder of the backups")
    archive_secrets: bool = Field(
        False, description="archive credential and session-secret columns instead of masking")
    mapping_file: Path | None = Field(
        None, description="TOML file mapping the legacy tables onto the source's own (--mapping)")
    mapping: dict[str, Any] = Field(
        default_factory=dict, description="[mapping.<legacy table>] of edu-migrate.toml")

    @field_validator("exclude", mode="before")
    @classmethod
    def _split_patterns(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @property
    def uses_embedded_server(self) -> bool:
        return self.source_url is None or self.target_url is None


def _read_config_file(path: Path | None) -> dict[str, Any]:
    candidate = path or Path(os.environ.get("EDU_MIGRATE_CONFIG", CONFIG_FILE_NAME))
    if not candidate.exists():
        if path is not None:
            raise MigrationError(f"configuration file {candidate} does not exist",
                                 "check the --config path")
        return {}
    try:
        data = tomllib.loads(candidate.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise MigrationError(f"configuration file {candidate} is not valid TOML: {exc}",
                             "fix the file or remove it") from exc
    section = data.get("edu-migrate", data)
    if not isinstance(section, dict):
        raise MigrationError(f"configuration file {candidate}: [edu-migrate] must be a table")
    settings = {key.replace("-", "_"): value for key, value in section.items()}
    # [mapping.<legacy table>] sits at the top of the file, beside [edu-migrate] or without it.
    if "mapping" in data:
        settings["mapping"] = data["mapping"]
    return settings


def load_settings(overrides: Mapping[str, Any] | None = None,
                  config_file: Path | None = None) -> Settings:
    """Merge the three sources; a flag left at None does not override."""
    merged: dict[str, Any] = _read_config_file(config_file)
    for field_name, env_name in ENV_VARS.items():
        env_value = os.environ.get(env_name)
        if env_value:
            merged[field_name] = env_value
    for key, value in (overrides or {}).items():
        if value is not None:
            merged[key] = value
    try:
        return Settings(**merged)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "configuration"
        raise MigrationError(f"invalid setting {where}: {first['msg']}",
                             "see `edu-migrate config show` and --help") from exc
