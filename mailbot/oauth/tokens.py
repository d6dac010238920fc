"""Access tokens for one mailbox: cached, refreshed before they expire, renewed on refusal.

:func:`tokens_for` hands every login of the same mailbox with the same [oauth2] table the
same :class:`TokenSource` (the IMAP source, the relay sessions, `mailbot fetch`), so a
token is asked for once per lifetime, not once per login.  A token is replaced a minute
before it ends (a fifth of its life for short ones); after a server refused it, once at
once (:meth:`TokenSource.renew`).  A rotated refresh token is stored before the access
token that came with it is used.  After a failure the endpoint is not asked again before a
pause that doubles up to five minutes: a revoked client does not hammer the provider.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from mailbot.oauth import vault
from mailbot.oauth.causes import TokenError
from mailbot.settings.config import OAuth2Config

log = logging.getLogger(__name__)

# A token is replaced this long before it expires (at most a fifth of its lifetime).
REFRESH_MARGIN_SECONDS = 60.0
# After a failure: the first pause before the endpoint is asked again, and the longest.
RETRY_SECONDS = (1.0, 300.0)


class TokenSource:
    """The access token of one mailbox (or the relay's sender), thread-safe."""

    def __init__(self, settings: OAuth2Config, username: str, timeout: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        # Imported here: msal and google-auth take half a second to load, which a process
        # without OAuth2 (`mailbot ingest`, once per mail) should not pay.
        from mailbot.oauth.providers import provider_for

        self.settings = settings
        self.username = username
        self.provider = provider_for(settings, username, timeout)
        self.clock = clock
        self._lock = threading.Lock()
        self._access = ""
        self._refresh_at = 0.0
        self._failures = 0
        self._retry_at = 0.0
        self._error: TokenError | None = None

    @property
    def refresh_at(self) -> float:
        """When (``clock`` time) the current token is replaced: a session logged in with it
        should end by then (Exchange Online cuts it at expiry, Dovecot does not)."""
        with self._lock:
            return self._refresh_at

    def token(self) -> str:
        """A valid access token: the cached one, or a new one when it is about to expire."""
        with self._lock:
            if self._access and self.clock() < self._refresh_at:
                return self._access
            return self._fetch()

    def renew(self) -> str:
        """A new access token in place of one the server refused (revoked before its end)."""
        with self._lock:
            self._access = ""
            return self._fetch()

    def _fetch(self) -> str:
        now = self.clock()
        if self._error is not None and now < self._retry_at:
            raise self._error
        try:
            refresh_token = vault.current(self.settings) \
                if self.settings.grant == "refresh_token" else ""
            grant = self.provider.fetch(refresh_token)
            if grant.refresh_token and grant.refresh_token != refresh_token:
                vault.save(self.settings, grant.refresh_token)
        except TokenError as exc:
            self._failed(now, exc)
            raise
        except OSError as exc:  # the rotated refresh token could not be stored
            error = TokenError(f"cannot store the rotated refresh token: {exc}", refused=False,
                               code="token_file")
            self._failed(now, error)
            raise error from exc
        self._failures, self._error = 0, None
        self._access = grant.access_token
        self._refresh_at = now + grant.expires_in - min(REFRESH_MARGIN_SECONDS,
                                                        grant.expires_in / 5)
        log.info("OAuth2 (%s): new access token for %s, valid %.0f s",
                 self.settings.provider, self.username, grant.expires_in)
        return self._access

    def _failed(self, now: float, error: TokenError) -> None:
        """Remember a failure: the endpoint is asked again only after a growing pause."""
        self._failures += 1
        self._error = error
        first, longest = RETRY_SECONDS
        self._retry_at = now + min(longest, first * 2 ** (self._failures - 1))
        log.warning("OAuth2 (%s): no access token for %s: %s", self.settings.provider,
                    self.username, error)


_SOURCES: dict[tuple[OAuth2Config, str], TokenSource] = {}
_SOURCES_LOCK = threading.Lock()


def tokens_for(settings: OAuth2Config, username: str, timeout: float) -> TokenSource:
    """The one :class:`TokenSource` of this process for ``username`` with these settings."""
    key = (settings, username)
    with _SOURCES_LOCK:
        if key not in _SOURCES:
            _SOURCES[key] = TokenSource(settings, username, timeout)
        return _SOURCES[key]
