"""Signed, expiring tokens: customer links, per-ticket reply addresses, our Message-IDs.

Link tokens use itsdangerous (a list of secrets rotates keys); reply-address and
Message-ID signatures are short lower-case HMACs because mail systems may change
the case of an address's local part.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets as random_source
from dataclasses import dataclass

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

LINK_PURPOSES = ("escalate", "ticket")


class TokenError(Exception):
    """A token is tampered with, for another purpose, or unknown."""


class TokenExpired(TokenError):
    """A token was genuine but is too old."""


@dataclass(frozen=True)
class Signer:
    """Signs and checks mailbot's tokens with the current secret (and older ones)."""

    secret: str
    old_secrets: tuple[str, ...] = ()
    max_age_seconds: int = 90 * 86400

    def link_token(self, purpose: str, ticket_number: str) -> str:
        """A URL-safe token that grants ``purpose`` on one ticket."""
        return self._serializer(purpose).dumps({"t": ticket_number})

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

    def reply_tag(self, ticket_number: str) -> str:
        """The plus-address tag that marks a reply as being about one ticket."""
        return f"t{ticket_number}-{self._mac('reply', ticket_number, 16)}"

    def read_reply_tag(self, tag: str) -> str | None:
        """The ticket number of a genuine reply tag, else None."""
        number, _, mac = tag.lower().removeprefix("t").partition("-")
        if not number or not mac:
            return None
        return number if self._verify("reply", number, mac, 16) else None

    def message_id(self, ticket_number: str, domain: str) -> str:
        """A fresh Message-ID for an outgoing mail that proves we sent it for this ticket."""
        nonce = random_source.token_hex(6)
        mac = self._mac("msgid", f"{ticket_number}.{nonce}", 12)
        return f"mb.{ticket_number}.{nonce}.{mac}@{domain}"

    def read_message_id(self, message_id: str) -> str | None:
        """The ticket number of one of our own genuine Message-IDs, else None."""
        local = message_id.partition("@")[0].lower()
        parts = local.split(".")
        if len(parts) != 4 or parts[0] != "mb":
            return None
        _, number, nonce, mac = parts
        return number if self._verify("msgid", f"{number}.{nonce}", mac, 12) else None

    def _serializer(self, purpose: str) -> URLSafeTimedSerializer:
        if purpose not in LINK_PURPOSES:
            raise ValueError(f"unknown token purpose {purpose}")
        keys = [*self.old_secrets, self.secret]
        return URLSafeTimedSerializer(keys, salt=f"mailbot-{purpose}")

    def _mac(self, purpose: str, text: str, length: int, key: str | None = None) -> str:
        digest = hmac.new((key or self.secret).encode(), f"{purpose}:{text}".encode(),
                          hashlib.sha256).hexdigest()
        return digest[:length]

    def _verify(self, purpose: str, text: str, mac: str, length: int) -> bool:
        return any(hmac.compare_digest(self._mac(purpose, text, length, key), mac)
                   for key in (self.secret, *self.old_secrets))
