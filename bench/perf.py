"""mailbot's speed on the mix of issue 17, in one command: ingest, IMAP, latency, memory, growth.

    python bench/perf.py [--mails 2000] [--latency-n 100]
                         [--only ingest,imap,latency,memory,growth] [--tickets 0,100000,300000]
                         [--max-seconds-per-mail S] [--profile DIR] [--keep]

The mix (seeded, the same bytes on every run): 2,000 mails, about 61 MB, German and English;
75 % of the subjects RFC 2047-encoded, 20 % with a 100 KB PDF-like attachment, the rest plain
text, about 12 % follow-ups to an earlier ticket by its tag.

(a) `mailbot ingest` with all files at once, one process on a fresh data dir: mails/s, CPU
    per mail, peak RSS.
(b) A daemon (`mailbot run`: IMAP IDLE on a throwaway Dovecot, relay at an SMTP sink) idle
    in IDLE; the whole mix is APPENDed (MULTIAPPEND, 50 at a time), timed from the first
    APPEND to the last acknowledgement queued; peak RSS of the daemon (VmHWM).
(c) One mail at a time: IMAP IDLE APPEND -> acknowledgement queued (the database polled
    each millisecond) and -> at the sink; LMTP and SMTP DATA -> 250 (after the durable
    commit, so the acknowledgement is queued), -> queued, -> at the sink.
(d) The peak RSS of the daemon and of its reader process after a mail with a 50 MB attachment.
(e) (a) again on desks of ``--tickets`` earlier tickets (filled through the store module), and
    one page of `mailbot tickets list` there.

It prints the date, the machine (CPU model and count), the load average, and a table against
the goals of issue 17.

Each part checks what it filed: every new mail a ticket with its acknowledgement queued,
every follow-up threaded.  Everything lives in a temp dir that is removed (--keep keeps it).
"""

from __future__ import annotations

import argparse
import base64
import os
import platform
import quopri
import random
import resource
import shutil
import smtplib
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.header import Header
from email.utils import format_datetime, formataddr
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    REPO,
    DaemonProcess,
    Db,
    Dovecot,
    PySpy,
    TimedSink,
    clean_up,
    free_port,
    imap_settings,
    listening,
    load_average,
    percentile,
    table,
    wait_until,
    write_config,
)
from daemon_util import run_measured
from mails import (
    CLOSING_DE,
    CLOSING_EN,
    GREETING_DE,
    GREETING_EN,
    MAILERS,
    PARAS_DE,
    PARAS_EN,
    PRODUCTS,
    PRODUCTS_EN,
    SUBJECTS_DE,
    SUBJECTS_EN,
    SUPPORT,
    Sender,
    _senders,
    write,
)

from mailbot.store import Store
from mailbot.store import directory as dq
from mailbot.store import inbound as iq
from mailbot.store import tickets as tq

# The ticket numbers of a bench run: the mix's follow-ups name them in their subject tag.
NUMBER_FORMAT = "P{counter:05d}"
TAG_PREFIX = "Ticket#"
# Shares of the mix (issue 17): encoded subjects, a 100 KB PDF attached, follow-ups by tag.
ENCODED_SUBJECTS = 0.75
WITH_PDF = 0.20
FOLLOWUPS = 0.10
PDF_BYTES = 100 * 1024
# New tickets per sender at most: below the acknowledgement limit of 5 an hour.
MAX_NEW_PER_SENDER = 3


_ASCII_FALLBACK = str.maketrans({"ä": "ae", "ö": "oe", "ü": "ue", "ß": "ss", "Ä": "Ae",
                                 "Ö": "Oe", "Ü": "Ue", "–": "-", "„": '"', "“": '"',
                                 "”": '"'})


@dataclass(frozen=True)
class Mix:
    """The mails of a run, in delivery order, and what they should become."""

    mails: list[bytes]
    message_ids: list[str]
    # How many open a ticket (and get an acknowledgement); the rest follow up by tag.
    new_tickets: int
    # The Message-IDs of the follow-ups.
    answers: frozenset[str]

    @property
    def followups(self) -> int:
        """How many mails follow up on an earlier ticket."""
        return len(self.answers)

    @property
    def size(self) -> int:
        """All mails together, in bytes."""
        return sum(len(m) for m in self.mails)


def build_mix(n: int = 2000, seed: int = 17, tag: str = "", followups: bool = True) -> Mix:
    """``n`` mails of the issue's mix, the same bytes for the same ``seed`` and ``tag``.

    German and English texts; 75 % of the subjects RFC 2047-encoded; 20 % carry a 100 KB
    PDF-like attachment, the rest are plain text; 10 % follow up on an earlier ticket of
    the same sender by its tag ``[Ticket#P00012]``, numbered as mailbot numbers tickets
    with :data:`NUMBER_FORMAT` when it files the mix in this order on a fresh database.
    ``tag`` goes into Message-IDs and addresses, so two mixes never share either;
    ``followups=False`` makes every mail a new ticket (for latency).
    """
    rng = random.Random(f"mailbot-perf-{seed}-{tag}")
    senders = _senders(rng, max(1, int(n * 0.6)), tag)
    opened: dict[str, list[tuple[int, str]]] = {}  # sender -> (ticket counter, subject)
    start = datetime(2026, 11, 23, 7, 30, tzinfo=UTC)
    with_pdf = set(rng.sample(range(n), round(n * WITH_PDF)))
    encoded = set(rng.sample(range(n), round(n * ENCODED_SUBJECTS)))
    mails, ids, counter, answers = [], [], 0, set()
    for index in range(n):
        sender = rng.choice(senders)
        while not followups and len(opened.get(sender.address, [])) >= MAX_NEW_PER_SENDER:
            sender = rng.choice(senders)
        earlier = opened.get(sender.address, [])
        followup = followups and bool(earlier) and rng.random() < FOLLOWUPS * 1.2
        if not followup and len(earlier) >= MAX_NEW_PER_SENDER:
            followup = True
        msgid = f"perf{tag}.{seed}.{index:06d}.{rng.getrandbits(48):012x}@" \
                f"{sender.address.rpartition('@')[2]}"
        when = start + timedelta(seconds=index * 29 + rng.randint(0, 20))
        shape = (index in encoded, index in with_pdf)
        if followup:
            number, subject = rng.choice(earlier)
            raw = _followup(rng, sender, (number, subject), (msgid, when), shape)
            answers.add(msgid)
        else:
            counter += 1
            subject, raw = _new_mail(rng, sender, (msgid, when), shape)
            opened.setdefault(sender.address, []).append((counter, subject))
        mails.append(raw)
        ids.append(msgid)
    return Mix(mails, ids, counter, frozenset(answers))


def _new_mail(rng: random.Random, sender: Sender, about: tuple[str, datetime],
              shape: tuple[bool, bool]) -> tuple[str, bytes]:
    """A customer's first mail about something: its subject and bytes."""
    de = sender.language == "de"
    product = rng.choice(PRODUCTS if de else PRODUCTS_EN)
    number = f"{rng.randint(10000, 99999)}"
    subject = rng.choice(SUBJECTS_DE if de else SUBJECTS_EN).format(p=product, n=number)
    paragraphs = [p.format(p=product, n=number)
                  for p in rng.sample(PARAS_DE if de else PARAS_EN, rng.randint(4, 7))]
    if rng.random() < 0.7:  # the earlier exchange quoted below
        paragraphs.append(_quoted(rng, de))
    text = _letter(rng, sender, paragraphs)
    return subject, _head(rng, sender, subject, about, shape[0]) + _body(rng, text, de, shape[1])


def _followup(rng: random.Random, sender: Sender, ticket: tuple[int, str],
              about: tuple[str, datetime], shape: tuple[bool, bool]) -> bytes:
    """A customer's follow-up on ticket ``(counter, subject)``, by its tag in the subject."""
    de = sender.language == "de"
    counter, subject = ticket
    number = NUMBER_FORMAT.format(counter=counter)
    subject = f"{'AW' if de else 'Re'}: [{TAG_PREFIX}{number}] {subject}"
    extra = ("Nachtrag: das Problem tritt jetzt auch auf dem Laptop auf, Version 4.2.1 unter "
             "Windows 11." if de else
             "One more thing: it now happens on the laptop too, version 4.2.1 on Windows 11.")
    text = _letter(rng, sender, [extra, _quoted(rng, de)])
    return _head(rng, sender, subject, about, shape[0]) + _body(rng, text, de, shape[1])


def _quoted(rng: random.Random, de: bool) -> str:
    """An earlier mail quoted under the text, with its attribution line."""
    when = "Am 20.11.2026 um 09:12 schrieb Support:" if de else \
        "On Fri, 20 Nov 2026 at 09:12, Support wrote:"
    lines = [line for p in rng.sample(PARAS_DE if de else PARAS_EN, 4)
             for line in textwrap.wrap(p.format(p="System", n="0"), 72)]
    return when + "\n" + "\n".join("> " + line for line in lines)


def _body(rng: random.Random, text: str, de: bool, pdf: bool) -> bytes:
    """Plain text, or the text and a PDF-like file."""
    if not pdf:
        return _text_part(rng, text, de)
    name = rng.choice(["Fehlerprotokoll.pdf", "Rechnung März.pdf", "Lieferschein.pdf"]
                      if de else ["error-log.pdf", "invoice.pdf", "screenshot.pdf"])
    return _with_pdf(rng, text, name)


def _letter(rng: random.Random, sender: Sender, paragraphs: list[str]) -> str:
    de = sender.language == "de"
    closing = rng.choice(CLOSING_DE if de else CLOSING_EN)
    return "\n\n".join([rng.choice(GREETING_DE if de else GREETING_EN), *paragraphs,
                        f"{closing}\n{sender.name}\nTel. +49 {rng.randint(30, 999)} "
                        f"{rng.randint(100000, 9999999)}"]) + "\n"


def _head(rng: random.Random, sender: Sender, subject: str, about: tuple[str, datetime],
          encode: bool) -> bytes:
    """The header block: trace fields and a DKIM signature as real mail has them."""
    msgid, when = about
    domain = sender.address.rpartition("@")[2]
    if encode:
        charset = "utf-8" if rng.random() < 0.7 else "iso-8859-1"
        try:
            subject_field = Header(subject, charset).encode()
        except UnicodeEncodeError:
            subject_field = Header(subject, "utf-8").encode()
        if "=?" not in subject_field:  # ASCII subjects are encoded too, as Outlook does
            subject_field = f"=?{charset}?q?{subject.replace(' ', '_')}?="
    else:  # written without umlauts, as some still do
        subject_field = subject.translate(_ASCII_FALLBACK).encode("ascii", "replace").decode()
    name = sender.name
    from_field = formataddr((name, sender.address), charset="utf-8") if not name.isascii() \
        else formataddr((name, sender.address))
    signature = base64.b64encode(rng.randbytes(256)).decode("ascii")
    lines = [
        f"Return-Path: <{sender.address}>",
        f"Received: from mail.{domain} (mail.{domain} [192.0.2.{rng.randint(1, 250)}])\r\n"
        f"\tby mx.example.com (Postfix) with ESMTPS id {rng.getrandbits(40):010X}\r\n"
        f"\tfor <{SUPPORT}>; {format_datetime(when)}",
        f"Received: from [10.0.{rng.randint(0, 9)}.{rng.randint(1, 250)}] by mail.{domain}\r\n"
        f"\twith ESMTPSA id {rng.getrandbits(64):016x}; {format_datetime(when)}",
        f"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d={domain}; s=mail;\r\n"
        f"\tt={int(when.timestamp())}; bh={base64.b64encode(rng.randbytes(32)).decode()};\r\n"
        f"\th=From:To:Subject:Date:Message-ID;\r\n"
        f"\tb={signature[:70]}\r\n\t {signature[70:140]}\r\n\t {signature[140:]}",
        f"From: {from_field}",
        f"To: Support <{SUPPORT}>",
        f"Subject: {subject_field}",
        f"Date: {format_datetime(when)}",
        f"Message-ID: <{msgid}>",
        "MIME-Version: 1.0",
        f"X-Mailer: {rng.choice(MAILERS)}",
    ]
    return ("\r\n".join(lines) + "\r\n").encode("utf-8")


def _text_part(rng: random.Random, text: str, de: bool) -> bytes:
    """A text/plain body with its Content-Type (the part's or the mail's own head)."""
    charset = rng.choice(["utf-8", "iso-8859-15"] if de else ["utf-8", "us-ascii"])
    try:
        data = text.replace("\n", "\r\n").encode(charset)
    except UnicodeEncodeError:
        charset, data = "utf-8", text.replace("\n", "\r\n").encode("utf-8")
    if data.isascii():
        cte = "7bit"
    elif rng.random() < 0.6:
        cte = "quoted-printable"
        data = quopri.encodestring(data.replace(b"\r\n", b"\n")).replace(b"\n", b"\r\n")
    else:
        cte = "8bit"
    return (f"Content-Type: text/plain; charset={charset}; format=flowed\r\n"
            f"Content-Transfer-Encoding: {cte}\r\n\r\n").encode("ascii") + data


def _with_pdf(rng: random.Random, text: str, name: str) -> bytes:
    """multipart/mixed: the text and a 100 KB PDF-like file, base64 in 76-column lines."""
    boundary = f"----=_Part_{rng.getrandbits(64):016x}"
    pdf = (b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog >>\nendobj\nstream\n"
           + rng.randbytes(PDF_BYTES - 80) + b"\nendstream\n%%EOF\n")
    filename = Header(name, "utf-8").encode() if not name.isascii() else name
    return (f'Content-Type: multipart/mixed; boundary="{boundary}"\r\n\r\n'
            f"This is a multi-part message in MIME format.\r\n--{boundary}\r\n").encode() \
        + _text_part(rng, text, True) \
        + (f"\r\n--{boundary}\r\nContent-Type: application/pdf; name=\"{filename}\"\r\n"
           f"Content-Transfer-Encoding: base64\r\n"
           f"Content-Disposition: attachment; filename=\"{filename}\"\r\n\r\n").encode() \
        + base64.encodebytes(pdf).replace(b"\n", b"\r\n") + f"--{boundary}--\r\n".encode()


# -- the runs ------------------------------------------------------------------------------------

USER = "support"
PASSWORD = "secret"
# Tables every run's config gets besides _common's: the mix's ticket numbers, limits that
# take the 50 MB mail of (d).
EXTRA = f"""
[tickets]
number_format = "{NUMBER_FORMAT}"

[limits]
max_message_bytes = {80 * 1024 * 1024}
max_attachment_bytes = {60 * 1024 * 1024}
"""
# An out-of-office reply: read like any mail, filed as nothing (no ticket is numbered for
# it), so a daemon can be warmed up without shifting the mix's ticket numbers.
WARM_UP = (b"From: Abwesend <abwesend@warm-up.example>\r\nTo: support@example.com\r\n"
           b"Subject: Automatische Antwort: Warm-up\r\nAuto-Submitted: auto-replied\r\n"
           b"Date: Mon, 23 Nov 2026 07:00:00 +0000\r\nMessage-ID: <warm-up@warm-up.example>\r\n"
           b"\r\nIch bin nicht im Haus.\r\n")
# The statuses of the earlier tickets of (e), round robin.
GROWTH_STATUSES = ("open", "resolved", "closed", "closed", "closed", "waiting")
GROWTH_START = datetime(2024, 11, 1, tzinfo=UTC)  # the first of the earlier tickets
# Goals of issue 17 (2 cores).
GOALS = {"ingest": 1500.0, "imap": 1000.0, "idle_p50": 0.55, "lmtp_p50": 0.020,
         "rss_run": 100.0, "rss_50mb": 150.0}


@dataclass
class Daemon:
    """`mailbot run` with an IMAP source, the listener and the relay at the sink."""

    process: DaemonProcess
    db: Db
    port: int

    def peak_mb(self) -> float:
        """The daemon's peak resident memory so far (VmHWM), in MB."""
        return self.process.status("VmHWM") / 1024


def machine() -> str:
    """The machine the figures come from: host, CPU model and count, memory, Python."""
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines()
                  if line.startswith("model name")), platform.processor() or "?")
    memory = next((int(line.split()[1]) // 1024 for line in
                   Path("/proc/meminfo").read_text().splitlines()
                   if line.startswith("MemTotal:")), 0)
    return (f"{platform.node()}: {model}, {os.cpu_count()} CPUs "
            f"({len(os.sched_getaffinity(0))} usable), {memory / 1024:.1f} GB, "
            f"Python {platform.python_version()}, Linux {platform.release()}")


def bench_ingest(tmp: Path, mix: Mix) -> dict:
    """(a) One `mailbot ingest f1 ... fN` on a fresh data dir; rate, CPU and peak memory."""
    paths = write(tmp / "mails", mix.mails)
    config = write_config(tmp / "a.toml", tmp / "data-a", extra=EXTRA)
    warm = write_config(tmp / "a0.toml", tmp / "data-a0", extra=EXTRA)
    started = time.monotonic()
    first, _ = run_measured(warm, "ingest", str(paths[0]))  # the start of one process
    startup = time.monotonic() - started
    started = time.monotonic()  # again, on the installation that ran once: an MTA's pipe
    again, _ = run_measured(warm, "ingest", str(paths[1]))
    startup_again = time.monotonic() - started
    for run in (first, again):
        if run.returncode != 0:
            raise RuntimeError(f"mailbot ingest failed ({run.returncode}): "
                               f"{run.stderr[-2000:]}")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    done, peak = run_measured(config, "ingest", *map(str, paths))
    elapsed = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(f"mailbot ingest exited {done.returncode}: {done.stderr[-2000:]}")
    db = Db(tmp / "data-a" / "mailbot.sqlite3")
    counts = check_filed(db, mix, "(a)")
    db.close()
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return {"rate": len(mix.mails) / elapsed, "elapsed": elapsed, "startup": startup,
            "startup_again": startup_again,
            "rate_net": len(mix.mails) / max(elapsed - startup, 1e-9),
            "cpu_ms": 1000 * cpu / len(mix.mails), "peak": peak, **counts}


def check_filed(db: Db, mix: Mix, part: str) -> dict:
    """Every mail filed as the mix says: tickets, follow-ups, acknowledgements queued."""
    outcomes = dict(db.rows("SELECT outcome, COUNT(*) FROM ingest GROUP BY outcome"))
    acks = db.scalar("SELECT COUNT(*) FROM outbox WHERE kind = 'acknowledgement'")
    created, followups = outcomes.get("created", 0), outcomes.get("followup", 0)
    if (created, followups, acks) != (mix.new_tickets, mix.followups, created):
        raise AssertionError(f"{part}: expected {mix.new_tickets} tickets, {mix.followups} "
                             f"follow-ups and as many acknowledgements as tickets; found "
                             f"{outcomes}, {acks} acknowledgements")
    return {"created": created, "followups": followups, "acks": acks}


def start_daemon(tmp: Path, name: str, protocol: str, dovecot: Dovecot | None) -> Daemon:
    """A warm daemon: it has filed the warm-up mail (from IMAP, and is idle in IDLE again,
    when it reads ``dovecot``'s INBOX; else through its listener)."""
    port = free_port()
    config = write_config(tmp / f"{name}.toml", tmp / f"data-{name}", listener_port=port,
                          imap=imap_settings(dovecot, USER) if dovecot else None,
                          relay_port=SINK.port, protocol=protocol, extra=EXTRA)
    process = DaemonProcess(config, tmp / f"daemon-{name}.log").start()
    daemon = Daemon(process, Db(tmp / f"data-{name}" / "mailbot.sqlite3"), port)
    if dovecot is not None:
        dovecot.append(USER, "INBOX", WARM_UP)
    else:
        wait_until(lambda: process.check_alive() or listening(port), timeout=60,
                   message="the listener")
        with smtplib.SMTP("127.0.0.1", port, timeout=60) as client:
            client.sendmail("abwesend@warm-up.example", ["support@example.com"], WARM_UP)
    wait_until(lambda: process.check_alive() or daemon.db.scalar(
        "SELECT COUNT(*) FROM ingest WHERE message_id = 'warm-up@warm-up.example'"),
        timeout=60, message="the daemon files the warm-up mail")
    if dovecot is not None:
        wait_inbox_empty(dovecot)
    return daemon


def wait_inbox_empty(dovecot: Dovecot, timeout: float = 60.0) -> None:
    """Wait until every mail left the INBOX (filed and moved), then for the daemon to be
    back in IDLE (it searches once more first)."""
    wait_until(lambda: dovecot.message_count(USER, "INBOX") == 0, timeout, interval=0.01,
               message="an empty INBOX")
    threading.Event().wait(0.3)


def bench_imap(dovecot: Dovecot, daemon: Daemon, mix: Mix, profile: Path | None = None,
               chunk: int = 50) -> dict:
    """(b) APPEND of the whole mix (MULTIAPPEND, ``chunk`` mails each) to a daemon idle in
    IDLE, until the last acknowledgement is queued; the INBOX empty and the acks at the sink
    are checked too.  With ``profile``, py-spy samples the daemon meanwhile."""
    appended: list[float] = []

    def append() -> None:
        with dovecot.connect(USER, timeout=120) as client:
            for start in range(0, len(mix.mails), chunk):
                client.multiappend("INBOX", mix.mails[start:start + chunk])
        appended.append(time.monotonic())

    target = len(mix.mails) + 1  # and the warm-up
    spy = PySpy(daemon.process.pid, profile / "imap.raw") if profile else None
    cpu_before = cpu_split(daemon, dovecot)
    feeder = threading.Thread(target=append, daemon=True)
    t0 = time.monotonic()
    feeder.start()
    first = done = None
    deadline = t0 + max(120.0, len(mix.mails) / 5)
    while done is None:
        daemon.process.check_alive()
        if time.monotonic() > deadline:
            raise AssertionError(f"(b) timed out\n{daemon.process.log_tail()}")
        filed = daemon.db.scalar("SELECT COUNT(*) FROM ingest")
        acks = daemon.db.scalar("SELECT COUNT(*) FROM outbox WHERE kind = 'acknowledgement'")
        now = time.monotonic()
        if first is None and filed > 1:
            first = now
        if filed >= target and acks >= mix.new_tickets:
            done = now
            cpu = {name: after - cpu_before[name]
                   for name, after in cpu_split(daemon, dovecot).items()}
        threading.Event().wait(0.01)
    feeder.join()
    if spy is not None:
        spy.stop()
        print(f"    py-spy profile of (b): {spy.out} (collapsed stacks)", flush=True)
    wait_inbox_empty(dovecot)
    moved = time.monotonic()
    counts = check_filed(daemon.db, mix, "(b)")
    at_sink = sink_wait(daemon, mix)
    return {"rate": len(mix.mails) / (done - t0), "elapsed": done - t0,
            "append": appended[0] - t0, "first": first - t0, "moved": moved - t0,
            "rate_steady": len(mix.mails) / (done - first), "at_sink": at_sink - t0,
            "peak": daemon.peak_mb(), "cpu": daemon.process.cpu_seconds(), "split": cpu,
            **counts}


def cpu_split(daemon: Daemon, dovecot: Dovecot) -> dict[str, float]:
    """CPU seconds so far of the daemon itself, the processes below it (the fork server and
    its readers, also those that ended) and Dovecot (every process below its master)."""
    own = daemon.process.cpu_seconds()
    return {"daemon": own, "readers": tree_cpu(daemon.process.pid) - own,
            "dovecot": tree_cpu(dovecot.pid)}


def tree_cpu(pid: int) -> float:
    """User and system CPU seconds of ``pid`` and every process below it, live or ended
    (an ended child's counts in its parent's once it was waited for)."""
    parents, seconds = {}, {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        child = int(stat.parent.name)
        parents[child] = int(fields[1])
        seconds[child] = sum(map(int, fields[11:15])) / os.sysconf("SC_CLK_TCK")
    total = 0.0
    for child, spent in seconds.items():
        ancestor = child
        while ancestor and ancestor != pid:
            ancestor = parents.get(ancestor)
        if ancestor == pid:
            total += spent
    return total


SINK: TimedSink | None = None


def sink_wait(daemon: Daemon, mix: Mix) -> float:
    """When every acknowledgement of the mix reached the sink."""
    ids = [mid for mid in mix.message_ids if mid not in mix.answers]
    if not SINK.wait_acked(ids, timeout=300):
        raise AssertionError(f"only {SINK.acked(ids)} of {len(ids)} acknowledgements at the "
                             f"sink\n{daemon.process.log_tail()}")
    return max(SINK.first_arrival(mid) for mid in ids)


def queued_at(daemon: Daemon, message_id: str, timeout: float = 30.0) -> float:
    """When the acknowledgement of the mail ``message_id`` is seen queued (polled each ms)."""
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    while time.monotonic() < deadline:
        if daemon.db.scalar(
                "SELECT COUNT(*) FROM messages m JOIN outbox o ON o.ticket_id = m.ticket_id "
                "AND o.kind = 'acknowledgement' WHERE m.message_id = ?", (message_id,)):
            return time.monotonic()
        pause.wait(0.001)
    raise AssertionError(f"no acknowledgement queued for {message_id} within {timeout} s\n"
                         f"{daemon.process.log_tail()}")


def latency_idle(dovecot: Dovecot, daemon: Daemon, mix: Mix) -> dict:
    """(c) One mail at a time over IMAP IDLE: APPEND -> acknowledgement queued, -> at the sink."""
    queued, delivered = [], []
    with dovecot.connect(USER, timeout=30) as client:
        for mid, raw in zip(mix.message_ids, mix.mails, strict=True):
            t0 = time.monotonic()
            client.append("INBOX", raw)
            queued.append(queued_at(daemon, mid) - t0)
            if not SINK.wait_acked([mid], timeout=30):
                raise AssertionError(f"(c) no acknowledgement of {mid} at the sink")
            delivered.append(SINK.first_arrival(mid) - t0)
            wait_inbox_empty(dovecot)
    return {"queued": queued, "delivered": delivered}


def latency_listener(daemon: Daemon, mix: Mix, protocol: str) -> dict:
    """(c) One mail at a time over LMTP or SMTP: DATA -> 250, -> acknowledgement queued and
    at the sink (one session, as an MTA keeps it open)."""
    client_class = smtplib.LMTP if protocol == "lmtp" else smtplib.SMTP
    answered, queued, delivered = [], [], []
    with client_class("127.0.0.1", daemon.port, timeout=60) as client:
        client.ehlo("bench.example")  # LHLO for LMTP
        for mid, raw in zip(mix.message_ids, mix.mails, strict=True):
            sender = raw.split(b"Return-Path: <", 1)[1].split(b">", 1)[0].decode()
            client.mail(sender)
            client.rcpt("support@example.com")
            t0 = time.monotonic()
            code, reply = client.data(raw)
            answered.append(time.monotonic() - t0)
            if code != 250:
                raise AssertionError(f"(c) {protocol} answered {code} {reply!r}")
            queued.append(queued_at(daemon, mid) - t0)
            if not SINK.wait_acked([mid], timeout=30):
                raise AssertionError(f"(c) no acknowledgement of {mid} at the sink")
            delivered.append(SINK.first_arrival(mid) - t0)
    return {"answered": answered, "queued": queued, "delivered": delivered}


def memory_50mb(dovecot: Dovecot, daemon: Daemon, seed: int) -> tuple[float, float]:
    """(d) The peak memory of the daemon, and of its biggest reader process, after a mail
    with a 50 MB attachment over IMAP."""
    rng = random.Random(seed)
    payload = base64.encodebytes(rng.randbytes(50 * 1024 * 1024)).replace(b"\n", b"\r\n")
    raw = (b"From: Jana Kurz <jana.kurz@kunde.example>\r\nTo: support@example.com\r\n"
           b"Subject: Messwerte\r\nDate: Mon, 23 Nov 2026 09:30:00 +0100\r\n"
           b"Message-ID: <fifty-mb@kunde.example>\r\nMIME-Version: 1.0\r\n"
           b'Content-Type: multipart/mixed; boundary="teil"\r\n\r\n--teil\r\n'
           b"Content-Type: text/plain\r\n\r\nAnbei die Messwerte.\r\n--teil\r\n"
           b"Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n"
           b'Content-Disposition: attachment; filename="messwerte.bin"\r\n\r\n'
           + payload + b"--teil--\r\n")
    dovecot.append(USER, "INBOX", raw)
    del raw, payload
    queued_at(daemon, "fifty-mb@kunde.example", timeout=120)
    wait_inbox_empty(dovecot)
    return daemon.peak_mb(), max((peak for name, peak in descendants(daemon.process.pid)
                                  if name == "mailbot-reader"), default=0.0)


def descendants(pid: int) -> list[tuple[str, float]]:
    """Name and peak memory (VmHWM, MB) of every live process below ``pid``."""
    parents, found = {}, []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    for child in parents:
        ancestor = parents.get(child)
        while ancestor and ancestor != pid:
            ancestor = parents.get(ancestor)
        if ancestor != pid:
            continue
        try:
            status = Path(f"/proc/{child}/status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        found.append((fields.get("Name", "").strip(),
                      int(fields.get("VmHWM", "0 kB").split()[0]) / 1024))
    return found


def fill(store: Store, tickets: int, seed: int) -> None:
    """A desk of ``tickets`` earlier tickets, through the store module: per ticket a contact,
    its mail (1 KB of text), three events, a sent acknowledgement (1.5 KB) and the ingest
    record; statuses, priorities and two years of dates spread.  Numbers "G0000001" and
    addresses at growth.example never meet the mix's."""
    rng = random.Random(seed)
    body = " ".join(PARAS_DE)[:1000]
    raw = b"x" * 1500
    for first in range(0, tickets, 10_000):
        with store.transaction(durable=False):
            for i in range(first, min(first + 10_000, tickets)):
                at = GROWTH_START + timedelta(minutes=i * 2 + rng.randint(0, 1))
                address = f"kunde{i}@growth{i % 500}.example"
                contact = dq.upsert_contact(store, {"address": address, "name": f"Kunde {i}",
                                                    "account_id": None, "phone": "",
                                                    "language": ""})
                status = GROWTH_STATUSES[i % len(GROWTH_STATUSES)]
                ticket = store.insert("tickets", {
                    "number": f"G{i:07d}", "subject": f"Anfrage {i}", "language": "de",
                    "status": status,
                    "priority": ("urgent", "high", "normal", "low")[rng.randint(0, 3)],
                    "contact_id": contact, "created_at": at, "updated_at": at,
                    "status_since": at, "first_response_due": at + timedelta(days=2)})
                if status == "waiting":  # its reminder: the job works out the moment
                    tq.update(store, ticket, remind_at=at)
                tq.add_message(store, {"ticket_id": ticket, "direction": "in",
                                       "message_id": f"g{i}@growth.example",
                                       "from_addr": address, "to_addrs": ["support@example.com"],
                                       "subject": f"Anfrage {i}", "body": body,
                                       "spool_sha256": f"{i:064x}", "created_at": at})
                for kind in ("created", "priority", "deadlines"):
                    tq.add_event(store, ticket, kind, {"from": address}, at)
                store.insert("outbox", {"ticket_id": ticket, "kind": "acknowledgement",
                                        "message_id": f"mb.g{i}@example.com",
                                        "sender": "support@example.com",
                                        "recipients": [address], "raw": raw, "status": "sent",
                                        "next_attempt_at": at, "created_at": at})
                iq.record_ingest(store, f"{i:064x}", f"g{i}@growth.example", "created", ticket,
                                 "imap:growth", at)
    store.sync()


def bench_growth(tmp: Path, mix: Mix, sizes: list[int], seed: int) -> Iterator[dict]:
    """(e) (a) again on desks of ``sizes`` earlier tickets; and one page of `tickets list`."""
    for size in sizes:
        root = tmp / f"growth-{size}"
        store = Store(root / "data" / "mailbot.sqlite3")
        started = time.monotonic()
        fill(store, size, seed)
        store.close()
        filled = time.monotonic() - started
        config = write_config(root / "mailbot.toml", root / "data", extra=EXTRA)
        paths = sorted((tmp / "mails").glob("*.eml")) or write(tmp / "mails", mix.mails)
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.monotonic()
        done, peak = run_measured(config, "ingest", *map(str, paths))
        elapsed = time.monotonic() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
        if done.returncode != 0:
            raise RuntimeError(f"(e) mailbot ingest exited {done.returncode}: "
                               f"{done.stderr[-2000:]}")
        db = Db(root / "data" / "mailbot.sqlite3")
        outcomes = dict(db.rows("SELECT outcome, COUNT(*) FROM ingest WHERE source = 'cli' "
                                "GROUP BY outcome"))
        db.close()
        if outcomes != {"created": mix.new_tickets, "followup": mix.followups}:
            raise AssertionError(f"(e) at {size} tickets the mix was filed as {outcomes}")
        started = time.monotonic()
        listed = subprocess.run([sys.executable, "-m", "mailbot", "--config", str(config),
                                 "tickets", "list"], cwd=REPO, capture_output=True, text=True)
        listing = time.monotonic() - started
        if listed.returncode != 0:
            raise RuntimeError(f"(e) tickets list exited {listed.returncode}: {listed.stderr}")
        store = Store(root / "data" / "mailbot.sqlite3")
        page = []
        for _ in range(5):
            started = time.perf_counter()
            tq.work_list(store, 50, 0)
            page.append(time.perf_counter() - started)
        store.close()
        shutil.rmtree(root, ignore_errors=True)
        yield {"size": size, "rate": len(mix.mails) / elapsed, "peak": peak, "filled": filled,
               "listing": listing, "page": percentile(page, 50),
               "cpu_ms": 1000 * cpu / len(mix.mails)}


def ms(seconds: float) -> str:
    """Seconds in milliseconds, with a decimal below one second."""
    return f"{seconds * 1000:.1f} ms" if seconds < 1 else f"{seconds * 1000:.0f} ms"


def spread(values: list[float]) -> str:
    """p50 / p95 of latencies."""
    return f"p50 {ms(percentile(values, 50))}, p95 {ms(percentile(values, 95))}"


def verdict(ok: bool) -> str:
    """Whether a goal was met, in the table's words."""
    return "met" if ok else "MISSED"


def main(argv: list[str] | None = None) -> int:
    global SINK, EXTRA
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mails", type=int, default=2000, help="mails in the mix (2000)")
    parser.add_argument("--seed", type=int, default=17)
    parser.add_argument("--latency-n", type=int, default=100,
                        help="mails measured one at a time over IDLE, LMTP and SMTP each")
    parser.add_argument("--only", default="ingest,imap,latency,memory,growth",
                        help="parts to run: ingest, imap, latency, memory, growth")
    parser.add_argument("--tickets", default="0,100000,300000",
                        help="(growth) earlier tickets on the desk before (a) runs again")
    parser.add_argument("--max-seconds-per-mail", type=float, default=None,
                        help="[limits] max_seconds_per_mail for every run (0: read each mail in "
                             "its source's process, no reader process); default: mailbot's")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir")
    parser.add_argument("--profile", type=Path, default=None,
                        help="record a py-spy profile of the daemon during (b) in this dir")
    args = parser.parse_args(argv)
    parts = set(args.only.split(","))
    if args.max_seconds_per_mail is not None:
        EXTRA += f"max_seconds_per_mail = {args.max_seconds_per_mail:g}\n"

    tmp = Path(tempfile.mkdtemp(prefix="mailbot-bench-perf-"))
    dovecot = None
    daemons: list[DaemonProcess] = []
    rows: list[tuple] = []
    try:
        mix = build_mix(args.mails, args.seed)
        print(f"{datetime.now().astimezone():%Y-%m-%d %H:%M %Z}; {machine()}", flush=True)
        print(f"mix: {len(mix.mails)} mails, {mix.size / 1e6:.1f} MB (seed {args.seed}): "
              f"{mix.new_tickets} new tickets, {mix.followups} follow-ups by tag; {tmp}; "
              f"load average {load_average()}", flush=True)
        if "ingest" in parts:
            a = bench_ingest(tmp, mix)
            print(f"(a) mailbot ingest, {len(mix.mails)} files in one process: "
                  f"{a['elapsed']:.2f} s = {a['rate']:.0f} mails/s ({a['rate_net']:.0f} "
                  f"without the {a['startup']:.2f} s start of a process); CPU "
                  f"{a['cpu_ms']:.2f} ms a mail; peak RSS {a['peak']:.0f} MB", flush=True)
            print(f"    one mail a process (an MTA's pipe): {a['startup']:.2f} s on a new data "
                  f"dir, {a['startup_again']:.2f} s on one that ran before", flush=True)
            rows.append(("(a) `mailbot ingest`, many files", f"{a['rate']:.0f} mails/s",
                         f">= {GOALS['ingest']:.0f}", verdict(a["rate"] >= GOALS["ingest"])))
        if parts & {"imap", "latency", "memory"}:
            dovecot = Dovecot()
            dovecot.add_user(USER, PASSWORD)
            dovecot.start()
            SINK = TimedSink(keep_messages=False)
            SINK.start()
            daemon = start_daemon(tmp, "lmtp", "lmtp", dovecot)
            daemons.append(daemon.process)
            if "imap" in parts:
                if args.profile is not None:
                    args.profile.mkdir(parents=True, exist_ok=True)
                b = bench_imap(dovecot, daemon, mix, args.profile)
                print(f"(b) IMAP: APPEND of {len(mix.mails)} mails (done after "
                      f"{b['append']:.2f} s) -> last acknowledgement queued {b['elapsed']:.2f} s "
                      f"= {b['rate']:.0f} mails/s ({b['rate_steady']:.0f} from the first "
                      f"filed); INBOX empty after {b['moved']:.2f} s, every acknowledgement "
                      f"at the sink after {b['at_sink']:.2f} s; daemon CPU {b['cpu']:.1f} s, "
                      f"peak RSS {b['peak']:.0f} MB", flush=True)
                split = b["split"]
                print("    CPU a mail until the last acknowledgement was queued: " + ", ".join(
                    f"{name} {1000 * spent / len(mix.mails):.2f} ms"
                    for name, spent in split.items())
                    + f"; together {1000 * sum(split.values()) / len(mix.mails):.2f} ms",
                    flush=True)
                rows.append(("(b) IMAP -> ticket -> acknowledgement queued",
                             f"{b['rate']:.0f} mails/s", f">= {GOALS['imap']:.0f}",
                             verdict(b["rate"] >= GOALS["imap"])))
                rows.append(("    daemon peak RSS (VmHWM) after (b)", f"{b['peak']:.0f} MB",
                             f"< {GOALS['rss_run']:.0f} MB",
                             verdict(b["peak"] < GOALS["rss_run"])))
            if "latency" in parts:
                one = build_mix(args.latency_n, args.seed, tag="idle", followups=False)
                idle = latency_idle(dovecot, daemon, one)
                one = build_mix(args.latency_n, args.seed, tag="lmtp", followups=False)
                lmtp = latency_listener(daemon, one, "lmtp")
                smtp_daemon = start_daemon(tmp, "smtp", "smtp", None)
                daemons.append(smtp_daemon.process)
                one = build_mix(args.latency_n, args.seed, tag="smtp", followups=False)
                smtp = latency_listener(smtp_daemon, one, "smtp")
                print(f"(c) one mail at a time ({args.latency_n} each): IDLE APPEND -> ack "
                      f"queued {spread(idle['queued'])}, -> at the sink "
                      f"{spread(idle['delivered'])}; LMTP DATA -> 250 "
                      f"{spread(lmtp['answered'])}, -> queued {spread(lmtp['queued'])}, -> at "
                      f"the sink {spread(lmtp['delivered'])}; SMTP DATA -> 250 "
                      f"{spread(smtp['answered'])}, -> at the sink {spread(smtp['delivered'])}",
                      flush=True)
                p50 = percentile(idle["queued"], 50)
                rows.append(("(c) IMAP IDLE: APPEND -> ack queued", spread(idle["queued"]),
                             f"p50 <= {ms(GOALS['idle_p50'])}", verdict(p50 <= GOALS["idle_p50"])))
                p50 = percentile(lmtp["answered"], 50)
                rows.append(("(c) LMTP: DATA -> 250 (ack queued, durable)",
                             spread(lmtp["answered"]), f"p50 <= {ms(GOALS['lmtp_p50'])}",
                             verdict(p50 <= GOALS["lmtp_p50"])))
                rows.append(("(c) SMTP: DATA -> 250", spread(smtp["answered"]), "", ""))
                rows.append(("(c) LMTP: DATA -> ack at the relay", spread(lmtp["delivered"]),
                             "", ""))
            if "memory" in parts:
                peak, reader = memory_50mb(dovecot, daemon, args.seed)
                print(f"(d) peak RSS after a mail with a 50 MB attachment: daemon {peak:.0f} MB, "
                      f"its biggest reader process {reader:.0f} MB", flush=True)
                rows.append(("(d) daemon peak RSS with a 50 MB attachment", f"{peak:.0f} MB",
                             f"< {GOALS['rss_50mb']:.0f} MB", verdict(peak < GOALS["rss_50mb"])))
                rows.append(("    its reader process's peak RSS", f"{reader:.0f} MB",
                             f"< {GOALS['rss_50mb']:.0f} MB",
                             verdict(reader < GOALS["rss_50mb"])))
        if "growth" in parts:
            sizes = [int(size) for size in args.tickets.split(",")]
            for row in bench_growth(tmp, mix, sizes, args.seed):
                print(f"(e) {row['size']:,} earlier tickets (filled in {row['filled']:.0f} s): "
                      f"mailbot ingest {row['rate']:.0f} mails/s, CPU {row['cpu_ms']:.2f} ms a "
                      f"mail, peak RSS {row['peak']:.0f} MB; "
                      f"`mailbot tickets list` {row['listing']:.2f} s (its query "
                      f"{ms(row['page'])})", flush=True)
                rows.append((f"(e) at {row['size']:,} tickets: ingest",
                             f"{row['rate']:.0f} mails/s, CPU {row['cpu_ms']:.2f} ms a mail",
                             "flat", ""))
                rows.append((f"    at {row['size']:,} tickets: one page of `tickets list`",
                             f"query {ms(row['page'])}, process {row['listing']:.2f} s",
                             "< 0.2 s", verdict(row["page"] < 0.2)))
        for process in daemons:
            if process.terminate() != 0:
                print("warning: a daemon did not exit 0 on SIGTERM", flush=True)
        print(f"\nload average at the end: {load_average()} (other work on the machine skews "
              "wall-clock figures)")
        print(table(rows, ("measure", "result", "goal", "")))
        return 0
    finally:
        clean_up(daemons, SINK, dovecot, tmp, args.keep)


if __name__ == "__main__":
    sys.exit(main())
