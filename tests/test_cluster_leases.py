"""Several mailbot nodes on one database: one node works a mailbox, the others stand by and
take over when it dies; each tick of a scheduled job runs on one node; senders of several
nodes claim different outbox rows at the same time.

Real parts: the suite's PostgreSQL, the test Dovecot, `mailbot run` as real processes.
"""

from __future__ import annotations

import contextlib
import json
import mailbox
import re
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from pathlib import Path

import psycopg
import pytest
from daemon_util import Instance, base_settings, imap_settings, process_env
from mails import build_mail
from servers import free_port, wait_until

from mailbot.inbound.imap import ImapSource
from mailbot.inbound.source import Feed
from mailbot.settings.config import ImapConfig, load
from mailbot.settings.schema import ConfigError
from mailbot.status.health import STANDBY, Health
from mailbot.store import Store
from mailbot.store import jobs as jq
from mailbot.store import outbox as oq
from mailbot.store.dialect import sqlite_path
from mailbot.store.leases import mailbox_key
from mailbot.store.postgres import WRITE_LOCK
from mailbot.tickets.outcome import Outcome

TAKEOVER_LINE = "took over the mailbox"
TICK_LINE = re.compile(r"ticket-jobs of tick (\d+) runs here")


# -- two daemons, one PostgreSQL database, one mailbox -----------------------------------------

def node(root: Path, url: str, imap: dict) -> Instance:
    """A node: its own data directory, listener and admin port; the shared database and
    mailbox; ticket jobs every second (logged at DEBUG, one line per tick it runs)."""
    root.mkdir()
    settings = base_settings(root / "data")
    settings["service"]["log_level"] = "DEBUG"
    settings["store"] = {"url": url}
    settings["imap"] = [imap]
    settings["admin"] = {"enabled": True, "host": "127.0.0.1", "port": free_port()}
    settings["notifications"] = {"interval_seconds": 1}
    return Instance(root, settings)


def admin_get(bot: Instance, path: str) -> tuple[int, str]:
    """GET ``path`` of a node's admin listener: status code and body."""
    url = f"http://127.0.0.1:{bot.settings['admin']['port']}{path}"
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError:  # not listening yet
        return 0, ""


def mailbox_state(bot: Instance) -> dict | None:
    """The mailbox source as the node's /healthz shows it right now (None before the admin
    listener is up)."""
    code, body = admin_get(bot, "/healthz")
    if not code:
        return None
    document = json.loads(body)
    return next((s for s in document["sources"] if s["name"] == "imap:support"), None)


def in_state(bot: Instance, state: str) -> dict | None:
    """The node's mailbox source once it is in ``state``, else None."""
    found = mailbox_state(bot)
    return found if found and found["state"] == state else None


def status_shows(bot: Instance, state: str) -> bool:
    """Whether `mailbot status` of the node exits 0 (healthy) with the mailbox in ``state``
    (the daemon writes its status file every few seconds)."""
    result = bot.cli("status", "--json")
    document = json.loads(result.stdout)
    return result.exit_code == 0 and any(
        s["name"] == "imap:support" and s["state"] == state for s in document["sources"])


def acknowledgements(*bots: Instance) -> Counter:
    """How often each acknowledgement went out, over the nodes' Maildirs (their relay)."""
    sent: Counter = Counter()
    for bot in bots:
        folder = Path(bot.settings["service"]["data_dir"]) / "maildir"
        if folder.exists():
            for raw in mailbox.Maildir(folder, create=False).itervalues():
                sent[message_from_bytes(raw.as_bytes())["Message-ID"]] += 1
    return sent


def customer_mails(tag: str, n: int) -> list[bytes]:
    """``n`` distinct new requests from distinct customers."""
    return [build_mail(sender=(f"Kunde {i}", f"kunde{i}.{tag}@kunde.example"),
                       subject=f"Anfrage {tag} {i}", text=f"Problem {tag} {i}.\n")
            for i in range(n)]


def settled(bot: Instance, dovecot, user, tickets: int) -> bool:
    """Every mail filed once and moved to the done folder."""
    return (bot.count("tickets") >= tickets and dovecot.message_count(user.username) == 0
            and dovecot.message_count(user.username, "Processed") >= tickets)


def test_two_nodes_one_mailbox_one_works_it_the_other_takes_over_after_sigkill(
        tmp_path, pg, dovecot, imap_user):
    """Two daemons with the same [[imap]] table on one database: one works the mailbox, the
    other is on standby (healthy, shown in status and metrics); every mail is filed once;
    SIGKILL of the worker and the other files the next mails.  Each tick of the ticket jobs
    ran on one node only, and each acknowledgement went out once."""
    url = pg.new_database()
    imap = imap_settings(imap_user, poll_seconds=1, lease_retry_seconds=0.2)
    first, second = node(tmp_path / "a", url, imap), node(tmp_path / "b", url, imap)
    worker = first.start()
    try:
        wait_until(lambda: in_state(first, "connected"), 15, 0.05, "node a works the mailbox")
        standby = second.start()
        try:
            wait_until(lambda: in_state(second, STANDBY), 15, 0.05, "node b on standby")
            assert admin_get(second, "/healthz")[0] == 200
            wait_until(lambda: status_shows(second, STANDBY), 10, 0.1, "status: standby")
            metrics = admin_get(second, "/metrics")[1]
            assert 'mailbot_source_standby{source="imap:support"} 1.0' in metrics

            dovecot.append_many(imap_user.username, "INBOX", customer_mails("before", 5))
            wait_until(lambda: settled(first, dovecot, imap_user, 5), 20, 0.05, "5 filed")
            assert first.count("tickets") == 5
            assert mailbox_state(first)["handled"] == 5
            assert mailbox_state(second)["handled"] == 0 and in_state(second, STANDBY)
            wait_until(lambda: sum(acknowledgements(first, second).values()) >= 5, 15, 0.05,
                       "5 acknowledgements sent")
            assert set(acknowledgements(first, second).values()) == {1}

            killed = time.monotonic()
            worker.kill()
            standby.wait_log(TAKEOVER_LINE, timeout=20)
            print(f"\ntakeover after SIGKILL of the worker: {time.monotonic() - killed:.2f} s "
                  f"(lease_retry_seconds {imap['lease_retry_seconds']:g}; kill to the new "
                  "worker's log line)")
            dovecot.append_many(imap_user.username, "INBOX", customer_mails("after", 5))
            wait_until(lambda: settled(second, dovecot, imap_user, 10), 20, 0.05, "10 filed")
            assert second.count("tickets") == 10
            assert mailbox_state(second)["handled"] == 5

            wait_until(lambda: TICK_LINE.search(standby.log()), 10, 0.1, "a tick ran on b")
            runs = [set(TICK_LINE.findall(log)) for log in (worker.log(), standby.log())]
            assert not runs[0] & runs[1], "a tick of the ticket jobs ran on both nodes"
        finally:
            standby.stop()
    finally:
        worker.kill()


# -- the lease itself ------------------------------------------------------------------------

@pytest.fixture
def shared_store(store_url, tmp_path):
    """Where the nodes of a test meet: PostgreSQL or an SQLite file."""
    return store_url or f"sqlite://{tmp_path / 'mailbot.sqlite3'}"


@pytest.mark.both_stores
def test_a_mailbox_lease_has_one_holder_until_it_is_given_back(shared_store):
    """Two nodes' leases of one mailbox: the first takes it, the second does not until the
    first gives it back; another mailbox (folder) has a lease of its own."""
    stores = [Store(shared_store) for _ in range(2)]
    key = mailbox_key("IMAP.example.com", "support", "INBOX")
    mine, theirs = (s.lease(key, "imap:support") for s in stores)
    other = stores[1].lease(mailbox_key("imap.example.com", "support", "Other"), "other")
    try:
        assert mine.acquire() and mine.held()
        assert not theirs.acquire() and not theirs.held()
        assert other.acquire()
        same_host = stores[1].lease(mailbox_key("imap.example.com", "support", "INBOX"),
                              "imap:support")
        assert not same_host.acquire()  # the host's case does not make another mailbox
        mine.release()
        assert not mine.held()
        assert theirs.acquire() and theirs.held()
        assert not mine.acquire()
    finally:
        for lease in (mine, theirs, other):
            lease.release()
        for store in stores:
            store.close()


@pytest.mark.both_stores
def test_a_lease_given_back_can_be_taken_at_once(shared_store):
    """A node that gives a lease back (at a stop, on a handover) frees it before the call
    returns: the other node's very next try takes it, every time, not some moments later."""
    stores = [Store(shared_store) for _ in range(2)]
    taken_late = []
    try:
        for n in range(50):
            key = mailbox_key("imap.example.com", "support", f"Folder{n}")
            mine, theirs = (s.lease(key, "imap:support") for s in stores)
            assert mine.acquire()
            mine.release()
            if not theirs.acquire():
                taken_late.append(n)
            theirs.release()
    finally:
        for store in stores:
            store.close()
    assert taken_late == []


def test_a_worker_that_loses_its_lease_stops_and_stands_by(pg, dovecot, imap_user):
    """The lease's connection ends (the server ended it) and another node takes the lease:
    the worker files nothing more and moves nothing; it stands by, and takes over again,
    filing the waiting mail, once the other gives the lease back."""
    url = pg.new_database()
    store = Store(url)
    cfg = ImapConfig(host=imap_user.host, port=imap_user.port, username=imap_user.username,
                     password=imap_user.password, security="plain", done_folder="Processed",
                     poll_seconds=1, timeout_seconds=5, lease_retry_seconds=0.1)
    key = mailbox_key(cfg.host, cfg.username, cfg.folder)
    lease, rival = store.lease(key, "worker"), store.lease(key, "rival")
    health, filed = Health(), []

    def file(raw: bytes, origin: str, envelope=None) -> Outcome:
        filed.append(raw)
        return Outcome("created")

    source = ImapSource(cfg, lambda mailbox, value: True, health, lease=lease)
    worker = threading.Thread(target=source.run, args=(Feed(file=file, flush=lambda: None),))
    worker.start()
    def state() -> str:
        return health.states()[0].state if health.states() else ""

    try:
        wait_until(lambda: state() == "connected", 10, 0.02, "the source works the mailbox")
        with psycopg.connect(url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                          "WHERE application_name = 'mailbot lease' AND datname = "
                          "current_database()")
        wait_until(rival.acquire, 10, 0.02, "the rival takes the lease")
        dovecot.append(imap_user.username, "INBOX", build_mail(subject="Wer nimmt mich?"))
        wait_until(lambda: state() == STANDBY, 10, 0.02, "the source stands by")
        assert filed == []
        assert dovecot.message_count(imap_user.username) == 1
        rival.release()
        wait_until(lambda: filed and dovecot.message_count(imap_user.username) == 0, 10, 0.02,
                   "the source took over and filed the mail")
        assert len(filed) == 1
    finally:
        source.halt()
        worker.join(10)
        rival.release()
        store.close()
    assert health.states()[0].state == "stopped"
    assert rival.acquire(), "the stopped source gave its lease back"
    rival.release()


def test_lease_retry_seconds_must_be_positive(tmp_path):
    """A retry interval of 0 is refused with the table and the key named."""
    instance = Instance(tmp_path)
    instance.settings["imap"] = [{"host": "imap.example.com", "username": "support",
                                  "password": "x", "lease_retry_seconds": 0}]
    instance.write()
    with pytest.raises(ConfigError, match="lease_retry_seconds 0 must be more than 0"):
        load(instance.config_path)


# -- jobs once per tick ----------------------------------------------------------------------

CLAIM = """
import sys
from mailbot.store import Store
from mailbot.store.jobs import claim_tick
store = Store(sys.argv[1], busy_timeout=30)
print("ready", flush=True)
with store.transaction(durable=False):
    won = claim_tick(store, "ticket-jobs", int(sys.argv[2]))
print("ran" if won else "passed", flush=True)
"""


def _waiting_on_locks(url: str) -> int:
    """How many sessions of the database wait for a lock."""
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute("SELECT COUNT(*) FROM pg_stat_activity WHERE datname = "
                            "current_database() AND wait_event_type = 'Lock'").fetchone()[0]


@pytest.mark.both_stores
def test_two_processes_claiming_the_same_tick_run_it_once(shared_store):
    """Two processes ask for the same tick of the ticket jobs at the same moment (both wait
    behind a write that holds the database): one runs it, the other passes; the next tick
    runs again, an older one never."""
    store = Store(shared_store)
    assert jq.claim_tick(store, "ticket-jobs", 1000)
    tick = "2000"
    postgres = shared_store.startswith("postgresql")
    with _held_write_lock(shared_store):
        processes = [subprocess.Popen([sys.executable, "-c", CLAIM, shared_store, tick],
                                      stdout=subprocess.PIPE, text=True, env=process_env())
                     for _ in range(2)]
        for process in processes:
            assert process.stdout.readline().strip() == "ready"
        if postgres:  # both are in their claim, waiting
            wait_until(lambda: _waiting_on_locks(shared_store) >= 2, 15, 0.02, "both wait")
    answers = sorted(p.communicate(timeout=30)[0].strip() for p in processes)
    assert answers == ["passed", "ran"]
    assert not jq.claim_tick(store, "ticket-jobs", 1000)
    assert jq.claim_tick(store, "ticket-jobs", 3000)
    assert jq.claim_tick(store, "daily-jobs", 1000)  # each job has its own ticks
    store.close()


@contextlib.contextmanager
def _held_write_lock(where: str) -> Iterator[None]:
    """The database's write lock held from another connection, like a long transaction."""
    if where.startswith("postgresql"):
        with psycopg.connect(where) as conn:
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK,))
            yield
            conn.rollback()
        return
    conn = sqlite3.connect(sqlite_path(where), isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        yield
    finally:
        conn.close()


# -- outbox claims with SKIP LOCKED ----------------------------------------------------------

NOW = datetime(2025, 3, 3, 9, 0, tzinfo=UTC)


def _queue(store: Store, n: int) -> list[int]:
    """``n`` acknowledgements due now; their row ids."""
    with store.transaction():
        return [oq.enqueue(store, {
            "kind": "acknowledgement", "message_id": f"<ack{i}@example.com>",
            "sender": "support@example.com", "recipients": [f"kunde{i}@kunde.example"],
            "raw": b"Subject: ack\r\n\r\nDanke.\r\n", "next_attempt_at": NOW,
            "created_at": NOW}) for i in range(n)]


def _claim(store: Store, owner: str) -> dict | None:
    with oq.claiming(store):
        return oq.claim_next(store, owner, NOW, NOW, NOW + timedelta(minutes=5))


def test_senders_of_two_nodes_claim_different_rows_at_once_on_postgresql(pg):
    """While one node's claim is still open (its row locked, not committed) and a long write
    holds the database's write lock, the other node claims the next row at once: claims
    neither queue for the write lock nor wait for each other's rows."""
    url = pg.new_database()
    first, second = Store(url, busy_timeout=2), Store(url, busy_timeout=2)
    rows = _queue(first, 3)
    try:
        with _held_write_lock(url), oq.claiming(first):
            mine = oq.claim_next(first, "node-a", NOW, NOW, NOW + timedelta(minutes=5))
            theirs = _claim(second, "node-b")
        assert mine["id"] == rows[0] and theirs["id"] == rows[1]
        assert _claim(first, "node-a")["id"] == rows[2]
        assert _claim(second, "node-b") is None
        owners = {r["id"]: r["claimed_by"] for r in
                  first.rows("SELECT id, claimed_by FROM outbox ORDER BY id")}
        assert owners == {rows[0]: "node-a", rows[1]: "node-b", rows[2]: "node-a"}
    finally:
        first.close()
        second.close()


def test_senders_claiming_in_parallel_never_share_a_row_on_postgresql(pg):
    """Three nodes claim as fast as they can until nothing is left: every row is claimed,
    each by one node."""
    url = pg.new_database()
    stores = [Store(url) for _ in range(3)]
    rows = _queue(stores[0], 60)

    def drain(number: int) -> list[int]:
        claimed = []
        while (row := _claim(stores[number], f"node-{number}")) is not None:
            claimed.append(row["id"])
        return claimed

    try:
        with ThreadPoolExecutor(3) as pool:
            claimed = [row for part in pool.map(drain, range(3)) for row in part]
    finally:
        for store in stores:
            store.close()
    assert sorted(claimed) == rows  # each row once
