"""The `mailbot` executable: catch stop signals for `mailbot run` before anything loads."""

from __future__ import annotations

import sys

from mailbot.app.signals import EarlyStop


def main() -> None:
    """Run the command line; for `run`, stop signals are caught from this moment on."""
    if _command(sys.argv[1:]) == "run":
        EarlyStop.install()
    from mailbot.app.cli import main as command_line  # the heavy imports come after

    command_line()


def _command(args: list[str]) -> str:
    """The subcommand named on the command line (after ``--config PATH``), or ``""``."""
    skip = False
    for arg in args:
        if skip:
            skip = False
        elif arg == "--config":
            skip = True
        elif not arg.startswith("-"):
            return arg
    return ""
