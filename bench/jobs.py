"""A round of the scheduler's jobs on a large desk: its time and its memory.

    python bench/jobs.py [--tickets 0,100000,300000] [--rounds 5] [--seed 17]

For each size, a desk filled through the store module (``perf.fill``: per ticket a contact,
its mail, three events, a sent acknowledgement; open, waiting, resolved and closed tickets
spread over two years), then ``--rounds`` rounds of every ticket job (``jobs.run_all``, what
the daemon runs every ``[notifications] interval_seconds``) at a moment when nothing is due:
the round a daemon runs almost always.  Prints the p50 wall and CPU time of a round and the
peak of Python's memory during one (tracemalloc), each against the size of the desk.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
import tracemalloc
from datetime import timedelta
from pathlib import Path

from _common import load_average, table, write_config
from perf import GROWTH_START, fill

from mailbot.context import open_context
from mailbot.settings.config import load
from mailbot.tickets import jobs


def measure(tickets: int, rounds: int, seed: int) -> dict:
    """Fill a desk of ``tickets``, then time ``rounds`` rounds of the jobs on it."""
    root = Path(tempfile.mkdtemp(prefix="mailbot-bench-jobs-"))
    try:
        now = GROWTH_START - timedelta(days=1)  # before every ticket: nothing is due
        ctx = open_context(load(write_config(root / "mailbot.toml", root / "data")),
                           clock=lambda: now)
        fill(ctx.store, tickets, seed)
        walls, cpus = [], []
        for _ in range(rounds):
            wall, cpu = time.perf_counter(), time.process_time()
            done = jobs.run_all(ctx, now)
            walls.append(time.perf_counter() - wall)
            cpus.append(time.process_time() - cpu)
            assert not any(done.values()), done
        tracemalloc.start()
        jobs.run_all(ctx, now)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        ctx.store.close()
        return {"tickets": f"{tickets:,}", "round p50": f"{statistics.median(walls) * 1000:.1f} ms",
                "CPU p50": f"{statistics.median(cpus) * 1000:.1f} ms",
                "peak Python memory": f"{peak / 1024:,.0f} KB"}
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    """Measure each size and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tickets", default="0,100000,300000")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=17)
    args = parser.parse_args(argv)
    print(f"{time.strftime('%Y-%m-%d %H:%M %Z')}; load average {load_average()}")
    rows = [measure(int(n), args.rounds, args.seed) for n in args.tickets.split(",")]
    print(table([tuple(r.values()) for r in rows], tuple(rows[0])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
