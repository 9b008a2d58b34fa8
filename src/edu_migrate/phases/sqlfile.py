"""Phase SQL files: statements named `-- name: x`, optionally with a line to print, `-- say: …`,
where {n} is the statement's row count (or, for a SELECT, its single value)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from importlib import resources

_NAME = re.compile(r"^-- name: (\w+)\s*$")
_SAY = re.compile(r"^-- say: (.*)$")


@dataclass(frozen=True)
class Statement:
    name: str
    say: str | None
    text: str


@cache
def load(file_name: str, package: str = "edu_migrate.phases",
         folder: str = "sql") -> tuple[Statement, ...]:
    base = resources.files(package)
    source = (base.joinpath(folder) if folder else base).joinpath(file_name).read_text("utf-8")
    statements: list[Statement] = []
    name: str | None = None
    say: str | None = None
    body: list[str] = []

    def flush() -> None:
        text = "\n".join(body).strip()
        if name is not None and text:
            statements.append(Statement(name, say, text))

    for line in source.splitlines():
        if match := _NAME.match(line):
            flush()
            name, say, body = match.group(1), None, []
        elif name is not None and (match := _SAY.match(line)):
            say = match.group(1).replace("\\n", "\n")
        elif name is not None:
            body.append(line)
    flush()
    return tuple(statements)
