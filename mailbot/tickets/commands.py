"""Commands agents put at the top of a reply (pure): parsing and validation.

``#status waiting``, ``#priority high``, ``#assign anna@example.com``, ``#take``,
``#note`` (the whole reply becomes an internal note), ``#close``, ``#confirm`` (the
customer number the sender named is theirs).  Commands are lines at the very top of the
reply; the first other line ends them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mailbot.outbound.wording import Reason
from mailbot.tickets import lifecycle

_COMMAND_RE = re.compile(r"^#([a-z]+)\b[ \t]*(.*)$", re.IGNORECASE)
ARITY = {"status": 1, "priority": 1, "assign": 1, "take": 0, "note": 0, "close": 0,
         "confirm": 0}


@dataclass(frozen=True)
class Command:
    """One command line: its name and argument."""

    name: str
    argument: str = ""


@dataclass(frozen=True)
class Parsed:
    """An agent reply split into its commands and the text for the customer; ``errors`` are
    what is wrong with the commands, worded in the agent's mail."""

    commands: tuple[Command, ...]
    text: str
    errors: tuple[Reason, ...]

    @property
    def is_note(self) -> bool:
        """Whether the reply is an internal note the customer never sees."""
        return any(c.name == "note" for c in self.commands)


def parse(text: str, agents: tuple[str, ...]) -> Parsed:
    """Split a reply into commands and text, and check every command."""
    lines = text.replace("\r\n", "\n").split("\n")
    commands, errors, index = [], [], 0
    while index < len(lines):
        line = lines[index].strip()
        match = _COMMAND_RE.match(line)
        if line and not match:
            break
        if match:
            command = Command(match.group(1).lower(), match.group(2).strip())
            errors += check(command, agents)
            commands.append(command)
        index += 1
    return Parsed(tuple(commands), "\n".join(lines[index:]).strip(), tuple(errors))


def check(command: Command, agents: tuple[str, ...]) -> list[Reason]:
    """What is wrong with one command, as reasons the agent's mail words (empty when fine)."""
    name, value = command.name, command.argument
    if name not in ARITY:
        return [Reason("unknown_command", {"command": name,
                                           "known": ", ".join("#" + n for n in ARITY)})]
    if ARITY[name] and not value:
        return [Reason("needs_value", {"command": name})]
    if not ARITY[name] and value:
        return [Reason("takes_no_value", {"command": name, "value": value})]
    return _check_value(command, agents)


def _check_value(command: Command, agents: tuple[str, ...]) -> list[Reason]:
    value = command.argument.lower()
    if command.name == "status" and value not in lifecycle.STATUSES:
        return [Reason("bad_status", {"value": command.argument,
                                      "allowed": ", ".join(lifecycle.STATUSES)})]
    if command.name == "priority" and value not in lifecycle.PRIORITIES:
        return [Reason("bad_priority", {"value": command.argument,
                                        "allowed": ", ".join(lifecycle.PRIORITIES)})]
    if command.name == "assign" and value not in agents:
        return [Reason("not_agent", {"value": command.argument})]
    return []


def target_status(commands: tuple[Command, ...]) -> str:
    """The status the commands ask for (the last one wins), or ``""``."""
    wanted = ""
    for command in commands:
        if command.name == "status":
            wanted = command.argument.lower()
        elif command.name == "close":
            wanted = "closed"
    return wanted
