"""Real PostgreSQL for the tests: each test gets its own pair of databases, dropped afterwards.

The server is EDU_TEST_ADMIN_URL (a superuser URL) when set; otherwise an embedded server that
the session starts in a temporary folder. Tests marked `servers` run once more on the machine's
PostgreSQL 15 when it is installed.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from edu_migrate.config import Settings
from edu_migrate.pg.embedded import EmbeddedServer, _system_bin_dir, find_bin_dir
from edu_migrate.pg.urls import with_database

SYSTEM_MAJOR = 15
# The home folders of the embedded servers this session started (none when EDU_TEST_ADMIN_URL
# was given).
EMBEDDED_HOMES: list[Path] = []


def _start(home: Path, bin_dir: Path) -> str:
    server = EmbeddedServer(home, bin_dir=bin_dir)
    return server.start().url("postgres")


@pytest.fixture(scope="session")
def admin_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Superuser URL of the default test server."""
    given = os.environ.get("EDU_TEST_ADMIN_URL")
    if given:
        yield given
        return
    home = tmp_path_factory.mktemp("embedded")
    server = EmbeddedServer(home, bin_dir=find_bin_dir())
    url = server.start().url("postgres")
    EMBEDDED_HOMES.append(home)
    os.environ["EDU_TEST_ADMIN_URL"] = url
    yield url
    server.stop()
    os.environ.pop("EDU_TEST_ADMIN_URL", None)


@pytest.fixture(scope="session")
def pg15_admin_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Superuser URL of a server on the machine's PostgreSQL 15 binaries."""
    bin_dir = _system_bin_dir(SYSTEM_MAJOR)
    if bin_dir is None:
        pytest.skip(f"PostgreSQL {SYSTEM_MAJOR} binaries are not installed on this machine "
                    f"(no /usr/lib/postgresql/{SYSTEM_MAJOR}/bin/postgres): "
                    f"`apt-get install postgresql-{SYSTEM_MAJOR}`, as .ci/run does")
    home = tmp_path_factory.mktemp("pg15")
    server = EmbeddedServer(home, bin_dir=bin_dir)
    url = server.start().url("postgres")
    yield url
    server.stop()


@pytest.fixture(params=["default", "pg15"])
def any_admin_url(request: pytest.FixtureRequest) -> str:
    """The default server, then PostgreSQL 15: for tests that must pass on both."""
    name = "admin_url" if request.param == "default" else "pg15_admin_url"
    return str(request.getfixturevalue(name))


def _create(admin: str, name: str) -> None:
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def _drop(admin: str, name: str) -> None:
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
            sql.Identifier(name)))


def make_settings(admin: str, tmp_path: Path) -> Iterator[Settings]:
    suffix = uuid.uuid4().hex[:10]
    source, target = f"edu_t{suffix}", f"edu_v2_t{suffix}"
    _create(admin, source)
    try:
        yield Settings(source_url=with_database(admin, source),
                       target_url=with_database(admin, target), home=tmp_path / "home",
                       log_dir=tmp_path / "logs", backup_dir=tmp_path / "backups",
                       batch_size=20_000)
    finally:
        _drop(admin, target)
        _drop(admin, source)


@pytest.fixture
def settings(admin_url: str, tmp_path: Path) -> Iterator[Settings]:
    """A fresh source database (empty) and the name of a target database, both dropped after."""
    yield from make_settings(admin_url, tmp_path)


@pytest.fixture
def settings_any_server(any_admin_url: str, tmp_path: Path) -> Iterator[Settings]:
    yield from make_settings(any_admin_url, tmp_path)
