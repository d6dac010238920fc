"""`mailbot init` and a `mailbot check-config` that catches what the daemon would die on.

check-config and `mailbot run` refuse, with exit 78 and file, key and reason, a port that
is none, a data directory that cannot be written, templates missing for a language,
secrets that do not resolve, patterns that do not compile and ticket number formats that
subject tags and reply addresses cannot carry.  `check-config --connect` logs in to the
real Dovecot and a real aiosmtpd relay that wants STARTTLS and AUTH.
"""

from __future__ import annotations

import shutil
import ssl
import stat
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.handlers import Sink
from aiosmtpd.smtp import AuthResult, LoginPassword
from click.testing import CliRunner
from conftest import AGENTS
from daemon_util import Instance, imap_settings, run_mailbot
from mails import CUSTOMER, build_mail, message_id_of
from servers import LOOPBACK, ImapAccount, free_port, self_signed_certificate

from mailbot.app.cli import EX_CONFIG, EX_UNAVAILABLE, data_dir_for
from mailbot.app.cli import main as cli_main
from mailbot.outbound.tokens import Signer
from mailbot.settings.config import Config, load, sample_numbers

SHIPPED_TEMPLATES = Config().templates_dir
RELAY_LOGIN = ("mailbot", "relay-secret")
ANNA = (AGENTS[0]["name"], AGENTS[0]["address"])
TUESDAY_10 = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)


def invoke(*args: str) -> tuple[int, str, str]:
    """Run a `mailbot` command in this process: exit code, stdout, stderr."""
    result = CliRunner().invoke(cli_main, list(args), catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


# -- mailbot init ------------------------------------------------------------------------------

def test_init_writes_a_private_working_config_with_its_own_secret(tmp_path: Path) -> None:
    """`mailbot init DIR` makes DIR (0700) with a commented mailbot.toml that checks out, a
    signing secret of its own and the data beside it, and the accounts example (0600)."""
    target = tmp_path / "new" / "conf"
    code, out, _ = invoke("init", str(target))
    assert code == 0, out
    config_file = target / "mailbot.toml"
    assert f"wrote {config_file}" in out and "check-config --connect" in out
    assert stat.S_IMODE(target.stat().st_mode) == 0o700
    assert {f.name: stat.S_IMODE(f.stat().st_mode) for f in target.iterdir()} == \
        {"mailbot.toml": 0o600, "accounts.example.toml": 0o600}
    loaded = load(config_file)
    assert loaded.data_dir == target / "data"
    assert len(loaded.support.signing_secret) >= 40
    assert "# " in config_file.read_text()  # the commented example, not a bare dump
    assert invoke("--config", str(config_file), "check-config")[0] == 0
    assert invoke("--config", str(config_file), "accounts", "import",
                  str(target / "accounts.example.toml"))[0] == 0

    invoke("init", str(tmp_path / "other"))
    assert load(tmp_path / "other" / "mailbot.toml").support.signing_secret != \
        loaded.support.signing_secret


def test_init_never_overwrites_without_force(tmp_path: Path) -> None:
    """An existing file is left as it is (exit 1, both named); --force overwrites it 0600."""
    edited = tmp_path / "mailbot.toml"
    edited.write_text("# mine\n")
    edited.chmod(0o644)
    code, _, err = invoke("init", str(tmp_path))
    assert code == 1 and f"{edited}" in err and "--force" in err
    assert edited.read_text() == "# mine\n" and not (tmp_path / "accounts.example.toml").exists()
    assert invoke("init", "--force", str(tmp_path))[0] == 0
    assert edited.read_text() != "# mine\n" and stat.S_IMODE(edited.stat().st_mode) == 0o600


def test_init_puts_the_data_of_an_etc_config_under_var_lib() -> None:
    """The Debian layout: a config in /etc/mailbot keeps its data in /var/lib/mailbot (the
    unit's StateDirectory); anywhere else in ./data beside the config."""
    assert data_dir_for(Path("/etc/mailbot")) == "/var/lib/mailbot"
    assert data_dir_for(Path("/srv/support")) == "data"


# -- what check-config and run refuse ----------------------------------------------------------

BAD_CONFIGS = {
    "listener-port": ("[listener]\nport = 99999\n", "listener.port", "99999 is not a port"),
    "web-port": ("[web]\nport = 0\n", "web.port", "0 is not a port"),
    "admin-port": ("[admin]\nport = -1\n", "admin.port", "-1 is not a port"),
    "relay-port": ('[relay]\nhost = "relay.example.com"\nport = 65536\n', "relay.port",
                   "65536 is not a port"),
    "imap-port": ('[[imap]]\nhost = "imap.example.com"\nusername = "u"\nport = 70000\n',
                  "imap[0].port", "70000 is not a port"),
    "data-dir-in-a-file": ('[service]\ndata_dir = "{tmp}/a-file/data"\n', "service.data_dir",
                           "{tmp}/a-file is not a directory"),
    "data-dir-is-a-file": ('[service]\ndata_dir = "{tmp}/a-file"\n', "service.data_dir",
                           "{tmp}/a-file is not a directory"),
    "no-templates": ('[service]\ndata_dir = "{tmp}/data"\ntemplates_dir = "{tmp}/empty"\n',
                     "service.templates_dir", "{tmp}/empty lacks de/mail/"),
    "maildir": ('[relay]\nmaildir = "{tmp}/a-file/maildir"\n', "relay.maildir",
                "{tmp}/a-file is not a directory"),
    "ca-file": ('[relay]\nhost = "relay.example.com"\nca_file = "{tmp}/ca.pem"\n',
                "relay.ca_file", "cannot read {tmp}/ca.pem: No such file or directory"),
    "secret-env": ('[relay]\npassword = {{ env = "MAILBOT_TEST_NEVER_SET" }}\n',
                   "relay.password", "environment variable MAILBOT_TEST_NEVER_SET is not set"),
    "secret-file": ('[[imap]]\nhost = "imap.example.com"\nusername = "u"\n'
                    'password = {{ file = "{tmp}/imap.pass" }}\n', "imap[0].password",
                    "cannot read secret file: No such file or directory"),
    "rule-pattern": ('[[policy.rules]]\nname = "x"\npatterns = ["("]\n',
                     "policy.rules[0].patterns[0]", "invalid regex '('"),
    "fact-pattern": ('[facts]\ndevice = ["(unclosed"]\n', "facts.device[0]", "invalid regex"),
    "number-format-space": ("[tickets]\nnumber_format = '{{date:%Y %m}}-{{counter}}'\n",
                            "tickets", "number_format '{{date:%Y %m}}-{{counter}}' makes "
                            "numbers like '2026 01-1': a ticket number must be 1 to 40 ASCII "
                            "letters, digits and - _ . /"),
    "number-format-plus": ("[tickets]\nnumber_format = '{{counter}}+{{date:%d}}'\n",
                           "tickets", "number_format '{{counter}}+{{date:%d}}' makes numbers "
                           "like '1+01'"),
}


@pytest.mark.parametrize("case", BAD_CONFIGS, ids=list(BAD_CONFIGS))
def test_check_config_names_file_key_and_reason(tmp_path: Path, case: str) -> None:
    """Each mistake the daemon would die on (or serve badly with) exits 78 with file, key
    and reason, before anything is created."""
    text, key, reason = (part.format(tmp=tmp_path) for part in BAD_CONFIGS[case])
    (tmp_path / "a-file").write_text("not a directory\n")
    (tmp_path / "empty").mkdir()
    path = tmp_path / "mailbot.toml"
    path.write_text(f'[service]\ndata_dir = "{tmp_path}/data"\n' * ("data_dir" not in text)
                    + text)
    code, out, err = invoke("--config", str(path), "check-config")
    assert (code, out) == (EX_CONFIG, ""), err
    assert f"config error: {path}: {key}: {reason}" in err
    assert not (tmp_path / "data").exists()


def test_templates_must_be_complete_and_parse(tmp_path: Path) -> None:
    """A templates_dir of its own must hold every shipped template for each language, and
    each must parse: a missing or broken one would quarantine every mail that needs it."""
    templates = tmp_path / "templates"
    shutil.copytree(SHIPPED_TEMPLATES, templates)
    (templates / "en" / "web" / "ticket.html").unlink()
    (templates / "de" / "mail" / "acknowledgement.txt").write_text("Hallo {{ ticket.number }\n")
    bot = Instance(tmp_path)
    bot.update("service", templates_dir=str(templates))
    code, _, err = invoke("--config", str(bot.config_path), "check-config")
    assert code == EX_CONFIG
    assert f"service.templates_dir: {templates} lacks en/web/ticket.html\n" in err
    assert f"{templates}/de/mail/acknowledgement.txt line 1: unexpected '}}'" in err


def test_run_refuses_what_it_would_die_on_without_a_traceback(tmp_path: Path) -> None:
    """`mailbot run` makes the same checks before it starts anything: exit 78, the same
    message, no traceback, nothing created."""
    bot = Instance(tmp_path)
    bot.update("service", templates_dir=str(tmp_path / "nowhere"))
    done = run_mailbot(bot.config_path, "run")
    err = done.stderr.decode()
    assert done.returncode == EX_CONFIG, err
    assert f"config error: {bot.config_path}: service.templates_dir: {tmp_path}/nowhere " \
           "holds no templates" in err
    assert "Traceback" not in err and not bot.db_path.parent.exists()


# -- ticket numbers that tags and tokens carry -------------------------------------------------

@pytest.mark.parametrize("number_format", [
    "{date:%Y%m%d}{counter:04d}", "T-{date:%Y}-{counter:05d}", "{date:%Y}/{counter}",
    "{date:%b}.{counter:X}_x", "SR{counter:06d}",
])
def test_tokens_carry_every_number_a_format_makes(number_format: str) -> None:
    """Reply addresses (whatever case a mail system gives them back in), our Message-IDs
    and return paths bring back exactly the number they were made for."""
    signer = Signer("secret")
    for number in sample_numbers(number_format)[:4]:
        tag = signer.reply_tag(number, ANNA[1], TUESDAY_10)
        assert tag == tag.lower()
        assert signer.read_reply_tag(tag.upper()).ticket_number == number
        message_id = signer.message_id(number, "example.com")
        assert signer.read_message_id(message_id) == number
        assert message_id.startswith(signer.read_bounce_tag(signer.bounce_tag(message_id)))


def test_an_agent_answers_a_ticket_whose_number_has_capitals_and_a_slash(make_desk) -> None:
    """With number_format "T-{date:%Y}/{counter:05d}" an agent's reply through the reply
    address acts on the ticket (it was "suspicious" before), and the customer's answers find
    the ticket by our Message-ID and by the subject tag."""
    desk = make_desk(TUESDAY_10, tickets={"number_format": "T-{date:%Y}/{counter:05d}"})
    number = desk.receive(build_mail(subject="Drucker druckt nicht")).ticket_number
    assert number == "T-2026/00001"
    [notice] = desk.outbox(kind="agent_new_ticket", to=ANNA[1])
    outcome = desk.receive(build_mail(
        sender=ANNA, to=str(notice["Reply-To"]), subject=f"Re: {notice['Subject']}",
        text="#status waiting\nBitte senden Sie uns die Version."))
    assert (outcome.status, outcome.ticket_number) == ("agent_reply", number)
    assert desk.ticket(number)["status"] == "waiting"
    [answer] = desk.outbox(kind="agent_reply", to=CUSTOMER[1])
    assert f"[Ticket#{number}]" in answer["Subject"]

    by_message_id = desk.receive(build_mail(subject="Version", text="Version 4.2\n",
                                            in_reply_to=message_id_of(answer.as_bytes())))
    by_tag = desk.receive(build_mail(subject=f"AW: [Ticket#{number}] noch eine Frage"))
    assert [(o.status, o.ticket_number) for o in (by_message_id, by_tag)] == \
        [("followup", number)] * 2


# -- check-config --connect --------------------------------------------------------------------

@dataclass(frozen=True)
class Relay:
    """A real SMTP relay that wants STARTTLS and then AUTH, with a self-signed certificate."""

    port: int
    certificate: Path

    def settings(self, **overrides: object) -> dict:
        """A [relay] table that logs in to it."""
        return {"host": LOOPBACK, "port": self.port, "security": "starttls",
                "username": RELAY_LOGIN[0], "password": RELAY_LOGIN[1],
                "ca_file": str(self.certificate), "timeout_seconds": 5, **overrides}


def _authenticate(server, session, envelope, mechanism, auth_data) -> AuthResult:
    """The relay's one login."""
    login = (auth_data.login, auth_data.password) if isinstance(auth_data, LoginPassword) \
        else None
    return AuthResult(success=login == tuple(s.encode() for s in RELAY_LOGIN), handled=False)


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Relay]:
    """One relay for this module's tests (aiosmtpd, STARTTLS required before AUTH)."""
    certificate, key = self_signed_certificate(tmp_path_factory.mktemp("relay"))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certificate, key)
    controller = Controller(Sink(), hostname=LOOPBACK, port=free_port(), tls_context=context,
                            require_starttls=True, authenticator=_authenticate,
                            ready_timeout=10.0)
    controller.start()
    try:
        yield Relay(controller.port, certificate)
    finally:
        controller.stop()


def connect_lines(bot: Instance) -> tuple[int, dict[str, str]]:
    """`check-config --connect`: the exit code and, per mailbox or relay, what it said."""
    code, out, _ = invoke("--config", str(bot.config_path), "check-config", "--connect")
    lines = [line for line in out.splitlines() if line.startswith(("imap ", "relay "))]
    return code, {line.split()[1]: line.partition("): ")[2] for line in lines}


def test_connect_logs_in_to_each_mailbox_and_says_why_one_fails(
        tmp_path: Path, imap_user: ImapAccount, relay: Relay) -> None:
    """Each IMAP mailbox gets one line: ok, authentication failed, folder missing,
    connection refused; any failure makes the exit code 69."""
    bot = Instance(tmp_path)
    bot.settings["imap"] = [
        imap_settings(imap_user, name="good"),
        imap_settings(imap_user, name="wrong-password", password="not-the-password"),
        imap_settings(imap_user, name="no-folder", folder="Nirgendwo"),
        imap_settings(imap_user, name="closed-port", port=free_port()),
    ]
    bot.settings["relay"] = relay.settings()
    bot.write()
    code, said = connect_lines(bot)
    assert code == EX_UNAVAILABLE
    assert said.pop("no-folder").startswith("folder missing: Nirgendwo")
    assert said == {"good": "ok", "wrong-password": "authentication failed",
                    "closed-port": "connection refused", f"{LOOPBACK}:{relay.port}": "ok"}


@pytest.mark.parametrize(("overrides", "expected"), [
    ({}, "ok"),
    ({"password": "wrong"}, "authentication failed (535 5.7.8 Authentication credentials "
                            "invalid)"),
    ({"port": None}, "connection refused"),
    ({"ca_file": ""}, "TLS failure: self-signed certificate"),
], ids=["ok", "wrong-password", "closed-port", "untrusted-certificate"])
def test_connect_logs_in_to_the_relay_as_the_sender_does(
        tmp_path: Path, imap_user: ImapAccount, relay: Relay, overrides: dict,
        expected: str) -> None:
    """The relay gets one line after EHLO, STARTTLS and AUTH: exit 0 only when it and the
    mailbox are both ok."""
    if "port" in overrides:
        overrides["port"] = free_port()  # nothing listens there
    bot = Instance(tmp_path)
    bot.settings["imap"] = [imap_settings(imap_user, name="good")]
    bot.settings["relay"] = relay.settings(**overrides)
    bot.write()
    code, said = connect_lines(bot)
    port = tomllib.loads(bot.config_path.read_text())["relay"]["port"]
    assert said == {"good": "ok", f"{LOOPBACK}:{port}": expected}
    assert code == (0 if expected == "ok" else EX_UNAVAILABLE)
