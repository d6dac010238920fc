"""Load: 10 concurrent SMTP clients deliver 5,000 mails to mailbot's built-in listener while
its IMAP source also reads a Dovecot mailbox that keeps receiving mail.

Checks that every mail answered 250 is a ticket, that no mail got a 5xx, that nothing is lost
(the IMAP mails included), and reports throughput and the daemon's peak RSS (VmHWM).

    python bench/load.py [--smtp-n 5000] [--clients 10] [--imap-n 1000] [--mailboxes 6]

Exit status 1 if a check fails.  Everything lives in a temp dir that is removed at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import queue
import smtplib
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


from _common import (
    DaemonProcess,
    Db,
    Dovecot,
    TimedSink,
    clean_up,
    free_port,
    imap_settings,
    load_average,
    table,
    write_config,
)
from mails import SUPPORT, generate, message_id

USER = "support"
PASSWORD = "secret"


class Client(threading.Thread):
    """One SMTP client: a persistent session, one mail after the other from a shared queue."""

    def __init__(self, port: int, work: queue.Queue, stats: dict, lock: threading.Lock) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.work = work
        self.stats = stats
        self.lock = lock
        self.smtp: smtplib.SMTP | None = None

    def _count(self, key: str, value=None) -> None:
        with self.lock:
            if value is None:
                self.stats[key] = self.stats.get(key, 0) + 1
            else:
                self.stats.setdefault(key, []).append(value)

    def _session(self) -> smtplib.SMTP:
        if self.smtp is None:
            self.smtp = smtplib.SMTP("127.0.0.1", self.port, timeout=120)
            self.smtp.ehlo("loadclient.example.net")
        return self.smtp

    def _drop(self) -> None:
        if self.smtp is not None:
            with contextlib.suppress(OSError):
                self.smtp.close()
            self.smtp = None

    def run(self) -> None:
        while True:
            try:
                raw, sender, attempt = self.work.get_nowait()
            except queue.Empty:
                break
            mid = message_id(raw)
            started = time.monotonic()
            try:
                smtp = self._session()
                code, reply = smtp.mail(sender)
                if code == 250:
                    code, reply = smtp.rcpt(SUPPORT)
                if code in (250, 251):
                    code, reply = smtp.data(raw)
                else:
                    smtp.rset()
            except smtplib.SMTPDataError as exc:  # no 354 after DATA
                code, reply = exc.smtp_code, exc.smtp_error
            except (smtplib.SMTPException, OSError) as exc:
                self._count("connection_errors")
                self._count("errors_seen", f"{type(exc).__name__}: {exc}")
                self._drop()
                self._retry(raw, sender, attempt)
                continue
            if code == 250:
                self._count("accepted", mid)
                self._count("latency", time.monotonic() - started)
            elif 400 <= code < 500:
                self._count("tempfail")
                self._count("errors_seen", f"{code} {reply!r}")
                self._retry(raw, sender, attempt)
            else:
                self._count("permfail", mid)
                self._count("errors_seen", f"{code} {reply!r}")
        if self.smtp is not None:
            with contextlib.suppress(smtplib.SMTPException, OSError):
                self.smtp.quit()
            self._drop()

    def _retry(self, raw: bytes, sender: str, attempt: int) -> None:
        if attempt >= 20:
            self._count("gave_up", message_id(raw))
            return
        time.sleep(min(2.0, 0.05 * 2 ** attempt))  # like an MTA's queue, only faster
        self.work.put((raw, sender, attempt + 1))


def envelope_sender(raw: bytes) -> str:
    start = raw.index(b"Return-Path: <") + len(b"Return-Path: <")
    return raw[start:raw.index(b">", start)].decode("ascii")


def wait_listening(port: int, daemon: DaemonProcess, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        daemon.check_alive()
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"the listener on port {port} did not come up\n{daemon.log_tail()}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smtp-n", type=int, default=5000, help="mails over SMTP")
    parser.add_argument("--clients", type=int, default=10, help="concurrent SMTP clients")
    parser.add_argument("--imap-n", type=int, default=1000,
                        help="mails appended to the IMAP INBOX during the SMTP load")
    parser.add_argument("--mailboxes", type=int, default=6,
                        help="IMAP mailboxes the daemon reads (the IMAP mails spread over them)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--timeout", type=float, default=900.0,
                        help="give up waiting for tickets/acks after this many seconds")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir")
    args = parser.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="mailbot-bench-load-"))
    dovecot = sink = daemon = None
    try:
        smtp_mails = generate(args.smtp_n, args.seed, tag="smtp")
        imap_mails = generate(args.imap_n, args.seed, tag="imap")
        smtp_ids = [message_id(m) for m in smtp_mails]
        imap_ids = [message_id(m) for m in imap_mails]
        print(f"{args.smtp_n} SMTP mails from {args.clients} clients + {args.imap_n} IMAP mails "
              f"in {args.mailboxes} mailboxes; "
              f"{tmp}; load average {load_average()}", flush=True)

        dovecot = Dovecot()
        users = [USER if i == 0 else f"{USER}{i + 1}" for i in range(args.mailboxes)]
        for user in users:
            dovecot.add_user(user, PASSWORD)
        dovecot.start()
        sink = TimedSink(keep_messages=False)
        sink.start()
        port = free_port()
        config = write_config(tmp / "load.toml", tmp / "data", listener_port=port,
                              imap=[imap_settings(dovecot, user, name=user) for user in users],
                              relay_port=sink.port)
        db = Db(tmp / "data" / "mailbot.sqlite3")
        daemon = DaemonProcess(config, tmp / "daemon.log").start()
        wait_listening(port, daemon)

        # Memory: sample VmRSS while it runs; VmHWM is the kernel's own peak.
        rss_samples: list[int] = []
        stop_sampling = threading.Event()

        def sample() -> None:
            while not stop_sampling.is_set():
                rss_samples.append(daemon.status("VmRSS"))
                stop_sampling.wait(0.5)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()

        # The IMAP source: the INBOX keeps receiving mail while the SMTP clients run.
        imap_done = threading.Event()
        imap_error: list[BaseException] = []

        def feed_imap() -> None:
            try:
                chunk = 25
                pause = 0.25
                for start in range(0, len(imap_mails), chunk):
                    user = users[(start // chunk) % len(users)]
                    dovecot.append_many(user, "INBOX", imap_mails[start:start + chunk])
                    time.sleep(pause)
            except BaseException as exc:
                imap_error.append(exc)
            finally:
                imap_done.set()

        work: queue.Queue = queue.Queue()
        for raw in smtp_mails:
            work.put((raw, envelope_sender(raw), 0))
        stats: dict = {}
        lock = threading.Lock()
        clients = [Client(port, work, stats, lock) for _ in range(args.clients)]
        t0 = time.monotonic()
        feeder = threading.Thread(target=feed_imap, daemon=True)
        feeder.start()
        for client in clients:
            client.start()
        for client in clients:
            client.join()
        t_smtp = time.monotonic() - t0
        feeder.join()
        if imap_error:
            raise imap_error[0]
        accepted = stats.get("accepted", [])
        print(f"SMTP phase: {len(accepted)} accepted in {t_smtp:.1f} s "
              f"({len(accepted) / t_smtp:.0f} mails/s); 4xx {stats.get('tempfail', 0)}, "
              f"5xx {len(stats.get('permfail', []))}, connection errors "
              f"{stats.get('connection_errors', 0)}", flush=True)

        expected = len(accepted) + len(imap_ids)
        deadline = time.monotonic() + args.timeout
        t_tickets = t_acks = None
        want_acks = set(accepted) | set(imap_ids)
        while time.monotonic() < deadline:
            daemon.check_alive()
            now = time.monotonic()
            if t_tickets is None and db.tickets() >= expected:
                t_tickets = now - t0
            if t_acks is None and sink.acked(want_acks) >= len(want_acks):
                t_acks = now - t0
            if t_tickets is not None and t_acks is not None:
                break
            time.sleep(0.2)
        hwm = daemon.status("VmHWM")
        stop_sampling.set()
        sampler.join()

        # Verification against the database.
        filed: dict[str, int] = {}
        for mid, count in db.rows("SELECT message_id, COUNT(*) FROM messages "
                                  "WHERE direction = 'in' GROUP BY message_id"):
            filed[mid] = count
        tickets = db.tickets()
        quarantined = db.scalar("SELECT COUNT(*) FROM quarantine")
        pending = db.scalar("SELECT COUNT(*) FROM outbox WHERE status != 'sent'")
        db.close()
        lost_smtp = [m for m in accepted if m not in filed]
        lost_imap = [m for m in imap_ids if m not in filed]
        not_accepted = [m for m in smtp_ids if m not in set(accepted)]
        duplicates = sum(c - 1 for c in filed.values() if c > 1)
        inbox_left = sum(dovecot.message_count(user, "INBOX") for user in users)
        acks = sink.acked(want_acks)
        dup_acks = sum(len(v) - 1 for v in sink.arrivals.values() if len(v) > 1)
        code = daemon.terminate()

        latencies = sorted(stats.get("latency", [0.0]))
        p50 = latencies[len(latencies) // 2]
        p95 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.95))]
        rows = [
            ("SMTP mails accepted (250)", f"{len(accepted)} of {args.smtp_n}"),
            ("SMTP 4xx answers (retried)", stats.get("tempfail", 0)),
            ("SMTP 5xx answers", len(stats.get("permfail", []))),
            ("SMTP throughput (250s / s)", f"{len(accepted) / t_smtp:.0f} mails/s"),
            ("SMTP DATA->250 p50 / p95", f"{p50 * 1000:.0f} / {p95 * 1000:.0f} ms"),
            (f"IMAP mails appended meanwhile ({args.mailboxes} mailboxes)", len(imap_ids)),
            ("all tickets after", f"{t_tickets:.1f} s" if t_tickets else "TIMEOUT"),
            ("overall (SMTP+IMAP) mails/s",
             f"{expected / t_tickets:.0f} mails/s" if t_tickets else "-"),
            ("all acks at the sink after", f"{t_acks:.1f} s" if t_acks else "TIMEOUT"),
            ("tickets", tickets),
            ("lost (250 but no ticket)", len(lost_smtp)),
            ("lost IMAP mails", len(lost_imap)),
            ("never accepted", len(not_accepted)),
            ("duplicate messages", duplicates),
            ("quarantined", quarantined),
            ("acks delivered / expected", f"{acks} / {len(want_acks)} (duplicates {dup_acks})"),
            ("outbox rows not sent", pending),
            ("INBOX left", inbox_left),
            ("daemon peak RSS (VmHWM)", f"{hwm / 1024:.0f} MB"),
            ("daemon RSS sampled max/last",
             f"{max(rss_samples or [0]) / 1024:.0f} / {(rss_samples or [0])[-1] / 1024:.0f} MB"),
            ("daemon exit on SIGTERM", code),
        ]
        print(f"\nload average at the end: {load_average()}")
        print(table(rows, ("measure", "value")))
        errors = stats.get("errors_seen", [])
        if errors:
            print(f"first errors seen by clients: {errors[:5]}")
        failures = []
        if lost_smtp or lost_imap:
            failures.append(f"lost mails: {lost_smtp[:5]} {lost_imap[:5]}")
        if stats.get("permfail"):
            failures.append(f"5xx for {len(stats['permfail'])} mails")
        if not_accepted:
            failures.append(f"{len(not_accepted)} mails never accepted")
        if tickets != expected or duplicates:
            failures.append(f"{tickets} tickets for {expected} mails, {duplicates} duplicates")
        if failures:
            print("FAILED: " + "; ".join(failures))
            print(daemon.log_tail(1500))
            return 1
        print("OK: every mail accepted with 250 is a ticket, no 5xx, nothing lost")
        return 0
    finally:
        clean_up([daemon] if daemon is not None else [], sink, dovecot, tmp, args.keep)


if __name__ == "__main__":
    sys.exit(main())
