"""Shared fixtures: a real Dovecot IMAP server and a real SMTP sink on 127.0.0.1.

The servers themselves live in `tests/servers.py`; keep this file to thin fixtures.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from servers import Dovecot, ImapAccount, SmtpSink


@pytest.fixture(scope="session")
def dovecot() -> Iterator[Dovecot]:
    """One Dovecot for the whole session, with the user "support" / "secret"."""
    server = Dovecot()
    try:
        server.add_user("support", "secret")
        server.start()
        yield server
    finally:
        server.close()


@pytest.fixture
def imap_user(dovecot: Dovecot) -> ImapAccount:
    """A fresh IMAP user (u1, u2, ...) so no test sees another test's mail."""
    if not dovecot.running:  # a test stopped or crashed the shared server
        dovecot.start()
    return dovecot.new_user()


@pytest.fixture
def smtp_sink() -> Iterator[SmtpSink]:
    """A fresh SMTP sink for this test, stopped at teardown."""
    sink = SmtpSink()
    try:
        sink.start()
        yield sink
    finally:
        sink.stop()
