"""Where outbound mail physically goes: an SMTP relay (aiosmtplib) or a local Maildir."""

from __future__ import annotations

import asyncio
import contextlib
import mailbox
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiosmtplib

from mailbot.settings.config import Config, RelayConfig


class DeliveryError(Exception):
    """A delivery attempt failed; ``permanent`` says whether retrying can help."""

    def __init__(self, message: str, permanent: bool) -> None:
        super().__init__(message)
        self.permanent = permanent


@dataclass(frozen=True)
class SmtpTransport:
    """Delivers through an SMTP relay with STARTTLS/TLS and optional authentication."""

    relay: RelayConfig

    @property
    def label(self) -> str:
        """Where mail goes, for logs and health."""
        return f"smtp://{self.relay.host}:{self.relay.port}"

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[SmtpSession]:
        """One relay connection for a batch of mails, closed at the end."""
        session = SmtpSession(self.relay)
        try:
            yield session
        finally:
            await session.close()

    async def send(self, sender: str, recipients: list[str], raw: bytes) -> None:
        """Hand one mail to the relay or raise :class:`DeliveryError`."""
        async with self.session() as session:
            await session.send(sender, recipients, raw)


class SmtpSession:
    """A relay connection reused across mails; dropped after any failure, reopened on use."""

    def __init__(self, relay: RelayConfig) -> None:
        self.relay = relay
        self.client: aiosmtplib.SMTP | None = None

    async def send(self, sender: str, recipients: list[str], raw: bytes) -> None:
        """Hand one mail to the relay or raise :class:`DeliveryError`."""
        try:
            if self.client is None:
                self.client = self._client()
                await self.client.connect()
            await self.client.sendmail(sender, recipients, raw)
        except aiosmtplib.SMTPRecipientsRefused as exc:
            await self.close()
            codes = [r.code for r in exc.recipients]
            raise DeliveryError(str(exc), permanent=all(c >= 500 for c in codes)) from exc
        except aiosmtplib.SMTPResponseException as exc:
            await self.close()
            raise DeliveryError(f"{exc.code} {exc.message}", permanent=exc.code >= 500) from exc
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            await self.close()
            raise DeliveryError(f"{type(exc).__name__}: {exc}", permanent=False) from exc

    async def close(self) -> None:
        """Say goodbye to the relay (or just drop a broken connection)."""
        client, self.client = self.client, None
        if client is None:
            return
        try:
            await client.quit()
        except (aiosmtplib.SMTPException, OSError, TimeoutError):
            client.close()

    def _client(self) -> aiosmtplib.SMTP:
        relay = self.relay
        return aiosmtplib.SMTP(hostname=relay.host, port=relay.port,
                               use_tls=relay.security == "tls",
                               start_tls=relay.security == "starttls",
                               username=relay.username or None,
                               password=relay.password or None,
                               cert_bundle=relay.ca_file or None,
                               timeout=relay.timeout_seconds)


@dataclass(frozen=True)
class MaildirTransport:
    """Writes each mail into a Maildir (the default when no relay is configured)."""

    path: Path

    @property
    def label(self) -> str:
        """Where mail goes, for logs and health."""
        return f"maildir:{self.path}"

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[MaildirTransport]:
        """Nothing to open for a Maildir: the transport itself serves the batch."""
        yield self

    async def send(self, sender: str, recipients: list[str], raw: bytes) -> None:
        """Store one mail in the Maildir's ``new`` folder."""
        try:
            await asyncio.to_thread(self._add, sender, recipients, raw)
        except OSError as exc:
            raise DeliveryError(f"cannot write {self.path}: {exc}", permanent=False) from exc

    def _add(self, sender: str, recipients: list[str], raw: bytes) -> None:
        header = (f"Return-Path: <{sender}>\r\nDelivered-To: {', '.join(recipients)}\r\n"
                  ).encode()
        mailbox.Maildir(self.path, create=True).add(header + raw)


def transport_for(config: Config) -> SmtpTransport | MaildirTransport:
    """The transport the configuration asks for."""
    if config.relay.host:
        return SmtpTransport(config.relay)
    return MaildirTransport(config.maildir)
