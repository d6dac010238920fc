"""The `mailbot` executable: private files and, for `mailbot run`, stop signals from the start.

Every command sets the umask 077 before it writes anything, whatever the shell or the
service manager set: the data directory holds customers' mail, so what mailbot creates
there (database, spool, attachments, outbound Maildir, status file) is 0600 in 0700
directories.
"""

from __future__ import annotations

import os
import sys

PRIVATE_UMASK = 0o077


def main() -> None:
    """Run the command line with private file modes; for `run`, stop signals are caught
    from this moment on."""
    os.umask(PRIVATE_UMASK)
    if _command(sys.argv[1:]) == "run":
        from mailbot.app.signals import EarlyStop  # asyncio: only the daemon needs it

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
