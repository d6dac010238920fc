"""The floor: what the least work a mail needs costs on this machine, without mailbot.

    python bench/floor.py [--mails 2000] [--seed 17] [--batch 100]

Runs the bare parts every mail of the mix of issue 17 (``perf.build_mix``, the same bytes
as ``bench/perf.py``) must go through from IMAP to an acknowledgement sent, each done the
leanest way we found with the standard library and the design's libraries, one part after the
other in this process, and prints the CPU each part costs a mail (``time.thread_time`` of
the thread that does it; Dovecot's processes from ``/proc``):

1. IMAP: FETCH ``BODY.PEEK[]`` of ``--batch`` mails at a time and UID MOVE them to a done
   folder (imapclient against a real Dovecot; the mails were APPENDed before, not counted);
2. the raw mail kept: a file of its own (temporary name, renamed), the file system synced
   once a batch;
3. reading: ``email.message_from_bytes`` (compat32, lazy: a header is decoded when asked
   for; the default policy costs this machine 2.6 times as much), sender, subject and
   Message-ID, the first text part, each other part decoded, hashed (SHA-256) and written to
   a file of its own;
4. filing: SQLite (WAL), per mail a contact, a ticket, the message, three events, the
   acknowledgement in the outbox and the ingest record, a transaction (fsynced) a batch;
5. the acknowledgement composed: ``MIMEText`` with a German text (quoted-printable), the
   ticket number, a link signed with HMAC-SHA256;
6. the acknowledgement sent: ``smtplib`` over one session to a real aiosmtpd sink (the
   sink's CPU not counted).

None of it classifies, finds facts, threads follow-ups, applies a policy, isolates the
reading in a process of its own or stops a slow mail: that is mailbot's work on top.  The
sum is a floor, and the CPU count divided by it a ceiling of mails/s no program on this
machine that does these parts in Python reaches.
"""

from __future__ import annotations

import argparse
import email
import email.charset
import hashlib
import hmac
import os
import shutil
import smtplib
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from email.header import Header, decode_header, make_header
from email.mime.text import MIMEText
from email.utils import format_datetime, make_msgid, parseaddr
from pathlib import Path

from _common import Dovecot, SmtpSink, load_average, table
from perf import GOALS, build_mix, machine, tree_cpu

USER, PASSWORD = "floor", "floor-password"
# The parts a mail read from a file goes through (``mailbot ingest``; the running daemon
# sends what it queued), the last of them the sending.
FILE_PARTS = ("2.", "3.", "4.", "5.", "6.")
UTF8_QP = email.charset.Charset("utf-8")
UTF8_QP.body_encoding = email.charset.QP
ACK_TEXT = ("Guten Tag,\n\nvielen Dank für Ihre Nachricht. Wir haben sie unter der Nummer "
            "{number} erfasst und melden uns während unserer Öffnungszeiten (Mo–Fr 8–17 Uhr) "
            "bei Ihnen.\n\nIst es dringend? Bitten Sie hier um einen Rückruf:\n{link}\n\n"
            "Freundliche Grüße\nIhr Support-Team\n")
SCHEMA = """
CREATE TABLE contacts (id INTEGER PRIMARY KEY, address TEXT UNIQUE, name TEXT);
CREATE TABLE tickets (id INTEGER PRIMARY KEY, number TEXT UNIQUE, subject TEXT, status TEXT,
                      contact_id INTEGER, created_at TEXT);
CREATE TABLE messages (id INTEGER PRIMARY KEY, ticket_id INTEGER, message_id TEXT,
                       from_addr TEXT, subject TEXT, body TEXT, spool_sha256 TEXT);
CREATE INDEX messages_message_id ON messages(message_id);
CREATE TABLE events (id INTEGER PRIMARY KEY, ticket_id INTEGER, kind TEXT, at TEXT);
CREATE TABLE outbox (id INTEGER PRIMARY KEY, ticket_id INTEGER, message_id TEXT, raw BLOB,
                     status TEXT);
CREATE TABLE ingest (sha256 TEXT PRIMARY KEY, message_id TEXT, outcome TEXT, ticket_id INTEGER);
"""


def cpu_of(work: Callable[[], None]) -> float:
    """The CPU seconds this thread spent on ``work``."""
    started = time.thread_time()
    work()
    return time.thread_time() - started


def keep(root: Path, payload: bytes) -> str:
    """``payload`` in a file named by its hash, written under a temporary name and renamed."""
    digest = hashlib.sha256(payload).hexdigest()
    folder = root / digest[:2]
    folder.mkdir(mode=0o700, exist_ok=True)
    tmp = folder / f".{digest}.tmp"
    tmp.write_bytes(payload)
    tmp.replace(folder / digest)
    return digest


def read(raw: bytes, files: Path) -> dict:
    """What filing needs of a mail: sender, subject, Message-ID, text, attachments kept
    (the lazy compat32 parse: headers decoded only where asked)."""
    msg = email.message_from_bytes(raw)
    text, kept = "", []
    for part in msg.walk():
        if part.is_multipart():
            continue
        payload = part.get_payload(decode=True) or b""
        if part.get_filename() or part.get_content_maintype() != "text":
            kept.append(keep(files, payload))
        elif not text:
            text = payload.decode(part.get_content_charset() or "utf-8", "replace")
    subject = str(make_header(decode_header(msg.get("subject", ""))))
    return {"from": parseaddr(msg.get("from", ""))[1], "subject": subject,
            "message_id": msg.get("message-id", ""), "text": text, "attachments": kept}


def acknowledgement(number: str, mail: dict, secret: bytes) -> bytes:
    """The German acknowledgement of a new ticket, with a signed callback link."""
    token = hmac.new(secret, f"{number}:callback".encode(), "sha256").hexdigest()[:32]
    ack = MIMEText(ACK_TEXT.format(number=number,
                                   link=f"https://support.example.com/r/{number}/{token}"),
                   "plain", UTF8_QP)
    ack["From"] = "Support <support@example.com>"
    ack["To"] = mail["from"]
    ack["Subject"] = Header(f"[{number}] Ihre Anfrage: {mail['subject']}", "utf-8")
    ack["Date"] = format_datetime(datetime.now(UTC))
    ack["Message-ID"] = make_msgid(domain="example.com")
    ack["In-Reply-To"] = mail["message_id"]
    ack["Auto-Submitted"] = "auto-replied"
    return ack.as_bytes()


def file_batch(db: sqlite3.Connection, batch: list[tuple[str, dict]], first: int) -> None:
    """The rows of a batch of new tickets in one transaction."""
    now = datetime.now(UTC).isoformat()
    with db:
        for i, (sha, mail) in enumerate(batch, first):
            db.execute("INSERT INTO contacts(address, name) VALUES (?, '') "
                       "ON CONFLICT(address) DO NOTHING", (mail["from"],))
            contact = db.execute("SELECT id FROM contacts WHERE address = ?",
                                 (mail["from"],)).fetchone()[0]
            ticket = db.execute("INSERT INTO tickets(number, subject, status, contact_id, "
                                "created_at) VALUES (?, ?, 'new', ?, ?)",
                                (f"F{i:07d}", mail["subject"], contact, now)).lastrowid
            db.execute("INSERT INTO messages(ticket_id, message_id, from_addr, subject, body, "
                       "spool_sha256) VALUES (?, ?, ?, ?, ?, ?)",
                       (ticket, mail["message_id"], mail["from"], mail["subject"],
                        mail["text"], sha))
            db.executemany("INSERT INTO events(ticket_id, kind, at) VALUES (?, ?, ?)",
                           [(ticket, kind, now) for kind in ("created", "priority", "deadlines")])
            db.execute("INSERT INTO outbox(ticket_id, message_id, raw, status) "
                       "VALUES (?, ?, ?, 'pending')", (ticket, f"ack{i}", mail["ack"]))
            db.execute("INSERT INTO ingest VALUES (?, ?, 'created', ?)",
                       (sha, mail["message_id"], ticket))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mails", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=17)
    parser.add_argument("--batch", type=int, default=100, help="mails a fetch, move, sync")
    args = parser.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="mailbot-bench-floor-"))
    dovecot, sink = Dovecot(), SmtpSink()
    try:
        mix = build_mix(args.mails, args.seed, followups=False)  # each a new ticket
        n = len(mix.mails)
        print(f"{datetime.now().astimezone():%Y-%m-%d %H:%M %Z}; {machine()}; "
              f"load average {load_average()}", flush=True)
        dovecot.add_user(USER, PASSWORD)
        dovecot.start()
        sink.start()
        dovecot.append_many(USER, "INBOX", mix.mails)
        cpu: dict[str, float] = {}
        raws: list[bytes] = []
        with dovecot.connect(USER, timeout=120) as client:
            client.create_folder("Done")
            client.select_folder("INBOX")
            uids = sorted(client.search(["ALL"]))
            before = tree_cpu(dovecot.pid)

            def fetch_and_move() -> None:
                for start in range(0, len(uids), args.batch):
                    group = uids[start:start + args.batch]
                    fetched = client.fetch(group, ["BODY.PEEK[]"])
                    raws.extend(fetched[uid][b"BODY[]"] for uid in group)
                    client.move(group, "Done")

            cpu["1. IMAP fetch and move (client)"] = cpu_of(fetch_and_move)
            cpu["1. Dovecot serving the IMAP client"] = tree_cpu(dovecot.pid) - before
        spool, files = tmp / "spool", tmp / "files"
        spool.mkdir()
        files.mkdir()
        shas: list[str] = []

        def spool_all() -> None:
            for start in range(0, n, args.batch):
                shas.extend(keep(spool, raw) for raw in raws[start:start + args.batch])
                os.sync()

        cpu["2. raw mail kept (a file, synced a batch)"] = cpu_of(spool_all)
        mails: list[dict] = []
        cpu["3. read: parse, text, attachments kept"] = cpu_of(
            lambda: mails.extend(read(raw, files) for raw in raws))
        secret = os.urandom(32)

        def compose_all() -> None:
            for i, mail in enumerate(mails):
                mail["ack"] = acknowledgement(f"F{i:07d}", mail, secret)

        cpu["5. acknowledgement composed"] = cpu_of(compose_all)
        db = sqlite3.connect(tmp / "floor.sqlite3", isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.executescript(SCHEMA)
        db.isolation_level = ""  # `with db` commits each batch

        pairs = list(zip(shas, mails, strict=True))

        def file_all() -> None:
            for start in range(0, n, args.batch):
                file_batch(db, pairs[start:start + args.batch], start)

        cpu["4. filed: the rows of a new ticket (SQLite)"] = cpu_of(file_all)
        db.close()

        def send_all() -> None:
            with smtplib.SMTP("127.0.0.1", sink.port, timeout=60) as relay:
                for mail in mails:
                    relay.sendmail("support@example.com", [mail["from"]], mail["ack"])

        cpu["6. acknowledgement sent (SMTP client)"] = cpu_of(send_all)
        rows = [(part, f"{1000 * spent / n:.2f}") for part, spent in sorted(cpu.items())]
        print(table(rows, ("part", "CPU ms a mail")))
        cores = len(os.sched_getaffinity(0))
        for path, goal, parts in (
                ("IMAP -> acknowledgement sent", GOALS["imap"], tuple(cpu)),
                ("files -> acknowledgement sent", GOALS["ingest"], FILE_PARTS),
                ("files -> acknowledgement queued", GOALS["ingest"], FILE_PARTS[:-1])):
            floor = sum(cpu[part] for part in cpu if part.startswith(parts)) / n
            left = 1000 * (cores / goal - floor)
            print(f"{path}: {1000 * floor:.2f} ms a mail, at best {cores / floor:.0f} mails/s "
                  f"on {cores} cores, every core busy all the time; for {goal:.0f} mails/s "
                  + (f"all else may cost {left:.2f} ms a mail" if left >= 0 else
                     f"these parts alone are {-left:.2f} ms a mail too many"), flush=True)
    finally:
        sink.stop()
        dovecot.close()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
