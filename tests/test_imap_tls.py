"""IMAP over TLS and STARTTLS against a real Dovecot with a self-signed certificate."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
from mails import build_mail
from servers import Dovecot, ImapAccount

from mailbot.inbound.imap import ImapSource
from mailbot.inbound.source import Feed
from mailbot.reading.message import parse
from mailbot.settings.config import ImapConfig
from mailbot.status.health import Health
from mailbot.tickets.outcome import Outcome


@pytest.fixture(scope="module")
def tls_dovecot() -> Iterator[Dovecot]:
    """A Dovecot that speaks TLS on its imaps port and STARTTLS on its imap port."""
    with Dovecot(tls=True) as server:
        server.start()
        yield server


def source(server: Dovecot, user: ImapAccount, security: str, ca_file: Path | None,
           health: Health) -> ImapSource:
    """An IMAP source that records what it files instead of running the pipeline."""
    port = server.tls_port if security == "tls" else server.port
    cfg = ImapConfig(host=user.host, port=port, username=user.username,
                     password=user.password, security=security, done_folder="Processed",
                     ca_file=str(ca_file or ""), timeout_seconds=5)
    return ImapSource(cfg, lambda mailbox, value: True, health)


def recorder(filed: list[bytes]) -> Feed:
    """A feed that records what a source files instead of running the pipeline."""
    def file(raw: bytes, source_name: str) -> Outcome:
        filed.append(raw)
        return Outcome("created")

    return Feed(file=file, flush=lambda: None)


@pytest.mark.parametrize("security", ["tls", "starttls"])
def test_mail_is_read_over_an_encrypted_connection(tls_dovecot: Dovecot, security: str) -> None:
    """With the server's certificate trusted, mail is fetched over TLS/STARTTLS and moved."""
    user = tls_dovecot.new_user()
    raw = build_mail(subject=f"Über {security}")
    tls_dovecot.append(user.username, "INBOX", raw)
    filed: list[bytes] = []
    assert source(tls_dovecot, user, security, tls_dovecot.cert_path,
                  Health()).run_once(recorder(filed)) == 1
    assert [parse(m).subject for m in filed] == [f"Über {security}"]
    assert tls_dovecot.message_count(user.username, "Processed") == 1


@pytest.mark.parametrize("security", ["tls", "starttls"])
def test_untrusted_certificate_is_refused_and_mail_stays(tls_dovecot: Dovecot,
                                                         security: str) -> None:
    """An unverifiable certificate is a connection failure: nothing is read or moved."""
    user = tls_dovecot.new_user()
    tls_dovecot.append(user.username, "INBOX", build_mail())
    filed: list[bytes] = []
    with pytest.raises(ssl.SSLCertVerificationError):
        source(tls_dovecot, user, security, None, Health()).run_once(recorder(filed))
    assert filed == []
    assert tls_dovecot.message_count(user.username, "INBOX") == 1
