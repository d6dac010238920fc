"""A throwaway Dovecot that takes OAuth2 tokens only, and an SMTP relay sink that does too.

The Dovecot is :class:`servers.Dovecot` with the oauth2 passdb as its only passdb, pointed
at the introspection endpoint of a :class:`oauth_server.TokenServer`: every login (SASL
XOAUTH2 or OAUTHBEARER) is checked there, so an expired or revoked token is refused, as
by Exchange Online or Gmail.  The sink is :class:`servers.SmtpSink` requiring AUTH with a
token the same server vouches for.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import urllib.request
from collections.abc import Iterator

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult
from imapclient import IMAPClient
from oauth_server import TokenServer
from servers import Dovecot, SmtpSink, _SinkHandler, wait_until

OAUTH2_PASSDB = """\
passdb {{
  driver = oauth2
  mechanisms = xoauth2 oauthbearer
  args = {root}/dovecot-oauth2.conf.ext
}}
"""

OAUTH2_SETTINGS = """\
introspection_url = {url}/introspect
introspection_mode = post
force_introspection = yes
username_attribute = username
active_attribute = active
active_value = true
"""


class OAuthDovecot(Dovecot):
    """Dovecot whose only passdb asks ``tokens``' introspection endpoint at every login."""

    def __init__(self, tokens: TokenServer, mechanisms: str = "xoauth2 oauthbearer") -> None:
        self.tokens = tokens
        self.mechanisms = mechanisms
        super().__init__()
        (self.root / "dovecot-oauth2.conf.ext").write_text(
            OAUTH2_SETTINGS.format(url=tokens.url))
        (self.root / "dovecot-oauth2.conf.ext").chmod(0o644)

    def _render_config(self) -> str:
        """The usual throwaway config with the oauth2 passdb in place of the passwd file."""
        config = super()._render_config()
        start = config.index("passdb {")
        end = config.index("}\n", start) + 2
        config = config[:start] + OAUTH2_PASSDB.format(root=self.root) + config[end:]
        # No cached verdict: an expired or revoked token must be refused at the next login.
        return config.replace("auth_mechanisms = plain login",
                              f"auth_mechanisms = {self.mechanisms}\nauth_cache_size = 0")

    def add_mailbox(self, name: str) -> None:
        """Make ``name`` usable by the client helpers (there is no password to set)."""
        with self._lock:
            self._users[name] = ""

    @contextlib.contextmanager
    def connect(self, user: str, timeout: float = 10.0) -> Iterator[IMAPClient]:
        """Yield an IMAPClient logged in as ``user`` with a freshly minted token."""
        client = IMAPClient(self.host, port=self.port, ssl=False, timeout=timeout)
        try:
            client.oauth2_login(user, self.tokens.mint(user))
            yield client
        finally:
            with contextlib.suppress(Exception):
                client.logout()

    def logins(self, user: str, at_least: int = 0) -> int:
        """How many times ``user`` logged in so far, from Dovecot's log, once it shows at
        least ``at_least`` (Dovecot's log process writes a login a moment after the client
        is in: read at once, the last one may be missing)."""
        def count() -> int:
            return self.log_text().count(f"Login: user=<{user}>")

        wait_until(lambda: count() >= at_least, 10,
                   message=f"{at_least} logins of {user} in Dovecot's log")
        return count()


class _OAuthSinkHandler(_SinkHandler):
    """The sink's handler with SASL XOAUTH2 and OAUTHBEARER checked at the token server."""

    def __init__(self, sink: OAuthSmtpSink) -> None:
        super().__init__(sink)
        self.introspect_url = f"{sink.tokens.url}/introspect"

    async def auth_XOAUTH2(self, server, args) -> AuthResult:
        """``AUTH XOAUTH2 <base64 user=...^Aauth=Bearer ...^A^A>``."""
        message = await self._initial(server, args)
        fields = dict(part.split("=", 1) for part in message.split("\x01") if "=" in part)
        return await self._check(server, fields.get("user", ""), fields.get("auth", ""))

    async def auth_OAUTHBEARER(self, server, args) -> AuthResult:
        """``AUTH OAUTHBEARER <base64 n,a=user,^Aauth=Bearer ...^A^A>`` (RFC 7628)."""
        message = await self._initial(server, args)
        head, _, rest = message.partition("\x01")
        user = next((p[2:] for p in head.split(",") if p.startswith("a=")), "")
        user = user.replace("=2C", ",").replace("=3D", "=")
        fields = dict(part.split("=", 1) for part in rest.split("\x01") if "=" in part)
        return await self._check(server, user, fields.get("auth", ""))

    async def _initial(self, server, args) -> str:
        if len(args) > 1:
            return base64.b64decode(args[1]).decode()
        return (await server.challenge_auth("", encode_to_b64=False) or b"").decode()

    async def _check(self, server, user: str, auth: str) -> AuthResult:
        token = auth.removeprefix("Bearer ")
        verdict = await asyncio.to_thread(self._introspect, token)
        accepted = bool(verdict.get("active")) and verdict.get("username") == user
        self.sink.auth_attempts.append((user, token, accepted))
        if accepted:
            return AuthResult(success=True, handled=False, auth_data=user)
        # As Gmail and Exchange: a 334 with the error as base64 JSON, then 535 after "".
        error = base64.b64encode(json.dumps({"status": "401"}).encode()).decode()
        await server.challenge_auth(error, encode_to_b64=False)
        return AuthResult(success=False, handled=False)

    def _introspect(self, token: str) -> dict:
        request = urllib.request.Request(self.introspect_url,  # noqa: S310 - loopback
                                         data=f"token={token}".encode(), method="POST")
        with urllib.request.urlopen(request, timeout=5) as answer:  # noqa: S310 - loopback
            return json.loads(answer.read())


class OAuthSmtpSink(SmtpSink):
    """An SMTP relay sink that takes mail only after AUTH with a valid token."""

    def __init__(self, tokens: TokenServer, mechanisms: tuple[str, ...] = ("XOAUTH2",)) -> None:
        super().__init__()
        self.tokens = tokens
        self.mechanisms = mechanisms
        self.auth_attempts: list[tuple[str, str, bool]] = []  # (user, token, accepted)

    def start(self) -> None:
        """Listen, requiring AUTH with one of ``mechanisms`` before MAIL FROM."""
        if self._controller is not None:
            return
        excluded = ["LOGIN", "PLAIN", *({"XOAUTH2", "OAUTHBEARER"} - set(self.mechanisms))]
        controller = Controller(_OAuthSinkHandler(self), hostname=self.host, port=self.port,
                                ready_timeout=10.0, auth_require_tls=False, auth_required=True,
                                auth_exclude_mechanism=excluded)
        controller.start()
        self._controller = controller

