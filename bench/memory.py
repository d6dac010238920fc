"""Peak memory: (a) `mailbot ingest` of one mail with a big attachment, (b) `mailbot fetch`
of a batch of big mails from IMAP, with and without the fetch budget.

    python bench/memory.py [--sizes 0,10,50] [--imap-mails 6] [--imap-mb 5] [--keep]

(a) For each size in MB (0: a plain text mail), one mail carrying that many random bytes as
a base64 attachment is filed by `python -m mailbot ingest FILE` on a fresh data dir, with
one agent configured (its notification is composed, as in production) and [limits] raised
to take the mail.  (b) `--imap-mails` mails of `--imap-mb` MB each are appended to a
throwaway Dovecot INBOX and filed by `mailbot fetch`, once with the default
`fetch_budget_bytes` and once with a budget of 1 GB (the whole batch at once, as before the
budget).  Peak memory is the child's VmHWM from /proc/self/status, written by a small
wrapper as the process exits (the rusage of a child would also count what this process held
when it forked).  Checks: every mail filed, each stored attachment byte-identical; exit 1
if one fails.  The temp dir is removed at the end (`--keep` leaves it).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import Dovecot, clean_up, imap_settings, load_average, table, write_config
from daemon_util import run_measured

MB = 1024 * 1024
EXTRA = """
[limits]
max_message_bytes = {limit}
max_attachment_bytes = {limit}

[team]
agents = [{{ address = "anna@example.com", name = "Anna" }}]
"""


def measured(config: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], float, float]:
    """Run a `mailbot` command as its own process: result, peak memory in MB, seconds."""
    started = time.monotonic()
    result, peak = run_measured(config, *args)
    return result, peak, time.monotonic() - started


def mail(payload: bytes, subject: str) -> bytes:
    """A customer mail with ``payload`` as a base64 attachment (none when it is empty)."""
    head = (f"From: Jana Kurz <jana.kurz@kunde.example>\r\nTo: support@example.com\r\n"
            f"Subject: {subject}\r\nDate: Tue, 24 Nov 2026 09:30:00 +0100\r\n"
            f"Message-ID: <{hashlib.sha256(subject.encode()).hexdigest()}@kunde.example>\r\n"
            "MIME-Version: 1.0\r\n").encode()
    if not payload:
        return head + b"Content-Type: text/plain\r\n\r\nDer Drucker druckt nicht.\r\n"
    return (head + b'Content-Type: multipart/mixed; boundary="teil"\r\n\r\n'
            b"--teil\r\nContent-Type: text/plain\r\n\r\nAnbei die Messwerte.\r\n"
            b'--teil\r\nContent-Type: application/octet-stream\r\nContent-Disposition: '
            b'attachment; filename="messwerte.bin"\r\nContent-Transfer-Encoding: base64\r\n\r\n'
            + base64.encodebytes(payload).replace(b"\n", b"\r\n") + b"--teil--\r\n")


def config(root: Path, limit: int, imap: dict | None = None) -> Path:
    """A mailbot.toml under ``root``: web and listener off, one agent, limits at ``limit``."""
    path = write_config(root / "mailbot.toml", root / "data", imap=imap)
    path.write_text(path.read_text() + EXTRA.format(limit=limit), encoding="utf-8")
    return path


def bench_ingest(sizes: list[int], tmp: Path) -> tuple[list[tuple], bool]:
    """(a): one `mailbot ingest` per attachment size."""
    rows, ok = [], True
    for size in sizes:
        root = tmp / f"ingest-{size}"
        root.mkdir()
        payload = os.urandom(size * MB)
        path = root / "mail.eml"
        path.write_bytes(mail(payload, f"Messwerte {size} MB"))
        cfg = config(root, 2 * size * MB + MB)
        result, peak, seconds = measured(cfg, "ingest", str(path))
        digest = hashlib.sha256(payload).hexdigest()
        stored = root / "data" / "files" / digest[:2] / digest
        good = result.returncode == 0 and (not size or (
            stored.exists() and hashlib.sha256(stored.read_bytes()).hexdigest() == digest))
        ok = ok and good
        rows.append((f"(a) ingest, {size} MB attachment", f"{path.stat().st_size / MB:.1f}",
                     f"{peak:.0f}", f"{seconds:.1f}", "< 150" if size <= 50 else "",
                     "ok" if good and (size > 50 or peak < 150) else "FAIL"))
    return rows, ok


def bench_fetch(mails: int, size: int, tmp: Path, dovecot: Dovecot) -> tuple[list[tuple], bool]:
    """(b): `mailbot fetch` of a batch of big mails, with the default budget and with 1 GB."""
    rows, ok = [], True
    batch = [mail(os.urandom(size * MB), f"Bild {i}") for i in range(mails)]
    for label, budget in (("default budget (8 MB)", None), ("budget 1 GB", 1024 * MB)):
        account = dovecot.new_user()
        dovecot.append_many(account.username, "INBOX", batch, batch=1)
        extra = {"fetch_budget_bytes": budget} if budget else {}
        root = tmp / f"fetch-{budget or 'default'}"
        root.mkdir()
        cfg = config(root, 2 * size * MB + MB,
                     imap_settings(dovecot, account.username, **extra))
        result, peak, seconds = measured(cfg, "fetch")
        good = result.returncode == 0 and f"filed {mails}" in result.stdout
        ok = ok and good
        rows.append((f"(b) fetch {mails} x {size} MB, {label}",
                     f"{sum(len(m) for m in batch) / MB:.1f}", f"{peak:.0f}", f"{seconds:.1f}",
                     "", "ok" if good else "FAIL"))
    return rows, ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="0,10,50", help="attachment sizes in MB for (a)")
    parser.add_argument("--imap-mails", type=int, default=6, help="mails in the batch of (b)")
    parser.add_argument("--imap-mb", type=int, default=5, help="MB of each mail of (b)")
    parser.add_argument("--keep", action="store_true", help="leave the temp dir in place")
    args = parser.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="mailbot-bench-memory-"))
    dovecot = None
    try:
        print(f"load average {load_average()}", flush=True)
        rows, ok = bench_ingest([int(s) for s in args.sizes.split(",") if s], tmp)
        if args.imap_mails:
            dovecot = Dovecot()
            dovecot.start()
            part, part_ok = bench_fetch(args.imap_mails, args.imap_mb, tmp, dovecot)
            rows, ok = rows + part, ok and part_ok
        print(table(rows, ("measure", "mail MB", "peak MB", "s", "target MB", "")))
        return 0 if ok else 1
    finally:
        clean_up([], None, dovecot, tmp, args.keep)


if __name__ == "__main__":
    sys.exit(main())
