"""OAuth2 tokens against a real token server: config checks, cache and refresh, rotated
refresh tokens on disk, the causes in words, Microsoft (msal), Google (google-auth) and the
device-code sign-in.  Logins to IMAP and the relay are in test_oauth_servers.py."""

from __future__ import annotations

import json
import stat
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from imapclient.exceptions import IMAPClientError
from oauth_server import TokenServer
from servers import self_signed_certificate

from mailbot.app.cli import main as cli_main
from mailbot.inbound.imap import trouble
from mailbot.oauth import device
from mailbot.oauth.causes import TokenError
from mailbot.oauth.tokens import TokenSource
from mailbot.settings import config
from mailbot.settings.config import OAuth2Config
from mailbot.settings.schema import ConfigError

MAILBOX = "support@example.com"


class Clock:
    """A monotonic clock the test moves (the token cache reads it; the server keeps time)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def idp():
    """A token server over plain HTTP."""
    with TokenServer() as server:
        yield server


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1, made once for the module."""
    return self_signed_certificate(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def tls_idp(certificate: tuple[Path, Path]):
    """A token server over HTTPS with a self-signed certificate (msal wants https)."""
    with TokenServer(tls_files=certificate) as server:
        yield server


def generic(idp: TokenServer, tmp_path: Path, **keys: str) -> OAuth2Config:
    """A generic [oauth2] table for the token server, its token_file under ``tmp_path``."""
    values = {"provider": "generic", "token_url": f"{idp.url}/token", "client_id": "mailbot",
              "client_secret": "s3cret", "token_file": str(tmp_path / "oauth" / "t.json"),
              **keys}
    return OAuth2Config(**values)


# -- config ------------------------------------------------------------------------------------

IMAP = '[[imap]]\nhost = "imap.example.com"\nusername = "support@example.com"\n'
OAUTH = IMAP + 'auth = "oauth2"\n'


@pytest.mark.parametrize(("text", "key", "reason"), [
    (OAUTH + 'oauth2 = { token_url = "https://idp.example/token" }\n', "imap[0].oauth2.provider",
     'required with auth = "oauth2"'),
    (OAUTH + 'oauth2 = { provider = "generic", token_url = "https://idp.example/token" }\n',
     "imap[0].oauth2.client_id", "required"),
    (OAUTH + 'oauth2 = { provider = "generic", token_url = "idp.example", client_id = "c" }\n',
     "imap[0].oauth2.token_url", "must be an http(s):// URL"),
    (OAUTH + 'oauth2 = { provider = "generic", token_url = "https://i/t", client_id = "c", '
     'grant = "refresh_token" }\n', "imap[0].oauth2.refresh_token", "mailbot oauth login"),
    (OAUTH + 'oauth2 = { provider = "google" }\n', "imap[0].oauth2.key_file",
     "service account key"),
    (OAUTH + 'oauth2 = { provider = "google", key_file = "/nonexistent/key.json" }\n',
     "imap[0].oauth2.key_file", "cannot read"),
    (OAUTH + 'oauth2 = { provider = "google", grant = "refresh_token", client_id = "c", '
     'client_secret = "s" }\n', "imap[0].oauth2.refresh_token", "installed app"),
    (OAUTH + 'oauth2 = { provider = "google", tenant = "contoso" }\n', "imap[0].oauth2.tenant",
     'not used with provider = "google"'),
    (OAUTH + 'oauth2 = { provider = "microsoft", client_id = "c", client_secret = "s" }\n',
     "imap[0].oauth2.tenant", "required"),
    (OAUTH + 'oauth2 = { provider = "microsoft", tenant = "t", client_id = "c" }\n',
     "imap[0].oauth2.client_secret", "client_secret or certificate_file"),
    (OAUTH + 'password = "x"\noauth2 = { provider = "microsoft", tenant = "t", '
     'client_id = "c", client_secret = "s" }\n', "imap[0].password", 'not used with auth'),
    (IMAP + 'oauth2 = { provider = "microsoft", tenant = "t", client_id = "c", '
     'client_secret = "s" }\n', "imap[0].oauth2", 'set auth = "oauth2"'),
    (IMAP + 'folder = "[Gmail]/All Mail"\n', "imap[0].folder", "holds every mail"),
    ('[relay]\nhost = "smtp.office365.com"\nauth = "oauth2"\noauth2 = { provider = '
     '"microsoft", tenant = "t", client_id = "c", client_secret = "s" }\n', "relay.username",
     'required with auth = "oauth2"'),
], ids=["no-provider", "no-client-id", "bad-url", "no-refresh-token", "google-no-key",
        "google-key-unreadable", "google-no-refresh-token", "key-of-another-provider",
        "microsoft-no-tenant", "microsoft-no-secret", "password-and-oauth2",
        "oauth2-without-auth", "gmail-all-mail", "relay-no-username"])
def test_oauth2_mistakes_are_named_with_file_key_and_reason(
        tmp_path: Path, text: str, key: str, reason: str) -> None:
    """A login that cannot work is a config error with file, key and reason."""
    path = tmp_path / "mailbot.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        config.load(path)
    assert caught.value.path == key
    assert reason in caught.value.reason
    assert str(caught.value).startswith(f"{path}: {key}: ")


def test_an_oauth2_mistake_stops_check_config_with_exit_78(tmp_path: Path) -> None:
    """`mailbot check-config` (and so `run`) refuses Google without a key file."""
    path = tmp_path / "mailbot.toml"
    path.write_text(OAUTH + 'oauth2 = { provider = "google" }\n', encoding="utf-8")
    result = CliRunner().invoke(cli_main, ["--config", str(path), "check-config"])
    assert result.exit_code == 78
    assert f"{path}: imap[0].oauth2.key_file: required" in result.output


def test_secrets_come_from_the_environment_and_tokens_live_in_the_data_dir(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """client_secret = { env = ... } is read from the environment; a rotated refresh token
    goes to <data_dir>/oauth/ unless token_file says otherwise; the summary names OAuth2."""
    monkeypatch.setenv("TEST_OAUTH_SECRET", "from-env")
    path = tmp_path / "mailbot.toml"
    path.write_text(OAUTH + 'name = "support"\noauth2 = { provider = "microsoft", tenant = '
                    '"contoso", client_id = "c", client_secret = { env = "TEST_OAUTH_SECRET" } '
                    '}\n[relay]\nhost = "smtp.office365.com"\nusername = "support@example.com"'
                    '\nauth = "oauth2"\noauth2 = { provider = "generic", token_url = '
                    '"https://idp.example/token", client_id = "c", client_secret = "s", '
                    'token_file = "/srv/relay.json" }\n', encoding="utf-8")
    loaded = config.load(path)
    assert loaded.imap[0].oauth2.client_secret == "from-env"
    assert loaded.imap[0].oauth2.token_file == str(tmp_path / "data" / "oauth" /
                                                    "imap-support.json")
    assert loaded.relay.oauth2.token_file == "/srv/relay.json"
    summary = CliRunner().invoke(cli_main, ["--config", str(path), "check-config"]).output
    assert "(tls, OAuth2 microsoft client credentials)" in summary
    assert "(starttls, OAuth2 generic client credentials)" in summary


# -- the token cache ---------------------------------------------------------------------------

def test_a_token_is_reused_until_shortly_before_it_expires(idp: TokenServer,
                                                           tmp_path: Path) -> None:
    """One token request per lifetime: the cached token serves every login until a fifth
    of its life (at most a minute) is left, then a new one is fetched in time."""
    idp.add_client("mailbot", secret="s3cret", mailbox=MAILBOX, ttl=100)
    clock = Clock()
    tokens = TokenSource(generic(idp, tmp_path), MAILBOX, 5, clock=clock)
    first = tokens.token()
    clock.now += 79
    assert tokens.token() == first
    assert idp.issued_count() == 1
    clock.now += 2  # 81 s of 100: the token is replaced before it expires
    second = tokens.token()
    assert second != first and idp.issued_count() == 2
    assert idp.introspect(first)["active"], "refreshed only once the old one had expired"
    assert tokens.refresh_at == pytest.approx(clock.now + 80)


def test_a_refused_token_is_renewed_once(idp: TokenServer, tmp_path: Path) -> None:
    """After the server refused a token (revoked early), renew() fetches a new one."""
    idp.add_client("mailbot", secret="s3cret", mailbox=MAILBOX, ttl=100)
    tokens = TokenSource(generic(idp, tmp_path), MAILBOX, 5)
    first = tokens.token()
    idp.withdraw_tokens()
    second = tokens.renew()
    assert second != first
    assert idp.introspect(second)["active"] and not idp.introspect(first)["active"]


def test_a_revoked_client_is_named_and_not_asked_again_at_once(idp: TokenServer,
                                                               tmp_path: Path) -> None:
    """invalid_client comes back in words, marked as refused (an operator must act); the
    endpoint is asked again only after a pause that grows."""
    idp.add_client("mailbot", secret="s3cret", mailbox=MAILBOX)
    idp.revoke("mailbot")
    clock = Clock()
    tokens = TokenSource(generic(idp, tmp_path), MAILBOX, 5, clock=clock)
    with pytest.raises(TokenError) as refused:
        tokens.token()
    assert refused.value.refused and refused.value.code == "invalid_client"
    assert "refused the client id or its secret" in str(refused.value)
    asked = len(idp.stats.token_requests)
    with pytest.raises(TokenError):
        tokens.token()
    assert len(idp.stats.token_requests) == asked
    clock.now += 1.0
    with pytest.raises(TokenError):
        tokens.token()
    assert len(idp.stats.token_requests) == asked + 1


def test_an_unreachable_token_endpoint_is_a_temporary_failure(idp: TokenServer,
                                                              tmp_path: Path) -> None:
    """A stopped token server: "token endpoint unreachable", not refused (it may come back)."""
    settings = generic(idp, tmp_path)
    idp.stop()
    with pytest.raises(TokenError) as failed:
        TokenSource(settings, MAILBOX, 5).token()
    assert not failed.value.refused
    assert str(failed.value).startswith(f"token endpoint unreachable: {settings.token_url}")


@pytest.mark.parametrize(("error", "description", "words"), [
    ("invalid_client", "AADSTS7000215: Invalid client secret provided.",
     "invalid client secret (AADSTS7000215)"),
    ("invalid_grant", "AADSTS65001: The user or administrator has not consented.",
     "consent missing"),
    ("invalid_request", "AADSTS90002: Tenant 'contoso' not found.", "tenant not found"),
    ("temporarily_unavailable", "try later", "the token endpoint refused"),
])
def test_provider_errors_are_named_in_words(idp: TokenServer, tmp_path: Path, error: str,
                                            description: str, words: str) -> None:
    """Microsoft's AADSTS codes and OAuth2 errors become causes an operator can act on."""
    idp.add_client("mailbot", secret="s3cret", mailbox=MAILBOX)
    idp.fail_next(error, description)
    with pytest.raises(TokenError) as failed:
        TokenSource(generic(idp, tmp_path), MAILBOX, 5).token()
    assert words in str(failed.value) and description in str(failed.value)
    assert failed.value.refused == (error != "temporarily_unavailable")


# -- rotated refresh tokens ----------------------------------------------------------------------

def test_a_rotated_refresh_token_is_stored_0600_and_used_by_the_next_process(
        idp: TokenServer, tmp_path: Path) -> None:
    """The server rotates refresh tokens and revokes the old one: the newest is kept in the
    token file (0600, directory 0700), so a later process (a new TokenSource) gets in."""
    idp.add_client("mailbot", secret="s3cret", ttl=60)
    configured = idp.refresh_token_for("mailbot", MAILBOX)
    settings = generic(idp, tmp_path, grant="refresh_token", refresh_token=configured)
    TokenSource(settings, MAILBOX, 5).token()
    stored = Path(settings.token_file)
    assert stat.S_IMODE(stored.stat().st_mode) == 0o600
    assert stat.S_IMODE(stored.parent.stat().st_mode) == 0o700
    newest = json.loads(stored.read_text())["refresh_token"]
    assert newest != configured and configured not in stored.read_text()
    later = TokenSource(settings, MAILBOX, 5)
    assert idp.introspect(later.token())["username"] == MAILBOX
    assert json.loads(stored.read_text())["refresh_token"] not in (configured, newest)


def test_a_newly_configured_refresh_token_wins_over_the_stored_one(idp: TokenServer,
                                                                   tmp_path: Path) -> None:
    """An operator who pastes a new refresh_token is not overruled by an old stored one."""
    idp.add_client("mailbot", secret="s3cret", ttl=60)
    settings = generic(idp, tmp_path, grant="refresh_token",
                       refresh_token=idp.refresh_token_for("mailbot", MAILBOX))
    TokenSource(settings, MAILBOX, 5).token()
    idp.refresh_tokens.clear()  # every stored chain revoked, e.g. the password changed
    pasted = generic(idp, tmp_path, grant="refresh_token",
                     refresh_token=idp.refresh_token_for("mailbot", MAILBOX))
    assert TokenSource(pasted, MAILBOX, 5).token()


# -- Microsoft through msal ------------------------------------------------------------------------

def microsoft(server: TokenServer, tmp_path: Path, **keys: str) -> OAuth2Config:
    """A microsoft [oauth2] table whose authority is the local HTTPS token server."""
    return OAuth2Config(**{"provider": "microsoft", "tenant": "contoso", "authority": server.url,
                           "client_id": "app", "ca_file": str(server.tls_files[0]),
                           "token_file": str(tmp_path / "ms.json"), **keys})


def test_microsoft_client_credentials_with_a_secret(tls_idp: TokenServer,
                                                    tmp_path: Path) -> None:
    """msal asks the tenant's token endpoint for https://outlook.office365.com/.default."""
    tls_idp.add_client("app", secret="s3cret", mailbox=MAILBOX)
    token = TokenSource(microsoft(tls_idp, tmp_path, client_secret="s3cret"), MAILBOX, 5).token()
    assert tls_idp.introspect(token)["username"] == MAILBOX
    request = tls_idp.stats.token_requests[-1]
    assert request["path"] == "/contoso/oauth2/v2.0/token"
    assert (request["grant_type"], request["scope"]) == \
        ("client_credentials", "https://outlook.office365.com/.default")


def test_microsoft_client_credentials_with_a_certificate(tls_idp: TokenServer,
                                                         tmp_path: Path) -> None:
    """With certificate_file (key and certificate in one PEM) msal signs a client assertion
    the server checks against the registered certificate."""
    key, cert = tmp_path / "app.key", tmp_path / "app.crt"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=mailbot", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    (tmp_path / "app.pem").write_text(key.read_text() + cert.read_text())
    tls_idp.add_client("app", mailbox=MAILBOX, public_key_pem=cert.read_bytes())
    settings = microsoft(tls_idp, tmp_path, certificate_file=str(tmp_path / "app.pem"))
    assert tls_idp.introspect(TokenSource(settings, MAILBOX, 5).token())["active"]
    assert "client_secret" not in tls_idp.stats.token_requests[-1]


def test_microsoft_wrong_secret_is_named(tls_idp: TokenServer, tmp_path: Path) -> None:
    """A wrong client secret is reported as AADSTS7000215 in words."""
    tls_idp.add_client("app", secret="s3cret", mailbox=MAILBOX)
    with pytest.raises(TokenError, match=r"invalid client secret \(AADSTS7000215\)"):
        TokenSource(microsoft(tls_idp, tmp_path, client_secret="wrong"), MAILBOX, 5).token()


def test_microsoft_device_sign_in_then_refresh(tls_idp: TokenServer, tmp_path: Path) -> None:
    """The delegated flow through msal: the user enters the code, the refresh token is
    stored, and the daemon's tokens come from it (rotating it again)."""
    tls_idp.add_client("app", mailbox="")
    settings = microsoft(tls_idp, tmp_path, grant="refresh_token")
    said: list[str] = []
    with ThreadPoolExecutor(1) as pool:
        signing_in = pool.submit(device.sign_in, settings, MAILBOX, 5, said.append)
        pending = tls_idp.wait_device()
        tls_idp.approve(pending.user_code, MAILBOX)
        stored = signing_in.result(timeout=15)
    assert pending.user_code in said[0] and f"{tls_idp.url}/device-login" in said[0]
    assert "IMAP.AccessAsUser.All" in pending.scope
    first = json.loads(stored.read_text())["refresh_token"]
    token = TokenSource(settings, MAILBOX, 5).token()
    assert tls_idp.introspect(token)["username"] == MAILBOX
    assert json.loads(stored.read_text())["refresh_token"] != first


# -- Google through google-auth ------------------------------------------------------------------

def service_account_key(idp: TokenServer, tmp_path: Path, delegated_to: str) -> Path:
    """A service account key file whose token_uri is the local server, registered there
    with domain-wide delegation for ``delegated_to``."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    email = "mailbot@project.iam.gserviceaccount.com"
    idp.add_client(email, mailbox=delegated_to, public_key_pem=key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    path = tmp_path / "service-account.json"
    path.write_text(json.dumps({
        "type": "service_account", "project_id": "project", "private_key_id": "1",
        "private_key": key.private_bytes(serialization.Encoding.PEM,
                                         serialization.PrivateFormat.PKCS8,
                                         serialization.NoEncryption()).decode(),
        "client_email": email, "client_id": "1234", "token_uri": f"{idp.url}/token"}))
    return path


def test_google_service_account_acts_as_the_mailbox(idp: TokenServer, tmp_path: Path) -> None:
    """The service account signs a JWT with the mailbox as subject and the mail scope."""
    key_file = service_account_key(idp, tmp_path, delegated_to=MAILBOX)
    settings = OAuth2Config(provider="google", key_file=str(key_file))
    token = TokenSource(settings, MAILBOX, 5).token()
    assert idp.introspect(token)["username"] == MAILBOX
    assert idp.introspect(token)["scope"] == "https://mail.google.com/"


def test_google_missing_delegation_is_named(idp: TokenServer, tmp_path: Path) -> None:
    """Delegation for another mailbox only: Google's unauthorized_client, in words."""
    key_file = service_account_key(idp, tmp_path, delegated_to="someone@example.com")
    with pytest.raises(TokenError, match="domain-wide delegation missing") as failed:
        TokenSource(OAuth2Config(provider="google", key_file=str(key_file)), MAILBOX, 5).token()
    assert failed.value.refused


def test_google_installed_app_refresh_token(idp: TokenServer, tmp_path: Path) -> None:
    """An installed app's client and refresh token, against token_url."""
    idp.add_client("installed", secret="cs")
    settings = OAuth2Config(provider="google", grant="refresh_token", client_id="installed",
                            client_secret="cs", token_url=f"{idp.url}/token",
                            refresh_token=idp.refresh_token_for("installed", MAILBOX),
                            token_file=str(tmp_path / "google.json"))
    assert idp.introspect(TokenSource(settings, MAILBOX, 5).token())["username"] == MAILBOX
    assert idp.stats.token_requests[-1]["scope"] == "https://mail.google.com/"


# -- the device-code sign-in (RFC 8628) ------------------------------------------------------

def test_device_sign_in_declined_is_named(idp: TokenServer, tmp_path: Path) -> None:
    """A sign-in the server ends with access_denied fails with that cause."""
    idp.add_client("public")
    settings = generic(idp, tmp_path, client_id="public", client_secret="",
                       grant="refresh_token", device_url=f"{idp.url}/device")
    with ThreadPoolExecutor(1) as pool:
        signing_in = pool.submit(device.sign_in, settings, MAILBOX, 5, lambda text: None)
        idp.wait_device()
        idp.fail_next("access_denied", "the user said no")
        with pytest.raises(TokenError, match="the sign-in was declined"):
            signing_in.result(timeout=15)
    assert not Path(settings.token_file).exists()


def test_client_credentials_need_no_sign_in(tmp_path: Path) -> None:
    """`mailbot oauth login` for an app's own credentials says there is nothing to do."""
    settings = OAuth2Config(provider="microsoft", tenant="t", client_id="c", client_secret="s")
    with pytest.raises(TokenError, match="needs no sign-in"):
        device.sign_in(settings, MAILBOX, 5, print)


# -- Exchange Online's answers -------------------------------------------------------------------

@pytest.mark.parametrize(("answer", "state", "words", "least"), [
    ("select failed: NO [THROTTLED] Request is throttled. Suggested Backoff Time: 92415 "
     "milliseconds", "retrying", "the server throttles us", 92.415),
    ("NO [THROTTLED] Request is throttled.", "retrying", "the server throttles us", 60.0),
    ("select failed: User is authenticated but not connected.", "refused",
     "mailbox permission missing", 0.0),
    ("select failed: Mailbox does not exist", "retrying", "Mailbox does not exist", 0.0),
])
def test_exchange_answers_are_named_and_throttling_backs_off(answer: str, state: str,
                                                             words: str, least: float) -> None:
    """Exchange's throttling waits at least a minute or what it suggests; its answer for a
    service principal without mailbox permission makes the source refused."""
    found = trouble(IMAPClientError(answer))
    assert (found[0], found[2]) == (state, pytest.approx(least))
    assert words in found[1] and answer in found[1]
