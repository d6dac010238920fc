"""End to end: agents answer tickets by replying to their notification mail, against the real
`mailbot run` process, the test Dovecot and the SMTP sink."""

from __future__ import annotations

import re

import pytest
from conftest import AGENTS
from daemon_util import Instance
from mails import CUSTOMER, SUPPORT, build_mail, message_id_of
from servers import Dovecot, ImapAccount, ReceivedMail, SmtpSink

SUBJECT = "Drucker druckt nicht"
CUSTOMER_MESSAGE_ID = "erste-anfrage@kunde.example"
ANNA = (AGENTS[0]["name"], AGENTS[0]["address"])
# support+t<number>-<agent id>-<day>-<signature>: signed for one agent and day
REPLY_ADDRESS = re.compile(r"support\+t(\w+)-[0-9a-f]{8}-\d+-[0-9a-f]{16}@example\.com")


@pytest.fixture
def bot(tmp_path, imap_user: ImapAccount, smtp_sink: SmtpSink) -> Instance:
    """mailbot reading the test INBOX, relaying to the sink, with agents Anna and Ben."""
    instance = Instance.for_servers(tmp_path, imap_user, smtp_sink)
    instance.settings["notifications"] = {"coalesce_seconds": 1, "interval_seconds": 0.2}
    instance.settings["team.agents"] = list(AGENTS)
    instance.write()
    return instance


class Mailboxes:
    """The mailboxes around a running mailbot: the support INBOX and the outside world."""

    def __init__(self, dovecot: Dovecot, user: str, sink: SmtpSink) -> None:
        self.dovecot, self.user, self.sink = dovecot, user, sink

    def deliver(self, raw: bytes) -> None:
        """A mail arrives in the support INBOX."""
        self.dovecot.append(self.user, "INBOX", raw)

    def wait_mail(self, to: str, subject_part: str) -> ReceivedMail:
        """The first mail to ``to`` whose subject contains ``subject_part``."""
        return self.sink.wait_for(lambda m: to in m.rcpt_tos and subject_part in m.subject)[0]

    def mails_to(self, address: str) -> list[ReceivedMail]:
        """Every mail the sink accepted for ``address`` so far."""
        return [m for m in self.sink.messages if address in m.rcpt_tos]


@pytest.fixture
def world(dovecot, imap_user, smtp_sink) -> Mailboxes:
    """The INBOX and the sink of this test."""
    return Mailboxes(dovecot, imap_user.username, smtp_sink)


def open_ticket(world: Mailboxes) -> tuple[str, ReceivedMail]:
    """A customer's first mail; the ticket number and the agents' notification."""
    world.deliver(build_mail(subject=SUBJECT, message_id=CUSTOMER_MESSAGE_ID,
                            text="Hallo,\nunser Drucker druckt seit heute nicht.\n"))
    notification = world.wait_mail(ANNA[1], "Neues Ticket")
    match = REPLY_ADDRESS.fullmatch(str(notification.message["Reply-To"]))
    assert match, notification.message["Reply-To"]
    world.wait_mail(CUSTOMER[1], f"[Ticket#{match.group(1)}]")  # the acknowledgement
    return match.group(1), notification


def thunderbird_reply(notification: ReceivedMail, text: str) -> bytes:
    """Anna's reply to a notification, quoting it below her text as Thunderbird does."""
    quoted = "\n".join(f"> {line}" for line in notification.message.get_content().splitlines())
    body = f"{text}\n\nAm 24.11.2026 um 10:00 schrieb {CUSTOMER[0]} via Support:\n{quoted}\n"
    return build_mail(sender=ANNA, to=str(notification.message["Reply-To"]),
                      subject=f"Re: {notification.subject}", text=body,
                      in_reply_to=message_id_of(notification.raw))


def outlook_reply(notification: ReceivedMail, text: str) -> bytes:
    """Anna's reply to a notification with Outlook's German header block and full quote."""
    body = (f"{text}\n\n-----Ursprüngliche Nachricht-----\nVon: Support <{SUPPORT}>\n"
            f"Gesendet: Dienstag, 24. November 2026 10:00\nAn: {ANNA[1]}\n"
            f"Betreff: {notification.subject}\n\n{notification.message.get_content()}")
    return build_mail(sender=ANNA, to=str(notification.message["Reply-To"]),
                      subject=f"AW: {notification.subject}", text=body)


def customer_outbox(bot: Instance) -> list[str]:
    """Kinds of the mails queued for the customer, in order."""
    return [r["kind"] for r in bot.query("SELECT kind FROM outbox WHERE recipients LIKE ? "
                                         "ORDER BY id", (f"%{CUSTOMER[1]}%",))]


def test_agent_reply_reaches_customer_with_one_status_mail(bot, world):
    """Anna's reply with #status waiting reaches the customer without the quote, plus one
    status mail."""
    answer_text = "Guten Tag Herr Müller,\nbitte schicken Sie uns die Versionsnummer.\n\nAnna"
    with bot.start():
        number, notification = open_ticket(world)
        world.deliver(thunderbird_reply(notification, f"#status waiting\n\n{answer_text}"))
        answer = world.wait_mail(CUSTOMER[1], "Re: ")
        status = world.wait_mail(CUSTOMER[1], "Neuer Status")
    sender = answer.message["From"].addresses[0]
    assert (sender.display_name, sender.addr_spec) == (ANNA[0], SUPPORT)
    assert answer.subject == f"[Ticket#{number}] Re: {SUBJECT}"
    assert answer.message["In-Reply-To"] == f"<{CUSTOMER_MESSAGE_ID}>"
    body = answer.message.get_content()
    assert body.startswith(answer_text) and "schrieb" not in body and "#status" not in body
    assert ">" not in body and "druckt seit heute" not in body
    assert "Wir benötigen weitere Informationen" in status.message.get_content()
    assert customer_outbox(bot) == ["acknowledgement", "agent_reply", "status_changed"]
    assert bot.count("events", "kind = 'status' AND notified_at IS NULL") == 0
    assert bot.ticket(number)["status"] == "waiting"
    assert [m.subject for m in world.mails_to(CUSTOMER[1])].count(status.subject) == 1


def test_forged_agent_mail_changes_nothing(bot, world):
    """A mail in Anna's name sent to the plain support address executes nothing and is
    reported to the agents."""
    with bot.start():
        number, _ = open_ticket(world)
        world.deliver(build_mail(sender=ANNA, to=SUPPORT, subject=f"Re: [Ticket#{number}] "
                                f"{SUBJECT}", text="#close\nErledigt, Ticket geschlossen."))
        alerts = [world.wait_mail(a["address"], "Verdächtige E-Mail") for a in AGENTS]
    assert [alert.rcpt_tos for alert in alerts] == [(a["address"],) for a in AGENTS]
    ticket = bot.ticket(number)
    assert ticket["status"] == "new"
    assert [e["data"]["from"] for e in ticket["events"] if e["kind"] == "suspicious"] == \
        [ANNA[1]]
    assert customer_outbox(bot) == ["acknowledgement"]
    assert len(world.mails_to(CUSTOMER[1])) == 1


def test_unknown_command_only_tells_the_agent(bot, world):
    """A reply with an unknown command is sent back to the agent, never to the customer."""
    with bot.start():
        number, notification = open_ticket(world)
        world.deliver(outlook_reply(notification, "#frobnicate\nDas ist erledigt."))
        error = world.wait_mail(ANNA[1], "Fehler in Ihrer Antwort")
    assert error.rcpt_tos == (ANNA[1],)
    assert "unbekannter Befehl #frobnicate" in error.message.get_content()
    ticket = bot.ticket(number)
    assert (ticket["status"], ticket["owner"]) == ("new", "")
    assert [e["kind"] for e in ticket["events"]].count("agent_command_error") == 1
    assert customer_outbox(bot) == ["acknowledgement"]
    assert len(world.mails_to(CUSTOMER[1])) == 1
