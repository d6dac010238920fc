"""Crash safety: `mailbot run` on a Dovecot mailbox of 500 mails, SIGKILLed at random points
and restarted; afterwards every mail must be exactly one ticket, every acknowledgement must
have reached the SMTP sink, and none twice (at most one in flight per kill may repeat).

    python bench/crash.py [--n 500] [--kills 5] [--seed 11]

The kill points are random (seeded): each waits until the progress (tickets filed plus
acknowledgements delivered, 0..2N) passes a random threshold, then a random 0-50 ms more, so
kills land while fetching, filing, committing, moving and sending.  Exit status 1 if a check
fails.  Everything lives in a temp dir that is removed at the end.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    DaemonProcess,
    Db,
    Dovecot,
    TimedSink,
    clean_up,
    imap_settings,
    load_average,
    table,
    write_config,
)
from mails import generate, message_id

USER = "support"
PASSWORD = "secret"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=500, help="mails in the mailbox")
    parser.add_argument("--kills", type=int, default=5, help="SIGKILLs at random points")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--batch-size", type=int, default=100, help="[[imap]] batch_size")
    parser.add_argument("--timeout", type=float, default=600.0,
                        help="give up waiting for the end state after this many seconds")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir")
    args = parser.parse_args(argv)

    rng = random.Random(args.seed)
    tmp = Path(tempfile.mkdtemp(prefix="mailbot-bench-crash-"))
    dovecot = sink = None
    daemons: list[DaemonProcess] = []
    try:
        mails = generate(args.n, args.seed, tag="crash")
        ids = [message_id(m) for m in mails]
        dovecot = Dovecot()
        dovecot.add_user(USER, PASSWORD)
        dovecot.start()
        dovecot.append_many(USER, "INBOX", mails)
        sink = TimedSink(keep_messages=False)
        sink.start()
        config = write_config(tmp / "crash.toml", tmp / "data",
                              imap=imap_settings(dovecot, USER, batch_size=args.batch_size),
                              relay_port=sink.port)
        db = Db(tmp / "data" / "mailbot.sqlite3")
        print(f"{args.n} mails in the INBOX, {args.kills} kills (seed {args.seed}); {tmp}; "
              f"load average {load_average()}", flush=True)

        def progress() -> int:
            return db.tickets() + sink.acked(ids)

        thresholds = sorted(rng.sample(range(5, 2 * args.n - 5), args.kills))
        kills = []
        t0 = time.monotonic()
        daemon = DaemonProcess(config, tmp / "daemon.log").start()
        daemons.append(daemon)
        at_start = 0
        for number, threshold in enumerate(thresholds, start=1):
            # Past the random threshold, and this run has made progress of its own (else a
            # threshold passed already would kill every restart while it starts up).
            threshold = max(threshold, at_start + rng.randint(1, 20))
            deadline = time.monotonic() + args.timeout
            while progress() < threshold and time.monotonic() < deadline:
                daemon.check_alive()
                time.sleep(0.005)
            time.sleep(rng.uniform(0, 0.05))
            daemon.check_alive()
            daemon.kill()
            seen = (db.tickets(), sink.acked(ids))
            kills.append((number, f"{time.monotonic() - t0:.2f} s", threshold, *seen))
            print(f"kill {number}: at {time.monotonic() - t0:.2f} s, progress >= {threshold}, "
                  f"{seen[0]} tickets, {seen[1]} acks at the sink", flush=True)
            at_start = progress()
            daemon = DaemonProcess(config, tmp / "daemon.log").start()
            daemons.append(daemon)

        # Let the last run finish everything: tickets, moves, acknowledgements (a row claimed
        # by a killed process is retried after its lease, 2 x relay timeout = 20 s).
        deadline = time.monotonic() + args.timeout
        while time.monotonic() < deadline:
            daemon.check_alive()
            pending = db.scalar("SELECT COUNT(*) FROM outbox WHERE status = 'pending'",
                                default=1)
            if db.tickets() >= args.n and sink.acked(ids) >= args.n and pending == 0:
                break
            time.sleep(0.1)
        finished = time.monotonic() - t0
        time.sleep(2.0)  # late duplicates would show up now
        code = daemon.terminate()

        per_id: dict[str, int] = {}
        for mid, count in db.rows("SELECT message_id, COUNT(*) FROM messages "
                                  "WHERE direction = 'in' GROUP BY message_id"):
            per_id[mid] = count
        tickets = db.tickets()
        quarantined = db.scalar("SELECT COUNT(*) FROM quarantine")
        statuses = dict(db.rows("SELECT status, COUNT(*) FROM outbox GROUP BY status"))
        ack_rows = db.scalar("SELECT COUNT(*) FROM outbox WHERE kind = 'acknowledgement'")
        db.close()
        missing = [m for m in ids if m not in per_id]
        twice = {m: c for m, c in per_id.items() if c > 1}
        unknown = [m for m in per_id if m not in set(ids)]
        no_ack = [m for m in ids if m not in sink.arrivals]
        dup_acks = {m: len(t) for m, t in sink.arrivals.items() if len(t) > 1}
        dup_ack_count = sum(c - 1 for c in dup_acks.values())
        inbox_left = dovecot.message_count(USER, "INBOX")
        processed = dovecot.message_count(USER, "Processed")

        print()
        print(table(kills, ("kill", "at", "threshold", "tickets then", "acks then")))
        rows = [
            ("mails in the mailbox", args.n),
            ("SIGKILLs", len(kills)),
            ("all done after", f"{finished:.1f} s"),
            ("tickets", tickets),
            ("inbound messages filed", sum(per_id.values())),
            ("mails missing (no ticket/message)", len(missing)),
            ("mails filed twice", len(twice)),
            ("quarantined", quarantined),
            ("acknowledgement rows in the outbox", ack_rows),
            ("outbox by status", statuses),
            ("mails without an ack at the sink", len(no_ack)),
            ("duplicate acks at the sink", f"{dup_ack_count} (allowed <= {len(kills)})"),
            ("INBOX left / Processed", f"{inbox_left} / {processed}"),
            ("last daemon exit on SIGTERM", code),
        ]
        print()
        print(table(rows, ("check", "value")))
        failures = []
        if missing:
            failures.append(f"{len(missing)} mails missing, e.g. {missing[:3]}")
        if twice or tickets != args.n or unknown:
            failures.append(f"{tickets} tickets; filed twice: {list(twice.items())[:3]}")
        if no_ack:
            failures.append(f"{len(no_ack)} acks never delivered, e.g. {no_ack[:3]}")
        if dup_ack_count > len(kills):
            failures.append(f"{dup_ack_count} duplicate acks for {len(kills)} kills: "
                            f"{list(dup_acks.items())[:5]}")
        if ack_rows != args.n:
            failures.append(f"{ack_rows} acknowledgement rows for {args.n} mails")
        if inbox_left or processed != args.n:
            failures.append(f"INBOX left {inbox_left}, Processed {processed}")
        if quarantined:
            failures.append(f"{quarantined} quarantined")
        if code != 0:
            failures.append(f"exit code {code} on SIGTERM")
        if failures:
            print("FAILED: " + "; ".join(failures))
            return 1
        print("OK: every mail exactly one ticket, every ack delivered, duplicates within bounds")
        return 0
    finally:
        clean_up(daemons, sink, dovecot, tmp, args.keep)


if __name__ == "__main__":
    sys.exit(main())
