"""Ingest speed of mailbot: (a) `mailbot ingest` of N files in one process, (b) the IMAP path
against a throwaway Dovecot with acknowledgements to an SMTP sink, (c) latency from IMAP APPEND
to the acknowledgement at the sink with IDLE on (one mail at a time, and a burst).

    python bench/ingest.py [--n 2000] [--latency-n 200] [--burst-n 200] [--only a,b,c]

Targets on the 2-core bench machine: (a) >= 300 mails/s, (b) >= 150 mails/s, (c) p50 < 1 s.
Everything lives in a temp dir that is removed at the end (--keep keeps it).
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
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
    imap_settings,
    load_average,
    percentile,
    table,
    write_config,
)
from mails import generate, message_id, write

USER = "support"
PASSWORD = "secret"


def bench_cli(tmp: Path, paths: list[Path], profile: Path | None = None) -> dict:
    """(a) One `mailbot ingest f1 f2 ...` process on a fresh data dir (relay: Maildir)."""
    n = len(paths)
    # The fixed cost of one process (imports, migrations on a fresh database), for reference.
    warm = write_config(tmp / "a0.toml", tmp / "data-a0")
    started = time.monotonic()
    one = subprocess.run([sys.executable, "-m", "mailbot", "--config", str(warm), "ingest",
                          str(paths[0])], cwd=REPO, capture_output=True, text=True)
    startup = time.monotonic() - started
    if one.returncode != 0:
        raise RuntimeError(f"mailbot ingest failed ({one.returncode}): {one.stderr[-2000:]}")

    config = write_config(tmp / "a.toml", tmp / "data-a")
    command = [sys.executable, "-m", "mailbot", "--config", str(config), "ingest",
               *map(str, paths)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    elapsed = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_user, cpu_sys = after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime
    if done.returncode != 0:
        raise RuntimeError(f"mailbot ingest exited {done.returncode}: {done.stderr[-2000:]}")
    statuses: dict[str, int] = {}
    for line in done.stdout.splitlines():
        status = line.split(": ", 1)[1].split()[0] if ": " in line else "?"
        statuses[status] = statuses.get(status, 0) + 1
    db = Db(tmp / "data-a" / "mailbot.sqlite3")
    tickets = db.tickets()
    queued = db.scalar("SELECT COUNT(*) FROM outbox WHERE kind = 'acknowledgement'")
    db.close()
    if tickets != n:
        raise AssertionError(f"(a) expected {n} tickets, found {tickets}: {statuses}")
    if profile is not None:  # a second, profiled run on another fresh data dir
        config = write_config(tmp / "a-prof.toml", tmp / "data-a-prof")
        spy = ["py-spy", "record", "-r", "200", "--format", "raw", "-o",
               str(profile / "ingest-a.raw"), "--"]
        subprocess.run(spy + command[:3] + [str(config)] + command[4:], cwd=REPO,
                       capture_output=True)
        print(f"    profile of (a): {profile / 'ingest-a.raw'}", flush=True)
    return {"n": n, "elapsed": elapsed, "startup": startup, "tickets": tickets,
            "cpu_user": cpu_user, "cpu_sys": cpu_sys,
            "acks_queued": queued, "statuses": statuses,
            "rate": n / elapsed, "rate_net": n / max(elapsed - startup, 1e-9)}


def bench_imap(tmp: Path, dovecot: Dovecot, sink: TimedSink, mails: list[bytes],
               daemon_holder: list, profile: Path | None = None) -> dict:
    """(b) `mailbot run` on a Dovecot INBOX of N mails until every ticket and ack exists."""
    n = len(mails)
    ids = [message_id(m) for m in mails]
    appended = time.monotonic()
    uids = dovecot.append_many(USER, "INBOX", mails)
    append_seconds = time.monotonic() - appended
    assert len(uids) == n, f"appended {len(uids)} of {n}"
    config = write_config(tmp / "b.toml", tmp / "data-b",
                          imap=imap_settings(dovecot, USER), relay_port=sink.port)
    db = Db(tmp / "data-b" / "mailbot.sqlite3")
    daemon = DaemonProcess(config, tmp / "daemon-b.log")
    daemon_holder.append(daemon)
    daemon.start()
    t0 = daemon.started_at
    spy = PySpy(daemon.pid, profile / "imap-b.raw") if profile is not None else None
    first_ticket = t_tickets = t_acks = None
    deadline = t0 + max(120.0, n / 10)
    while time.monotonic() < deadline:
        daemon.check_alive()
        count = db.tickets() if t_tickets is None else n
        now = time.monotonic()
        if count and first_ticket is None:
            first_ticket = now
        if t_tickets is None and count >= n:
            t_tickets = now
        if t_acks is None and sink.acked(ids) >= n:
            t_acks = now
        if t_tickets is not None and t_acks is not None:
            break
        time.sleep(0.01)
    else:
        raise AssertionError(f"(b) timed out: {db.tickets()} tickets, {sink.acked(ids)} acks "
                             f"of {n}\n{daemon.log_tail()}")
    cpu = daemon.cpu_seconds()
    if spy is not None:
        spy.stop()
        print(f"    profile of (b): {spy.out}", flush=True)
    quarantined = db.scalar("SELECT COUNT(*) FROM quarantine")
    db.close()
    left = dovecot.message_count(USER, "INBOX")
    wait_deadline = time.monotonic() + 10
    while left and time.monotonic() < wait_deadline:  # the last batch's MOVE
        time.sleep(0.05)
        left = dovecot.message_count(USER, "INBOX")
    moved = dovecot.message_count(USER, "Processed")
    return {"n": n, "append_seconds": append_seconds, "cpu": cpu,
            "startup": first_ticket - t0, "tickets_s": t_tickets - t0, "acks_s": t_acks - t0,
            "rate_tickets": n / (t_tickets - t0), "rate_acks": n / (t_acks - t0),
            "rate_steady": n / (t_acks - first_ticket),
            "inbox_left": left, "moved": moved, "quarantined": quarantined,
            "duplicate_acks": sum(len(v) - 1 for k, v in sink.arrivals.items() if len(v) > 1)}


def bench_latency(dovecot: Dovecot, sink: TimedSink, daemon: DaemonProcess, single: int,
                  burst: int, gap: float) -> dict:
    """(c) APPEND -> acknowledgement at the sink, the daemon idle in IDLE beforehand."""
    result = {}
    wait_idle(dovecot)
    with dovecot.connect(USER, timeout=30) as client:
        mails = generate(single, seed=2, tag="lat")
        latencies = []
        for raw in mails:
            mid = message_id(raw)
            daemon.check_alive()
            t0 = time.monotonic()
            client.append("INBOX", raw)
            if not sink.wait_acked([mid], timeout=30):
                raise AssertionError(f"(c) no acknowledgement for {mid} within 30 s\n"
                                     f"{daemon.log_tail()}")
            latencies.append(sink.first_arrival(mid) - t0)
            time.sleep(gap)  # back in IDLE before the next one
        result["single"] = latencies

        mails = generate(burst, seed=3, tag="burst")
        sent = []
        t_start = time.monotonic()
        for raw in mails:
            sent.append((message_id(raw), time.monotonic()))
            client.append("INBOX", raw)
        append_done = time.monotonic() - t_start
        if not sink.wait_acked([m for m, _ in sent], timeout=120):
            raise AssertionError(f"(c) burst: only {sink.acked([m for m, _ in sent])} of "
                                 f"{burst} acknowledged\n{daemon.log_tail()}")
        result["burst"] = [sink.first_arrival(m) - t for m, t in sent]
        result["burst_rate"] = burst / (max(sink.first_arrival(m) for m, _ in sent) - t_start)
        result["burst_append"] = append_done
    return result


def wait_idle(dovecot: Dovecot, timeout: float = 30.0) -> None:
    """Wait until the INBOX is empty and the daemon has gone back to IDLE."""
    deadline = time.monotonic() + timeout
    while dovecot.message_count(USER, "INBOX") and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1.5)


def fmt(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="mails for (a) and (b)")
    parser.add_argument("--latency-n", type=int, default=200, help="single mails for (c)")
    parser.add_argument("--burst-n", type=int, default=200, help="burst mails for (c)")
    parser.add_argument("--gap", type=float, default=0.3,
                        help="pause after each acknowledged single mail in (c), seconds")
    parser.add_argument("--only", default="a,b,c", help="which parts to run, e.g. a or b,c")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", action="store_true", help="keep the temp dir")
    parser.add_argument("--profile", type=Path, default=None,
                        help="write py-spy profiles (raw collapsed stacks) of (a) and (b) here")
    args = parser.parse_args(argv)
    parts = set(args.only.split(","))

    tmp = Path(tempfile.mkdtemp(prefix="mailbot-bench-ingest-"))
    dovecot = sink = None
    daemons: list[DaemonProcess] = []
    rows = []
    try:
        mails = generate(args.n, args.seed)
        paths = write(tmp / "mails", mails)
        size = sum(len(m) for m in mails)
        print(f"{args.n} mails, {size / 1e6:.1f} MB, in {tmp}; load average {load_average()}",
              flush=True)
        if args.profile is not None:
            args.profile.mkdir(parents=True, exist_ok=True)

        if "a" in parts:
            a = bench_cli(tmp, paths, args.profile)
            print(f"(a) mailbot ingest: {a['n']} mails in {a['elapsed']:.2f} s = "
                  f"{a['rate']:.0f} mails/s (process start {a['startup']:.2f} s; without it "
                  f"{a['rate_net']:.0f} mails/s); {a['statuses']}, "
                  f"{a['acks_queued']} acks queued; CPU {a['cpu_user']:.1f} s user + "
                  f"{a['cpu_sys']:.1f} s sys = {1000 * (a['cpu_user'] + a['cpu_sys']) / a['n']:.1f}"
                  f" ms per mail", flush=True)
            rows.append(("(a) mailbot ingest, one process", f"{a['rate']:.0f} mails/s",
                         ">= 300 mails/s", "ok" if a["rate"] >= 300 else "MISSED"))

        if parts & {"b", "c"}:
            dovecot = Dovecot()
            dovecot.add_user(USER, PASSWORD)
            dovecot.start()
            sink = TimedSink()
            sink.start()
        if "b" in parts or "c" in parts:
            b = bench_imap(tmp, dovecot, sink, mails if "b" in parts else mails[:1], daemons,
                           args.profile if "b" in parts else None)
            if "b" in parts:
                print(f"(b) IMAP: {b['n']} mails appended in {b['append_seconds']:.2f} s; "
                      f"from `mailbot run` start: first ticket {b['startup']:.2f} s, all "
                      f"tickets {b['tickets_s']:.2f} s ({b['rate_tickets']:.0f} mails/s), all "
                      f"acks at the sink {b['acks_s']:.2f} s ({b['rate_acks']:.0f} mails/s; "
                      f"{b['rate_steady']:.0f} mails/s from the first ticket); INBOX left "
                      f"{b['inbox_left']}, moved {b['moved']}, quarantined {b['quarantined']},"
                      f" duplicate acks {b['duplicate_acks']}; daemon CPU {b['cpu']:.1f} s = "
                      f"{1000 * b['cpu'] / b['n']:.1f} ms per mail", flush=True)
                rows.append(("(b) IMAP -> tickets", f"{b['rate_tickets']:.0f} mails/s", "", ""))
                rows.append(("(b) IMAP -> tickets + acks at sink", f"{b['rate_acks']:.0f} mails/s",
                             ">= 150 mails/s", "ok" if b["rate_acks"] >= 150 else "MISSED"))
        if "c" in parts:
            c = bench_latency(dovecot, sink, daemons[-1], args.latency_n, args.burst_n, args.gap)
            single, burst = c["single"], c["burst"]
            print(f"(c) single ({len(single)}): p50 {fmt(percentile(single, 50))}, p95 "
                  f"{fmt(percentile(single, 95))}, max {fmt(max(single))}; burst ({len(burst)}, "
                  f"appended in {c['burst_append']:.2f} s): p50 {fmt(percentile(burst, 50))}, "
                  f"p95 {fmt(percentile(burst, 95))}, max {fmt(max(burst))}, "
                  f"{c['burst_rate']:.0f} mails/s", flush=True)
            p50 = percentile(single, 50)
            rows.append(("(c) APPEND -> ack, one at a time, p50", fmt(p50), "< 1 s",
                         "ok" if p50 < 1 else "MISSED"))
            rows.append(("(c) APPEND -> ack, one at a time, p95",
                         fmt(percentile(single, 95)), "", ""))
            rows.append((f"(c) APPEND -> ack, burst of {len(burst)}, p50",
                         fmt(percentile(burst, 50)), "", ""))
            rows.append((f"(c) APPEND -> ack, burst of {len(burst)}, p95",
                         fmt(percentile(burst, 95)), "", ""))
        for daemon in daemons:
            code = daemon.terminate()
            if code != 0:
                print(f"warning: mailbot run exited {code} on SIGTERM", flush=True)
        print(f"\nload average at the end: {load_average()} (other work on the machine "
              "skews the figures)")
        print(table(rows, ("measure", "result", "target", "")))
        return 0
    finally:
        clean_up(daemons, sink, dovecot, tmp, args.keep)


if __name__ == "__main__":
    sys.exit(main())
