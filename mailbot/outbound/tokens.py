"""Signed, expiring tokens: customer links, per-agent reply addresses, our Message-IDs
and the return paths (VERP) that tell which of our mails a bounce is about.

Link tokens use itsdangerous (a list of secrets rotates keys); reply-address, return-path
and Message-ID signatures are short lower-case HMACs because mail systems may change
the case of an address's local part.  A reply tag names the ticket, the agent it was sent
to and the day it was issued, so a reply from anyone else, or a late one, is known.

A ticket number rides in these lower-case tokens as its :func:`number_code`, so any number
the configured format makes (upper-case letters, dots, slashes) comes back exactly.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import re
import secrets as random_source
from dataclasses import dataclass
from datetime import UTC, date, datetime

from itsdangerous import BadSignature, SignatureExpired, TimestampSigner, URLSafeTimedSerializer

LINK_PURPOSES = ("escalate", "ticket")
# Characters a number code keeps as they are; "_" marks an upper-case letter, "=" a byte.
PLAIN = frozenset("0123456789abcdefghijklmnopqrstuvwxyz-")
NUMBER_CODE = re.compile(r"(?:[0-9a-z-]|_[a-z]|=[0-9a-f]{2})+")
CODE_PIECE = re.compile(r"_([a-z])|=([0-9a-f]{2})|([0-9a-z-])")


class TokenError(Exception):
    """A token is tampered with, for another purpose, or unknown."""


class TokenExpired(TokenError):
    """A token was genuine but is too old."""


@dataclass(frozen=True)
class ReplyTag:
    """What a genuine reply tag says: the ticket, the agent it was sent to, its issue day."""

    ticket_number: str
    # agent_id() of the address the reply address was sent to.
    agent_id: str
    # epoch_day() of the day it was issued.
    issued_day: int

    def sent_to(self, address: str) -> bool:
        """Whether the reply address was sent to the agent with this address."""
        return hmac.compare_digest(self.agent_id, agent_id(address))

    def age_days(self, now: datetime) -> int:
        """Whole days since the reply address was issued (by UTC dates)."""
        return epoch_day(now) - self.issued_day


def agent_id(address: str) -> str:
    """A short id of an agent's address for reply tags: 8 hex digits of its SHA-256."""
    return hashlib.sha256(address.strip().lower().encode()).hexdigest()[:8]


def number_code(number: str) -> str:
    """A ticket number as it rides in addresses and Message-IDs: only lower-case letters,
    digits, "-", "_" and "=", unchanged when the number has nothing else (the default
    format: tokens issued before codes existed stay valid), an upper-case letter as "_"
    and the letter, any other character as "=" and the hex digits of each UTF-8 byte."""
    if PLAIN.issuperset(number):
        return number
    return "".join(c if c in PLAIN else f"_{c.lower()}" if "A" <= c <= "Z"
                   else "".join(f"={b:02x}" for b in c.encode()) for c in number)


def number_of_code(code: str) -> str | None:
    """The ticket number a code (in any case) stands for, or None for no valid code."""
    code = code.lower()
    if not NUMBER_CODE.fullmatch(code):
        return None
    pieces = CODE_PIECE.findall(code)
    raw = b"".join(upper.upper().encode() if upper else bytes.fromhex(byte) if byte
                   else plain.encode() for upper, byte, plain in pieces)
    try:
        return raw.decode()
    except UnicodeDecodeError:
        return None


def _known(purpose: str) -> str:
    """``purpose`` if links are made for it; ValueError otherwise."""
    if purpose not in LINK_PURPOSES:
        raise ValueError(f"unknown token purpose {purpose}")
    return purpose


@functools.lru_cache(maxsize=256)
def _link_payload(ticket_number: str) -> bytes:
    """The payload of a link token for one ticket as ``URLSafeTimedSerializer`` writes it
    (compact JSON, compressed when that is shorter, base64), for any purpose and secret:
    a compression attempt costs more than the signature."""
    return _PAYLOAD_WRITER.dump_payload({"t": ticket_number})


# Writes link payloads only: the payload depends on no secret, nothing is signed with it.
_PAYLOAD_WRITER = URLSafeTimedSerializer(b"payloads are not signed")


def epoch_day(moment: datetime) -> int:
    """The UTC date of ``moment`` as days since 1970-01-01 (short, and counts on)."""
    return (moment.astimezone(UTC).date() - date(1970, 1, 1)).days


@dataclass(frozen=True)
class Signer:
    """Signs and checks mailbot's tokens with the current secret (and older ones)."""

    secret: str
    old_secrets: tuple[str, ...] = ()
    max_age_seconds: int = 90 * 86400

    def link_token(self, purpose: str, ticket_number: str) -> str:
        """A URL-safe token that grants ``purpose`` on one ticket.

        What ``URLSafeTimedSerializer.dumps`` writes, from its parts: the payload (the same
        for every purpose, made once for a ticket's links) signed by the purpose's signer.
        """
        signer = self._link_signers[_known(purpose)]
        return signer.sign(_link_payload(ticket_number)).decode()

    def read_link_token(self, purpose: str, token: str) -> str:
        """The ticket number a link token grants ``purpose`` on; raise TokenError otherwise."""
        try:
            data = self._serializer(purpose).loads(token, max_age=self.max_age_seconds)
        except SignatureExpired as exc:
            raise TokenExpired("token expired") from exc
        except BadSignature as exc:
            raise TokenError("token invalid") from exc
        if not isinstance(data, dict) or not isinstance(data.get("t"), str):
            raise TokenError("token invalid")
        return data["t"]

    def reply_tag(self, ticket_number: str, agent: str, issued: datetime) -> str:
        """The plus-address tag of replies about one ticket by one agent, issued on a day.

        ``t<number>-<agent id>-<day>-<mac>``: 33 characters besides the number.
        """
        text = f"{number_code(ticket_number)}-{agent_id(agent)}-{epoch_day(issued)}"
        return f"t{text}-{self._mac('agent-reply', text, 16)}"

    def read_reply_tag(self, tag: str) -> ReplyTag | None:
        """What a genuine reply tag says, else None (also for old tags without an agent)."""
        if not tag.lower().startswith("t"):  # never a +b- tag
            return None
        parts = tag.lower()[1:].rsplit("-", 3)
        if len(parts) != 4:
            return None
        code, agent, day, mac = parts
        number = number_of_code(code)
        if not number or len(agent) != 8 or not (day.isascii() and day.isdecimal()):
            return None
        if not self._verify("agent-reply", f"{code}-{agent}-{day}", mac, 16):
            return None
        return ReplyTag(ticket_number=number, agent_id=agent, issued_day=int(day))

    def message_id(self, ticket_number: str, domain: str) -> str:
        """A fresh Message-ID for an outgoing mail that proves we sent it for this ticket."""
        code = number_code(ticket_number)
        nonce = random_source.token_hex(6)
        mac = self._mac("msgid", f"{code}.{nonce}", 12)
        return f"mb.{code}.{nonce}.{mac}@{domain}"

    def read_message_id(self, message_id: str) -> str | None:
        """The ticket number of one of our own genuine Message-IDs, else None."""
        local = message_id.partition("@")[0].lower()
        parts = local.split(".")
        if len(parts) != 4 or parts[0] != "mb":
            return None
        _, code, nonce, mac = parts
        return number_of_code(code) if self._verify("msgid", f"{code}.{nonce}", mac, 12) \
            else None

    def bounce_tag(self, message_id: str) -> str:
        """The plus-address tag of the return path (VERP) of our mail ``message_id``.

        It names the mail by the ticket number and random part of its Message-ID and is
        signed on its own, so knowing a Message-ID (quoted in every reply) is not enough
        to make up the address a bounce of that mail is sent to.
        """
        parts = message_id.partition("@")[0].split(".")
        if len(parts) != 4 or parts[0] != "mb":
            raise ValueError(f"not one of our Message-IDs: {message_id}")
        mark = f"{parts[1]}.{parts[2]}"
        return f"b-{mark}-{self._mac('bounce', mark.lower(), 16)}"

    def read_bounce_tag(self, tag: str) -> str | None:
        """How the Message-ID of the mail a genuine return-path tag names begins
        (``mb.<number>.<nonce>.``), else None."""
        kind, _, rest = tag.lower().partition("-")
        mark, _, mac = rest.rpartition("-")
        if kind != "b" or not mark or not mac:
            return None
        return f"mb.{mark}." if self._verify("bounce", mark, mac, 16) else None

    def _serializer(self, purpose: str) -> URLSafeTimedSerializer:
        return self._link_serializers[_known(purpose)]

    @functools.cached_property
    def _link_serializers(self) -> dict[str, URLSafeTimedSerializer]:
        """The serializer of each link purpose, built once per signer (its secrets never
        change: a new secret is a new Signer)."""
        keys = [*self.old_secrets, self.secret]
        return {purpose: URLSafeTimedSerializer(keys, salt=f"mailbot-{purpose}")
                for purpose in LINK_PURPOSES}

    @functools.cached_property
    def _link_signers(self) -> dict[str, TimestampSigner]:
        """The signer each link serializer signs with (itsdangerous builds one per token)."""
        return {purpose: serializer.make_signer()
                for purpose, serializer in self._link_serializers.items()}

    def _mac(self, purpose: str, text: str, length: int, key: str | None = None) -> str:
        digest = hmac.new((key or self.secret).encode(), f"{purpose}:{text}".encode(),
                          hashlib.sha256).hexdigest()
        return digest[:length]

    def _verify(self, purpose: str, text: str, mac: str, length: int) -> bool:
        if not mac.isascii():  # ours never is; compare_digest refuses non-ASCII text
            return False
        return any(hmac.compare_digest(self._mac(purpose, text, length, key), mac)
                   for key in (self.secret, *self.old_secrets))
