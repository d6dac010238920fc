"""Where the filing process spends its time: each pipeline step of `mailbot ingest`, per mail.

    python bench/steps.py [--mails 2000] [--seed 17] [--max-seconds-per-mail 0] [--keep]

Builds the mix of issue 17 (``perf.build_mix``, the same bytes as ``bench/perf.py``), writes
it as files, and runs ``mailbot ingest`` on them in this process, each step of ``PREPARE``
and ``COMMIT`` (and the ingest record, the transactions' BEGIN and COMMIT) wrapped in a
timer.  Prints wall and CPU milliseconds a mail for each step, measured in the thread that
runs it, and the process's totals.  CPU time is the steadier figure: wall time includes
waiting for the GIL and for the reader processes.  With the default budget the READ steps
run in reader processes, so ``read`` shows what handing a mail to its reader costs this
process; ``--max-seconds-per-mail 0`` reads in this process and shows the reading itself.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

from _common import table, write_config
from mails import write
from perf import EXTRA, build_mix

from mailbot.app import launch
from mailbot.inbound import pipeline
from mailbot.store import Store

WALL: Counter[str] = Counter()
CPU: Counter[str] = Counter()


def timed(name: str, step: Callable) -> Callable:
    """``step`` with its wall and thread CPU time added to the totals under ``name``."""
    def run(*args, **kwargs):
        wall, cpu = time.perf_counter(), time.thread_time()
        try:
            return step(*args, **kwargs)
        finally:
            WALL[name] += time.perf_counter() - wall
            CPU[name] += time.thread_time() - cpu
    return run


def instrument() -> None:
    """Wrap every step, the ingest record, the handing of mails to the readers and the
    store's transactions in timers."""
    for name in ("PREPARE", "COMMIT", "_BEFORE_READ", "_AFTER_READ"):  # the batch's too
        setattr(pipeline, name, tuple(timed(step.__name__, step)
                                      for step in getattr(pipeline, name)))
    readers = pipeline.READERS
    readers.hand = timed("read: hand to a reader", readers.hand)
    readers.take = timed("read: take back", readers.take)
    pipeline._record = timed("ingest record", pipeline._record)
    pipeline._announce = timed("log and metrics", pipeline._announce)
    transaction = Store.transaction

    @contextlib.contextmanager
    def timed_transaction(self: Store, durable: bool = True) -> Iterator[Store]:
        with contextlib.ExitStack() as stack:
            timed("BEGIN", stack.enter_context)(transaction(self, durable))
            yield self
            timed("COMMIT", stack.close)()

    Store.transaction = timed_transaction


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mails", type=int, default=2000, help="mails in the mix (2000)")
    parser.add_argument("--seed", type=int, default=17)
    parser.add_argument("--max-seconds-per-mail", type=float, default=None,
                        help="[limits] max_seconds_per_mail (0: read in this process)")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir")
    args = parser.parse_args(argv)
    extra = EXTRA
    if args.max_seconds_per_mail is not None:
        extra += f"max_seconds_per_mail = {args.max_seconds_per_mail:g}\n"
    tmp = Path(tempfile.mkdtemp(prefix="mailbot-bench-steps-"))
    try:
        mix = build_mix(args.mails, args.seed)
        paths = write(tmp / "mails", mix.mails)
        config = write_config(tmp / "steps.toml", tmp / "data", log_level="WARNING",
                              extra=extra)
        instrument()
        wall, cpu = time.perf_counter(), time.process_time()
        sys.argv = ["mailbot", "--config", str(config), "ingest", *map(str, paths)]
        code = 0
        with contextlib.redirect_stdout(None):  # its one line per mail goes nowhere
            try:
                launch.main()
            except SystemExit as ended:  # click ends the command line this way
                code = ended.code or 0
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        if code:
            print(f"mailbot ingest exited {code}", file=sys.stderr)
            return 1
        n = len(mix.mails)
        rows = [(name, f"{1000 * WALL[name] / n:.3f}", f"{1000 * CPU[name] / n:.3f}")
                for name in WALL]
        rows.append(("all steps", f"{1000 * sum(WALL.values()) / n:.3f}",
                     f"{1000 * sum(CPU.values()) / n:.3f}"))
        print(table(rows, ("step", "wall ms a mail", "CPU ms a mail")))
        print(f"{n} mails in {wall:.2f} s ({n / wall:.0f} mails/s); this process's CPU "
              f"{1000 * cpu / n:.2f} ms a mail (its reader processes not counted)")
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
