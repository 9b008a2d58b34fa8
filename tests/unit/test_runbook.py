"""docs/RUNBOOK.md speaks of the tool as it is: every command it names exists (or is marked
planned), and every option it gives a command is one that command takes."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import typer.main

from edu_migrate.cli import app

RUNBOOK = Path(__file__).resolve().parents[2] / "docs" / "RUNBOOK.md"
MENTION = re.compile(r"edu-migrate((?: [a-z][\w-]*)+(?: --?[\w-]+(?:[ =][^\s`|]+)?)*)")
PLANNED = "**(planned)**"


def _commands() -> dict[str, Any]:
    """Every command and subcommand of the CLI, by name ('migrate', 'db start')."""
    root: Any = typer.main.get_command(app)
    found: dict[str, Any] = {}
    for name, command in root.commands.items():
        found[name] = command
        if hasattr(command, "commands"):
            for sub_name, sub in command.commands.items():
                found[f"{name} {sub_name}"] = sub
    return found


def _mentions() -> list[tuple[str, list[str], bool]]:
    """(command, options, planned) for every `edu-migrate …` the runbook shows as code: in a
    code span, or typed after a `$ ` prompt."""
    mentions = []
    for line in RUNBOOK.read_text("utf-8").splitlines():
        spans = [(m.group(1), m.end()) for m in re.finditer(r"`([^`]+)`", line)]
        if line.startswith("$ "):
            spans.append((line[2:], len(line)))
        for code, end in spans:
            match = MENTION.match(code.strip())
            if match:
                words = match.group(1).split()
                command = [w for w in words if not w.startswith("-")]
                options = [w.split("=")[0] for w in words if w.startswith("--")]
                planned = line[end:end + 20].lstrip().startswith(PLANNED)
                mentions.append((" ".join(command[:2]), options, planned))
    return mentions


def test_every_command_in_the_runbook_exists_or_is_marked_planned() -> None:
    commands = _commands()
    mentions = _mentions()
    assert len(mentions) > 30
    for command, options, planned in mentions:
        name = command if command in commands else command.split()[0]
        if planned:
            assert name not in commands, f"`edu-migrate {name}` exists: drop (planned)"
            continue
        assert name in commands, f"the runbook names `edu-migrate {command}`, which is unknown"
        known = {opt for param in commands[name].params for opt in param.opts}
        unknown = [option for option in options if option not in known | {"--help"}]
        assert not unknown, f"`edu-migrate {name}` takes no {unknown}"
