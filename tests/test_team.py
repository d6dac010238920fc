"""The team of agents: configured inline and in a separate file, reloaded without a restart."""

from __future__ import annotations

import logging
import os
import re
import signal
import smtplib

import pytest
from daemon_util import Instance
from mails import CUSTOMER, SUPPORT, build_mail
from servers import SmtpSink

from mailbot.settings.config import load
from mailbot.settings.team import Team

ANNA = ("Anna Agent", "anna@example.com")
BOB = ("Bob Agent", "bob@example.com")


def agents_toml(*agents: tuple[str, str]) -> str:
    """An agents file naming ``agents`` as (name, address)."""
    return "".join(f'[[agents]]\naddress = "{a}"\nname = "{n}"\n\n' for n, a in agents)


def team_instance(root, agents_text: str, sink: SmtpSink | None = None) -> Instance:
    """An instance with Anna inline and the agents file ``agents.toml`` next to its config."""
    (root / "agents.toml").write_text(agents_text, encoding="utf-8")
    instance = Instance.for_servers(root, sink=sink)
    instance.settings["team"] = {"file": "agents.toml"}
    instance.settings["team.agents"] = [{"address": ANNA[1], "name": ANNA[0]}]
    instance.write()
    return instance


def rewrite(path, text: str, keep_mtime: bool = False) -> None:
    """Change a file; its mtime moves on a full second (or stays, with ``keep_mtime``)."""
    before = path.stat().st_mtime_ns
    path.write_text(text, encoding="utf-8")
    mtime = before if keep_mtime else before + 1_000_000_000
    os.utime(path, ns=(mtime, mtime))


def test_agents_come_from_config_and_file(tmp_path):
    """Agents named inline and in the agents file act together; addresses ignore case."""
    instance = team_instance(tmp_path, agents_toml(BOB, ("Anna again", "ANNA@example.com")))
    team = Team(load(instance.config_path))
    assert team.addresses() == (ANNA[1], BOB[1])
    assert team.get("Bob@Example.com").name == BOB[0]


def test_changed_agents_file_is_reloaded(tmp_path):
    """A new agent in the file is known at the next check, without a restart."""
    instance = team_instance(tmp_path, agents_toml(BOB))
    team = Team(load(instance.config_path))
    assert team.reload_if_changed() is False
    rewrite(tmp_path / "agents.toml", agents_toml(BOB, ("Carl Agent", "carl@example.com")))
    assert team.reload_if_changed() is True
    assert team.addresses() == (ANNA[1], BOB[1], "carl@example.com")
    assert team.reload_if_changed() is False


@pytest.mark.parametrize(("text", "reason"), [
    ("[[agents]\naddress = 1", "not valid TOML"),
    ('[[agents]]\naddress = "carl"\n', "is not an email address"),
    ('[[people]]\naddress = "carl@example.com"\n', "unknown key"),
    (None, "No such file"),
], ids=["not-toml", "bad-address", "unknown-key", "file-gone"])
def test_bad_agents_file_keeps_the_old_agents(tmp_path, caplog, text, reason):
    """A broken agents file is reported in the log and the current agents stay."""
    instance = team_instance(tmp_path, agents_toml(BOB))
    team = Team(load(instance.config_path))
    path = tmp_path / "agents.toml"
    if text is None:
        path.unlink()
    else:
        rewrite(path, text)
    with caplog.at_level(logging.ERROR, logger="mailbot.settings.team"):
        assert team.reload() is False
    assert team.addresses() == (ANNA[1], BOB[1])
    [record] = caplog.records
    assert "agents not reloaded, keeping the current ones" in record.message
    assert reason in record.message and "agents.toml" in record.message


def send(instance: Instance, raw: bytes, to: str) -> None:
    """Hand one mail to the daemon's SMTP listener."""
    with smtplib.SMTP(*instance.listener, timeout=10) as client:
        client.sendmail(CUSTOMER[1], [to], raw)


def test_sighup_reloads_agents_in_running_daemon(tmp_path, smtp_sink):
    """After SIGHUP a newly added agent hears of the ticket's next mail, and its reply
    through its own reply address reaches the customer."""
    instance = team_instance(tmp_path, agents_toml(), smtp_sink)
    with instance.start() as daemon:
        send(instance, build_mail(subject="Drucker druckt nicht"), SUPPORT)
        notification = smtp_sink.wait_for(lambda m: "Neues Ticket" in m.subject)[0]
        rewrite(tmp_path / "agents.toml", agents_toml(BOB), keep_mtime=True)
        daemon.process.send_signal(signal.SIGHUP)
        daemon.wait_log(f"agents reloaded: {ANNA[1]}, {BOB[1]}")
        send(instance, build_mail(subject=f"Re: {notification.subject}", text="Noch da?\n"),
             SUPPORT)
        followup = smtp_sink.wait_for(lambda m: m.rcpt_tos == (BOB[1],))[0]
        reply_to = str(followup.message["Reply-To"])
        send(instance, build_mail(sender=BOB, to=reply_to, subject="Re: Neue Nachricht",
                                  text="Guten Tag,\nich kümmere mich darum.\n"), reply_to)
        answer = smtp_sink.wait_for(lambda m: m.message["From"].addresses[0].display_name
                                    == BOB[0])[0]
    assert answer.rcpt_tos == (CUSTOMER[1],)
    assert answer.message.get_content().startswith("Guten Tag,\nich kümmere mich darum.")
    number = re.search(r"\[Ticket#(\w+)\]", answer.subject).group(1)
    assert instance.ticket(number)["first_response_at"]


def test_broken_agents_file_is_reported_once_per_change(tmp_path, caplog):
    """The periodic check logs a broken agents file once and picks up the fixed file."""
    instance = team_instance(tmp_path, agents_toml(BOB))
    team = Team(load(instance.config_path))
    path = tmp_path / "agents.toml"
    rewrite(path, '[[agents]]\naddress = "carl"\n')
    with caplog.at_level(logging.ERROR, logger="mailbot.settings.team"):
        assert [team.reload_if_changed(), team.reload_if_changed()] == [False, False]
    assert len(caplog.records) == 1
    rewrite(path, agents_toml(("Carl Agent", "carl@example.com")))
    assert team.reload_if_changed() is True
    assert team.addresses() == (ANNA[1], "carl@example.com")
