"""A round of the scheduler's jobs on a large desk: its time and its memory.

    python bench/jobs.py [--tickets 0,100000,300000] [--rounds 5] [--seed 17] [--backlog]

For each size, a desk filled through the store module (``perf.fill``: per ticket a contact,
its mail, three events, a sent acknowledgement; open, waiting, resolved and closed tickets
spread over two years), then ``--rounds`` rounds of every ticket job (``jobs.run_all``, what
the daemon runs every ``[notifications] interval_seconds``) at a moment when nothing is due:
the round a daemon runs almost always.  Prints the p50 wall and CPU time of a round and the
peak of Python's memory during one (tracemalloc), each against the size of the desk.

``--backlog`` also times rounds on the same desk when all of it is due and was told: on a
Tuesday at 10:00 in Berlin after one round that warned the agents of every open ticket's
breached deadline, reminded every waiting customer and closed every resolved ticket, and on
the Sunday after (support closed).  A desk whose agents leave breaches and waiting tickets
alone: what such a backlog costs each round.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
import tracemalloc
from datetime import UTC, datetime, timedelta
from pathlib import Path

from _common import load_average, table, write_config
from perf import GROWTH_START, fill

from mailbot.context import open_context
from mailbot.settings.config import load
from mailbot.tickets import jobs


def measure(tickets: int, rounds: int, seed: int, backlog: bool) -> dict:
    """Fill a desk of ``tickets``, then time ``rounds`` rounds of the jobs on it when nothing
    is due; with ``backlog``, also once everything on it was told (see the module)."""
    root = Path(tempfile.mkdtemp(prefix="mailbot-bench-jobs-"))
    try:
        moment = [GROWTH_START - timedelta(days=1)]  # before every ticket: nothing is due
        ctx = open_context(load(write_config(root / "mailbot.toml", root / "data")),
                           clock=lambda: moment[0])
        fill(ctx.store, tickets, seed)
        walls, cpus = timed_rounds(ctx, moment[0], rounds)
        tracemalloc.start()
        jobs.run_all(ctx, moment[0])
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        found = {"tickets": f"{tickets:,}", "round p50": ms(walls), "CPU p50": ms(cpus),
                 "peak Python memory": f"{peak / 1024:,.0f} KB"}
        if backlog:
            tuesday, sunday = backlog_moments(tickets)
            moment[0] = tuesday
            jobs.run_all(ctx, tuesday)  # tells every agent and customer what is due
            found["told, open: round p50"] = ms(timed_rounds(ctx, tuesday, rounds)[0])
            moment[0] = sunday
            jobs.run_all(ctx, sunday)  # what came due since Tuesday
            found["told, closed: round p50"] = ms(timed_rounds(ctx, sunday, rounds)[0])
        ctx.store.close()
        return found
    finally:
        shutil.rmtree(root, ignore_errors=True)


def timed_rounds(ctx, now: datetime, rounds: int) -> tuple[list[float], list[float]]:
    """The wall and CPU seconds of ``rounds`` rounds at ``now``, each of which has nothing
    to do (checked)."""
    walls, cpus = [], []
    for _ in range(rounds):
        wall, cpu = time.perf_counter(), time.process_time()
        done = jobs.run_all(ctx, now)
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
        assert not any(done.values()), done
    return walls, cpus


def backlog_moments(tickets: int) -> tuple[datetime, datetime]:
    """A Tuesday 10:00 in Berlin (support open) and the Sunday after, three days or more
    after the desk's last ticket: every deadline passed, every waiting period ended."""
    last = GROWTH_START + timedelta(minutes=2 * tickets + 3 * 24 * 60)
    tuesday = datetime(last.year, last.month, last.day, 9, tzinfo=UTC)
    while tuesday.weekday() != 1:
        tuesday += timedelta(days=1)
    return tuesday, tuesday + timedelta(days=5)


def ms(seconds: list[float]) -> str:
    """The median of ``seconds`` in milliseconds."""
    return f"{statistics.median(seconds) * 1000:.1f} ms"


def main(argv: list[str] | None = None) -> int:
    """Measure each size and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tickets", default="0,100000,300000")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=17)
    parser.add_argument("--backlog", action="store_true",
                        help="also time rounds once every deadline and period on the desk "
                             "passed and was told (the first such round tells them: minutes)")
    args = parser.parse_args(argv)
    print(f"{time.strftime('%Y-%m-%d %H:%M %Z')}; load average {load_average()}")
    rows = [measure(int(n), args.rounds, args.seed, args.backlog)
            for n in args.tickets.split(",")]
    print(table([tuple(r.values()) for r in rows], tuple(rows[0])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
