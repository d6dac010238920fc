"""SIGHUP reloads what can change without a restart, names what cannot, and survives a
broken config: a real daemon, a real SMTP relay, the effect seen in the mail it sends."""

from __future__ import annotations

import signal
import smtplib

from daemon_util import Instance
from mails import SUPPORT, build_mail
from servers import SmtpSink, free_port

from mailbot.settings.config import load
from mailbot.settings.team import reloaded

ANNA = {"address": "anna@example.com", "name": "Anna Agent"}
BOB = {"address": "bob@example.com", "name": "Bob Agent"}
CUSTOMER = ("Jürgen Müller", "juergen.mueller@kunde.example")


def send(listener: tuple[str, int], subject: str) -> None:
    """A customer's mail to the daemon's SMTP listener."""
    with smtplib.SMTP(*listener, timeout=10) as client:
        client.sendmail(CUSTOMER[1], [SUPPORT], build_mail(sender=CUSTOMER, subject=subject))


def agent_mail(sink: SmtpSink, agent: dict, subject: str):
    """The mail about the ticket ``subject`` that reached ``agent``."""
    return sink.wait_for(lambda m: m.rcpt_tos == (agent["address"],) and subject in m.subject)[0]


def test_sighup_applies_agents_and_language_names_a_port_change_and_survives_a_broken_file(
        tmp_path, smtp_sink):
    """After SIGHUP a new agent hears of the next ticket, in the newly configured language;
    a changed port is named as needing a restart and the old one keeps serving; a config
    that no longer validates is logged with file, key and reason, and the daemon runs on
    with the settings in force."""
    instance = Instance.for_servers(tmp_path, sink=smtp_sink)
    instance.settings["team.agents"] = [ANNA]
    instance.write()
    listener = instance.listener
    with instance.start() as daemon:
        send(listener, "Kasse eins")
        assert agent_mail(smtp_sink, ANNA, "Kasse eins").subject.endswith(
            "Neues Ticket: Kasse eins")

        instance.settings["team.agents"] = [ANNA, BOB]
        instance.settings["service"]["language"] = "en"
        instance.settings["listener"]["port"] = free_port()
        instance.write()
        daemon.process.send_signal(signal.SIGHUP)
        daemon.wait_log("reloaded: in force now: service.language, team.agents; "
                        "needs a restart: listener.port")
        send(listener, "Kasse zwei")
        assert agent_mail(smtp_sink, BOB, "Kasse zwei").subject.endswith(
            "New ticket: Kasse zwei")

        instance.settings["hygiene"] = {"max_acks_per_hour": "many"}
        instance.write()
        daemon.process.send_signal(signal.SIGHUP)
        daemon.wait_log(f"config not reloaded, the running one stays in force: "
                        f"{instance.config_path}: hygiene.max_acks_per_hour:")
        send(listener, "Kasse drei")
        assert agent_mail(smtp_sink, BOB, "Kasse drei").subject.endswith(
            "New ticket: Kasse drei")
        assert daemon.process.poll() is None


def test_keys_bound_at_start_keep_their_running_value(tmp_path):
    """What needs a restart stays as it runs (ports, relay, data directory), what can change
    changes, and unchanged keys are not named."""
    instance = Instance(tmp_path)
    running = load(instance.config_path)
    instance.settings["listener"]["port"] = free_port()
    instance.settings["service"]["data_dir"] = str(tmp_path / "elsewhere")
    instance.settings["hygiene"] = {"max_acks_per_hour": 2}
    instance.settings["web"]["base_url"] = "https://help.example.com"
    instance.write()
    found = reloaded(running, load(instance.config_path))
    assert found.applied == ("web.base_url", "hygiene.max_acks_per_hour")
    assert found.restart == ("service.data_dir", "listener.port")
    assert found.config.listener == running.listener
    assert found.config.data_dir == running.data_dir
    assert (found.config.hygiene.max_acks_per_hour, found.config.web.base_url) == \
        (2, "https://help.example.com")
    assert found.config.web.port == running.web.port
