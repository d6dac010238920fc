"""The SMTP transport against a real aiosmtpd relay: STARTTLS, one session per batch."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from servers import SmtpSink, self_signed_certificate

from mailbot.outbound.transports import DeliveryError, SmtpTransport
from mailbot.settings.config import RelayConfig

MAIL = b"From: support@example.com\r\nTo: kunde@example.org\r\nSubject: Hallo\r\n\r\nText\r\n"


@pytest.fixture
def tls_sink(tmp_path: Path) -> Iterator[SmtpSink]:
    """A relay that only accepts mail after STARTTLS with a self-signed certificate."""
    with SmtpSink(tls_files=self_signed_certificate(tmp_path)) as sink:
        yield sink


def relay(sink: SmtpSink, security: str, ca_file: Path | None = None) -> SmtpTransport:
    """A transport to the sink."""
    return SmtpTransport(RelayConfig(host=sink.host, port=sink.port, security=security,
                                     timeout_seconds=5, ca_file=str(ca_file or "")))


async def test_starttls_with_trusted_certificate_delivers(tls_sink: SmtpSink,
                                                          tmp_path: Path) -> None:
    """With the relay's certificate trusted, mail goes out over STARTTLS."""
    await relay(tls_sink, "starttls", tmp_path / "cert.pem").send(
        "support@example.com", ["kunde@example.org"], MAIL)
    assert [m.subject for m in tls_sink.wait_for()] == ["Hallo"]


async def test_untrusted_certificate_is_a_temporary_failure(tls_sink: SmtpSink) -> None:
    """An unverifiable relay certificate fails the delivery for a retry, sending nothing."""
    with pytest.raises(DeliveryError) as failure:
        await relay(tls_sink, "starttls").send("support@example.com", ["k@example.org"], MAIL)
    assert not failure.value.permanent
    assert tls_sink.messages == []


async def test_plain_connection_is_refused_by_a_starttls_only_relay(tls_sink: SmtpSink) -> None:
    """A relay that requires STARTTLS refuses plain mail; the outbox will retry."""
    with pytest.raises(DeliveryError):
        await relay(tls_sink, "plain").send("support@example.com", ["k@example.org"], MAIL)
    assert tls_sink.messages == []


async def test_batch_uses_one_connection(smtp_sink: SmtpSink) -> None:
    """Several mails in one session arrive over a single relay connection."""
    async with relay(smtp_sink, "plain").session() as session:
        for number in range(3):
            await session.send("support@example.com", [f"k{number}@example.org"], MAIL)
    received = smtp_sink.wait_for(count=3)
    assert len(received) == 3
    assert smtp_sink.connections == 1
