"""A small OAuth2 identity provider for tests, in a thread of the test process.

It plays Microsoft's, Google's or any RFC 6749 server's part on 127.0.0.1 (plain HTTP, or
HTTPS with a self-signed certificate, as msal accepts only https authorities):

- ``POST .../token``: the client-credentials grant (secret as HTTP Basic or in the form,
  or a signed client assertion as msal sends for a certificate), the refresh-token grant
  (rotating: each use answers a new refresh token and revokes the old one), the device-code
  grant (RFC 8628) and the JWT-bearer grant of a Google service account (RFC 7523, signed
  with the account's key, ``sub`` the mailbox).
- ``POST .../devicecode`` or ``/device``: the device authorization endpoint (RFC 8628);
  :meth:`TokenServer.approve` is the user entering the code in a browser.
- ``POST /introspect`` (RFC 7662): what Dovecot's oauth2 passdb and the relay sink ask.
- ``GET /<tenant>/v2.0/.well-known/openid-configuration``: msal's tenant discovery.

Access tokens expire after their client's ``ttl`` seconds; :meth:`TokenServer.revoke` makes
a client's secret and tokens worthless, as deleting an app registration does.
"""

from __future__ import annotations

import base64
import json
import secrets
import ssl
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote

import jwt
from cryptography import x509
from servers import LOOPBACK, wait_until

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
# google-auth addresses a service account's assertion to Google's endpoint, wherever the
# key file's token_uri points (Google checks it).
GOOGLE_AUDIENCE = "https://oauth2.googleapis.com/token"


@dataclass
class Client:
    """A registered application: its secret or public key, and the mailbox it may open."""

    client_id: str
    secret: str = ""
    mailbox: str = ""  # the mailbox its app tokens open (the username introspection names)
    public_key_pem: bytes = b""  # verifies its client assertions or service-account JWTs
    ttl: float = 60.0  # seconds an access token lives
    revoked: bool = False


@dataclass
class Issued:
    """One access token: for whom, until when (wall clock), by which client."""

    client_id: str
    mailbox: str
    expires_at: float
    scope: str = ""


@dataclass
class Device:
    """A pending device authorization (RFC 8628)."""

    client_id: str
    scope: str
    user_code: str
    mailbox: str = ""  # set once the user approved


@dataclass
class Stats:
    """What the server saw, for assertions."""

    token_requests: list[dict] = field(default_factory=list)  # the form of each /token call
    issued: list[str] = field(default_factory=list)  # access tokens, in order
    introspected: list[str] = field(default_factory=list)  # tokens asked about
    refused_expired: int = 0  # introspections of tokens past their expiry
    refused_revoked: int = 0  # introspections of tokens withdrawn early


class TokenServer:
    """The identity provider. Use as a context manager, or ``start()`` / ``stop()``."""

    def __init__(self, tls_files: tuple[Path, Path] | None = None) -> None:
        self.tls_files = tls_files
        self.clients: dict[str, Client] = {}
        self.tokens: dict[str, Issued] = {}
        self.refresh_tokens: dict[str, tuple[str, str]] = {}  # token -> (client_id, mailbox)
        self.devices: dict[str, Device] = {}  # device_code -> pending authorization
        self.withdrawn: set[str] = set()  # access tokens revoked before their expiry
        self.stats = Stats()
        self.failures: list[tuple[int, str, str]] = []  # scripted (status, error, description)
        self.lock = threading.Lock()
        self.httpd: ThreadingHTTPServer | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Listen on a free port of 127.0.0.1 in a daemon thread."""
        server = self

        class Handler(_Handler):
            """The request handler, bound to this server."""

            token_server = server

        self.httpd = ThreadingHTTPServer((LOOPBACK, 0), Handler)
        if self.tls_files:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(*map(str, self.tls_files))
            self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()

    def stop(self) -> None:
        """Stop listening (token requests then fail as 'unreachable')."""
        httpd, self.httpd = self.httpd, None
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()

    def __enter__(self) -> TokenServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """The server's base URL."""
        assert self.httpd is not None
        scheme = "https" if self.tls_files else "http"
        return f"{scheme}://{LOOPBACK}:{self.httpd.server_address[1]}"

    # -- scripting -----------------------------------------------------------------------------

    def add_client(self, client_id: str, **settings: object) -> Client:
        """Register an application (secret, mailbox, public_key_pem, ttl)."""
        client = Client(client_id, **settings)
        with self.lock:
            self.clients[client_id] = client
        return client

    def revoke(self, client_id: str) -> None:
        """Delete the app: its secret is refused and its tokens no longer count."""
        with self.lock:
            self.clients[client_id].revoked = True

    def withdraw_tokens(self) -> None:
        """Revoke every access token issued so far (they expire early)."""
        with self.lock:
            self.withdrawn.update(self.tokens)

    def fail_next(self, error: str, description: str = "", status: int = 400, n: int = 1) -> None:
        """Answer the next ``n`` token requests with this OAuth2 error."""
        with self.lock:
            self.failures += [(status, error, description)] * n

    def refresh_token_for(self, client_id: str, mailbox: str) -> str:
        """A refresh token as an earlier consent would have left (for the config)."""
        token = f"rt-{secrets.token_urlsafe(12)}"
        with self.lock:
            self.refresh_tokens[token] = (client_id, mailbox)
        return token

    def mint(self, mailbox: str, ttl: float = 60.0) -> str:
        """An access token for ``mailbox`` without any client (for test helpers)."""
        with self.lock:
            return self._issue("test-helper", mailbox, ttl, "")

    def wait_device(self, timeout: float = 10.0) -> Device:
        """Wait until a device authorization is pending and return it."""
        def pending() -> Device | None:
            """The first authorization nobody approved yet."""
            with self.lock:
                return next((d for d in self.devices.values() if not d.mailbox), None)
        return wait_until(pending, timeout, message="a device authorization request")

    def approve(self, user_code: str, mailbox: str) -> None:
        """The user entered ``user_code`` and signed in as ``mailbox``."""
        with self.lock:
            device = next(d for d in self.devices.values() if d.user_code == user_code)
            device.mailbox = mailbox

    def issued_count(self, client_id: str = "") -> int:
        """How many access tokens were issued so far (to ``client_id``, if given)."""
        with self.lock:
            return sum(1 for token in self.stats.issued
                       if client_id in ("", self.tokens[token].client_id))

    # -- the endpoints (called from the handler threads) -------------------------------------

    def _issue(self, client_id: str, mailbox: str, ttl: float, scope: str) -> str:
        token = f"at-{secrets.token_urlsafe(16)}"
        self.tokens[token] = Issued(client_id, mailbox, time.time() + ttl, scope)
        self.stats.issued.append(token)
        return token

    def token(self, form: dict[str, str], authorization: str, path: str) -> tuple[int, dict]:
        """Answer one token request: (HTTP status, JSON body)."""
        with self.lock:
            self.stats.token_requests.append({**form, "path": path})
            if self.failures:
                status, error, description = self.failures.pop(0)
                return status, {"error": error, "error_description": description}
            grant = form.get("grant_type", "")
            if grant == JWT_GRANT:
                return self._service_account(form)
            client, problem = self._client(form, authorization, path)
            if problem:
                return 401, {"error": "invalid_client", "error_description": problem}
            if grant == "client_credentials":
                if not (client.secret or client.public_key_pem):
                    return 400, {"error": "unauthorized_client",
                                 "error_description": "a public client has no app tokens"}
                return 200, self._answer(client, client.mailbox, form.get("scope", ""))
            if grant == "refresh_token":
                return self._refresh(client, form)
            if grant == DEVICE_GRANT:
                return self._device_token(client, form)
            return 400, {"error": "unsupported_grant_type", "error_description": grant}

    def _client(self, form: dict[str, str], authorization: str,
                path: str) -> tuple[Client | None, str]:
        """The authenticated client, or a reason it is refused."""
        client_id, secret = form.get("client_id", ""), form.get("client_secret")
        if authorization.startswith("Basic "):
            user, _, word = base64.b64decode(authorization[6:]).decode().partition(":")
            client_id, secret = unquote(user), unquote(word)
        client = self.clients.get(client_id)
        if client is None or client.revoked:
            return None, "Invalid client or Invalid client credentials"
        if form.get("client_assertion_type") == ASSERTION_TYPE:
            try:
                jwt.decode(form.get("client_assertion", ""), _public_key(client),
                           algorithms=["RS256", "PS256"], audience=f"{self.url}{path}")
            except jwt.PyJWTError as exc:
                return None, f"AADSTS700027: client assertion refused: {exc}"
            return client, ""
        if client.secret and secret != client.secret:
            return None, "AADSTS7000215: Invalid client secret provided."
        return client, ""

    def _answer(self, client: Client, mailbox: str, scope: str, refresh: bool = False) -> dict:
        body = {"access_token": self._issue(client.client_id, mailbox, client.ttl, scope),
                "token_type": "Bearer", "expires_in": client.ttl, "scope": scope}
        if refresh:
            new = f"rt-{secrets.token_urlsafe(12)}"
            self.refresh_tokens[new] = (client.client_id, mailbox)
            body["refresh_token"] = new
        return body

    def _refresh(self, client: Client, form: dict[str, str]) -> tuple[int, dict]:
        owner = self.refresh_tokens.pop(form.get("refresh_token", ""), None)
        if owner is None or owner[0] != client.client_id:
            return 400, {"error": "invalid_grant",
                         "error_description": "AADSTS70000: the refresh token was revoked"}
        return 200, self._answer(client, owner[1], form.get("scope", ""), refresh=True)

    def _device_token(self, client: Client, form: dict[str, str]) -> tuple[int, dict]:
        device = self.devices.get(form.get("device_code", ""))
        if device is None or device.client_id != client.client_id:
            return 400, {"error": "expired_token", "error_description": "unknown device code"}
        if not device.mailbox:
            return 400, {"error": "authorization_pending", "error_description": "not yet"}
        del self.devices[form["device_code"]]
        return 200, self._answer(client, device.mailbox, device.scope, refresh=True)

    def _service_account(self, form: dict[str, str]) -> tuple[int, dict]:
        """Google's JWT-bearer grant: the assertion is signed by the service account's key."""
        assertion = form.get("assertion", "")
        issuer = jwt.decode(assertion, options={"verify_signature": False}).get("iss", "")
        client = self.clients.get(issuer)
        if client is None or client.revoked:
            return 400, {"error": "invalid_grant", "error_description": "Invalid JWT Signature."}
        try:
            claims = jwt.decode(assertion, _public_key(client), algorithms=["RS256"],
                                audience=GOOGLE_AUDIENCE)
        except jwt.PyJWTError as exc:
            return 400, {"error": "invalid_grant", "error_description": str(exc)}
        if claims.get("sub") != client.mailbox:
            return 401, {"error": "unauthorized_client", "error_description":
                         "Client is unauthorized to retrieve access tokens using this method, "
                         "or client not authorized for any of the scopes requested."}
        return 200, {"access_token": self._issue(issuer, claims["sub"], client.ttl,
                                                 claims.get("scope", "")),
                     "token_type": "Bearer", "expires_in": client.ttl}

    def device(self, form: dict[str, str]) -> tuple[int, dict]:
        """The device authorization endpoint: a device code and a code for the user."""
        with self.lock:
            client = self.clients.get(form.get("client_id", ""))
            if client is None or client.revoked:
                return 400, {"error": "invalid_client", "error_description": "unknown client"}
            code, user_code = secrets.token_urlsafe(16), secrets.token_hex(4).upper()
            self.devices[code] = Device(client.client_id, form.get("scope", ""), user_code)
        return 200, {"device_code": code, "user_code": user_code,
                     "verification_uri": f"{self.url}/device-login", "expires_in": 600,
                     "interval": 1,
                     "message": f"To sign in, open {self.url}/device-login and enter "
                                f"the code {user_code}."}

    def introspect(self, token: str) -> dict:
        """RFC 7662: whether ``token`` is active, and for which mailbox."""
        with self.lock:
            self.stats.introspected.append(token)
            issued = self.tokens.get(token)
            if issued is None:
                return {"active": False}
            if token in self.withdrawn or (self.clients.get(issued.client_id)
                                           and self.clients[issued.client_id].revoked):
                self.stats.refused_revoked += 1
                return {"active": False}
            if issued.expires_at <= time.time():
                self.stats.refused_expired += 1
                return {"active": False}
            return {"active": True, "username": issued.mailbox, "exp": int(issued.expires_at),
                    "client_id": issued.client_id, "scope": issued.scope}

    def openid_configuration(self, tenant: str) -> dict:
        """msal's tenant discovery document."""
        base = f"{self.url}/{tenant}"
        return {"issuer": f"{base}/v2.0", "token_endpoint": f"{base}/oauth2/v2.0/token",
                "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode"}


def _public_key(client: Client) -> object:
    """The key a client's assertions are checked with (from a certificate or a key PEM)."""
    pem = client.public_key_pem
    if b"CERTIFICATE" in pem:
        return x509.load_pem_x509_certificate(pem).public_key()
    return pem


class _Handler(BaseHTTPRequestHandler):
    token_server: TokenServer

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the tests read :class:`Stats` instead."""

    def do_GET(self) -> None:
        """msal's tenant discovery."""
        if self.path.endswith("/v2.0/.well-known/openid-configuration"):
            self._json(200, self.token_server.openid_configuration(self.path.split("/")[1]))
        else:
            self._json(404, {"error": "not_found"})

    def do_POST(self) -> None:
        """The token, device authorization and introspection endpoints."""
        length = int(self.headers.get("Content-Length") or 0)
        form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
        server = self.token_server
        if self.path.endswith("/token"):
            self._json(*server.token(form, self.headers.get("Authorization", ""), self.path))
        elif self.path.endswith(("/devicecode", "/device")):
            self._json(*server.device(form))
        elif self.path == "/introspect":
            self._json(200, server.introspect(form.get("token", "")))
        else:
            self._json(404, {"error": "not_found"})

    def _json(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
