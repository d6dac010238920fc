"""Where access tokens come from: Microsoft (msal), Google (google-auth), any RFC 6749 server.

Each provider has one method, ``fetch(refresh_token)``, that asks the identity provider
for a new access token and returns a :class:`Grant`, or raises
:class:`~mailbot.oauth.causes.TokenError` naming the cause.  Caching, refreshing and the
rotated refresh token are :mod:`mailbot.oauth.tokens`' business.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import msal
import requests
from google.auth import exceptions as google_errors
from google.auth.transport.requests import Request
from google.oauth2 import credentials as google_user
from google.oauth2 import service_account

from mailbot.oauth.causes import TokenError, refusal, unreachable
from mailbot.settings.config import OAuth2Config

# Seconds a token lives when the server does not say (RFC 6749 makes expires_in optional).
DEFAULT_LIFETIME = 3600.0
GOOGLE_TOKEN_URL = "https://oauth2.googleapis.com/token"  # noqa: S105 - a URL
GOOGLE_SCOPE = "https://mail.google.com/"
# App-only access of a service principal (IMAP.AccessAsApp, SMTP.SendAsApp).
MICROSOFT_APP_SCOPE = "https://outlook.office365.com/.default"
# A user's delegated access; msal adds offline_access itself (for the refresh token).
MICROSOFT_USER_SCOPE = ("https://outlook.office.com/IMAP.AccessAsUser.All "
                        "https://outlook.office.com/SMTP.Send")
DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"


@dataclass(frozen=True)
class Grant:
    """What a token endpoint gave: the access token, its lifetime in seconds, and a new
    refresh token when it rotated one ("" otherwise)."""

    access_token: str
    expires_in: float
    refresh_token: str = ""


class Session(requests.Session):
    """HTTP to a token endpoint: each request with our timeout, and trusting ``ca_file``
    when it is set (per request: requests lets $REQUESTS_CA_BUNDLE win over a session's
    own ``verify``)."""

    def __init__(self, ca_file: str, timeout: float) -> None:
        super().__init__()
        self.ca_file = ca_file
        self.timeout = timeout

    def request(self, method, url, *args, **kwargs):
        """One request, with our timeout and CA file."""
        kwargs["timeout"] = self.timeout
        if self.ca_file:
            kwargs["verify"] = self.ca_file
        return super().request(method, url, *args, **kwargs)


def scopes(settings: OAuth2Config) -> list[str]:
    """The scopes to ask for: the configured ones, else the provider's for mail."""
    if settings.scope:
        return settings.scope.split()
    if settings.provider == "google":
        return [GOOGLE_SCOPE]
    if settings.provider == "microsoft":
        chosen = MICROSOFT_APP_SCOPE if settings.grant == "client_credentials" \
            else MICROSOFT_USER_SCOPE
        return chosen.split()
    return []


class Generic:
    """Any RFC 6749 token endpoint (Keycloak, an identity provider in front of Dovecot)."""

    def __init__(self, settings: OAuth2Config, username: str, timeout: float) -> None:
        self.settings = settings
        self.session = Session(settings.ca_file, timeout)

    def fetch(self, refresh_token: str) -> Grant:
        """A new access token by the configured grant."""
        form = {"grant_type": self.settings.grant}
        if self.settings.grant == "refresh_token":
            if not refresh_token:
                raise TokenError("no refresh token yet: sign in with `mailbot oauth login "
                                 "NAME`, or set refresh_token", refused=True, code="no_token")
            form["refresh_token"] = refresh_token
        body = self.post(self.settings.token_url, form)
        return _grant(body)

    def post(self, url: str, form: dict[str, str]) -> dict:
        """POST a form to one of the server's endpoints (client authenticated as RFC 6749
        2.3.1 says: HTTP Basic with a secret, the client id in the form without); its
        JSON answer, or :class:`TokenError`."""
        settings = self.settings
        auth = None
        if settings.client_secret:
            auth = (settings.client_id, settings.client_secret)
        else:
            form = {**form, "client_id": settings.client_id}
        if settings.scope and form.get("grant_type") != DEVICE_GRANT:
            form = {**form, "scope": settings.scope}
        try:
            answer = self.session.post(url, data=form, auth=auth,
                                       headers={"Accept": "application/json"})
        except requests.RequestException as exc:
            raise unreachable(url, exc) from exc
        try:
            body = answer.json()
        except ValueError:
            body = {}
        if answer.status_code != 200 or not isinstance(body, dict) or "error" in body:
            raise refusal(body if isinstance(body, dict) else {}, answer.status_code)
        return body


class Microsoft:
    """Microsoft Entra ID through msal: a service principal's client credentials (secret or
    certificate), or a user's refresh token from the device sign-in."""

    def __init__(self, settings: OAuth2Config, username: str, timeout: float) -> None:
        self.settings = settings
        self.timeout = timeout
        self._app: msal.ClientApplication | None = None

    @property
    def authority(self) -> str:
        """The tenant's authority URL."""
        return f"{self.settings.authority.rstrip('/')}/{self.settings.tenant}"

    def app(self) -> msal.ClientApplication:
        """The msal application, made once (its creation asks the tenant's metadata)."""
        if self._app is None:
            settings = self.settings
            options = {"authority": self.authority, "instance_discovery": False,
                       "http_client": Session(settings.ca_file, self.timeout)}
            try:
                if settings.grant == "refresh_token":
                    self._app = msal.PublicClientApplication(settings.client_id, **options)
                else:
                    self._app = msal.ConfidentialClientApplication(
                        settings.client_id, client_credential=self._credential(), **options)
            except requests.RequestException as exc:
                raise unreachable(self.authority, exc) from exc
            except ValueError as exc:  # msal: the tenant's metadata could not be had
                raise TokenError(f"tenant not found or authority wrong: {exc}", refused=True,
                                 code="tenant") from exc
        return self._app

    def _credential(self) -> str | dict:
        """The client secret, or the certificate (one PEM: private key and certificate)."""
        if not self.settings.certificate_file:
            return self.settings.client_secret
        with open(self.settings.certificate_file, encoding="utf-8") as handle:
            pem = handle.read()
        return {"private_key": pem, "public_certificate": pem[pem.index("-----BEGIN CERT"):]}

    def fetch(self, refresh_token: str) -> Grant:
        """A new access token; msal's own cache is bypassed (ours decides when to ask)."""
        app = self.app()
        try:
            if self.settings.grant == "client_credentials":
                app.remove_tokens_for_client()
                result = app.acquire_token_for_client(scopes=scopes(self.settings))
            elif not refresh_token:
                raise TokenError("no refresh token yet: sign in with `mailbot oauth login "
                                 "NAME`", refused=True, code="no_token")
            else:
                result = app.acquire_token_by_refresh_token(refresh_token,
                                                            scopes=scopes(self.settings))
        except requests.RequestException as exc:
            raise unreachable(self.authority, exc) from exc
        if "access_token" not in result:
            raise refusal(result)
        return _grant(result)


class Google:
    """Google through google-auth: a service account acting as the mailbox (domain-wide
    delegation), or an installed app's refresh token."""

    def __init__(self, settings: OAuth2Config, username: str, timeout: float) -> None:
        self.settings = settings
        self.username = username
        self.session = Session(settings.ca_file, timeout)

    def fetch(self, refresh_token: str) -> Grant:
        """A new access token from Google's token endpoint (or the key file's token_uri)."""
        settings = self.settings
        if settings.grant == "client_credentials":
            try:
                creds = service_account.Credentials.from_service_account_file(
                    settings.key_file, scopes=scopes(settings), subject=self.username)
            except (OSError, ValueError, KeyError) as exc:
                raise TokenError(f"the service account key_file is unusable: {exc}",
                                 refused=True, code="key_file") from exc
            endpoint = "the key file's token_uri"
        else:
            creds = google_user.Credentials(
                None, refresh_token=refresh_token, client_id=settings.client_id,
                client_secret=settings.client_secret, scopes=scopes(settings),
                token_uri=settings.token_url or GOOGLE_TOKEN_URL)
            endpoint = settings.token_url or GOOGLE_TOKEN_URL
        try:
            creds.refresh(Request(self.session))
        except google_errors.RefreshError as exc:
            answer = exc.args[1] if len(exc.args) > 1 and isinstance(exc.args[1], dict) \
                else {"error_description": str(exc)}
            error = refusal(answer)
            error.refused = error.refused and not getattr(exc, "retryable", False)
            raise error from exc
        except google_errors.TransportError as exc:
            raise unreachable(endpoint, exc) from exc
        lifetime = (creds.expiry.replace(tzinfo=UTC) - datetime.now(UTC)).total_seconds()
        newest = getattr(creds, "refresh_token", "") or ""  # a service account has none
        return Grant(creds.token, lifetime, newest if newest != refresh_token else "")


PROVIDERS = {"generic": Generic, "microsoft": Microsoft, "google": Google}


def provider_for(settings: OAuth2Config, username: str, timeout: float):
    """The provider object of an [oauth2] table, for the mailbox ``username``."""
    return PROVIDERS[settings.provider](settings, username, timeout)


def _grant(body: dict) -> Grant:
    """A token endpoint's (or msal's) successful answer as a :class:`Grant`."""
    try:
        lifetime = float(body.get("expires_in") or DEFAULT_LIFETIME)
    except (TypeError, ValueError):
        lifetime = DEFAULT_LIFETIME
    if not body.get("access_token"):
        raise refusal(body)
    return Grant(str(body["access_token"]), lifetime, str(body.get("refresh_token") or ""))
