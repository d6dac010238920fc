"""Memory is bounded by the configuration, not by the mail.

A big attachment is decoded into the files directory as it is read, never held whole; an
IMAP batch is fetched a byte budget at a time; a mail over the size limit is not fetched at
all.  Peak memory is the child's own VmHWM, read from /proc/self/status as it exits (the
rusage of a child would include what the forked test process held before the exec).
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
from datetime import UTC, datetime

from daemon_util import Instance, imap_settings, run_measured
from mails import build_mail
from servers import Dovecot, ImapAccount, wait_until

from mailbot.inbound.imap import ImapSource, connect
from mailbot.inbound.source import Feed
from mailbot.settings.config import ImapConfig
from mailbot.status.health import Health
from mailbot.tickets.notify import MAIL_FILES_BYTES
from mailbot.tickets.outcome import Outcome

MB = 1024 * 1024
def mail_with_file(name: str, payload: bytes, subject: str = "Logdatei") -> bytes:
    """A customer mail carrying one base64 file, written the way mail programs write it."""
    encoded = base64.encodebytes(payload).replace(b"\n", b"\r\n")
    return (b"From: Jana Kurz <jana.kurz@kunde.example>\r\nTo: support@example.com\r\n"
            b"Subject: " + subject.encode() + b"\r\nDate: Tue, 24 Nov 2026 09:30:00 +0100\r\n"
            b"Message-ID: <" + hashlib.sha256(subject.encode()).hexdigest().encode()
            + b"@kunde.example>\r\nMIME-Version: 1.0\r\n"
            b'Content-Type: multipart/mixed; boundary="teil"\r\n\r\n'
            b"--teil\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nAnbei das Log.\r\n"
            b"--teil\r\nContent-Type: application/octet-stream\r\n"
            b'Content-Disposition: attachment; filename="' + name.encode() + b'"\r\n'
            b"Content-Transfer-Encoding: base64\r\n\r\n" + encoded + b"--teil--\r\n")


def with_agents(instance: Instance, **limits: int) -> Instance:
    """The instance with one agent (so agents' mails are composed too) and the given limits."""
    instance.settings["team"] = {"agents": [{"address": "anna@example.com", "name": "Anna"}]}
    instance.settings["limits"] = limits
    instance.write()
    return instance


def test_ingest_files_a_50_mb_attachment_in_less_than_150_mb(tmp_path):
    """`mailbot ingest` of a 68 MB mail stays under 150 MB and stores the file byte for byte."""
    bot = with_agents(Instance(tmp_path), max_message_bytes=80 * MB,
                      max_attachment_bytes=60 * MB)
    payload = os.urandom(50 * MB)
    digest = hashlib.sha256(payload).hexdigest()
    path = tmp_path / "big.eml"
    path.write_bytes(mail_with_file("messwerte.bin", payload))
    del payload
    result, peak = run_measured(bot.config_path, "ingest", str(path))
    assert result.returncode == 0, result.stderr[-2000:]
    assert peak < 150, f"peak {peak:.0f} MB"
    [ticket] = bot.tickets()
    [message] = bot.ticket(ticket["number"])["messages"]
    [attachment] = message["attachments"]
    assert (attachment["filename"], attachment["size"]) == ("messwerte.bin", 50 * MB)
    stored = tmp_path / "data" / "files" / digest[:2] / digest
    assert attachment["sha256"] == digest
    assert hashlib.sha256(stored.read_bytes()).hexdigest() == digest


def test_a_file_too_big_to_mail_is_linked_in_the_agents_mail(make_desk):
    """Agents get the small file attached and, for the big one, a note with the ticket link."""
    desk = make_desk(datetime(2026, 11, 24, 9, 0, tzinfo=UTC))
    small = b"Fehler in Zeile 3\n"
    raw = build_mail(attachments=(("fehler.log", "text/plain", small),
                                  ("dump.bin", "application/octet-stream",
                                   os.urandom(MAIL_FILES_BYTES + 1))))
    outcome = desk.receive(raw)
    [notice] = desk.outbox("agent_new_ticket", to="anna@example.com")
    files = {p.get_filename(): p.get_content() for p in notice.iter_attachments()}
    assert files["fehler.log"].encode() == small
    note = files["dump.bin.txt"]
    assert "dump.bin" in note and "5,0 MB" in note  # a German mail, a German number
    # The link is the ticket's page, signed for that ticket (a token carries the second it
    # was made, so it is read back rather than compared with one made now).
    [url] = re.findall(r"https://\S+", note)
    prefix = f"{desk.ctx.config.web.base_url.rstrip('/')}/t/"
    assert url.startswith(prefix)
    token = url.removeprefix(prefix)
    assert desk.ctx.signer.read_link_token("ticket", token) == outcome.ticket_number
    assert len(notice.as_bytes()) < MB


def test_an_imap_mail_over_the_limit_is_not_fetched_but_quarantined_and_listed(
        tmp_path, dovecot: Dovecot, imap_user: ImapAccount):
    """The mails around it are filed; it moves to Quarantine unread, and the list says why."""
    bot = Instance.for_servers(tmp_path, imap=imap_user)
    bot.update("limits", max_message_bytes=200_000)
    big = mail_with_file("scan.pdf", os.urandom(300_000), subject="Scan")
    mails = [build_mail(subject="Vorher"), big, build_mail(subject="Nachher")]
    uids = dovecot.append_many(imap_user.username, "INBOX", mails)
    with bot.start():
        wait_until(lambda: dovecot.message_count(imap_user.username, "INBOX") == 0, 20,
                   message="the INBOX read")
    assert sorted(t["subject"] for t in bot.tickets()) == ["Nachher", "Vorher"]
    assert dovecot.fetch_all(imap_user.username, "Quarantine") == [big]
    assert dovecot.message_count(imap_user.username, "INBOX") == 0
    [held] = bot.cli_json("quarantine", "list")
    assert held["source"] == "imap:support" and held["sha256"] == ""
    assert f"message is {len(big)} bytes, over the limit of 200000" in held["error"]
    assert "not downloaded" in held["error"] and f"INBOX UID {uids[1]}" in held["error"]
    digest = hashlib.sha256(big).hexdigest()
    assert not (tmp_path / "data" / "spool" / digest[:2] / digest).exists()
    assert bot.cli("quarantine", "retry").exit_code == 0  # nothing to retry from here
    assert [e["status"] for e in bot.cli_json("quarantine", "list")] == ["held"]


def test_an_imap_batch_of_big_mails_is_fetched_a_budget_at_a_time(
        tmp_path, dovecot: Dovecot, imap_user: ImapAccount):
    """Six 5 MB mails (40 MB on the wire) are filed by a process that never holds them all.

    Fetched at once, as before, the batch took about 190 MB; with the default budget of 8 MB
    one mail is fetched at a time, about 80 MB.
    """
    bot = Instance(tmp_path)
    bot.settings["imap"] = [imap_settings(imap_user)]
    bot.write()
    mails = [mail_with_file("bild.png", os.urandom(5 * MB), subject=f"Bild {i}")
             for i in range(6)]
    dovecot.append_many(imap_user.username, "INBOX", mails, batch=1)
    del mails
    result, peak = run_measured(bot.config_path, "fetch")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "filed 6" in result.stdout
    assert peak < 130, f"peak {peak:.0f} MB"
    assert len(bot.tickets()) == 6


def test_an_imap_session_keeps_nothing_of_the_mails_it_moved(dovecot: Dovecot) -> None:
    """A session lives as long as its connection (days, for a password): after each batch
    nothing of the server's answers about the mails it moved is left behind (imaplib keeps
    every untagged response no command took, one EXPUNGE for each moved mail)."""
    user = dovecot.new_user()
    for index in range(30):
        dovecot.append(user.username, "INBOX", build_mail(subject=f"Frage {index}"))
    cfg = ImapConfig(host=user.host, port=user.port, username=user.username,
                     password=user.password, security="plain", done_folder="Processed",
                     batch_size=7, name=user.username)
    clients = []

    def connected(cfg: ImapConfig):
        clients.append(connect(cfg))
        return clients[-1]

    left: list[dict] = []

    def file(raw: bytes, source: str) -> Outcome:
        left.append({k: list(v) for k, v in clients[0]._imap.untagged_responses.items()})
        return Outcome("created")

    source = ImapSource(cfg, lambda mailbox, value: True, Health(), factory=connected)
    assert source.run_once(Feed(file=file, flush=lambda: None)) == 30
    assert dovecot.message_count(user.username, "Processed") == 30
    # What the session held as each mail was filed: at most the answers of the command
    # that fetched its batch, never the moves of the batches before.
    assert not any("EXPUNGE" in held for held in left), left[-1]
