"""Find the ticket an inbound mail belongs to (pure: lookups are passed in).

Order of evidence, strongest first: a signed reply address, our own signed
Message-IDs in In-Reply-To/References, Message-IDs of mails we filed, the ticket
tag in the subject.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from mailbot.outbound.tokens import ReplyTag, Signer
from mailbot.reading.message import Message
from mailbot.settings.config import TICKET_NUMBER


@dataclass(frozen=True)
class ThreadMatch:
    """Which ticket a mail follows up on, and by what evidence."""

    ticket_number: str = ""
    ticket_id: int | None = None
    how: str = ""
    # The genuine reply tag the mail came through (the agent and day it was signed for).
    reply_tag: ReplyTag | None = None

    @property
    def found(self) -> bool:
        """Whether the mail belongs to an existing ticket."""
        return bool(self.ticket_number) or self.ticket_id is not None

    @property
    def reply_token(self) -> bool:
        """Whether the mail came through a genuine signed reply address."""
        return self.reply_tag is not None


def tag_pattern(prefix: str) -> re.Pattern[str]:
    """The regex of the subject tag ``[<prefix><number>]``, for any number the configured
    format may make."""
    return re.compile(r"\[" + re.escape(prefix) + rf"\s*({TICKET_NUMBER.pattern})\]",
                      re.IGNORECASE)


def subject_numbers(subject: str, pattern: re.Pattern[str]) -> tuple[str, ...]:
    """Ticket numbers tagged in a subject, in order."""
    return tuple(dict.fromkeys(pattern.findall(subject)))


def reply_tag_of(msg: Message, support_addresses: tuple[str, ...],
                 signer: Signer) -> ReplyTag | None:
    """The tag of a genuine signed reply address among the recipients, or None."""
    locals_ = {a.partition("@")[0]: a.partition("@")[2] for a in support_addresses}
    for address in msg.recipients:
        local, _, domain = address.partition("@")
        base, plus, tag = local.partition("+")
        if plus and locals_.get(base) == domain:
            found = signer.read_reply_tag(tag)
            if found:
                return found
    return None


def find(msg: Message, *, signer: Signer, support_addresses: tuple[str, ...],
         tag: re.Pattern[str], lookup: Callable[[str], int | None]) -> ThreadMatch:
    """The ticket ``msg`` follows up on, or an empty match for a new ticket."""
    reply = reply_tag_of(msg, support_addresses, signer)
    if reply:
        return ThreadMatch(ticket_number=reply.ticket_number, how="reply-address",
                           reply_tag=reply)
    for header, ids in (("in-reply-to", msg.in_reply_to),
                        ("references", tuple(reversed(msg.references)))):
        match = _by_ids(ids, header, signer, lookup)
        if match.found:
            return match
    numbers = subject_numbers(msg.subject, tag)
    if numbers:
        return ThreadMatch(ticket_number=numbers[0], how="subject-tag")
    return ThreadMatch()


def _by_ids(ids: tuple[str, ...], header: str, signer: Signer,
            lookup: Callable[[str], int | None]) -> ThreadMatch:
    for message_id in ids:
        number = signer.read_message_id(message_id)
        if number:
            return ThreadMatch(ticket_number=number, how=header)
    for message_id in ids:
        ticket_id = lookup(message_id)
        if ticket_id is not None:
            return ThreadMatch(ticket_id=ticket_id, how=header)
    return ThreadMatch()
