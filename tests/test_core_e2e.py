"""End to end: the real `mailbot run` process against a real Dovecot and a real SMTP sink."""

from __future__ import annotations

import email
import email.policy
import mailbox
import smtplib
from collections.abc import Iterator

import pytest
from daemon_util import Instance
from mails import CUSTOMER, ENCODINGS, SUPPORT, build_mail, encoded_mail, message_id_of
from servers import Dovecot, ImapAccount, ReceivedMail, SmtpSink, wait_until


@pytest.fixture
def bot(tmp_path, imap_user: ImapAccount, smtp_sink: SmtpSink) -> Instance:
    """A mailbot instance reading the test user's INBOX and relaying to the sink."""
    return Instance.for_servers(tmp_path, imap_user, smtp_sink)


@pytest.fixture
def own_dovecot() -> Iterator[Dovecot]:
    """A private Dovecot (not started) with the user "support", for tests that stop it."""
    server = Dovecot()
    try:
        server.add_user("support", "secret")
        yield server
    finally:
        server.close()


def folder_counts(dovecot: Dovecot, user: str, folders: tuple[str, ...]) -> dict[str, int]:
    """How many mails each folder holds (0 for a folder that does not exist)."""
    return {f: dovecot.message_count(user, f) if dovecot.folder_exists(user, f) else 0
            for f in folders}


def wait_folders(dovecot: Dovecot, user: str, processed: int = 0, quarantine: int = 0,
                 inbox: int = 0, timeout: float = 10.0) -> None:
    """Wait until INBOX, Processed and Quarantine hold exactly these numbers of mails."""
    wanted = {"INBOX": inbox, "Processed": processed, "Quarantine": quarantine}
    wait_until(lambda: folder_counts(dovecot, user, tuple(wanted)) == wanted, timeout,
               message=f"IMAP folders {wanted}, have {folder_counts(dovecot, user, tuple(wanted))}")


def ack_for(sink: SmtpSink, number: str, timeout: float = 10.0) -> ReceivedMail:
    """Wait for the acknowledgement of ticket ``number`` at the sink."""
    tag = f"[Ticket#{number}]"
    return sink.wait_for(lambda m: tag in m.subject, timeout)[0]


def smtp_deliver(listener: tuple[str, int], raw: bytes) -> tuple[int, str]:
    """Deliver one mail to the listener with smtplib; the answer to DATA."""
    with smtplib.SMTP(*listener, timeout=10) as client:
        client.ehlo()
        client.mail(CUSTOMER[1])
        client.rcpt(SUPPORT)
        code, reply = client.data(raw)
    return code, reply.decode()


def outbox(bot: Instance) -> list[dict]:
    """`mailbot outbox list --json`."""
    return bot.cli_json("outbox", "list")


def test_imap_mail_becomes_ticket_and_customer_gets_acknowledgement(bot, dovecot, imap_user,
                                                                     smtp_sink):
    """A mail in the support INBOX becomes a ticket, is answered with its number, and filed."""
    picture = b"\x89PNG\r\n\x1a\n fake picture"
    raw = build_mail(subject="Drucker druckt nicht", text="Hallo,\nder Drucker streikt.\n",
                     attachments=(("Fehlerbild.png", "image/png", picture),))
    dovecot.append(imap_user.username, "INBOX", raw)
    with bot.start():
        [row] = bot.wait_tickets(1)
        ack = ack_for(smtp_sink, row["number"])
        wait_folders(dovecot, imap_user.username, processed=1)
    ticket = bot.ticket(row["number"])
    assert (ticket["subject"], ticket["status"], ticket["contact"]) == \
        ("Drucker druckt nicht", "new", CUSTOMER[1])
    [first] = ticket["messages"]
    assert (first["direction"], first["from"], first["body"]) == \
        ("in", CUSTOMER[1], "Hallo,\nder Drucker streikt.")
    [attachment] = first["attachments"]
    assert (attachment["filename"], attachment["content_type"], attachment["size"]) == \
        ("Fehlerbild.png", "image/png", len(picture))
    assert ack.subject == f"[Ticket#{row['number']}] Drucker druckt nicht"
    assert ack.rcpt_tos == (CUSTOMER[1],)
    assert ack.message["From"].addresses[0].addr_spec == SUPPORT
    assert ack.message["Auto-Submitted"] == "auto-replied"
    assert ack.message["In-Reply-To"] == f"<{message_id_of(raw)}>"
    body = ack.message.get_body(("plain",)).get_content()
    assert row["number"] in body
    assert "https://support.example.com/escalate/" in body


@pytest.mark.parametrize("evidence", ["in-reply-to", "subject-tag"])
def test_reply_to_acknowledgement_lands_on_the_same_ticket(evidence, bot, dovecot, imap_user,
                                                           smtp_sink):
    """A customer's answer to the acknowledgement is added to the ticket, not a new one."""
    user = imap_user.username
    dovecot.append(user, "INBOX", build_mail(subject="VPN bricht ab", text="Seit heute.\n"))
    with bot.start():
        [row] = bot.wait_tickets(1)
        ack = ack_for(smtp_sink, row["number"])
        if evidence == "in-reply-to":
            reply = build_mail(subject="Re: VPN bricht ab", text="Noch eine Info.\n",
                               in_reply_to=message_id_of(ack.raw))
        else:
            reply = build_mail(subject=f"AW: [Ticket#{row['number']}] VPN bricht ab",
                               text="Noch eine Info.\n")
        dovecot.append(user, "INBOX", reply)
        wait_folders(dovecot, user, processed=2)
    ticket = bot.only_ticket()
    assert [m["body"] for m in ticket["messages"]] == ["Seit heute.", "Noch eine Info."]
    replies = [e["data"] for e in ticket["events"] if e["kind"] == "customer_reply"]
    assert [r["threaded_by"] for r in replies] == [evidence]


def test_same_mail_fetched_twice_from_imap_gives_one_ticket(bot, dovecot, imap_user, smtp_sink):
    """The same mail twice in the INBOX is filed once and acknowledged once."""
    raw = build_mail(subject="Doppelt zugestellt")
    dovecot.append_many(imap_user.username, "INBOX", [raw, raw])
    with bot.start():
        wait_folders(dovecot, imap_user.username, processed=2)
        [row] = bot.wait_tickets(1)
        ack_for(smtp_sink, row["number"])
    assert len(bot.tickets()) == 1
    assert [r["ticket"] for r in outbox(bot)] == [row["number"]]


def test_same_mail_by_smtp_and_by_imap_gives_one_ticket(bot, dovecot, imap_user, smtp_sink):
    """A mail that arrives by SMTP and again through the IMAP mailbox is one ticket."""
    raw = build_mail(subject="Über zwei Wege")
    with bot.start():
        code, reply = smtp_deliver(bot.listener, raw)
        assert code == 250, reply
        dovecot.append(imap_user.username, "INBOX", raw)
        wait_folders(dovecot, imap_user.username, processed=1)
        [row] = bot.wait_tickets(1)
        ack_for(smtp_sink, row["number"])
    assert len(bot.tickets()) == 1
    assert len(outbox(bot)) == 1


def test_mail_filed_before_a_crash_but_not_moved_is_not_filed_again(bot, dovecot, imap_user,
                                                                    smtp_sink):
    """A mail committed just before the process died is moved on restart, not filed twice."""
    raw = build_mail(subject="Schon erfasst")
    dovecot.append(imap_user.username, "INBOX", raw)
    filed = bot.run("ingest", input=raw)  # the commit happened; the IMAP move did not
    assert filed.returncode == 0, filed.stderr.decode()
    with bot.start():
        wait_folders(dovecot, imap_user.username, processed=1)
        [row] = bot.wait_tickets(1)
        ack_for(smtp_sink, row["number"])
        wait_until(lambda: bot.count("outbox", "status = 'sent'") == 1)
    assert len(bot.tickets()) == 1
    assert len(outbox(bot)) == 1
    assert len(smtp_sink.messages) == 1


def test_daemon_killed_while_filing_files_every_mail_once_after_restart(bot, dovecot, imap_user,
                                                                        smtp_sink):
    """After SIGKILL in the middle of work and a restart, each mail is one ticket, all filed."""
    bot.update("relay", timeout_seconds=1)  # a delivery cut short is retried after 2 s
    count = 20
    mails = [build_mail(subject=f"Frage {i}", sender=(f"Kunde {i}", f"k{i}@kunde.example"))
             for i in range(count)]
    dovecot.append_many(imap_user.username, "INBOX", mails)
    daemon = bot.start()
    wait_until(lambda: bot.count("tickets") >= 1, message="a first ticket")
    daemon.kill()
    with bot.start():
        wait_folders(dovecot, imap_user.username, processed=count)
        wait_until(lambda: bot.count("outbox", "status = 'sent'") == count)
    tickets = bot.tickets()
    assert sorted(t["subject"] for t in tickets) == sorted(f"Frage {i}" for i in range(count))
    acked = {m.subject.split("]")[0] for m in smtp_sink.messages}
    assert len(acked) == count
    assert len(smtp_sink.messages) <= count + 1  # at most the one in flight is resent


def test_acknowledgement_waits_in_outbox_while_relay_is_down(bot, dovecot, imap_user,
                                                             smtp_sink):
    """With the relay down the acknowledgement stays queued with its error, then goes out."""
    smtp_sink.stop()
    dovecot.append(imap_user.username, "INBOX", build_mail(subject="Relay weg"))
    with bot.start():
        [row] = bot.wait_tickets(1)
        wait_until(lambda: bot.count("outbox", "attempts >= 1 AND last_error != ''"),
                   message="a failed delivery attempt")
        [pending] = outbox(bot)
        assert (pending["status"], pending["ticket"]) == ("pending", row["number"])
        assert pending["last_error"]
        smtp_sink.start()
        ack = ack_for(smtp_sink, row["number"])
        wait_until(lambda: bot.count("outbox", "status = 'sent'") == 1)
    assert ack.rcpt_tos == (CUSTOMER[1],)
    [sent] = outbox(bot)
    assert (sent["status"], sent["last_error"]) == ("sent", "")


def test_malformed_mail_is_quarantined_and_the_next_one_is_filed(bot, dovecot, imap_user,
                                                                 smtp_sink):
    """A mail over a limit goes to Quarantine with its error; the mail behind it is filed."""
    bot.update("limits", max_headers=30)
    spam = tuple((f"X-Filter-{i}", "checked") for i in range(40))
    dovecot.append_many(imap_user.username, "INBOX", [
        build_mail(subject="Zu viele Kopfzeilen", headers=spam),
        build_mail(subject="Normale Frage")])
    with bot.start():
        wait_folders(dovecot, imap_user.username, processed=1, quarantine=1)
    assert [t["subject"] for t in bot.tickets()] == ["Normale Frage"]
    [held] = bot.cli_json("quarantine", "list")
    assert "header lines" in held["error"] and held["source"].startswith("imap:")
    bot.update("limits", max_headers=500)
    retried = bot.cli("quarantine", "retry")
    assert retried.exit_code == 0, retried.output
    assert sorted(t["subject"] for t in bot.tickets()) == ["Normale Frage", "Zu viele Kopfzeilen"]
    assert bot.cli_json("quarantine", "list") == []


def test_german_encodings_round_trip_from_imap_to_acknowledgement(bot, dovecot, imap_user,
                                                                  smtp_sink):
    """Umlauts, ß, € and typographic quotes survive every common charset and encoding."""
    dovecot.append_many(imap_user.username, "INBOX", [
        encoded_mail(case, sender_addr=f"kunde{i}@kunde.example")
        for i, case in enumerate(ENCODINGS)])
    with bot.start():
        bot.wait_tickets(len(ENCODINGS))
        smtp_sink.wait_for(count=len(ENCODINGS))
    tickets = {t["subject"]: t["number"] for t in bot.tickets()}
    assert sorted(tickets) == sorted(case.subject for case in ENCODINGS)
    for case in ENCODINGS:
        ticket = bot.ticket(tickets[case.subject])
        assert ticket["contact_name"] == case.name, case.label
        assert ticket["messages"][0]["body"] == case.text.strip(), case.label
        ack = ack_for(smtp_sink, ticket["number"])
        assert ack.subject == f"[Ticket#{ticket['number']}] {case.subject}", case.label
        assert case.name in ack.message.get_body(("plain",)).get_content(), case.label


def test_smtp_delivery_on_defaults_answers_250_and_acknowledges_into_maildir(tmp_path):
    """With no relay, a mail sent to the listener is a ticket and its answer lands in a Maildir."""
    bot = Instance(tmp_path)
    raw = build_mail(subject="Per SMTP")
    with bot.start():
        code, reply = smtp_deliver(bot.listener, raw)
        assert code == 250, reply
        number = reply.split()[-1]
        assert bot.ticket(number)["subject"] == "Per SMTP"  # committed before the 250
        maildir = tmp_path / "data" / "maildir"
        wait_until(lambda: maildir.exists() and len(mailbox.Maildir(maildir)) == 1)
    [ack] = [email.message_from_bytes(m.as_bytes(), policy=email.policy.default)
             for m in mailbox.Maildir(maildir)]
    assert ack["Subject"] == f"[Ticket#{number}] Per SMTP"
    assert ack["To"] == CUSTOMER[1]


def test_smtp_mail_over_the_size_limit_is_refused_with_552_when_the_operator_rejects(tmp_path):
    """With oversize = "reject", a mail bigger than max_message_bytes is refused (552 5.3.4)
    and files nothing."""
    bot = Instance(tmp_path)
    bot.update("limits", max_message_bytes=5000, oversize="reject")
    big = build_mail(text="Logdatei:\n" + "Zeile mit Fehler\n" * 1000)
    with bot.start(), smtplib.SMTP(*bot.listener, timeout=10) as client:
        client.ehlo()
        assert client.mail(CUSTOMER[1], [f"SIZE={len(big)}"])[0] == 552
        client.rset()
        client.mail(CUSTOMER[1])
        client.rcpt(SUPPORT)
        assert client.data(big)[:2] == (552, b"5.3.4 Error: Too much mail data")
    assert bot.tickets() == []


def test_smtp_mail_over_the_size_limit_is_accepted_and_quarantined_by_default(tmp_path):
    """By default a mail over max_message_bytes is kept: 250, and quarantined with the reason,
    so the MTA in front does not bounce it."""
    bot = Instance(tmp_path)
    bot.update("limits", max_message_bytes=5000)
    big = build_mail(text="Logdatei:\n" + "Zeile mit Fehler\n" * 1000)
    with bot.start():
        assert smtp_deliver(bot.listener, big)[0] == 250
    assert bot.tickets() == []
    [held] = bot.cli_json("quarantine", "list")
    assert "over the limit of 5000" in held["error"] and held["source"] == "smtp"


def test_smtp_delivery_while_the_database_is_locked_gets_451_and_a_retry_works(tmp_path):
    """A busy database makes the listener answer 451, so the sending MTA tries again."""
    bot = Instance(tmp_path)
    bot.update("service", busy_timeout_seconds=0.2)
    raw = build_mail(subject="Später")
    with bot.start():
        with bot.write_locked():
            assert smtp_deliver(bot.listener, raw)[0] == 451
        assert smtp_deliver(bot.listener, raw)[0] == 250
    assert [t["subject"] for t in bot.tickets()] == ["Später"]


def test_listener_refuses_mail_for_strangers_addresses(tmp_path):
    """Mail for an address that is not ours gets 550 at RCPT and files nothing."""
    bot = Instance(tmp_path)
    with bot.start(), smtplib.SMTP(*bot.listener, timeout=10) as client:
        client.ehlo()
        client.mail(CUSTOMER[1])
        assert client.rcpt("postmaster@elsewhere.example")[0] == 550
        assert client.rcpt("Support+t1-abc@example.com")[0] == 250
    assert bot.tickets() == []


def test_lmtp_listener_answers_once_per_recipient(tmp_path):
    """In LMTP mode every recipient gets its own 250 line, and the mail is one ticket."""
    bot = Instance(tmp_path)
    bot.update("listener", protocol="lmtp")
    bot.update("support", aliases=["hilfe@example.com"])
    with bot.start(), smtplib.LMTP(*bot.listener, timeout=10) as client:
        client.ehlo()
        client.mail(CUSTOMER[1])
        client.rcpt(SUPPORT)
        client.rcpt("hilfe@example.com")
        answers = [client.data(build_mail(subject="Per LMTP")), client.getreply()]
    assert [code for code, _ in answers] == [250, 250]
    [ticket] = bot.tickets()
    assert all(ticket["number"] in reply.decode() for _, reply in answers)


def test_imap_down_at_start_is_retried_while_the_listener_works(tmp_path, own_dovecot):
    """An IMAP server that is down at start is retried; SMTP mail is filed meanwhile."""
    account = own_dovecot.account("support")
    bot = Instance.for_servers(tmp_path, account)
    with bot.start() as daemon:
        daemon.wait_log("reconnecting in")
        code, reply = smtp_deliver(bot.listener, build_mail(subject="Per SMTP"))
        assert code == 250, reply
        own_dovecot.start()
        own_dovecot.append("support", "INBOX", build_mail(subject="Per IMAP"))
        bot.wait_tickets(2, timeout=15)
        wait_folders(own_dovecot, "support", processed=1)
    assert sorted(t["subject"] for t in bot.tickets()) == ["Per IMAP", "Per SMTP"]


@pytest.mark.parametrize("crash", [False, True], ids=["restart", "crash"])
def test_imap_server_restart_mid_run_reconnects_and_files_new_mail(crash, tmp_path,
                                                                   own_dovecot):
    """After the IMAP server restarts (or crashes), mails appended later are still filed."""
    own_dovecot.start()
    bot = Instance.for_servers(tmp_path, own_dovecot.account("support"))
    with bot.start():
        own_dovecot.append("support", "INBOX", build_mail(subject="Vorher"))
        bot.wait_tickets(1)
        own_dovecot.restart(crash=crash)
        own_dovecot.append("support", "INBOX", build_mail(subject="Nachher"))
        bot.wait_tickets(2, timeout=15)
        wait_folders(own_dovecot, "support", processed=2)
    assert sorted(t["subject"] for t in bot.tickets()) == ["Nachher", "Vorher"]


def test_uidvalidity_change_refiles_nothing_and_files_new_mail(bot, dovecot, imap_user):
    """When the folder is recreated (new UIDVALIDITY), old mails are not filed twice."""
    user = imap_user.username
    bot.settings["imap"][0].update(folder="Support", done_folder="")  # flag \\Seen, keep mail
    bot.write()
    first, second = build_mail(subject="Erste"), build_mail(subject="Zweite")
    dovecot.create_folder(user, "Support")
    dovecot.append(user, "Support", first)
    with bot.start():
        bot.wait_tickets(1)
        wait_until(lambda: unseen(dovecot, user, "Support") == 0)
    with dovecot.connect(user) as client:  # the server lost its index: new UIDs, no flags
        client.delete_folder("Support")
        client.create_folder("Support")
    dovecot.append_many(user, "Support", [first, second])
    with bot.start() as daemon:
        bot.wait_tickets(2)
        wait_until(lambda: unseen(dovecot, user, "Support") == 0)
        daemon.wait_log("UIDVALIDITY changed")
    assert sorted(t["subject"] for t in bot.tickets()) == ["Erste", "Zweite"]


def unseen(dovecot: Dovecot, user: str, folder: str) -> int:
    """How many mails in ``folder`` are not flagged \\Seen."""
    with dovecot.connect(user) as client:
        client.select_folder(folder, readonly=True)
        return len(client.search("UNSEEN"))


def test_without_idle_the_scheduler_polls_the_mailbox(bot, dovecot, imap_user, smtp_sink):
    """With IDLE off, mail that arrives while mailbot runs is found by the polling job."""
    bot.settings["imap"][0].update(idle=False, poll_seconds=0.5)
    bot.write()
    with bot.start():
        dovecot.append(imap_user.username, "INBOX", build_mail(subject="Ohne IDLE"))
        [row] = bot.wait_tickets(1)
        wait_folders(dovecot, imap_user.username, processed=1)
    assert row["subject"] == "Ohne IDLE"
