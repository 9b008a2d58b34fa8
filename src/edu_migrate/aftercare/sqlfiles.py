"""The SQL of the aftercare commands, kept in .sql files beside this module."""

from __future__ import annotations

from functools import cache
from importlib import resources


@cache
def query(name: str) -> str:
    return resources.files("edu_migrate.aftercare").joinpath(f"{name}.sql").read_text("utf-8")
