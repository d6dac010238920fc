"""Bounces act only on what we sent: end to end against `mailbot run`, its SMTP listener,
the test Dovecot and the SMTP sink.

Every mail mailbot sends goes out with a signed return path (``support+b-...``).  A
delivery report sent there, or quoting the Message-ID of one of our outbox rows, flags an
address only when that mail went to it; a forged report changes nothing and is recorded.
"""

from __future__ import annotations

import mailbox
import re
import smtplib
from email.utils import make_msgid

import pytest
from conftest import AGENTS
from daemon_util import Instance
from mails import SUPPORT, build_mail, message_id_of
from servers import Dovecot, ImapAccount, ReceivedMail, SmtpSink, wait_until

from mailbot.outbound.tokens import Signer
from mailbot.reading.dsn import own_tags
from mailbot.reading.message import parse

VICTIM = ("Jana Kurz", "jana.kurz@kunde.example")
OTHER = ("Otto Ober", "otto@ober.example")
ANNA = (AGENTS[0]["name"], AGENTS[0]["address"])
RETURN_PATH = re.compile(r"support\+b-\d+\.[0-9a-f]{12}-[0-9a-f]{16}@example\.com")


@pytest.fixture
def bot(tmp_path, smtp_sink: SmtpSink) -> Instance:
    """mailbot with its listener, relaying to the sink, with agents Anna and Ben."""
    instance = Instance.for_servers(tmp_path, sink=smtp_sink)
    instance.settings["notifications"] = {"coalesce_seconds": 0.2, "interval_seconds": 0.2}
    instance.settings["team.agents"] = list(AGENTS)
    instance.write()
    return instance


# -- talking to mailbot as the world does ------------------------------------------------------


def hand_over(bot: Instance, raw: bytes, rcpt: str = SUPPORT,
              sender: str = "") -> tuple[int, bytes]:
    """Deliver one mail to mailbot's listener as an MTA does (a bounce: MAIL FROM:<>);
    the answer to RCPT TO, or to DATA once RCPT was accepted."""
    with smtplib.SMTP(*bot.listener, timeout=10) as client:
        client.ehlo()
        client.mail(sender)
        code, answer = client.rcpt(rcpt)
        if code != 250:
            return code, answer
        return client.data(raw)


def open_ticket(bot: Instance, sink: SmtpSink,
                customer: tuple[str, str]) -> tuple[str, ReceivedMail]:
    """A customer's first mail; the ticket number and the acknowledgement the relay got."""
    code, answer = hand_over(bot, build_mail(sender=customer, subject="Kasse startet nicht"),
                             sender=customer[1])
    assert code == 250, answer
    number = answer.decode().rpartition(" ")[2]
    ack = sink.wait_for(lambda m: customer[1] in m.rcpt_tos and number in m.subject)[0]
    return number, ack


def answer_customer(bot: Instance, sink: SmtpSink, number: str) -> None:
    """Anna answers the ticket by replying to her notification about it."""
    notification = sink.wait_for(lambda m: ANNA[1] in m.rcpt_tos and number in m.subject)[0]
    reply = build_mail(sender=ANNA, to=str(notification.message["Reply-To"]),
                       subject=f"Re: {notification.subject}",
                       text="Guten Tag,\nbitte starten Sie die Kasse neu.\n\nAnna\n",
                       in_reply_to=message_id_of(notification.raw))
    code, answer = hand_over(bot, reply, rcpt=str(notification.message["Reply-To"]))
    assert code == 250, answer


def postfix_dsn(return_path: str, recipient: str, returned: bytes = b"") -> bytes:
    """A bounce as Postfix writes it: to ``return_path`` (the envelope sender of the mail
    that failed), ``recipient`` unknown (5.1.1), with the headers of the failed mail
    ``returned`` attached (text/rfc822-headers) when given."""
    boundary = "4ZkQFm5Qz3z1xYq.1764063302/mx.kunde.example"
    parts = [
        "Content-Description: Notification\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"
        "This is the mail system at host mx.kunde.example.\r\n\r\n"
        "I'm sorry to have to inform you that your message could not\r\n"
        "be delivered to one or more recipients. It's attached below.\r\n\r\n"
        f"<{recipient}>: host mailbox.kunde.example[192.0.2.7] said: 550 5.1.1\r\n"
        f"    <{recipient}>: Recipient address rejected: User unknown in\r\n"
        "    virtual mailbox table (in reply to RCPT TO command)\r\n",
        "Content-Description: Delivery report\r\nContent-Type: message/delivery-status\r\n\r\n"
        "Reporting-MTA: dns; mx.kunde.example\r\nX-Postfix-Queue-ID: 4ZkQFm5Qz3z1xYq\r\n"
        f"X-Postfix-Sender: rfc822; {return_path}\r\n"
        "Arrival-Date: Tue, 24 Nov 2026 10:35:01 +0100 (CET)\r\n\r\n"
        f"Final-Recipient: rfc822; {recipient}\r\nOriginal-Recipient: rfc822;{recipient}\r\n"
        "Action: failed\r\nStatus: 5.1.1\r\nRemote-MTA: dns; mailbox.kunde.example\r\n"
        f"Diagnostic-Code: smtp; 550 5.1.1 <{recipient}>: Recipient address\r\n"
        "    rejected: User unknown in virtual mailbox table\r\n",
    ]
    if returned:
        headers = returned.split(b"\r\n\r\n", 1)[0].decode("ascii")
        parts.append(
            "Content-Description: Undelivered Message Headers\r\n"
            "Content-Type: text/rfc822-headers\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
            f"Return-Path: <{return_path}>\r\nReceived: from mailbot.example.com "
            "(mailbot.example.com [203.0.113.10])\r\n\tby mx.kunde.example (Postfix) with ESMTPS"
            f" id 4ZkQFm5Qz3z1xYq\r\n\tfor <{recipient}>; Tue, 24 Nov 2026 10:35:01 +0100 (CET)"
            f"\r\n{headers}\r\n")
    head = (
        "Date: Tue, 24 Nov 2026 10:35:02 +0100 (CET)\r\n"
        "From: MAILER-DAEMON@mx.kunde.example (Mail Delivery System)\r\n"
        f"Subject: Undelivered Mail Returned to Sender\r\nTo: {return_path}\r\n"
        "Auto-Submitted: auto-replied\r\nMIME-Version: 1.0\r\n"
        "Content-Type: multipart/report; report-type=delivery-status;\r\n"
        f'\tboundary="{boundary}"\r\nContent-Transfer-Encoding: 8bit\r\n'
        f"Message-Id: {make_msgid(domain='mx.kunde.example')}\r\n\r\n"
        "This is a MIME-encapsulated message.\r\n\r\n")
    body = "".join(f"--{boundary}\r\n{part}\r\n" for part in parts)
    return (head + body + f"--{boundary}--\r\n").encode("ascii")


def mail_we_never_sent(recipient: str) -> bytes:
    """The headers a forger attaches: from our address, but a Message-ID we never made."""
    return (f"From: Example Support <{SUPPORT}>\r\nTo: {recipient}\r\n"
            "Subject: [Ticket#202611240001] Ihre Anfrage\r\n"
            "Message-ID: <mb.202611240001.0123456789ab.deadbeefcafe@example.com>\r\n"
            "\r\nHallo\r\n").encode()


def bounced_at(bot: Instance, address: str) -> str | None:
    """When the address was flagged as undeliverable (None: it is not)."""
    rows = bot.query("SELECT bounced_at FROM contacts WHERE address = ?", (address,))
    return rows[0]["bounced_at"] if rows else None


def outbox_status(bot: Instance, message_id: str) -> str:
    """What became of one of our mails."""
    return bot.query("SELECT status FROM outbox WHERE message_id = ?", (message_id,))[0]["status"]


def events(bot: Instance, number: str, kind: str) -> list[dict]:
    """The data of a ticket's events of one kind, as `tickets show --json` lists them."""
    return [e["data"] for e in bot.ticket(number)["events"] if e["kind"] == kind]


# -- end to end --------------------------------------------------------------------------------


def test_forged_reports_change_nothing(bot: Instance, smtp_sink: SmtpSink) -> None:
    """Reports for a mail we never sent, or naming an address our mail did not go to, flag
    nobody: they are recorded, and the agent's answer reaches the customer."""
    with bot.start() as daemon:
        victim_ticket, victim_ack = open_ticket(bot, smtp_sink, VICTIM)
        other_ticket, other_ack = open_ticket(bot, smtp_sink, OTHER)
        forgeries = [
            (SUPPORT, mail_we_never_sent(VICTIM[1])),  # a Message-ID we never sent
            (SUPPORT, other_ack.raw),  # our real Message-ID, but it went to Otto
            (other_ack.mail_from, other_ack.raw),  # even at that mail's own return path
        ]
        for to, returned in forgeries:
            assert hand_over(bot, postfix_dsn(to, VICTIM[1], returned), rcpt=to)[0] == 250
        answer_customer(bot, smtp_sink, victim_ticket)
        answer = smtp_sink.wait_for(lambda m: VICTIM[1] in m.rcpt_tos and "Re:" in m.subject)
        assert "bitte starten Sie die Kasse neu" in answer[0].message.get_content()
        assert "bounce for a mail we did not send" in daemon.log()
    assert bounced_at(bot, VICTIM[1]) is None and bounced_at(bot, OTHER[1]) is None
    assert {outbox_status(bot, message_id_of(a.raw)) for a in (victim_ack, other_ack)} == {"sent"}
    assert events(bot, victim_ticket, "bounce") == [] == events(bot, other_ticket, "bounce")
    ignored = events(bot, other_ticket, "bounce_ignored")
    assert [e["recipients"] for e in ignored] == [[VICTIM[1]]] * 2
    assert all("did not go there" in e["why"] for e in ignored)
    (held,) = bot.cli_json("quarantine", "list")
    assert held["error"].startswith("bounce for a mail we did not send")
    assert bot.count("outbox", "status = 'held'") == 0


def test_bounce_of_our_acknowledgement_holds_further_mail(
        bot: Instance, smtp_sink: SmtpSink, dovecot: Dovecot, imap_user: ImapAccount) -> None:
    """Postfix bounces our acknowledgement to its return path and the bounce lands in the
    IMAP inbox: the address is flagged, the ticket shows it, the agent's answer is held."""
    bot.settings["imap"] = [{"name": "support", "host": imap_user.host, "port": imap_user.port,
                             "security": "plain", "username": imap_user.username,
                             "password": imap_user.password, "done_folder": "Processed",
                             "quarantine_folder": "Quarantine", "poll_seconds": 2,
                             "timeout_seconds": 5}]
    bot.write()
    with bot.start():
        number, ack = open_ticket(bot, smtp_sink, VICTIM)
        assert RETURN_PATH.fullmatch(ack.mail_from), ack.mail_from
        delivered = (f"Return-Path: <>\r\nX-Original-To: {ack.mail_from}\r\n"
                     f"Delivered-To: {ack.mail_from}\r\n").encode()
        dovecot.append(imap_user.username, "INBOX",
                       delivered + postfix_dsn(ack.mail_from, VICTIM[1], ack.raw))
        wait_until(lambda: bounced_at(bot, VICTIM[1]), 10, message="the address flagged")
        answer_customer(bot, smtp_sink, number)
        wait_until(lambda: bot.count("outbox", "kind = 'agent_reply'"), 10,
                   message="the agent's answer queued")
    (bounce,) = events(bot, number, "bounce")
    assert (bounce["recipients"], bounce["status"], bounce["proof"]) == (
        [VICTIM[1]], "5.1.1", "return path")
    assert outbox_status(bot, message_id_of(ack.raw)) == "bounced"
    assert bot.query("SELECT status FROM outbox WHERE kind = 'agent_reply'") == [
        {"status": "held"}]
    held = events(bot, number, "mail_held")
    assert "agent_reply" in [h["kind"] for h in held]
    assert all(h["recipients"] == [VICTIM[1]] and "5.1.1" in h["reason"] for h in held)
    assert [m.subject for m in smtp_sink.messages if VICTIM[1] in m.rcpt_tos] == [ack.subject]


def test_listener_takes_the_return_path_and_trusts_only_its_signature(
        bot: Instance, smtp_sink: SmtpSink) -> None:
    """RCPT TO our return path answers 250.  With a wrong signature it is only the plain
    support address: a report sent there, naming nothing else of ours, changes nothing; the
    same report at the genuine return path flags the address."""
    with bot.start():
        number, ack = open_ticket(bot, smtp_sink, VICTIM)
        tag, _, domain = ack.mail_from.partition("@")
        forged = f"{tag[:-16]}{'0' * 16}@{domain}"
        assert hand_over(bot, postfix_dsn(forged, VICTIM[1]), rcpt=forged)[0] == 250
        assert bounced_at(bot, VICTIM[1]) is None
        (held,) = bot.cli_json("quarantine", "list")
        assert held["error"].startswith("bounce for a mail we did not send")
        assert hand_over(bot, postfix_dsn(ack.mail_from, VICTIM[1]), rcpt=ack.mail_from)[0] == 250
        assert bounced_at(bot, VICTIM[1])
    assert [b["proof"] for b in events(bot, number, "bounce")] == ["return path"]


def test_maildir_copy_carries_the_return_path_a_bounce_comes_back_to(tmp_path) -> None:
    """Without a relay, the Maildir copy of our mail names its return path; a report piped
    in by `mailbot ingest` that only knows that address flags the customer."""
    bot = Instance(tmp_path)
    assert bot.cli("ingest", input=build_mail(sender=VICTIM)).exit_code == 0
    assert bot.cli("outbox", "flush").exit_code == 0
    [ack] = list(mailbox.Maildir(tmp_path / "data" / "maildir"))
    return_path = ack["Return-Path"].strip("<>")
    assert RETURN_PATH.fullmatch(return_path), return_path
    assert bot.cli("ingest", input=postfix_dsn(return_path, VICTIM[1])).exit_code == 0
    assert bounced_at(bot, VICTIM[1])


# -- the return path itself (pure) -------------------------------------------------------------


def test_return_path_tag_survives_case_changes_and_key_rotation() -> None:
    """Mail systems may change the case of a local part; a rotated secret keeps old tags."""
    message_id = Signer("old").message_id("202611240007", "example.com")
    tag = Signer("old").bounce_tag(message_id)
    rotated = Signer("new", old_secrets=("old",))
    number_and_nonce = message_id.partition("@")[0].rpartition(".")[0]
    assert rotated.read_bounce_tag(tag.upper()) == number_and_nonce + "."
    assert Signer("new").read_bounce_tag(tag) is None
    assert rotated.read_reply_tag(tag) is None  # a bounce tag is never a reply tag


def test_return_path_is_found_where_delivery_agents_record_it() -> None:
    """A bounce forwarded to the plain address still names the return path it was for."""
    msg = parse(b"From: MAILER-DAEMON@mx.kunde.example\r\nTo: support@example.com\r\n"
                b"X-Original-To: Support+B-1.ab-cd@Example.com\r\n"
                b"Delivered-To: hilfe+b-2.ef-01@example.com\r\nSubject: x\r\n\r\nx\r\n")
    assert own_tags(msg, ("support@example.com",)) == ("b-1.ab-cd",)
    assert set(own_tags(msg, ("support@example.com", "hilfe@example.com"))) == {
        "b-1.ab-cd", "b-2.ef-01"}
