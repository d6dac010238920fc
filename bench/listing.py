"""How long `mailbot tickets list` takes on a big desk: N tickets (default 100,000), one page.

    python bench/listing.py [--n 100000] [--pages 20]

Writes N open tickets into a fresh SQLite store (in a temp dir, removed at the end), then
times the first page of the work order (the query the command runs) over ``--pages`` runs,
and the whole `mailbot tickets list` process (start, config, store, query, table) over
``--runs`` runs, as an installed mailbot starts: with Python's bytecode cache (pip writes
it at install; from a checkout under PYTHONDONTWRITEBYTECODE=1 every module is compiled at
every start, about 40 ms more).  Exit 1 if the process's median is over 0.2 s, the goal of
issue 15.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import REPO, clean_up, load_average, table

from mailbot.store import Store
from mailbot.store import tickets as tq

PRIORITIES = ("urgent", "high", "normal", "low")


def fill(store: Store, n: int) -> None:
    """N open tickets, spread over priorities, entitlement and deadlines."""
    start = datetime(2026, 11, 24, 9, tzinfo=UTC)
    with store.transaction():
        for i in range(n):
            store.insert("tickets", {
                "number": f"2026{i:08d}", "subject": f"Fall {i}", "status": "open",
                "priority": PRIORITIES[i % 4], "entitled": i % 3 == 0, "language": "de",
                "created_at": start, "updated_at": start,
                "first_response_due": start + timedelta(minutes=(i * 7919) % 100_000)})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--pages", type=int, default=20)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="mailbot-bench-listing-"))
    try:
        store = Store(tmp / "data" / "mailbot.sqlite3")
        fill(store, args.n)
        times = []
        for _ in range(args.pages):
            started = time.perf_counter()
            page = tq.work_list(store, 50, 0)
            times.append(time.perf_counter() - started)
        store.close()
        (tmp / "mailbot.toml").write_text(f'[service]\ndata_dir = "{tmp / "data"}"\n')
        cached = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        command = [sys.executable, "-m", "mailbot", "--config", str(tmp / "mailbot.toml"),
                   "tickets", "list"]
        subprocess.run(command, cwd=REPO, check=True, capture_output=True, env=cached)
        processes = []
        for _ in range(args.runs):
            started = time.perf_counter()
            subprocess.run(command, cwd=REPO, check=True, capture_output=True, env=cached)
            processes.append(time.perf_counter() - started)
        median = statistics.median(times)
        process = statistics.median(processes)
        print(table([("tickets", f"{args.n:,}"), ("rows on the page", len(page)),
                     ("query p50 / max", f"{median * 1000:.0f} / {max(times) * 1000:.0f} ms"),
                     ("`mailbot tickets list` process p50 / max",
                      f"{process:.2f} / {max(processes):.2f} s"),
                     ("load average", load_average())], ("measure", "value")))
        return 0 if process <= 0.2 else 1
    finally:
        clean_up([], None, None, tmp, args.keep)


if __name__ == "__main__":
    sys.exit(main())
