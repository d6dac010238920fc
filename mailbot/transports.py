"""Where outbound mail physically goes: an SMTP relay (aiosmtplib) or a local Maildir."""

from __future__ import annotations

import asyncio
import mailbox
from dataclasses import dataclass
from pathlib import Path

import aiosmtplib

from mailbot.config import Config, RelayConfig


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

    async def send(self, sender: str, recipients: list[str], raw: bytes) -> None:
        """Hand one mail to the relay or raise :class:`DeliveryError`."""
        relay = self.relay
        try:
            await aiosmtplib.send(
                raw, sender=sender, recipients=recipients, hostname=relay.host,
                port=relay.port, use_tls=relay.security == "tls",
                start_tls=relay.security == "starttls",
                username=relay.username or None, password=relay.password or None,
                timeout=relay.timeout_seconds)
        except aiosmtplib.SMTPRecipientsRefused as exc:
            codes = [r.code for r in exc.recipients]
            raise DeliveryError(str(exc), permanent=all(c >= 500 for c in codes)) from exc
        except aiosmtplib.SMTPResponseException as exc:
            raise DeliveryError(f"{exc.code} {exc.message}", permanent=exc.code >= 500) from exc
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            raise DeliveryError(f"{type(exc).__name__}: {exc}", permanent=False) from exc


@dataclass(frozen=True)
class MaildirTransport:
    """Writes each mail into a Maildir (the default when no relay is configured)."""

    path: Path

    @property
    def label(self) -> str:
        """Where mail goes, for logs and health."""
        return f"maildir:{self.path}"

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
