"""`mailbot oauth login NAME`: a user's delegated sign-in by the device-code flow (RFC 8628).

mailbot prints a URL and a code; the user opens the URL anywhere, enters the code and
signs in as the mailbox; mailbot polls the token endpoint meanwhile and stores the refresh
token it gets (:mod:`mailbot.oauth.vault`), which the daemon then uses and keeps fresh.
Microsoft's flow runs through msal; Google offers no device flow for the mail scope.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

from mailbot.oauth import vault
from mailbot.oauth.causes import TokenError, refusal
from mailbot.oauth.providers import DEVICE_GRANT, Generic, Microsoft, scopes
from mailbot.settings.config import OAuth2Config

# Seconds between polls when the server does not say (RFC 8628 3.2), and the extra
# seconds a "slow_down" answer adds (3.5).
POLL_SECONDS = 5.0
SLOW_DOWN_SECONDS = 5.0


def sign_in(settings: OAuth2Config, username: str, timeout: float,
            say: Callable[[str], None]) -> Path:
    """Run the device-code flow for one [oauth2] table; the file the refresh token is in.

    ``say`` shows the user where to go and which code to enter.  Raises
    :class:`TokenError` when the sign-in is declined, expires or cannot start.
    """
    if settings.grant != "refresh_token":
        raise TokenError(f'{settings.provider} with grant = "{settings.grant}" needs no '
                         'sign-in (the application\'s own credentials are used); a sign-in '
                         'is for grant = "refresh_token"', refused=True, code="not_delegated")
    if settings.provider == "microsoft":
        refresh_token = _microsoft(Microsoft(settings, username, timeout), say)
    elif settings.provider == "generic" and settings.device_url:
        refresh_token = _generic(Generic(settings, username, timeout), say)
    else:
        raise TokenError(
            f"{settings.provider} offers no device sign-in here"
            + (" (Google's device flow does not allow https://mail.google.com/): get a "
               "refresh token with an installed app's consent and set refresh_token"
               if settings.provider == "google" else ": set device_url"),
            refused=True, code="no_device_flow")
    return vault.save(settings, refresh_token)


def _generic(provider: Generic, say: Callable[[str], None]) -> str:
    """RFC 8628 against the configured device_url and token_url; the refresh token."""
    settings = provider.settings
    start = provider.post(settings.device_url, {})
    uri = start.get("verification_uri_complete") or start.get("verification_uri", "")
    say(f"To sign in, open {uri} and enter the code {start.get('user_code', '')}")
    interval = float(start.get("interval") or POLL_SECONDS)
    deadline = time.monotonic() + float(start.get("expires_in") or 600)
    pause = threading.Event()  # never set: its timed wait is the polite pause between polls
    while time.monotonic() < deadline:
        pause.wait(interval)
        try:
            answer = provider.post(settings.token_url, {"grant_type": DEVICE_GRANT,
                                                        "device_code": start["device_code"]})
        except TokenError as exc:
            if exc.code == "authorization_pending":
                continue
            if exc.code == "slow_down":
                interval += SLOW_DOWN_SECONDS
                continue
            raise
        return _refresh_token_of(answer)
    raise refusal({"error": "expired_token"})


def _microsoft(provider: Microsoft, say: Callable[[str], None]) -> str:
    """Microsoft's device flow through msal (a public client); the refresh token."""
    app = provider.app()
    flow = app.initiate_device_flow(scopes=scopes(provider.settings))
    if "user_code" not in flow:
        raise refusal(flow)
    say(flow.get("message") or f"To sign in, open {flow['verification_uri']} and enter "
                                f"the code {flow['user_code']}")
    return _refresh_token_of(app.acquire_token_by_device_flow(flow))


def _refresh_token_of(answer: dict) -> str:
    """The refresh token of a successful sign-in, or the error it came with."""
    if "error" in answer or "access_token" not in answer:
        raise refusal(answer)
    if not answer.get("refresh_token"):
        raise TokenError("the sign-in gave no refresh token: add offline_access to scope "
                         "(or the provider's equivalent)", refused=True, code="no_refresh")
    return str(answer["refresh_token"])
