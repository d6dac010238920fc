"""Configuration: the shipped file works, mistakes are named precisely, secrets stay out."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from daemon_util import REPO, Instance, run_mailbot

from mailbot.app.cli import EX_CONFIG
from mailbot.app.cli import main as cli_main
from mailbot.settings import config
from mailbot.settings.schema import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    """A config file with ``text``."""
    path = tmp_path / "mailbot.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_shipped_config_is_the_working_default():
    """The mailbot.toml in the repository loads and means: listener on, Maildir, no IMAP."""
    shipped = REPO / "mailbot" / "examples"
    loaded = config.load(shipped / "mailbot.toml", require_file=True)
    assert (loaded.listener.enabled, loaded.listener.host, loaded.listener.port) == \
        (True, "127.0.0.1", 2525)
    assert loaded.relay.host == "" and loaded.imap == ()
    assert loaded.data_dir == shipped / "data"
    assert loaded.maildir == shipped / "data" / "maildir"


def test_an_empty_file_means_all_defaults(tmp_path):
    """Every key is optional."""
    loaded = config.load(write(tmp_path, ""))
    assert loaded.support.address == "support@example.com"
    assert loaded.data_dir == tmp_path / "data"  # relative to the config file


@pytest.mark.parametrize(("text", "key", "reason"), [
    ('[support]\nadress = "a@b.example"\n', "support.adress", "unknown key"),
    ('[listner]\nport = 25\n', "listner", "unknown key"),
    ('[listener]\nport = "2525"\n', "listener.port", "expected an integer, got a string"),
    ('[listener]\nenabled = "yes"\n', "listener.enabled", "expected a boolean"),
    ('[outbox]\nbatch_size = true\n', "outbox.batch_size", "got a boolean"),
    ('[support]\naliases = "a@b.example"\n', "support.aliases", "expected a list"),
    ('[listener]\nprotocol = "pop3"\n', "listener.protocol", "must be one of 'smtp', 'lmtp'"),
    ('[[imap]]\nusername = "support"\n', "imap[0].host", "required value is missing"),
    ('[[imap]]\nhost = "h"\nusername = "u"\n[[imap]]\nhost = "h"\n', "imap[1].username",
     "required value is missing"),
    ('[[imap]]\nhost = "h"\nusername = "u"\nsecurity = "ssl"\n', "imap[0].security",
     "must be one of"),
    ('[support]\naddress = "support"\n', "support", "not an email address"),
    ("[support\n", "", "not valid TOML"),
], ids=["unknown-key", "unknown-section", "wrong-type", "bool", "int-not-bool", "list",
        "choice", "missing-host", "second-mailbox", "security", "bad-address", "bad-toml"])
def test_config_mistakes_name_file_key_and_reason(tmp_path, text, key, reason):
    """A mistake in the config is reported with the file, the key path and what is wrong."""
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        config.load(path)
    assert caught.value.path == key
    assert reason in caught.value.reason
    assert str(caught.value).startswith(f"{path}: ")


def test_missing_explicit_config_file_is_an_error(tmp_path):
    """`--config` naming a file that does not exist is refused, not silently defaulted."""
    with pytest.raises(ConfigError, match="file not found"):
        config.load(tmp_path / "nope.toml", require_file=True)


def test_secrets_can_come_from_the_environment(tmp_path, monkeypatch):
    """Passwords given as { env = "NAME" } are read from the environment."""
    monkeypatch.setenv("TEST_IMAP_PASSWORD", "from-env")
    monkeypatch.setenv("TEST_SIGNING", "signing-from-env")
    loaded = config.load(write(tmp_path, (
        '[support]\nsigning_secret = { env = "TEST_SIGNING" }\n'
        '[[imap]]\nhost = "h"\nusername = "u"\npassword = { env = "TEST_IMAP_PASSWORD" }\n')))
    assert loaded.imap[0].password == "from-env"
    assert loaded.support.signing_secret == "signing-from-env"


def test_secrets_can_come_from_a_file(tmp_path):
    """Passwords given as { file = "path" } are read from that file, without the newline."""
    secret = tmp_path / "relay.pass"
    secret.write_text("from-file\n")
    loaded = config.load(write(tmp_path, f'[relay]\npassword = {{ file = "{secret}" }}\n'))
    assert loaded.relay.password == "from-file"


@pytest.mark.parametrize(("value", "reason"), [
    ('{ env = "MAILBOT_TEST_UNSET" }', "environment variable MAILBOT_TEST_UNSET is not set"),
    ('{ file = "/nonexistent/secret" }', "cannot read secret file"),
    ('{ vault = "x" }', 'expected a string, { env = "NAME" } or { file = "/path" }'),
    ("42", 'expected a string, { env = "NAME" }'),
], ids=["unset-env", "missing-file", "unknown-source", "number"])
def test_unusable_secret_is_reported_with_its_key(tmp_path, monkeypatch, value, reason):
    """A secret that cannot be read names the key and why."""
    monkeypatch.delenv("MAILBOT_TEST_UNSET", raising=False)
    with pytest.raises(ConfigError) as caught:
        config.load(write(tmp_path, f"[relay]\npassword = {value}\n"))
    assert (caught.value.path, caught.value.reason.startswith(reason)) == ("relay.password", True)


def test_mailbot_config_variable_selects_the_file(tmp_path, monkeypatch):
    """Without --config, MAILBOT_CONFIG names the config file."""
    path = write(tmp_path, '[service]\ndata_dir = "elsewhere"\n[web]\nenabled = false\n')
    monkeypatch.setenv("MAILBOT_CONFIG", str(path))
    assert config.config_path(None) == path
    result = CliRunner().invoke(cli_main, ["check-config"])
    assert result.exit_code == 0, result.output
    assert f"data directory: {tmp_path / 'elsewhere'}" in result.output


def test_check_config_summarises_a_good_config(tmp_path):
    """`mailbot check-config` says OK and what the instance will do."""
    bot = Instance(tmp_path)
    result = bot.cli("check-config")
    assert result.exit_code == 0, result.output
    assert "config OK" in result.output
    assert f"listener: smtp on 127.0.0.1:{bot.listener[1]}" in result.output


@pytest.mark.parametrize("command", ["check-config", "run"])
def test_bad_config_stops_the_command_with_exit_78_before_anything_starts(tmp_path, command):
    """A broken config prints its error and exits 78 (EX_CONFIG) without starting anything."""
    path = write(tmp_path, '[service]\ndata_dir = "data"\n[[imap]]\nusername = "support"\n')
    result = run_mailbot(path, command)
    assert result.returncode == EX_CONFIG
    assert f"{path}: imap[0].host: required value is missing" in result.stderr.decode()
    assert not (tmp_path / "data").exists()



def test_run_reports_a_taken_port_and_exits(tmp_path: Path) -> None:
    """`mailbot run` on a port another program holds says which port and exits 69."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        config = tmp_path / "mailbot.toml"
        config.write_text(f'[service]\ndata_dir = "data"\n[listener]\nport = {port}\n'
                          '[web]\nenabled = false\n')
        result = subprocess.run([sys.executable, "-m", "mailbot", "--config", str(config), "run"],
                                capture_output=True, text=True, timeout=60)
    assert result.returncode == 69
    assert f"listener 127.0.0.1:{port}" in result.stderr


@pytest.mark.parametrize(("number_format", "reason"), [
    ("{date:%Y%m%d}", "must contain {counter}"),
    ("{customer}-{counter}", "is not usable"),
])
def test_unusable_ticket_number_format_is_refused(tmp_path: Path, number_format: str,
                                                  reason: str) -> None:
    """A ticket number format that would repeat or cannot be filled stops the start."""
    path = tmp_path / "mailbot.toml"
    path.write_text(f"[tickets]\nnumber_format = '{number_format}'\n")
    with pytest.raises(ConfigError, match=reason) as error:
        config.load(path)
    assert error.value.path == "tickets"


def test_a_postgresql_store_needs_one_signing_secret_for_every_node(tmp_path, monkeypatch):
    """With a shared database each node would otherwise sign with a key of its own data
    directory, and a link one node sent would not open on another: refused at load."""
    monkeypatch.delenv("MAILBOT_SECRET", raising=False)
    path = write(tmp_path, '[store]\nurl = "postgresql://mailbot@db.example/mailbot"\n')
    with pytest.raises(ConfigError) as refused:
        config.load(path)
    assert "support.signing_secret: required with a PostgreSQL store" in str(refused.value)
    monkeypatch.setenv("MAILBOT_SECRET", "one-secret-for-all-nodes-of-this-cluster")
    assert config.load(path).support.signing_secret == "one-secret-for-all-nodes-of-this-cluster"
