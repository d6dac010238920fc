"""Soak: mailbot run for many minutes under a steady stream of mail, watched for growth.

    python bench/soak.py [--minutes 10] [--rate 40] [--every 30] [--via imap,smtp] [--seed 5]
                         [--max-growth-mb 15] [--keep]

One daemon (`mailbot run`: an IMAP mailbox in IDLE and the SMTP listener, acknowledgements
to an SMTP sink) gets ``--rate`` new mails a second, half APPENDed to its Dovecot INBOX in
batches, half delivered over one SMTP session (``--via imap`` or ``--via smtp``: all of them
that way), for ``--minutes``.  Every ``--every`` seconds
it samples what would show a leak: the daemon's resident memory (VmRSS), its open files,
its threads, its reader processes (how many, their memory together), the database and its
write-ahead log on disk, and the backlog (mails given but not yet a ticket).  At the end it
waits until every mail is a ticket and every acknowledgement is at the sink, prints the
samples and the growth after the warm-up (the first fifth of the run), and checks that no
mail was lost and that open files, threads and memory did not grow.

Exit status 1 if a mail was lost or filed twice, open files or threads grew, or the daemon's
memory rose by more than ``--max-growth-mb`` (15) above what it was after the warm-up, at any
later sample (the one after the drain too: a growing peak shows between samples).  The slope
(MB an hour by a least-squares line) is reported, not judged: the caches fill up to their
bounds in the first minutes, which looks like growth in a short run.  The daemon stayed within
72.2 -> 74.7 MB over 216,000 mails; the code before the sixth round of bench/README.md
reached 93 MB after 24,000 mails (73.6 after the warm-up).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import smtplib
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
from load import PASSWORD, USER, envelope_sender, wait_listening
from mails import SUPPORT, generate, message_id

# Mails made at a time (one generate() call, one tag): a few seconds' worth.
CHUNK = 200


def readers_of(pid: int) -> list[int]:
    """The reader processes below ``pid`` (forked by it, or by its fork server)."""
    parents = {pid} | set(children_of(pid))
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError):
            stat = Path(f"/proc/{entry}/stat").read_text()
            name, rest = stat[stat.index("(") + 1:stat.rindex(")")], stat.rsplit(")", 1)[1]
            if name == "mailbot-reader" and int(rest.split()[1]) in parents:
                found.append(int(entry))
    return found


def children_of(pid: int) -> list[int]:
    """The direct children of ``pid`` (started by any of its threads)."""
    found = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                found += [int(c) for c in (task / "children").read_text().split()]
    return found


def status_kb(pid: int, key: str) -> int:
    """A value in kB (or a count) from /proc/<pid>/status; 0 once the process is gone."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def open_files(pid: int) -> int:
    """How many files (sockets, pipes) the process holds open."""
    with contextlib.suppress(OSError):
        return len(os.listdir(f"/proc/{pid}/fd"))
    return 0


def file_size(path: Path) -> int:
    """The size of a file, 0 when it is not there (the log after a checkpoint)."""
    with contextlib.suppress(OSError):
        return path.stat().st_size
    return 0


class Feeder(threading.Thread):
    """Gives the daemon ``rate`` mails a second for ``seconds``, a chunk at a time by each
    way of ``via`` in turn ("imap", "smtp"), each on the schedule; remembers every
    Message-ID it gave."""

    def __init__(self, dovecot: Dovecot, port: int, rate: float, seconds: float,
                 seed: int, via: list[str]) -> None:
        super().__init__(daemon=True)
        self.dovecot, self.port, self.rate, self.seconds, self.seed, self.via = \
            dovecot, port, rate, seconds, seed, via
        self.given: list[str] = []
        self.refused: list[str] = []
        self.error: BaseException | None = None
        self.lag = 0.0  # the most the feeding ever fell behind its schedule (s)

    def run(self) -> None:
        try:
            self._feed()
        except BaseException as exc:  # reported by the main thread
            self.error = exc

    def _feed(self) -> None:
        smtp = smtplib.SMTP("127.0.0.1", self.port, timeout=120)
        smtp.ehlo("soak.example.net")
        started = time.monotonic()
        total = int(self.rate * self.seconds)
        for index, first in enumerate(range(0, total, CHUNK)):
            mails = generate(min(CHUNK, total - first), self.seed, tag=f"soak{index}")
            for start in range(0, len(mails), 10):  # ten at a time, on schedule
                due = started + (first + start) / self.rate
                self.lag = max(self.lag, time.monotonic() - due)
                time.sleep(max(0.0, due - time.monotonic()))
                batch = mails[start:start + 10]
                self.given += [message_id(raw) for raw in batch]  # counted as they go
                if self.via[index % len(self.via)] == "imap":
                    self.dovecot.append_many(USER, "INBOX", batch)
                else:
                    for raw in batch:
                        self._send(smtp, raw)
        with contextlib.suppress(smtplib.SMTPException, OSError):
            smtp.quit()

    def _send(self, smtp: smtplib.SMTP, raw: bytes) -> None:
        code, _ = smtp.mail(envelope_sender(raw))
        if code == 250:
            code, _ = smtp.rcpt(SUPPORT)
        if code in (250, 251):
            code, _ = smtp.data(raw)
        if code != 250:
            self.refused.append(f"{message_id(raw)}: {code}")
            smtp.rset()


def sample(daemon: DaemonProcess, db: Db, data: Path, feeder: Feeder, started: float) -> dict:
    """One look at the daemon and its data."""
    readers = readers_of(daemon.pid)
    tickets = db.tickets()
    return {
        "t": time.monotonic() - started,
        "given": len(feeder.given),
        "tickets": tickets,
        "backlog": len(feeder.given) - tickets,
        "rss": status_kb(daemon.pid, "VmRSS"),
        "files": open_files(daemon.pid),
        "threads": status_kb(daemon.pid, "Threads"),
        "readers": len(readers),
        "readers_rss": sum(status_kb(pid, "VmRSS") for pid in readers),
        "db": file_size(data / "mailbot.sqlite3"),
        "wal": file_size(data / "mailbot.sqlite3-wal"),
    }


def slope_per_hour(points: list[tuple[float, float]]) -> float:
    """The least-squares slope of (seconds, value) points, per hour."""
    if len(points) < 2:
        return 0.0
    mean_t = sum(t for t, _ in points) / len(points)
    mean_v = sum(v for _, v in points) / len(points)
    spread = sum((t - mean_t) ** 2 for t, _ in points)
    if not spread:
        return 0.0
    return 3600 * sum((t - mean_t) * (v - mean_v) for t, v in points) / spread


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="how long mail comes (10)")
    parser.add_argument("--rate", type=float, default=40.0, help="new mails a second (40)")
    parser.add_argument("--every", type=float, default=30.0, help="seconds between samples")
    parser.add_argument("--via", default="imap,smtp",
                        help="how the mails come, in turn a chunk each (imap,smtp)")
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--timeout", type=float, default=600.0,
                        help="seconds to wait at the end for tickets and acknowledgements")
    parser.add_argument("--max-growth-mb", type=float, default=15.0,
                        help="fail when the daemon's RSS grows more after the warm-up (15)")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir")
    args = parser.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="mailbot-bench-soak-"))
    dovecot = sink = daemon = None
    try:
        dovecot = Dovecot()
        dovecot.add_user(USER, PASSWORD)
        dovecot.start()
        sink = TimedSink(keep_messages=False)
        sink.start()
        port = free_port()
        data = tmp / "data"
        config = write_config(tmp / "soak.toml", data, listener_port=port,
                              imap=imap_settings(dovecot, USER), relay_port=sink.port,
                              log_level="WARNING")
        daemon = DaemonProcess(config, tmp / "daemon.log").start()
        wait_listening(port, daemon)
        db = Db(data / "mailbot.sqlite3")
        print(f"{args.rate:g} mails/s for {args.minutes:g} min (by {args.via}), a sample "
              f"every {args.every:g} s; {tmp}; load average {load_average()}", flush=True)

        via = args.via.split(",")
        if not set(via) <= {"imap", "smtp"}:
            parser.error(f"--via {args.via}: imap, smtp or both")
        feeder = Feeder(dovecot, port, args.rate, 60 * args.minutes, args.seed, via)
        started = time.monotonic()
        feeder.start()
        samples = []
        while feeder.is_alive():
            feeder.join(args.every)
            daemon.check_alive()
            samples.append(sample(daemon, db, data, feeder, started))
            print("  " + ", ".join(f"{k} {v:.0f}" if k == "t" else f"{k} {v}"
                                   for k, v in samples[-1].items()), flush=True)
        if feeder.error is not None:
            raise feeder.error
        given = set(feeder.given)
        deadline = time.monotonic() + args.timeout
        while time.monotonic() < deadline:
            daemon.check_alive()
            if db.tickets() >= len(given) and sink.acked(given) >= len(given):
                break
            time.sleep(0.5)
        samples.append(sample(daemon, db, data, feeder, started))

        filed: dict[str, int] = dict(db.rows(
            "SELECT message_id, COUNT(*) FROM messages WHERE direction = 'in' "
            "GROUP BY message_id"))
        quarantined = db.scalar("SELECT COUNT(*) FROM quarantine")
        db.close()
        lost = sorted(given - set(filed))
        twice = sum(count - 1 for count in filed.values() if count > 1)
        acked = sink.acked(given)
        code = daemon.terminate()

        print(table([(f"{s['t']:.0f}", s["given"], s["backlog"], f"{s['rss'] / 1024:.1f}",
                      s["files"], s["threads"], s["readers"], f"{s['readers_rss'] / 1024:.0f}",
                      f"{s['db'] / 2**20:.0f}", f"{s['wal'] / 2**20:.1f}") for s in samples],
                    ("s", "mails given", "backlog", "RSS MB", "files", "threads", "readers",
                     "readers MB", "db MB", "wal MB")))
        steady = [s for s in samples[:-1] if s["t"] >= 12 * args.minutes] or samples[-1:]
        first, last = steady[0], steady[-1]
        rss_slope = slope_per_hour([(s["t"], s["rss"] / 1024) for s in steady])
        peak = max(s["rss"] for s in samples if s["t"] >= first["t"])  # the drain's too
        rows = [
            ("mails given / tickets", f"{len(given)} / {len(filed)}"),
            ("lost / filed twice / quarantined", f"{len(lost)} / {twice} / {quarantined}"),
            ("refused over SMTP", len(feeder.refused)),
            ("acknowledgements at the sink", f"{acked} of {len(given)}"),
            ("feeding behind schedule at most", f"{feeder.lag:.2f} s"),
            ("backlog at most", max(s["backlog"] for s in samples[:-1] or samples)),
            ("daemon RSS after warm-up -> end of feeding",
             f"{first['rss'] / 1024:.1f} -> {last['rss'] / 1024:.1f} MB "
             f"({rss_slope:+.1f} MB an hour by the samples), at most {peak / 1024:.1f}"),
            ("readers' RSS after warm-up -> end of feeding",
             f"{first['readers_rss'] / 1024:.0f} -> {last['readers_rss'] / 1024:.0f} MB"),
            ("open files after warm-up -> end", f"{first['files']} -> {samples[-1]['files']}"),
            ("threads after warm-up -> end", f"{first['threads']} -> {samples[-1]['threads']}"),
            ("daemon exit on SIGTERM", code),
        ]
        print(f"\nload average at the end: {load_average()}")
        print(table(rows, ("measure", "value")))
        failures = []
        if lost or twice or feeder.refused:
            failures.append(f"{len(lost)} lost (first {lost[:3]}), {twice} filed twice, "
                            f"{len(feeder.refused)} refused {feeder.refused[:3]}")
        if samples[-1]["files"] > first["files"] + 5:
            failures.append(f"open files grew from {first['files']} to {samples[-1]['files']}")
        if samples[-1]["threads"] > first["threads"] + 2:
            failures.append(f"threads grew from {first['threads']} to "
                            f"{samples[-1]['threads']}")
        grown = (peak - first["rss"]) / 1024
        if grown > args.max_growth_mb:
            failures.append(f"the daemon grew by {grown:.1f} MB after the warm-up "
                            f"(more than --max-growth-mb {args.max_growth_mb:g})")
        if failures:
            print("FAILED: " + "; ".join(failures))
            print(daemon.log_tail(1500))
            return 1
        print("OK: every mail a ticket once, open files, threads and memory flat")
        return 0
    finally:
        clean_up([daemon] if daemon is not None else [], sink, dovecot, tmp, args.keep)


if __name__ == "__main__":
    sys.exit(main())
