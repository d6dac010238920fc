"""Where outbound mail physically goes: an SMTP relay (aiosmtplib) or a local Maildir."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import mailbox
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiosmtplib

from mailbot.oauth.causes import TokenError, login_refused
from mailbot.oauth.sasl import ERROR_ACKNOWLEDGEMENT, initial_response, mechanism
from mailbot.oauth.tokens import tokens_for
from mailbot.outbound.wording import Reason
from mailbot.settings.checks import network_cause
from mailbot.settings.config import Config, RelayConfig

log = logging.getLogger(__name__)

# One delivery may take this many relay timeouts (connect, TLS, login, the transaction).
SEND_DEADLINE_TIMEOUTS = 10


class DeliveryError(Exception):
    """A delivery attempt failed; ``permanent`` says whether retrying can help, ``refused``
    whether the relay refused us (our login: only an operator can fix it, retried meanwhile).

    ``answer`` is the relay's or the system's own words, quoted as they are; ``reason`` our
    words for the cause, a code of :data:`~mailbot.outbound.wording.SENTENCES` that the
    agents' mail words in its language (None where the relay's answer says it all).  The
    exception's text, for logs and the outbox row, is the English reason and the answer.
    """

    def __init__(self, answer: str, permanent: bool, refused: bool = False,
                 reason: Reason | None = None) -> None:
        super().__init__(f"{reason}: {answer}" if reason and answer else str(reason or answer))
        self.answer = answer
        self.reason = reason
        self.permanent = permanent
        self.refused = refused


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


async def probe(relay: RelayConfig) -> str:
    """Connect and log in as the sender does, then say goodbye, for `mailbot check-config
    --connect`: "" when that works, else the cause in words."""
    session = SmtpSession(relay)
    try:
        async with asyncio.timeout(send_deadline(relay)):
            await session.open()
    except aiosmtplib.SMTPAuthenticationError as exc:
        return f"authentication failed ({exc.code} {exc.message})"
    except Exception as exc:  # whatever stops the login is reported, not raised
        return network_cause(exc)
    finally:
        await session.close()
    return ""


async def oauth_login(client: aiosmtplib.SMTP, relay: RelayConfig) -> None:
    """Log in to the relay with an OAuth2 access token (SASL OAUTHBEARER when the relay
    offers it, else XOAUTH2); a token the relay refuses is replaced once by a new one, and
    a new one refused too raises :class:`TokenError` naming the likely cause."""
    # In a thread, as the first call loads the provider's library (half a second).
    tokens = await asyncio.to_thread(tokens_for, relay.oauth2, relay.username,
                                     relay.timeout_seconds)
    if client.is_ehlo_or_helo_needed:
        await client.ehlo()
    name = mechanism({method.upper() for method in client.server_auth_methods})
    answer = await _authenticate(client, name, relay.username,
                                 await asyncio.to_thread(tokens.token))
    if answer.code == aiosmtplib.SMTPStatus.auth_successful:
        return
    log.info("the relay refused the access token (%d %s); trying a new one", answer.code,
             answer.message)
    answer = await _authenticate(client, name, relay.username,
                                 await asyncio.to_thread(tokens.renew))
    if answer.code != aiosmtplib.SMTPStatus.auth_successful:
        raise login_refused("SMTP", relay.host, relay.username,
                            f"{answer.code} {answer.message}")


async def _authenticate(client: aiosmtplib.SMTP, name: str, username: str,
                        token: str) -> aiosmtplib.SMTPResponse:
    """One AUTH with a token; the relay's final answer (after acknowledging an error
    challenge, as the mechanism wants)."""
    answer = await client.execute_command(b"AUTH", name.encode(),
                                          initial_response(name, username, token).encode())
    if answer.code == aiosmtplib.SMTPStatus.auth_continue:
        answer = await client.execute_command(ERROR_ACKNOWLEDGEMENT[name].encode())
    return answer


def send_deadline(relay: RelayConfig) -> float:
    """The longest one delivery may take, in seconds; a slower one is cut off and retried.

    Connecting, greeting, TLS, login and each command of the transaction may each take
    the relay timeout; the sender's claim on a row outlasts this deadline.
    """
    return SEND_DEADLINE_TIMEOUTS * relay.timeout_seconds


class SmtpSession:
    """A relay connection reused across mails; dropped after any failure, reopened on use."""

    def __init__(self, relay: RelayConfig) -> None:
        self.relay = relay
        self.client: aiosmtplib.SMTP | None = None

    async def send(self, sender: str, recipients: list[str], raw: bytes) -> None:
        """Hand one mail to the relay or raise :class:`DeliveryError`.

        An address the relay or the mail library cannot take (a control character, a
        non-ASCII address without SMTPUTF8) is a permanent failure of this mail alone.
        """
        try:
            async with asyncio.timeout(send_deadline(self.relay)):
                await self._transaction(sender, recipients, raw)
        except aiosmtplib.SMTPRecipientsRefused as exc:
            await self.close()
            answers = "; ".join(f"{r.recipient}: {r.code} {r.message}" for r in exc.recipients)
            raise DeliveryError(answers, permanent=all(r.code >= 500 for r in exc.recipients)) \
                from exc
        except aiosmtplib.SMTPAuthenticationError as exc:  # our credentials: fixed, it goes
            await self.close()
            raise DeliveryError(f"{exc.code} {exc.message}", permanent=False, refused=True,
                                reason=self._reason("relay_login")) from exc
        except TokenError as exc:  # no OAuth2 token, or the relay refused a fresh one
            await self.close()
            raise DeliveryError(str(exc), permanent=False, refused=exc.refused,
                                reason=self._reason("relay_token")) from exc
        except aiosmtplib.SMTPResponseException as exc:
            await self.close()
            raise DeliveryError(f"{exc.code} {exc.message}", permanent=exc.code >= 500) from exc
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            self._drop()
            raise DeliveryError(f"{type(exc).__name__}: {exc}", permanent=False,
                                reason=self._reason("relay_connection")) from exc
        except ValueError as exc:  # aiosmtplib refuses the address (UnicodeEncodeError too)
            self._drop()
            raise DeliveryError(str(exc), permanent=True, reason=Reason(
                "unusable_address", {"addresses": _shown(recipients)})) from exc
        except DeliveryError:
            raise
        except BaseException:
            self._drop()
            raise

    async def open(self) -> None:
        """Connect and log in (greeting, EHLO, STARTTLS or TLS, AUTH) unless connected."""
        if self.client is None:
            self.client = self._client()
            await self.client.connect()
            if self.relay.auth == "oauth2":
                await oauth_login(self.client, self.relay)

    async def _transaction(self, sender: str, recipients: list[str], raw: bytes) -> None:
        await self.open()
        options = []
        if not all(address.isascii() for address in (sender, *recipients)):
            if self.client.is_ehlo_or_helo_needed:
                await self.client.ehlo()  # the relay's extensions are known after EHLO
            if not self.client.supports_extension("smtputf8"):
                raise DeliveryError("", permanent=True, reason=self._reason(
                    "no_smtputf8", addresses=_shown(recipients)))
            options.append("SMTPUTF8")
        refused, _ = await self.client.sendmail(sender, recipients, raw, mail_options=options)
        if refused:
            log.warning("the relay refused some recipients of a mail: %s",
                        "; ".join(f"{a}: {r.code} {r.message}" for a, r in refused.items()))

    async def close(self) -> None:
        """Say goodbye to the relay (or just drop a broken connection)."""
        client, self.client = self.client, None
        if client is None:
            return
        try:
            await client.quit()
        except (aiosmtplib.SMTPException, OSError, TimeoutError):
            client.close()

    def _reason(self, code: str, **values: str) -> Reason:
        """A reason about this relay: ``code`` with the relay's host and port as ``relay``."""
        return Reason(code, {"relay": f"{self.relay.host}:{self.relay.port}", **values})

    def _drop(self) -> None:
        """Drop a connection in an unknown state without a word to the relay."""
        client, self.client = self.client, None
        if client is not None:
            client.close()

    def _client(self) -> aiosmtplib.SMTP:
        relay = self.relay
        by_password = relay.auth == "password"
        return aiosmtplib.SMTP(hostname=relay.host, port=relay.port,
                               use_tls=relay.security == "tls",
                               start_tls=relay.security == "starttls",
                               username=(relay.username or None) if by_password else None,
                               password=(relay.password or None) if by_password else None,
                               cert_bundle=relay.ca_file or None,
                               local_hostname=relay.helo_name or None,
                               timeout=relay.timeout_seconds)


@dataclass(frozen=True)
class MaildirTransport:
    """Writes each mail into a Maildir (the default when no relay is configured)."""

    path: Path

    @property
    def label(self) -> str:
        """Where mail goes, for logs and health: the kind only, as the health document
        names no file paths."""
        return "maildir"

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[MaildirTransport]:
        """Nothing to open for a Maildir: the transport itself serves the batch."""
        yield self

    async def send(self, sender: str, recipients: list[str], raw: bytes) -> None:
        """Store one mail in the Maildir's ``new`` folder."""
        try:
            await asyncio.to_thread(self._add, sender, recipients, raw)
        except OSError as exc:
            raise DeliveryError(str(exc), permanent=False, reason=Reason(
                "maildir_unwritable", {"path": str(self.path)})) from exc

    def _add(self, sender: str, recipients: list[str], raw: bytes) -> None:
        header = (f"Return-Path: <{sender}>\r\nDelivered-To: {', '.join(recipients)}\r\n"
                  ).encode()
        # Folders 0700; files 0600 by the umask every `mailbot` command sets (app/launch.py).
        mailbox.Maildir(self.path, create=True).add(header + raw)


def _shown(addresses: list[str]) -> str:
    """Addresses as a mail may show them: one with control characters escaped."""
    return ", ".join(a if a.isprintable() else ascii(a) for a in addresses)


def transport_for(config: Config) -> SmtpTransport | MaildirTransport:
    """The transport the configuration asks for."""
    if config.relay.host:
        return SmtpTransport(config.relay)
    return MaildirTransport(config.maildir)
