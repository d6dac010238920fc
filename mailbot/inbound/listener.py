"""The built-in SMTP/LMTP listener (aiosmtpd): 250 only after a durable commit.

Mails arriving at the same time over several sessions are committed one transaction
each and then made durable together by one group flush before each gets its 250.
A temporary failure answers 451 so the sending MTA retries.  A mail over
``[limits] max_message_bytes`` is accepted and quarantined with the reason (``[limits]
oversize = "quarantine"``, up to :data:`OVERSIZE_CEILING` times the limit, so the sending MTA
never bounces a mail we could keep) or refused with 552 5.3.4 (``"reject"``).  LMTP answers
one line per recipient.  Each mail is filed with its envelope (MAIL FROM, every RCPT TO),
and every reply but the greeting and the EHLO/LHLO list carries an enhanced status code
(RFC 2034, RFC 3463).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable

from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import SMTP, Envelope, Session

from mailbot.inbound.source import Envelope as MailEnvelope
from mailbot.inbound.source import Feed, TemporaryFailure
from mailbot.reading.headers import base_address
from mailbot.settings.config import ListenerConfig
from mailbot.status.health import Health
from mailbot.tickets.outcome import Outcome

log = logging.getLogger(__name__)

# Shutdown: how long the mails being committed may take to get their answer.
DRAIN_SECONDS = 8.0

OK = "250 2.0.0 OK: {detail}"
TEMPFAIL = "451 4.3.0 Temporary failure, please try again later"
SHUTTING_DOWN = "421 4.3.2 Service shutting down, please try again later"
UNKNOWN_RECIPIENT = "550 5.1.1 No such support mailbox here"
# Extensions we add to aiosmtpd's EHLO/LHLO list (it names SIZE, 8BITMIME and SMTPUTF8).
EXTENSIONS = ("250-PIPELINING", "250-ENHANCEDSTATUSCODES")
# With oversize = "quarantine": mails up to this many times the limit are kept (and
# quarantined); beyond, 552 5.3.4, as aiosmtpd holds a mail in memory.
OVERSIZE_CEILING = 4

_HAS_ENHANCED_CODE = re.compile(r"\d{3}[ -][245]\.\d{1,3}\.\d{1,3}(?:\s|$)")
# Enhanced codes (RFC 3463) for aiosmtpd's own replies that carry none; by class otherwise.
_ENHANCED = {"500": "5.5.2", "501": "5.5.4", "502": "5.5.1", "503": "5.5.1", "504": "5.5.4",
             "530": "5.7.0", "552": "5.3.4", "553": "5.1.3", "421": "4.3.2", "451": "4.3.0"}
# Replies that take no enhanced code: the greeting, the DATA and AUTH go-aheads.
_PLAIN_CODES = ("220", "354", "334")


def with_enhanced_code(line: str) -> str:
    """``line`` with an RFC 3463 enhanced status code after its reply code, if it has none."""
    code = line[:3]
    if not code.isdigit() or code in _PLAIN_CODES or _HAS_ENHANCED_CODE.match(line):
        return line
    enhanced = _ENHANCED.get(code, f"{code[0]}.0.0")
    return f"{code}{line[3:4] or ' '}{enhanced} {line[4:]}".rstrip()


class GroupCommit:
    """Makes concurrent commits durable with one flush for all that waited on it."""

    def __init__(self, flush: Callable[[], None]) -> None:
        self._flush = flush
        self._lock = asyncio.Lock()
        self._requested = 0
        self._flushed = 0

    async def durable(self) -> None:
        """Return once everything committed before this call is on disk."""
        self._requested += 1
        ticket = self._requested
        async with self._lock:
            if self._flushed >= ticket:
                return
            target = self._requested
            await asyncio.to_thread(self._flush)
            self._flushed = target


class IngestHandler:
    """aiosmtpd handler that files each mail through the pipeline.

    ``ingest`` files without syncing when ``commits`` is given; the group commit then
    makes the mail durable before the 250.  Without it, ``ingest`` must be durable itself.
    """

    def __init__(self, ingest: Callable[[bytes, str, MailEnvelope], Outcome], lmtp: bool,
                 recipients: tuple[str, ...] = (), commits: GroupCommit | None = None) -> None:
        self.ingest = ingest
        self.commits = commits
        self.lmtp = lmtp
        self.protocol = "lmtp" if lmtp else "smtp"  # the path a mail came by, in the logs
        self.recipients = frozenset(a.lower() for a in recipients)
        self.accepting = True
        self.in_flight = 0
        self.committing: set[Session] = set()  # sessions whose mail is being filed

    async def handle_EHLO(self, server: SMTP, session: Session, envelope: Envelope,
                          hostname: str, responses: list[str]) -> list[str]:
        """aiosmtpd's EHLO/LHLO list with PIPELINING and ENHANCEDSTATUSCODES (RFC 2033)."""
        session.host_name = hostname
        return [*responses[:-1], *EXTENSIONS, responses[-1]]

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, rcpt_options: list[str]) -> str:
        """Accept our support addresses (with any +tag); refuse others unless told not to."""
        if self.recipients and base_address(address) not in self.recipients:
            return UNKNOWN_RECIPIENT
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        """Commit the mail, then answer; never 250 before the commit."""
        if not self.accepting:
            return self._per_recipient(SHUTTING_DOWN, envelope)
        self.in_flight += 1
        self.committing.add(session)
        try:
            raw = envelope.original_content or envelope.content
            outcome = await asyncio.to_thread(self.ingest, bytes(raw), self.protocol,
                                              _mail_envelope(envelope))
            if self.commits is not None:
                await self.commits.durable()
        except TemporaryFailure as exc:
            log.warning("%s delivery deferred: %s", self.protocol.upper(), exc)
            return self._per_recipient(TEMPFAIL, envelope)
        except Exception:  # never a 5xx for our own fault: the sending MTA would bounce it
            log.exception("%s delivery deferred after an unexpected error",
                          self.protocol.upper())
            return self._per_recipient(TEMPFAIL, envelope)
        finally:
            self.in_flight -= 1
            self.committing.discard(session)
        detail = outcome.ticket_number or outcome.status
        return self._per_recipient(OK.format(detail=detail), envelope)

    def _per_recipient(self, line: str, envelope: Envelope) -> str:
        """The answer to DATA: one line, or with LMTP one per accepted recipient."""
        if not self.lmtp:
            return line
        return "\r\n".join([line] * max(1, len(envelope.rcpt_tos)))


def _mail_envelope(envelope: Envelope) -> MailEnvelope:
    """The envelope as the pipeline keeps it: MAIL FROM ("" for <>) and every RCPT TO."""
    return MailEnvelope(sender=envelope.mail_from or "", recipients=tuple(envelope.rcpt_tos))


def data_limit(max_bytes: int, oversize: str) -> int:
    """The most bytes the listener takes (and announces in SIZE) for ``[limits] oversize``."""
    return max_bytes * OVERSIZE_CEILING if oversize == "quarantine" else max_bytes


async def start_listener(host: str, port: int, protocol: str, max_bytes: int,
                         handler: IngestHandler, max_line_bytes: int = 10_000,
                         sessions: set[SMTP] | None = None) -> asyncio.AbstractServer:
    """Listen for SMTP or LMTP in the running loop; open sessions are kept in ``sessions``."""
    server_class = _server_class(protocol, max_line_bytes, set() if sessions is None
                                 else sessions)
    loop = asyncio.get_running_loop()
    return await loop.create_server(
        lambda: server_class(handler, data_size_limit=max_bytes, enable_SMTPUTF8=True,
                             decode_data=False, hostname="mailbot"),
        host=host, port=port)


def _server_class(protocol: str, max_line_bytes: int, sessions: set[SMTP]) -> type[SMTP]:
    """aiosmtpd's SMTP or LMTP with our line length, keeping track of open sessions.

    RFC 5321 allows 1,000 bytes a line, but real mail has longer lines; MTAs accept them.
    """
    base = LMTP if protocol == "lmtp" else SMTP

    class Server(base):
        line_length_limit = max_line_bytes + 2  # the limit counts the CRLF
        listing_extensions = False  # while the EHLO/LHLO list is sent (no enhanced codes)

        async def push(self, status: str) -> None:
            """Every reply with an enhanced status code, except where RFC 2034 has none."""
            if isinstance(status, str) and not self.listing_extensions:
                status = "\r\n".join(with_enhanced_code(line) for line in status.split("\r\n"))
            await super().push(status)

        if base is LMTP:
            async def smtp_LHLO(self, arg: str) -> None:
                """LHLO (LMTP), its list of extensions sent as it is."""
                await self._list_extensions(super().smtp_LHLO, arg)
        else:
            async def smtp_EHLO(self, arg: str) -> None:
                """EHLO (SMTP), its list of extensions sent as it is."""
                await self._list_extensions(super().smtp_EHLO, arg)

        async def _list_extensions(self, greet: Callable, arg: str) -> None:
            self.listing_extensions = bool(arg)  # a bare EHLO gets a 501 with its code
            try:
                await greet(arg)
            finally:
                self.listing_extensions = False

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            sessions.add(self)
            super().connection_made(transport)

        def connection_lost(self, error: Exception | None) -> None:
            sessions.discard(self)
            super().connection_lost(error)

    return Server


class Listener:
    """The SMTP/LMTP listener as a source: open the port, serve until stopped, drain."""

    def __init__(self, cfg: ListenerConfig, max_bytes: int, recipients: tuple[str, ...],
                 health: Health, oversize: str = "quarantine") -> None:
        self.cfg = cfg
        self.name = f"{cfg.protocol}:{cfg.host}:{cfg.port}"
        self.max_bytes = data_limit(max_bytes, oversize)
        self.recipients = recipients
        self.health = health
        self.handler: IngestHandler | None = None
        self.server: asyncio.AbstractServer | None = None
        self.sessions: set[SMTP] = set()

    async def open(self, feed: Feed) -> None:
        """Bind the port (an OSError says why not) and accept mail for ``feed`` from now on."""
        self.handler = IngestHandler(feed.file, self.cfg.protocol == "lmtp", self.recipients,
                                     GroupCommit(feed.flush))
        self.server = await start_listener(self.cfg.host, self.cfg.port, self.cfg.protocol,
                                           self.max_bytes, self.handler,
                                           self.cfg.max_line_bytes, self.sessions)
        self.health.set(self.name, "connected")

    async def serve(self, feed: Feed, stop: asyncio.Event) -> None:
        """Accept mail until ``stop`` is set, then refuse new mail and finish the mail in hand.

        On the way out every client gets 421 4.3.2 (after the answer to a mail that is being
        filed), so the sending MTA tries again later instead of waiting for a timeout.
        """
        if self.server is None or not self.server.is_serving():
            await self.open(feed)
        try:
            await stop.wait()
        finally:
            self.handler.accepting = False
            self.server.close()
            await self._say_goodbye(lambda s: s.session not in self.handler.committing)
            await self._drain()
            await self._say_goodbye(lambda s: True)
            self.health.set(self.name, "stopped")

    async def _say_goodbye(self, chosen: Callable[[SMTP], bool]) -> None:
        """Answer 421 4.3.2 to the chosen open sessions and close them."""
        for session in [s for s in self.sessions if chosen(s)]:
            if session.transport is None:
                continue
            try:
                await asyncio.wait_for(session.push(SHUTTING_DOWN), 1.0)
            except (OSError, TimeoutError, RuntimeError):
                log.debug("could not say goodbye to an SMTP client", exc_info=True)
            if session.transport is not None:
                session.transport.close()

    async def _drain(self) -> None:
        """Wait (bounded) for deliveries that are being committed to get their answer."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + DRAIN_SECONDS
        while self.handler.in_flight and loop.time() < deadline:
            await asyncio.sleep(0.05)
