"""Phase SQL files: statements named `-- name: x`, optionally with a line to print, `-- say: …`,
where {n} is the statement's row count (or, for a SELECT, its single value), and `-- after:
indexes` for a statement that a full run sends after it has built the indexes of the tables it
rebuilds, before their foreign keys (phases/runner.py). Such statements close the file: a sync,
which keeps its indexes, runs every statement in file order, which is then the same order."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from importlib import resources

_NAME = re.compile(r"^-- name: (\w+)\s*$")
_SAY = re.compile(r"^-- say: (.*)$")
_AFTER = re.compile(r"^-- after: indexes\s*$")


@dataclass(frozen=True)
class Statement:
    name: str
    say: str | None
    text: str
    after_indexes: bool = False


@cache
def load(file_name: str, package: str = "edu_migrate.phases",
         folder: str = "sql") -> tuple[Statement, ...]:
    base = resources.files(package)
    source = (base.joinpath(folder) if folder else base).joinpath(file_name).read_text("utf-8")
    return parse(source, file_name)


def parse(source: str, file_name: str = "<text>") -> tuple[Statement, ...]:
    """The named statements of one file's text."""
    statements: list[Statement] = []
    name: str | None = None
    say: str | None = None
    after = False
    body: list[str] = []

    def flush() -> None:
        text = "\n".join(body).strip()
        if name is not None and text:
            statements.append(Statement(name, say, text, after))

    for line in source.splitlines():
        if match := _NAME.match(line):
            flush()
            name, say, after, body = match.group(1), None, False, []
        elif name is not None and (match := _SAY.match(line)):
            say = match.group(1).replace("\\n", "\n")
        elif name is not None and _AFTER.match(line):
            after = True
        elif name is not None:
            body.append(line)
    flush()
    tail = [s.after_indexes for s in statements]
    if tail != sorted(tail):
        raise ValueError(f"{file_name}: a statement marked `-- after: indexes` is followed by "
                         "one that is not")
    return tuple(statements)
