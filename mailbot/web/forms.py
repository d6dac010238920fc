"""CSRF fields of the customer pages' forms: signed, time-limited, bound to one link."""

from __future__ import annotations

import hashlib

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

from mailbot.web.render import PageError

FORM_SALT = "mailbot-form"


class Forms:
    """CSRF fields: a signed, time-limited value bound to one link token and its purpose."""

    def __init__(self, secret: str, max_age_seconds: int) -> None:
        self.serializer = URLSafeTimedSerializer(secret, salt=FORM_SALT)
        self.max_age = max_age_seconds

    def field(self, purpose: str, token: str) -> str:
        """The hidden field value for a form on the page of ``token``."""
        return self.serializer.dumps({"p": purpose, "k": _digest(token)})

    def check(self, value: object, purpose: str, token: str) -> None:
        """Raise PageError 403 unless ``value`` is a fresh field for this token and purpose."""
        if not isinstance(value, str) or not value:
            raise PageError(403, "form")
        try:
            data = self.serializer.loads(value, max_age=self.max_age)
        except (SignatureExpired, BadSignature) as exc:
            raise PageError(403, "form") from exc
        if data != {"p": purpose, "k": _digest(token)}:
            raise PageError(403, "form")


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()[:32]
