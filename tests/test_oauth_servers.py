"""OAuth2 logins against real servers: a Dovecot whose only passdb is oauth2 and an SMTP
relay that takes XOAUTH2 / OAUTHBEARER only, both asking a token server that issues tokens
living a few seconds; and the daemon filing mail across several token lifetimes, a revoked
client on /healthz and in `mailbot status`, and the device-code sign-in of the CLI."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from daemon_util import Instance, process_env
from oauth_dovecot import OAuthDovecot, OAuthSmtpSink
from oauth_server import TokenServer
from servers import LOOPBACK, free_port, wait_until

from mailbot.inbound.imap import connect, trouble
from mailbot.oauth.causes import TokenError
from mailbot.outbound.transports import DeliveryError, SmtpTransport
from mailbot.settings.config import ImapConfig, OAuth2Config, RelayConfig

# The sinks require AUTH without TLS on purpose (loopback); aiosmtpd warns each session.
pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")

MAIL = (b"From: Kunde <kunde@example.org>\r\nTo: support@example.com\r\n"
        b"Subject: Frage {n}\r\nMessage-ID: <frage-{n}@example.org>\r\n\r\nHallo {n}\r\n")


@pytest.fixture
def idp() -> Iterator[TokenServer]:
    """The identity provider of this test."""
    with TokenServer() as server:
        yield server


@pytest.fixture
def dovecot(idp: TokenServer) -> Iterator[OAuthDovecot]:
    """A Dovecot that lets in only tokens ``idp`` vouches for, with one mailbox."""
    server = OAuthDovecot(idp)
    try:
        server.start()
        server.add_mailbox("support@example.com")
        yield server
    finally:
        server.close()


def oauth2(idp: TokenServer, client_id: str, **keys: object) -> dict:
    """An [oauth2] table (as TOML data) for the generic provider at ``idp``."""
    return {"provider": "generic", "token_url": f"{idp.url}/token", "client_id": client_id,
            "client_secret": "s3cret", **keys}


def imap_config(dovecot: OAuthDovecot, idp: TokenServer, client_id: str) -> ImapConfig:
    """The mailbox support@example.com on ``dovecot``, logging in with ``client_id``."""
    return ImapConfig(host=dovecot.host, port=dovecot.port, security="plain",
                      username="support@example.com", auth="oauth2", timeout_seconds=5,
                      oauth2=OAuth2Config(**oauth2(idp, client_id)))


# -- IMAP --------------------------------------------------------------------------------------

@pytest.mark.parametrize("offered", ["xoauth2 oauthbearer", "xoauth2"])
def test_imap_logs_in_with_oauthbearer_when_offered_else_xoauth2(idp: TokenServer,
                                                                 offered: str) -> None:
    """OAUTHBEARER (RFC 7628) where Dovecot offers it, XOAUTH2 where it offers only that."""
    idp.add_client("app", secret="s3cret", mailbox="support@example.com")
    with OAuthDovecot(idp, mechanisms=offered) as server:
        client = connect(imap_config(server, idp, "app"))
        try:
            assert client.select_folder("INBOX")[b"EXISTS"] == 0
        finally:
            client.logout()
        expected = "OAUTHBEARER" if "oauthbearer" in offered else "XOAUTH2"
        wait_until(lambda: "Login: user=<support@example.com>" in server.log_text(), 10,
                   message="the login in Dovecot's log")
        assert f"Login: user=<support@example.com>, method={expected}" in server.log_text()


def test_a_token_refused_by_dovecot_is_renewed_once(idp: TokenServer,
                                                    dovecot: OAuthDovecot) -> None:
    """A cached token revoked before its end: the login fails once, a new token gets in."""
    idp.add_client("app", secret="s3cret", mailbox="support@example.com", ttl=60)
    cfg = imap_config(dovecot, idp, "app")
    connect(cfg).logout()
    idp.withdraw_tokens()
    connect(cfg).logout()
    assert idp.issued_count("app") == 2
    assert idp.stats.refused_revoked == 1
    assert dovecot.logins("support@example.com", at_least=2) == 2


def test_a_token_for_another_mailbox_is_named_mailbox_permission_missing(
        idp: TokenServer, dovecot: OAuthDovecot) -> None:
    """The app's tokens do not open this mailbox (no mailbox permission): after one new
    token the login gives up with that cause, and the source counts as refused."""
    idp.add_client("app", secret="s3cret", mailbox="other@example.com")
    with pytest.raises(TokenError) as refused:
        connect(imap_config(dovecot, idp, "app"))
    assert refused.value.refused
    assert "refused a fresh access token for support@example.com" in str(refused.value)
    assert "mailbox permission missing?" in str(refused.value)
    assert trouble(refused.value)[0] == "refused"
    assert idp.issued_count("app") == 2


# -- the relay ---------------------------------------------------------------------------------

def relay_config(sink: OAuthSmtpSink, idp: TokenServer, client_id: str) -> RelayConfig:
    """The sink as relay, sending as support@example.com with ``client_id``'s tokens."""
    return RelayConfig(host=sink.host, port=sink.port, security="plain", timeout_seconds=5,
                       auth="oauth2", username="support@example.com",
                       oauth2=OAuth2Config(**oauth2(idp, client_id)))


@pytest.mark.parametrize("mechanism", ["XOAUTH2", "OAUTHBEARER"])
async def test_relay_takes_mail_after_auth_with_a_valid_token(idp: TokenServer,
                                                              mechanism: str) -> None:
    """The relay offers one mechanism and takes mail only after AUTH with a live token."""
    idp.add_client("sender", secret="s3cret", mailbox="support@example.com")
    with OAuthSmtpSink(idp, mechanisms=(mechanism,)) as sink:
        await SmtpTransport(relay_config(sink, idp, "sender")).send(
            "support@example.com", ["kunde@example.org"], MAIL.replace(b"{n}", b"1"))
        assert [m.subject for m in sink.wait_for()] == ["Frage 1"]
        assert [(user, ok) for user, _, ok in sink.auth_attempts] == \
            [("support@example.com", True)]


async def test_relay_renews_a_refused_token_and_names_a_revoked_client(
        idp: TokenServer) -> None:
    """A revoked token is replaced once and the mail goes; once the client itself is
    revoked, the mail waits (a temporary failure) and the error names the cause."""
    idp.add_client("sender", secret="s3cret", mailbox="support@example.com", ttl=60)
    with OAuthSmtpSink(idp) as sink:
        transport = SmtpTransport(relay_config(sink, idp, "sender"))
        raw = MAIL.replace(b"{n}", b"2")
        await transport.send("support@example.com", ["kunde@example.org"], raw)
        idp.withdraw_tokens()
        await transport.send("support@example.com", ["kunde@example.org"], raw)
        assert len(sink.wait_for(count=2)) == 2
        assert [ok for _, _, ok in sink.auth_attempts] == [True, False, True]
        idp.revoke("sender")
        with pytest.raises(DeliveryError) as failed:
            await transport.send("support@example.com", ["kunde@example.org"], raw)
    assert not failed.value.permanent and failed.value.refused  # /healthz: refused, 503
    assert "or certificate (invalid_client)" in str(failed.value)


async def test_relay_refusing_fresh_tokens_is_named_and_the_mail_waits(
        idp: TokenServer) -> None:
    """Tokens for another mailbox (no send permission): one new token, then a temporary
    failure naming the missing permission; the mail stays in the outbox."""
    idp.add_client("sender", secret="s3cret", mailbox="other@example.com")
    with OAuthSmtpSink(idp) as sink:
        with pytest.raises(DeliveryError) as failed:
            await SmtpTransport(relay_config(sink, idp, "sender")).send(
                "support@example.com", ["kunde@example.org"], MAIL.replace(b"{n}", b"3"))
        assert [ok for _, _, ok in sink.auth_attempts] == [False, False]
    assert not failed.value.permanent and failed.value.refused
    assert "the SMTP server 127.0.0.1 refused a fresh access token" in str(failed.value)
    assert "SMTP.SendAsApp" in str(failed.value)


# -- the daemon --------------------------------------------------------------------------------

def oauth_instance(root: Path, idp: TokenServer, dovecot: OAuthDovecot, client_id: str,
                   sink: OAuthSmtpSink | None = None, admin: bool = False) -> Instance:
    """A mailbot reading support@example.com with OAuth2 (and relaying through ``sink``
    with the client "relay")."""
    bot = Instance(root)
    bot.settings["imap"] = [{
        "name": "support", "host": dovecot.host, "port": dovecot.port, "security": "plain",
        "username": "support@example.com", "auth": "oauth2",
        "oauth2": oauth2(idp, client_id), "done_folder": "Processed", "poll_seconds": 2,
        "timeout_seconds": 5}]
    if sink is not None:
        bot.settings["relay"] = {"host": sink.host, "port": sink.port, "security": "plain",
                                 "timeout_seconds": 5, "auth": "oauth2",
                                 "username": "support@example.com",
                                 "oauth2": oauth2(idp, "relay")}
    if admin:
        bot.settings["admin"] = {"enabled": True, "host": LOOPBACK, "port": free_port()}
    bot.write()
    return bot


def test_daemon_files_mail_across_several_token_lifetimes(tmp_path: Path, idp: TokenServer,
                                                          dovecot: OAuthDovecot) -> None:
    """Tokens live a second: the daemon logs in again with a new one before each expires
    (Dovecot would keep the old session) and files every mail, each in another token's
    lifetime; the acknowledgements go out through the relay with tokens too; no expired
    token is ever presented, and the mailbox never counts a failure."""
    for client in ("daemon", "relay"):
        idp.add_client(client, secret="s3cret", mailbox="support@example.com", ttl=1.0)
    with OAuthSmtpSink(idp) as sink:
        bot = oauth_instance(tmp_path, idp, dovecot, "daemon", sink=sink)
        with bot.start() as daemon:
            for n in range(1, 4):
                before = idp.issued_count("daemon")
                dovecot.append("support@example.com", "INBOX",
                               MAIL.replace(b"{n}", str(n).encode()))
                bot.wait_tickets(n)
                wait_until(lambda b=before: idp.issued_count("daemon") > b, 10,
                           message=f"a new token after mail {n}\n{daemon.log()}")
            acknowledged = sink.wait_for(count=3)
            status = bot.cli_json("status")
    assert sorted(m.rcpt_tos for m in acknowledged) == [("kunde@example.org",)] * 3
    assert dovecot.message_count("support@example.com", "Processed") == 3
    assert idp.stats.refused_expired == 0
    mailbox = next(s for s in status["sources"] if s["name"] == "imap:support")
    assert (mailbox["state"], mailbox["failures"], mailbox["last_error"]) == \
        ("connected", 0, "")
    assert "logging in again with a new one" in daemon.log()


def test_a_revoked_client_makes_healthz_503_naming_the_cause(tmp_path: Path, idp: TokenServer,
                                                             dovecot: OAuthDovecot) -> None:
    """Revoking the app: at the next token the mailbox is refused, /healthz answers 503
    with the cause, and `mailbot status` names it (exit 1)."""
    idp.add_client("daemon", secret="s3cret", mailbox="support@example.com", ttl=1.0)
    bot = oauth_instance(tmp_path, idp, dovecot, "daemon", admin=True)
    healthz = f"http://{LOOPBACK}:{bot.settings['admin']['port']}/healthz"
    with bot.start() as daemon:
        wait_until(lambda: dovecot.logins("support@example.com") >= 1, 10,
                   message=f"the daemon's first login\n{daemon.log()}")
        idp.revoke("daemon")
        document = wait_until(lambda: _unhealthy(healthz), 10,
                              message=f"/healthz 503\n{daemon.log()}")
        wait_until(lambda: "invalid_client" in bot.cli("status").output, 10,
                   message="mailbot status naming invalid_client")
        status = bot.cli("status")
    assert any(reason.startswith("source imap:support refused after") and
               "(invalid_client)" in reason for reason in document["reasons"]), document
    assert status.exit_code == 1
    assert "refused the client id or its secret or certificate (invalid_client)" in \
        status.output


def _unhealthy(url: str) -> dict | None:
    """The health document when /healthz answers 503, else None."""
    try:
        with urllib.request.urlopen(url, timeout=5):  # noqa: S310 - loopback
            return None
    except urllib.error.HTTPError as answer:
        return json.loads(answer.read()) if answer.code == 503 else None


def test_device_sign_in_from_the_command_line_then_fetch_with_rotation(
        tmp_path: Path, idp: TokenServer, dovecot: OAuthDovecot) -> None:
    """`mailbot oauth login support` prints the URL and the code and stores the refresh
    token 0600 once the user signed in; `mailbot fetch`, another process, gets in with it
    and stores the rotated one (the server revoked the used one)."""
    idp.add_client("public")
    bot = oauth_instance(tmp_path, idp, dovecot, "public")
    bot.settings["imap"][0]["oauth2"] = oauth2(idp, "public", client_secret="",
                                               grant="refresh_token",
                                               device_url=f"{idp.url}/device")
    bot.write()
    login = subprocess.Popen([sys.executable, "-m", "mailbot", "--config", str(bot.config_path),
                              "oauth", "login", "support"], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=process_env())
    pending = idp.wait_device()
    idp.approve(pending.user_code, "support@example.com")
    out, err = login.communicate(timeout=30)
    assert login.returncode == 0, err
    assert f"open {idp.url}/device-login and enter the code {pending.user_code}" in out
    stored = tmp_path / "data" / "oauth" / "imap-support.json"
    assert stat.S_IMODE(stored.stat().st_mode) == 0o600
    assert stat.S_IMODE(stored.parent.stat().st_mode) == 0o700
    signed_in = json.loads(stored.read_text())["refresh_token"]
    dovecot.append("support@example.com", "INBOX", MAIL.replace(b"{n}", b"1"))
    fetched = bot.run("fetch")
    assert fetched.returncode == 0, fetched.stderr.decode()
    assert b"imap:support: filed 1" in fetched.stdout
    rotated = json.loads(stored.read_text())["refresh_token"]
    assert rotated != signed_in and rotated in idp.refresh_tokens
    assert stat.S_IMODE(stored.stat().st_mode) == 0o600


def test_check_config_connect_logs_in_with_oauth2_and_names_a_revoked_client(
        tmp_path: Path, idp: TokenServer, dovecot: OAuthDovecot) -> None:
    """`mailbot check-config --connect` gets tokens and logs in to the mailbox and the
    relay; with the client revoked it exits 69 naming invalid_client."""
    for client in ("daemon", "relay"):
        idp.add_client(client, secret="s3cret", mailbox="support@example.com")
    with OAuthSmtpSink(idp) as sink:
        bot = oauth_instance(tmp_path, idp, dovecot, "daemon", sink=sink)
        working = bot.cli("check-config", "--connect")
        relay_logins = [ok for _, _, ok in sink.auth_attempts]
        idp.revoke("daemon")
        refused = bot.cli("check-config", "--connect")
    assert working.exit_code == 0, working.output
    assert "(plain, OAuth2 generic client credentials)" in working.output
    assert dovecot.logins("support@example.com", at_least=1) == 1
    assert relay_logins == [True]
    assert refused.exit_code == 69
    assert "(invalid_client)" in refused.output
