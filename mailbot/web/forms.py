"""The fields of the customer pages' forms: signed, time-limited, bound to one link, used once.

Each page shows a fresh field with a random form id; the first post of it does what the
form asks and records the id in the same transaction, so a double click, a resent form or
a replay from another process finds the id taken and changes nothing.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

from mailbot.store import Store
from mailbot.store import forms as fq
from mailbot.web.render import PageError

FORM_SALT = "mailbot-form"


@dataclass(frozen=True)
class SentForm:
    """A genuine form as it arrived: its one-time id and when its field expires."""

    form_id: str
    expires_at: datetime

    def first_time(self, store: Store) -> bool:
        """Record that this form was sent; False when it was sent before.

        Expiry is judged by the real clock, as the signature's age is.
        """
        return fq.first_use(store, self.form_id, self.expires_at, datetime.now(UTC))


class Forms:
    """CSRF fields: a signed, time-limited value bound to one link token and its purpose."""

    def __init__(self, secret: str, max_age_seconds: int) -> None:
        self.serializer = URLSafeTimedSerializer(secret, salt=FORM_SALT)
        self.max_age = max_age_seconds

    def field(self, purpose: str, token: str) -> str:
        """The hidden field value for a form on the page of ``token``: a new form id each time."""
        return self.serializer.dumps({"p": purpose, "k": _digest(token),
                                      "n": secrets.token_urlsafe(16)})

    def check(self, value: object, purpose: str, token: str) -> SentForm:
        """The form ``value`` names; PageError 403 unless fresh and for this token and purpose."""
        if not isinstance(value, str) or not value:
            raise PageError(403, "form")
        try:
            data, signed = self.serializer.loads(value, max_age=self.max_age,
                                                 return_timestamp=True)
        except (SignatureExpired, BadSignature) as exc:
            raise PageError(403, "form") from exc
        if not isinstance(data, dict) or set(data) != {"p", "k", "n"} \
                or (data["p"], data["k"]) != (purpose, _digest(token)) \
                or not isinstance(data["n"], str):
            raise PageError(403, "form")
        return SentForm(data["n"], signed + timedelta(seconds=self.max_age))


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()[:32]
