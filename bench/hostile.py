"""What hostile input costs: (a) facts extraction on pathological mail text, in ms per call,
(b) a good IMAP login right after a refused password on the test Dovecot, and (c) the
per-mail budget: what reading every mail in a process of its own costs, and the budget at work.

    python bench/hostile.py [--only a,b,c] [--repeat 200] [--logins 50] [--mails 500]

These were timing asserts in tests/test_facts.py (each hostile body < 0.5 s) and
tests/test_servers.py (the login after a wrong password < 1 s); the tests now check only the
behaviour (no facts found, the login works) and the time is measured here.
(a) calls `extract_facts(body[:1000], body, patterns)` in this process, as the test does, for
each hostile body, with an ordinary support mail for comparison.  (b) starts a throwaway
Dovecot (`tests/servers.py`, auth penalty off), logs in with a wrong and then the right
password `--logins` times, and a good login with no failure before it for comparison.  Exit
status 1 if a check fails (a fact found in hostile text, a wrong password accepted).  Nothing
is left behind: Dovecot's temp dir is removed at the end.
(c) runs the real pipeline in this process on fresh data dirs (mailbot.inbound.readers):
the pickles that cross to a reader and back for an ordinary mail and for one with a 20 MB
attachment (sizes, ms); ms per mail for `--mails` generated mails read in this process
(`max_seconds_per_mail = 0`), in a forked reader (as `mailbot ingest`) and in one from the
fork server (as the daemon, whose threads forbid a fork); the wall time of `mailbot ingest`
for one mail as a process of its own, without and with the budget (the cost of the fork);
the peak RSS of the reader after the 20 MB attachment; and the budget at work: with the
limits raised and a budget of 2 s, a Content-Type of 160,000 parameters (about 20 s to
read) is refused after the budget, and the next mail is filed by a fresh reader.  Exit
status 1 if the slow mail is not refused by the budget or the next mail is not filed.
"""

from __future__ import annotations

import argparse
import base64
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import REPO, Dovecot, load_average, percentile, table, write_config
from imapclient import IMAPClient
from imapclient.exceptions import LoginError
from mails import generate

from mailbot.context import open_context
from mailbot.inbound import pipeline, readers
from mailbot.reading.facts import FactsConfig, compile_facts, extract_facts
from mailbot.settings import config

USER = "support"
PASSWORD = "secret"

# The hostile bodies of tests/test_facts.py::test_pathological_text_gives_no_facts.
HOSTILE = {
    '"a" * 100_000': "a" * 100_000,
    '"Version " * 20_000': "Version " * 20_000,
    '"Kundennummer " * 10_000': "Kundennummer " * 10_000,
    '"1." * 50_000': "1." * 50_000,
    '"ä-" * 50_000': "ä-" * 50_000,
}
ORDINARY = (
    "Guten Tag,\n\nseit dem Update auf Version 4.2.1 stürzt das Programm unter Windows 11 beim "
    "Export ab. Fehlermeldung: Datenbank nicht gefunden\n\nMeine Kundennummer: 12345\n\n"
    "Mit freundlichen Grüßen\nJürgen Müller\n\n> Am Montag schrieb der Support:\n> Version?\n"
)
FACTS_LIMIT_MS = 500.0  # the bound tests/test_facts.py used to assert
LOGIN_LIMIT_MS = 1000.0  # the bound tests/test_servers.py used to assert


def ms(seconds: float) -> str:
    return f"{1000 * seconds:.2f} ms"


def timed(call, repeat: int) -> list[float]:
    """Seconds of each of `repeat` calls of `call()`."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return times


def bench_facts(repeat: int) -> tuple[list[tuple], bool]:
    """(a) ms per extract_facts call for each hostile body, and the ordinary mail."""
    patterns = compile_facts(FactsConfig())
    rows, ok = [], True
    cases = [*HOSTILE.items(), ("ordinary mail (reference)", ORDINARY)]
    for name, body in cases:
        found = extract_facts(body[:1000], body, patterns)
        if body is not ORDINARY and found:
            print(f"CHECK FAILED: facts in hostile text {name}: {found}", flush=True)
            ok = False
        times = timed(lambda body=body: extract_facts(body[:1000], body, patterns), repeat)
        worst = max(times)
        verdict = "" if body is ORDINARY else \
            "ok" if 1000 * worst < FACTS_LIMIT_MS else "MISSED"
        rows.append((f"(a) {name}", f"{len(body):,}", ms(percentile(times, 50)),
                     ms(percentile(times, 95)), ms(worst),
                     "" if body is ORDINARY else f"< {FACTS_LIMIT_MS:.0f} ms", verdict))
    return rows, ok


def login_seconds(dovecot: Dovecot, password: str) -> tuple[float, bool]:
    """Seconds from connect to the answer of LOGIN, and whether it was accepted."""
    started = time.perf_counter()
    client = IMAPClient(dovecot.host, port=dovecot.port, ssl=False, timeout=30)
    try:
        try:
            client.login(USER, password)
            accepted = True
        except LoginError:
            accepted = False
        return time.perf_counter() - started, accepted
    finally:
        client.shutdown()


def bench_logins(n: int) -> tuple[list[tuple], bool]:
    """(b) good logins alone, wrong-password logins, and good logins right after those."""
    ok = True
    good, refused, after = [], [], []
    dovecot = Dovecot()
    try:
        dovecot.add_user(USER, PASSWORD)
        dovecot.start()
        for _ in range(n):
            elapsed, accepted = login_seconds(dovecot, PASSWORD)
            good.append(elapsed)
            ok = ok and accepted
        for _ in range(n):
            elapsed, accepted = login_seconds(dovecot, "wrong")
            refused.append(elapsed)
            if accepted:
                print("CHECK FAILED: a wrong password was accepted", flush=True)
                ok = False
            elapsed, accepted = login_seconds(dovecot, PASSWORD)
            after.append(elapsed)
            ok = ok and accepted
    finally:
        dovecot.close()
    if not ok:
        print("CHECK FAILED: a login went the wrong way", flush=True)
    worst = max(after)
    rows = [
        ("(b) good login, no failure before", "", ms(percentile(good, 50)),
         ms(percentile(good, 95)), ms(max(good)), "", ""),
        ("(b) login with a wrong password", "", ms(percentile(refused, 50)),
         ms(percentile(refused, 95)), ms(max(refused)), "", ""),
        ("(b) good login right after a refused one", "", ms(percentile(after, 50)),
         ms(percentile(after, 95)), ms(worst), f"< {LOGIN_LIMIT_MS:.0f} ms",
         "ok" if 1000 * worst < LOGIN_LIMIT_MS else "MISSED"),
    ]
    return rows, ok


# -- (c) the budget: every mail read in a process of its own -------------------------------------

# Limits that admit a 20 MB attachment (its base64 is 27 MB).
BIG = "[limits]\nmax_message_bytes = 40000000\nmax_attachment_bytes = 40000000\n"
# Limits so high that only a budget of 2 s stops the slow mail.
RAISED = ("[limits]\nmax_seconds_per_mail = 2\nmax_parameters = 10000000\n"
          "max_header_bytes = 100000000\n")
NO_BUDGET = "[limits]\nmax_seconds_per_mail = 0\n"
HEAD = (b"From: Kunde <kunde@kunde.example>\r\nTo: support@example.com\r\nSubject: %s\r\n"
        b"Date: Tue, 24 Nov 2026 10:00:00 +0100\r\nMessage-ID: <%s@kunde.example>\r\n")


def attachment_mail(megabytes: int) -> bytes:
    """A mail with a PDF of ``megabytes`` MB of random bytes, base64 in CRLF lines."""
    data = base64.encodebytes(random.Random(7).randbytes(megabytes << 20))
    return (HEAD % (b"Anhang", b"big") + b"MIME-Version: 1.0\r\n"
            b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n"
            b"Content-Type: text/plain\r\n\r\nAnbei.\r\n--b\r\n"
            b"Content-Type: application/pdf; name=a.pdf\r\nContent-Transfer-Encoding: base64"
            b"\r\n\r\n" + data.replace(b"\n", b"\r\n") + b"--b--\r\n")


def parameters_mail(count: int) -> bytes:
    """A mail whose Content-Type holds ``count`` parameters (read in quadratic time)."""
    params = b"".join(b";\r\n p%d=v" % i for i in range(count))
    return HEAD % (b"Parameter", b"slow") + b"Content-Type: text/plain" + params + b"\r\n\r\nx\r\n"


def context(root: Path, name: str, extra: str = ""):
    """A fresh instance under ``root``: its Context."""
    path = write_config(root / f"{name}.toml", root / name, log_level="ERROR", extra=extra)
    return open_context(config.load(path, require_file=True))


def crossing(root: Path, name: str, raw: bytes, repeat: int) -> tuple:
    """(c) What crosses to a reader and back for one mail: sizes and ms of the pickles."""
    ctx = context(root, f"crossing-{len(raw)}", BIG)
    mail = pipeline.Mail(raw=raw, source="bench", sha="bench")
    reading = pipeline.reading_context(ctx)
    read = mail
    for step in pipeline.READ:
        read = step(reading, read)
    job = readers.pickled((pipeline.READ, mail, False), raw)  # the context crosses once
    answer = readers.pickled(("read", read), raw)
    times = [timed(call, repeat) for call in (
        lambda: readers.pickled((pipeline.READ, mail, False), raw),
        lambda: readers.pickled(("read", read), raw),
        lambda: readers.unpickled(answer, raw))]
    cost = " + ".join(ms(percentile(t, 50)) for t in times)
    return (f"(c) crossing, {name}", f"{len(raw):,} B mail",
            f"job {len(job):,} B, answer {len(answer):,} B", f"p50 {cost} (job, answer, load)")


def per_mail(root: Path, name: str, extra: str, raws: list[bytes]) -> tuple:
    """(c) ms per mail through pipeline.ingest, the readers started as they are now."""
    pipeline.READERS.close()
    ctx = context(root, name, extra)
    pipeline.ingest(ctx, raws[0], "bench", durable=False)  # the first starts the reader
    started = time.perf_counter()
    for raw in raws[1:]:
        pipeline.ingest(ctx, raw, "bench", durable=False)
    seconds = (time.perf_counter() - started) / (len(raws) - 1)
    ctx.store.close()
    return (f"(c) pipeline.ingest, {name}", f"{len(raws) - 1} mails", ms(seconds) + " a mail", "")


def ingest_calls(root: Path, ways: dict[str, str], raws: list[bytes]) -> dict[str, list[float]]:
    """(c) Seconds of each `mailbot ingest` of one mail, as an MTA's pipe runs it, for each
    way (name: extra config), the ways taking turns (so load on the machine hits all alike)."""
    paths = {name: write_config(root / f"ingest-{i}.toml", root / f"ingest-{i}",
                                log_level="ERROR", extra=extra)
             for i, (name, extra) in enumerate(ways.items())}
    times: dict[str, list[float]] = {name: [] for name in ways}
    for number, raw in enumerate(raws):
        name = list(ways)[number % len(ways)]
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "mailbot", "--config", str(paths[name]),
                               "ingest"], input=raw, cwd=REPO, capture_output=True, check=False)
        times[name].append(time.perf_counter() - started)
        if done.returncode != 0:
            print(f"CHECK FAILED: mailbot ingest exited {done.returncode}: {done.stderr[-500:]}")
    return times


# Runs `python -m mailbot ARGS`; when it is done, before its readers end (at exit), it writes
# its peak RSS and its reader's (a fork: its child), in kB, to stderr.
MEASURED = """\
import pathlib, runpy, sys
def hwm(pid):
    status = pathlib.Path(f"/proc/{pid}/status").read_text().splitlines()
    if pid != "self" and "mailbot-reader" not in status[0]:
        return 0
    return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
sys.argv[0] = "mailbot"
try:
    runpy.run_module("mailbot", run_name="__main__", alter_sys=True)
finally:
    children = [pid for task in pathlib.Path("/proc/self/task").iterdir()
                for pid in (task / "children").read_text().split()]
    sys.stderr.write(f"peak-kB {hwm('self')} {max(map(hwm, children), default=0)}\\n")
"""


def ingest_peaks(root: Path, name: str, extra: str, raw: bytes) -> tuple[str, str]:
    """(c) Peak RSS of `mailbot ingest` of one mail, and of its reader (MB)."""
    path = write_config(root / f"{name}.toml", root / name, log_level="ERROR", extra=extra)
    done = subprocess.run([sys.executable, "-c", MEASURED, "--config", str(path), "ingest"],
                          input=raw, cwd=REPO, capture_output=True, check=False)
    own, child = done.stderr.split(b"peak-kB ")[-1].split()[:2]
    return f"{int(own) / 1024:.0f} MB", f"{int(child) / 1024:.0f} MB"


def bench_budget(n: int) -> tuple[list[tuple], bool]:
    """(c) The cost of reading in a process of its own, and the budget at work."""
    ok, rows = True, []
    root = Path(tempfile.mkdtemp(prefix="mailbot-budget-"))
    raws = generate(n + 40, seed=3, tag="budget")
    big = attachment_mail(20)
    try:
        rows.append(crossing(root, "ordinary mail", raws[0], 200))
        rows.append(crossing(root, "20 MB attachment", big, 5))
        rows.append(per_mail(root, "read in this process (budget 0)", NO_BUDGET, raws[:n]))
        rows.append(per_mail(root, "forked reader (as mailbot ingest)", "", raws[:n]))
        for label, limits in (("budget 0", BIG + "max_seconds_per_mail = 0\n"),
                              ("forked reader", BIG)):
            own, reader = ingest_peaks(root, f"memory-{len(limits)}", limits, big)
            rows.append((f"(c) mailbot ingest, 20 MB attachment, {label}", "peak RSS",
                         f"{own} (the process)", f"{reader} (its reader)"))
        waiting = threading.Event()  # a second thread, as the daemon has: no fork now
        threading.Thread(target=waiting.wait, daemon=True).start()
        rows.append(per_mail(root, "fork server's reader (as the daemon)", "", raws[:n]))
        waiting.set()
        pipeline.READERS.close()
        calls = ingest_calls(root, {"budget 0": NO_BUDGET, "budget 30 s: a forked reader": ""},
                             raws[n:n + 40])
        for label, times in calls.items():
            rows.append((f"(c) mailbot ingest, one mail, {label}", f"{len(times)} runs",
                         f"p50 {ms(statistics.median(times))}", f"min {ms(min(times))}"))
        ctx = context(root, "raised", RAISED)
        for name, raw in (("160,000 parameters", parameters_mail(160_000)),
                          ("next mail", raws[n + 30])):
            started = time.perf_counter()
            outcome = pipeline.ingest(ctx, raw, "bench")
            rows.append((f"(c) budget 2 s, limits raised: {name}", outcome.status,
                         f"{time.perf_counter() - started:.2f} s", outcome.detail[:60]))
            expected = "quarantined" if name != "next mail" else "created"
            if outcome.status != expected:
                print(f"CHECK FAILED: {name}: {outcome.status} {outcome.detail}", flush=True)
                ok = False
    finally:
        pipeline.READERS.close()
        shutil.rmtree(root, ignore_errors=True)
    return rows, ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="a,b,c", help="which parts to run, e.g. a or c")
    parser.add_argument("--repeat", type=int, default=200, help="calls per body in (a)")
    parser.add_argument("--logins", type=int, default=50, help="logins of each kind in (b)")
    parser.add_argument("--mails", type=int, default=500, help="mails per way of reading in (c)")
    args = parser.parse_args(argv)
    parts = set(args.only.split(","))

    print(f"load average {load_average()}", flush=True)
    rows, ok = [], True
    budget: list[tuple] = []
    if "c" in parts:  # first: a forked reader needs this process to have one thread
        budget, ok = bench_budget(args.mails)
    if "a" in parts:
        part, part_ok = bench_facts(args.repeat)
        rows += part
        ok = ok and part_ok
    if "b" in parts:
        part, part_ok = bench_logins(args.logins)
        rows += part
        ok = ok and part_ok
    print(f"load average at the end: {load_average()} (other work on the machine skews the "
          "figures)")
    if rows:
        print(table(rows, ("measure", "chars", "p50", "p95", "max", "target", "")))
    if budget:
        print(table(budget, ("measure", "of", "figure", "more")))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
