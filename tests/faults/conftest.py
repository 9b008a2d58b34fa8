"""One migrated pair of databases per module: the reference result of an uninterrupted run, which
each fault test reproduces after rolling everything back and breaking a run on purpose."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from edu_migrate import api
from edu_migrate.config import Settings
from tests.conftest import make_settings
from tests.faults.harness import database_digest, result_digests
from tests.integration.helpers import prepared

FAULT_SCALE = 0.02


@dataclass(frozen=True)
class Reference:
    settings: Settings
    result: dict[str, str]
    source: dict[str, str]

    @property
    def target_url(self) -> str:
        return str(self.settings.target_url)


@pytest.fixture(scope="module")
def reference(admin_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Reference]:
    pair = make_settings(admin_url, tmp_path_factory.mktemp("faults"))
    settings = next(pair)
    try:
        prepared(settings, scale=FAULT_SCALE)
        source = database_digest(str(settings.source_url))
        api.migrate(settings)
        yield Reference(settings, result_digests(str(settings.target_url)), source)
    finally:
        pair.close()


@pytest.fixture
def fresh(reference: Reference) -> Iterator[Reference]:
    """The reference databases with every phase rolled back; afterwards, the source unchanged."""
    api.rollback(reference.settings, None)
    yield reference
    assert database_digest(str(reference.settings.source_url)) == reference.source
