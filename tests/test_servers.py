"""The test servers themselves: real Dovecot IMAP and the aiosmtpd sink behave as tests expect."""

from __future__ import annotations

import smtplib
import socket
import time
from email.message import EmailMessage

import pytest
import servers
from imapclient import IMAPClient
from servers import Dovecot, ImapAccount, SmtpSink, free_port, wait_until


def sample_mail(subject: str = "Printer on fire", to: str = "support@example.com") -> bytes:
    """Return a small RFC 5322 message as CRLF bytes."""
    msg = EmailMessage()
    msg["From"] = "Kunde <kunde@example.org>"
    msg["To"] = to
    msg["Subject"] = subject
    msg["Message-ID"] = f"<{subject.replace(' ', '.')}@example.org>"
    msg.set_content("Bitte helfen Sie uns.\n")
    return msg.as_bytes(policy=msg.policy.clone(linesep="\r\n"))


def login(account: ImapAccount) -> IMAPClient:
    """Return an IMAPClient logged in with `account`, as the application would connect."""
    client = IMAPClient(account.host, port=account.port, ssl=False, timeout=10)
    client.login(account.username, account.password)
    return client


def idle_until_exists(client: IMAPClient, timeout: float) -> tuple:
    """Return the first `* n EXISTS` IDLE response, or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while (remaining := deadline - time.monotonic()) > 0:
        for response in client.idle_check(timeout=remaining):
            if len(response) >= 2 and response[1] == b"EXISTS":
                return response
    raise AssertionError(f"no EXISTS during IDLE within {timeout}s")


# -- Dovecot ---------------------------------------------------------------------------------


def test_append_then_fetch(dovecot: Dovecot, imap_user: ImapAccount) -> None:
    """A mail appended to a user's INBOX is fetched back byte for byte, still unseen."""
    raw = sample_mail()
    uid = dovecot.append(imap_user.username, "INBOX", raw)
    with login(imap_user) as client:
        client.select_folder("INBOX")
        fetched = client.fetch([uid], ["BODY.PEEK[]", "FLAGS"])
    assert fetched[uid][b"BODY[]"] == raw
    assert b"\\Seen" not in fetched[uid][b"FLAGS"]
    assert dovecot.fetch_all(imap_user.username) == [raw]
    assert dovecot.list_uids(imap_user.username) == [uid]


def test_users_are_isolated_and_added_live(dovecot: Dovecot, imap_user: ImapAccount) -> None:
    """A user added while Dovecot runs can log in at once and sees no one else's mail."""
    mine, theirs = sample_mail("Mine"), sample_mail("Theirs")
    dovecot.append(imap_user.username, "INBOX", mine)
    other = dovecot.new_user()
    assert other.username != imap_user.username
    with login(other) as client:  # logs in at once with its own password
        assert client.select_folder("INBOX", readonly=True)[b"EXISTS"] == 0
    dovecot.append(other.username, "INBOX", theirs)
    assert dovecot.fetch_all(other.username) == [theirs]
    assert dovecot.fetch_all(imap_user.username) == [mine]  # the earlier user still logs in


def test_wrong_password_is_refused_then_good_login_works(
    dovecot: Dovecot, imap_user: ImapAccount
) -> None:
    """A wrong password is refused, and the next good login gets into the mailbox.

    That this login is not delayed (the auth penalty is off) is measured by
    `python bench/hostile.py --only b`, not asserted here.
    """
    uid = dovecot.append(imap_user.username, "INBOX", sample_mail())
    bad = IMAPClient(imap_user.host, port=imap_user.port, ssl=False, timeout=10)
    with pytest.raises(Exception, match="AUTHENTICATIONFAILED"):
        bad.login(imap_user.username, "wrong")
    bad.shutdown()
    with login(imap_user) as client:
        client.select_folder("INBOX", readonly=True)
        assert client.search("ALL") == [uid]


def test_idle_sees_append_from_another_connection(dovecot: Dovecot, imap_user: ImapAccount) -> None:
    """A client in IDLE is told about a mail another connection appends."""
    with login(imap_user) as client:
        client.select_folder("INBOX")
        client.idle()
        dovecot.append(imap_user.username, "INBOX", sample_mail())
        response = idle_until_exists(client, timeout=10)
        client.idle_done()
    assert response[0] == 1


def test_folders_flags_and_move(dovecot: Dovecot, imap_user: ImapAccount) -> None:
    """Folders can be created, mails appended with flags, and MOVE is offered."""
    user = imap_user.username
    assert not dovecot.folder_exists(user, "Done")
    dovecot.create_folder(user, "Done")
    dovecot.create_folder(user, "Done")  # idempotent
    assert dovecot.folder_exists(user, "Done")
    uid = dovecot.append(user, "INBOX", sample_mail(), flags=["\\Seen"])
    with login(imap_user) as client:
        assert b"MOVE" in client.capabilities()
        assert b"IDLE" in client.capabilities()
        client.select_folder("INBOX")
        client.move([uid], "Done")
    assert dovecot.message_count(user, "INBOX") == 0
    assert dovecot.message_count(user, "Done") == 1


def test_append_many_returns_uids_in_order(dovecot: Dovecot, imap_user: ImapAccount) -> None:
    """Bulk APPEND stores every mail in order and reports their UIDs."""
    mails = [sample_mail(f"Bulk {n}") for n in range(300)]
    uids = dovecot.append_many(imap_user.username, "INBOX", mails, batch=128)
    assert uids == list(range(1, 301))
    assert dovecot.fetch_all(imap_user.username) == mails


@pytest.mark.parametrize("crash", [False, True], ids=["clean-stop", "crash"])
def test_restart_keeps_port_and_mail(dovecot: Dovecot, imap_user: ImapAccount, crash: bool) -> None:
    """After an outage (clean stop or crash) Dovecot is back on the same port with the mail."""
    raw = sample_mail()
    dovecot.append(imap_user.username, "INBOX", raw)
    port = dovecot.port
    dovecot.stop() if not crash else dovecot.kill()
    with pytest.raises(OSError):
        socket.create_connection((dovecot.host, port), timeout=2).close()
    dovecot.start()
    before = ImapAccount(dovecot.host, port, imap_user.username, imap_user.password)
    with login(before) as client:  # the port noted before the outage answers again
        client.select_folder("INBOX", readonly=True)
        fetched = client.fetch(client.search("ALL"), ["BODY.PEEK[]"])
    assert [m[b"BODY[]"] for m in fetched.values()] == [raw]


def test_missing_dovecot_fails_with_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without Dovecot the fixture fails and says which command installs it."""
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setattr(servers, "DOVECOT_CANDIDATES", ("/nonexistent/dovecot",))
    with pytest.raises(RuntimeError, match=r"bash tests/run.sh.*dovecot-imapd"):
        servers.find_dovecot()


# -- SMTP sink -------------------------------------------------------------------------------


def send(sink: SmtpSink, raw: bytes, to: list[str] | None = None, port: int = 0) -> dict:
    """Send `raw` to the sink (on `port` if given) with smtplib; return the refused recipients."""
    with smtplib.SMTP(sink.host, port or sink.port, timeout=10) as client:
        return client.sendmail("mailbot@example.com", to or ["kunde@example.org"], raw)


def test_sink_receives_mail(smtp_sink: SmtpSink) -> None:
    """A mail sent with smtplib arrives with its envelope, raw bytes and parsed headers."""
    raw = sample_mail("Ticket 4711")
    send(smtp_sink, raw)
    (mail,) = smtp_sink.wait_for(lambda m: m.subject == "Ticket 4711")
    assert mail.mail_from == "mailbot@example.com"
    assert mail.rcpt_tos == ("kunde@example.org",)
    assert mail.raw == raw
    assert mail.message.get_content() == "Bitte helfen Sie uns.\n"


def test_wait_for_counts_and_explains_timeouts(smtp_sink: SmtpSink) -> None:
    """wait_for waits for several mails and, on timeout, lists what did arrive."""
    for n in range(3):
        send(smtp_sink, sample_mail(f"Reply {n}"))
    assert len(smtp_sink.wait_for(count=3)) == 3
    with pytest.raises(AssertionError, match=r"(?s)0 matched.*subject='Reply 2'"):
        smtp_sink.wait_for(lambda m: m.subject == "never", timeout=0.2)
    smtp_sink.clear()
    assert smtp_sink.messages == []


def test_stopped_sink_refuses_then_accepts_on_same_port(smtp_sink: SmtpSink) -> None:
    """While the relay is down delivery fails; after start() it works on the same port."""
    port = smtp_sink.port
    smtp_sink.stop()
    with pytest.raises(OSError):
        send(smtp_sink, sample_mail())
    smtp_sink.start()
    send(smtp_sink, sample_mail("After outage"), port=port)  # the port noted before stop()
    (_mail,) = smtp_sink.wait_for(lambda m: m.subject == "After outage")


def test_rejected_recipients_get_the_configured_reply(smtp_sink: SmtpSink) -> None:
    """A recipient configured as unknown is refused with its code; the others get the mail."""
    smtp_sink.reject("Bad@Example.com", "550 5.1.1 no such user")
    refused = send(smtp_sink, sample_mail(), to=["good@example.com", "bad@example.com"])
    assert refused == {"bad@example.com": (550, b"5.1.1 no such user")}
    (mail,) = smtp_sink.wait_for()
    assert mail.rcpt_tos == ("good@example.com",)
    with pytest.raises(smtplib.SMTPRecipientsRefused):
        send(smtp_sink, sample_mail(), to=["bad@example.com"])


def test_rejection_configured_at_construction() -> None:
    """reject_rcpt= given to the constructor refuses that recipient."""
    sink = SmtpSink(reject_rcpt={"bad@example.com": "551 5.1.6 moved"})
    with sink, pytest.raises(smtplib.SMTPRecipientsRefused, match=r"5\.1\.6 moved"):
        send(sink, sample_mail(), to=["bad@example.com"])
    assert not sink.running


def test_fail_next_simulates_temporary_failures(smtp_sink: SmtpSink) -> None:
    """fail_next(n) refuses the next n transactions with a 4xx, then mail flows again."""
    smtp_sink.fail_next(2)
    for _ in range(2):
        with pytest.raises(smtplib.SMTPDataError) as failure:
            send(smtp_sink, sample_mail())
        assert failure.value.smtp_code == 451
    smtp_sink.fail_next(1, "421 4.3.2 shutting down", stage="MAIL")
    with pytest.raises(smtplib.SMTPSenderRefused):
        send(smtp_sink, sample_mail())
    send(smtp_sink, sample_mail("Third time lucky"))
    assert [m.subject for m in smtp_sink.wait_for()] == ["Third time lucky"]
    assert len(smtp_sink.refusals) == 3


# -- helpers ---------------------------------------------------------------------------------


def test_wait_until_returns_value_or_fails_with_message() -> None:
    """wait_until returns the predicate's value, or raises AssertionError naming the wait."""
    calls = iter([0, 0, 7])
    assert wait_until(lambda: next(calls), timeout=2) == 7
    with pytest.raises(AssertionError, match="ticket row to appear"):
        wait_until(lambda: None, timeout=0.1, message="ticket row to appear")


def test_free_port_can_be_bound() -> None:
    """free_port gives a port a server can listen on."""
    with socket.create_server(("127.0.0.1", free_port())):
        pass
