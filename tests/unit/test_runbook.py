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


# The guide's post-migration tasks ("Post-Migration Tasks" of migration-guide.md), in its order.
GUIDE_AFTER_CUTOVER = (
    ("day 1", "monitor application performance"), ("day 1", "verify backups working"),
    ("day 1", "update documentation"), ("week 1", "add indexes for performance"),
    ("week 1", "implement row-level security"), ("week 1", "set up monitoring"),
    ("month 1", "decommission old database"), ("month 1", "optimize database configuration"))


def test_after_the_cutover_gives_each_of_the_guides_tasks_in_its_order_with_commands() -> None:
    text = RUNBOOK.read_text("utf-8")
    section = text[text.index("\n## After the cutover\n"):]
    section = section[:section.index("\n### ")]
    rows = [[cell.strip() for cell in line.strip("|").split("|")]
            for line in section.splitlines() if line.startswith("| ") and "edu-migrate" in line]
    found = []
    for when, task, command in rows:
        for expected_when, title in GUIDE_AFTER_CUTOVER:
            if when == expected_when and title in task.lower():
                found.append((when, title))
                assert "`edu-migrate " in command, (task, command)
    # Every task, each first met in the guide's order (a task may take several rows).
    assert list(dict.fromkeys(found)) == list(GUIDE_AFTER_CUTOVER)
