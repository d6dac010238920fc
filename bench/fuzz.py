"""Hostile mail at volume: N seeded mutants (tests/mutants.py) through the real pipeline.

    python bench/fuzz.py [--n 100000] [--seed 1] [--keep]

Each mutant (a seed mail of some shape, damaged by one to three mutators) is filed with
`pipeline.ingest` in this process, on a fresh data dir with a real SQLite file, as
`mailbot ingest` files a mail: each read in a reader process forked from this one, within
`[limits] max_seconds_per_mail` (30 s).  Printed: the outcome counts, the 10 slowest mails
with the mutations that made them, quarantines whose reason is not a sentence, tracebacks (an
exception out of `ingest`, or one mailbot logged while quarantining a mail it should have
refused in words), mails without an ingest record, mails stopped by the budget and mails
whose reader died twice, and peak RSS (VmHWM of this process, and of the largest reader).
Exit status 1 if a check fails: a traceback, a lost mail, a mail over 2 s or over the budget,
a reader that died, a reason that is not a sentence.  The temp dir is removed at the end
(`--keep` leaves it).
"""

from __future__ import annotations

import argparse
import hashlib
import heapq
import logging
import resource
import shutil
import sys
import tempfile
import time
import traceback
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import TESTS, load_average, table, write_config

sys.path.insert(0, str(TESTS))  # before bench/: mutants imports tests/mails.py
from mutants import is_sentence, mutants

from mailbot.context import open_context
from mailbot.inbound import pipeline
from mailbot.reading.limits import ParseError
from mailbot.settings import config
from mailbot.store import inbound as iq

SLOW_SECONDS = 2.0  # no mail may take longer
SHOWN = 10  # slowest mails and failures listed
# How a quarantine reason names the budget, and a reader that died twice (inbound/readers.py).
BUDGET = "(limits.max_seconds_per_mail)"
DIED = "the process reading this mail ended twice"


class Tracebacks(logging.Handler):
    """Counts exceptions mailbot logged (other than a refusal in words) while filing."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.seen: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        """Keep the last line of each logged traceback that is not a ParseError."""
        if record.exc_info and not isinstance(record.exc_info[1], ParseError):
            self.seen.append(traceback.format_exception_only(record.exc_info[1])[-1].strip())


def peak_rss() -> str:
    """VmHWM of this process, from /proc."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return line.split(":", 1)[1].strip()
    return "?"


def run(ctx, n: int, seed: int) -> tuple[Counter, list, list[str], Tracebacks]:
    """File every mutant; return outcomes, the slowest, the failures and logged tracebacks."""
    logged = Tracebacks()
    logger = logging.getLogger("mailbot")
    logger.addHandler(logged)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False  # quarantine warnings would flood the output
    outcomes: Counter = Counter()
    slowest: list[tuple[float, int, str]] = []
    failures: list[str] = []
    for number, (description, raw) in enumerate(mutants(seed, n)):
        seen = len(logged.seen)
        started = time.perf_counter()
        try:
            outcome = pipeline.ingest(ctx, raw, "fuzz")
        except Exception as exc:
            failures.append(f"traceback: {description}: {exc!r}")
            continue
        elapsed = time.perf_counter() - started
        heapq.heappush(slowest, (elapsed, number, description))
        if len(slowest) > SHOWN:
            heapq.heappop(slowest)
        outcomes[outcome.status] += 1
        failures += check(ctx, description, raw, outcome, elapsed, logged.seen[seen:])
        if number and number % 10_000 == 0:
            print(f"{number:,} mails, {len(failures)} failures", flush=True)
    return outcomes, sorted(slowest, reverse=True), failures, logged


def check(ctx, description: str, raw: bytes, outcome, elapsed: float,
          logged: list[str]) -> list[str]:
    """What is wrong with the fate of one mutant."""
    found = [f"traceback (logged): {description}: {line}" for line in logged]
    if iq.ingest_by_sha(ctx.store, hashlib.sha256(raw).hexdigest()) is None:
        found.append(f"lost: {description}: no ingest record")
    if outcome.status == "quarantined" and not is_sentence(outcome.detail):
        found.append(f"not a sentence: {description}: {outcome.detail!r}")
    if elapsed > SLOW_SECONDS:
        found.append(f"slow: {description}: {elapsed:.2f} s")
    if outcome.detail.endswith(BUDGET):
        found.append(f"budget: {description}: {outcome.detail}")
    if outcome.detail.startswith(DIED):
        found.append(f"reader died: {description}: {outcome.detail}")
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000, help="how many mutants")
    parser.add_argument("--seed", type=int, default=1, help="the same seed, the same mails")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir")
    args = parser.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="mailbot-fuzz-"))
    try:
        cfg = config.load(write_config(tmp / "mailbot.toml", tmp / "data", log_level="WARNING"),
                          require_file=True)
        ctx = open_context(cfg)
        print(f"load average {load_average()}; {args.n:,} mutants, seed {args.seed}", flush=True)
        started = time.perf_counter()
        outcomes, slowest, failures, logged = run(ctx, args.n, args.seed)
        wall = time.perf_counter() - started
        held = iq.quarantined(ctx.store, None)
        wordless = [e["error"] for e in held if not is_sentence(e["error"])]
        ctx.store.close()
        pipeline.READERS.close()  # reaped: their peak RSS counts in RUSAGE_CHILDREN
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    report(outcomes, slowest, failures, wordless, logged, wall, args.n)
    return 1 if failures or wordless else 0


def report(outcomes: Counter, slowest: list, failures: list[str], wordless: list[str],
           logged: Tracebacks, wall: float, n: int) -> None:
    """Print the figures and the first failures."""
    print(f"\n{n:,} mutants in {wall:.0f} s ({1000 * wall / max(n, 1):.1f} ms per mail); "
          f"load average at the end: {load_average()}")
    print(table(sorted(outcomes.items(), key=lambda kv: -kv[1]), ("outcome", "mails")))
    print(f"\nthe {len(slowest)} slowest mails")
    print(table([(d[:110], f"{s:.3f} s") for s, _, d in slowest], ("mutations", "time")))
    kinds = Counter(f.split(":", 1)[0] for f in failures)
    print(f"\nquarantine reasons that are not a sentence: {len(wordless)}"
          f"\ntracebacks: {kinds['traceback'] + kinds['traceback (logged)']}"
          f"\nlost mails: {kinds['lost']}\nmails over {SLOW_SECONDS:.0f} s: {kinds['slow']}"
          f"\nmails stopped by the budget {BUDGET}: {kinds['budget']}"
          f"\nmails whose reader died twice: {kinds['reader died']}"
          f"\npeak RSS (VmHWM): {peak_rss()}; the largest reader: "
          f"{resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss} kB")
    for line in failures[:SHOWN] + wordless[:SHOWN]:
        print(f"CHECK FAILED: {line[:300]}")


if __name__ == "__main__":
    sys.exit(main())
