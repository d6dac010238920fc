"""The SASL messages that carry an access token: XOAUTH2 (Google, Microsoft) and
OAUTHBEARER (RFC 7628), and which of them to use with a server."""

from __future__ import annotations

import base64

from mailbot.oauth.causes import TokenError

# What the client answers to a server's error challenge (a 334 with JSON) to get the
# final refusal: an empty line for XOAUTH2, a lone ^A for OAUTHBEARER (RFC 7628 3.2.3).
ERROR_ACKNOWLEDGEMENT = {"XOAUTH2": "", "OAUTHBEARER": base64.b64encode(b"\x01").decode()}


def mechanism(offered: set[str]) -> str:
    """OAUTHBEARER when the server offers it (the standard), else XOAUTH2.

    ``offered`` holds the server's SASL mechanisms, upper-case."""
    for name in ("OAUTHBEARER", "XOAUTH2"):
        if name in offered:
            return name
    raise TokenError(f"the server offers neither OAUTHBEARER nor XOAUTH2 (it offers "
                     f"{', '.join(sorted(offered)) or 'no SASL mechanism'}): is OAuth2 "
                     "enabled for it?", refused=True, code="no_mechanism")


def initial_response(name: str, username: str, token: str) -> str:
    """The base64 initial response of mechanism ``name`` for ``username`` and ``token``."""
    if name == "OAUTHBEARER":
        identity = username.replace("=", "=3D").replace(",", "=2C")
        message = f"n,a={identity},\x01auth=Bearer {token}\x01\x01"
    else:
        message = f"user={username}\x01auth=Bearer {token}\x01\x01"
    return base64.b64encode(message.encode()).decode()
