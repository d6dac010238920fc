"""Several mailbot nodes on one PostgreSQL against one node on SQLite: mails per second.

    python bench/cluster.py [--mails 3000] [--nodes 1,2,3] [--clients 6]

For each setup (one node on SQLite, then 1, 2, 3 nodes on a PostgreSQL server the bench
starts itself in a temp dir): fresh stores, the daemons on data directories of their own,
then ``--mails`` mails handed over at once: half appended to the one IMAP mailbox all nodes
watch, half sent over SMTP by ``--clients`` clients to the nodes' listeners in turn.  Timed
from the first mail handed over until every mail is a ticket, and until every
acknowledgement reached the SMTP sink.  Exit 1 when a mail is not exactly one ticket.
"""

from __future__ import annotations

import argparse
import smtplib
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import psycopg
from _common import (
    DaemonProcess,
    Db,
    Dovecot,
    TimedSink,
    clean_up,
    free_port,
    imap_settings,
    listening,
    load_average,
    table,
    wait_until,
    write_config,
)
from mails import generate, message_id
from pg import PgServer, bindir


class Setup:
    """One run's nodes: their configs, daemons and a way to count what they filed."""

    def __init__(self, root: Path, nodes: int, url: str, mailbox: dict,
                 sink: TimedSink) -> None:
        self.url = url
        self.ports = [free_port() for _ in range(nodes)]
        store = f'\n[store]\nurl = "{url}"\n' if url else ""
        self.configs = [write_config(root / f"node{i}.toml", root / f"data{i}",
                                     listener_port=port, relay_port=sink.port,
                                     imap=mailbox, extra=store)
                        for i, port in enumerate(self.ports)]
        self.daemons = [DaemonProcess(c, c.with_suffix(".log")) for c in self.configs]
        self.db = None if url else Db(root / "data0" / "mailbot.sqlite3")

    def tickets(self) -> int:
        """Tickets filed so far, by all nodes."""
        if self.db is not None:
            return self.db.tickets()
        with psycopg.connect(self.url) as conn:
            found = conn.execute("SELECT to_regclass('tickets') IS NOT NULL").fetchone()[0]
            return conn.execute("SELECT COUNT(*) FROM tickets").fetchone()[0] if found else 0

    def filed_twice(self) -> int:
        """Message-IDs that became more than one ticket."""
        sql = ("SELECT COUNT(*) FROM (SELECT message_id FROM messages GROUP BY message_id "
               "HAVING COUNT(DISTINCT ticket_id) > 1) AS twice")
        if self.db is not None:
            return self.db.scalar(sql)
        with psycopg.connect(self.url) as conn:
            return conn.execute(sql).fetchone()[0]


def deliver(ports: list[int], raws: list[bytes], clients: int) -> None:
    """Send every mail over SMTP, the nodes in turn, each client on one connection."""
    turn = iter(range(len(raws)))
    lock = threading.Lock()

    def client(index: int) -> None:
        with smtplib.SMTP("127.0.0.1", ports[index % len(ports)], timeout=60) as smtp:
            while True:
                with lock:
                    n = next(turn, None)
                if n is None:
                    return
                smtp.sendmail("kunde@example.org", ["support@example.com"], raws[n])

    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(client, range(clients)))


def run(name: str, nodes: int, url: str, args, dovecot: Dovecot, root: Path) -> tuple:
    """One setup from start to the last acknowledgement; its row of the table."""
    mails = generate(args.mails, seed=7, tag=root.name)  # the tag goes into addresses
    ids = [message_id(m) for m in mails]
    sink = TimedSink(keep_messages=False)
    sink.start()
    user = dovecot.new_user().username  # an empty mailbox of its own
    setup = Setup(root, nodes, url, imap_settings(dovecot, user), sink)
    try:
        for daemon in setup.daemons:
            daemon.start()
        wait_until(lambda: all(listening(port) for port in setup.ports), 60,
                   message="nodes ready")
        started = time.monotonic()
        dovecot.append_many(user, "INBOX", mails[0::2])
        deliver(setup.ports, mails[1::2], args.clients)
        wait_until(lambda: setup.tickets() >= args.mails, args.timeout, interval=0.1,
                   message=f"{args.mails} tickets")
        filed = time.monotonic() - started
        sink.wait_acked(ids, args.timeout)
        acked = time.monotonic() - started
        twice = setup.filed_twice()
        return (name, f"{args.mails / filed:.0f} mails/s", f"{filed:.1f} s",
                f"{args.mails / acked:.0f} mails/s", twice)
    finally:
        clean_up(setup.daemons, sink, None, root, keep=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mails", type=int, default=3000)
    parser.add_argument("--nodes", default="1,2,3", help="node counts on PostgreSQL")
    parser.add_argument("--clients", type=int, default=6, help="SMTP clients")
    parser.add_argument("--timeout", type=float, default=600.0)
    args = parser.parse_args(argv)
    binaries = bindir()
    if binaries is None:
        print("PostgreSQL is not installed (apt-get install -y --no-install-recommends "
              "postgresql)", file=sys.stderr)
        return 2
    pg = PgServer(binaries).start()
    dovecot = Dovecot()
    dovecot.start()
    rows = []
    tmp = Path(tempfile.mkdtemp(prefix="mailbot-bench-cluster-"))
    try:
        print(f"{args.mails} mails per setup (half IMAP, half SMTP by {args.clients} clients);"
              f" load average {load_average()}", flush=True)
        setups = [("1 node, SQLite", 1, "")]
        setups += [(f"{n} node{'s' if n > 1 else ''}, PostgreSQL", n, "")
                   for n in map(int, args.nodes.split(","))]
        for index, (name, nodes, _) in enumerate(setups):
            url = pg.new_database() if "PostgreSQL" in name else ""
            root = tmp / f"setup{index}"
            root.mkdir()
            rows.append(run(name, nodes, url, args, dovecot, root))
            print(table(rows[-1:], ("setup", "filed", "all filed in", "acknowledged",
                                    "filed twice")).splitlines()[-1], flush=True)
        print()
        print(table(rows, ("setup", "filed", "all filed in", "acknowledged", "filed twice")))
        print(f"load average at the end: {load_average()}")
        return 1 if any(r[-1] for r in rows) else 0
    finally:
        dovecot.close()
        pg.stop()
        clean_up([], None, None, tmp, keep=False)


if __name__ == "__main__":
    sys.exit(main())
