"""The PostgreSQL store's pool of connections: the threads of one process do not wait for
each other's connection, writers still queue for the one write lock, a pool that stays
taken is a temporary failure, and a connection the server ended is replaced unnoticed.

Real parts: the suite's PostgreSQL server; threads held at points the test controls with
Events, and what the server says about the sessions (pg_locks, pg_stat_activity).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime
from urllib.parse import urlsplit

import pytest
from daemon_util import Instance
from servers import wait_until

from mailbot.context import open_context
from mailbot.settings.config import load
from mailbot.store import Store, TemporaryStoreError
from mailbot.store import tickets as tq

NOW = datetime(2025, 3, 3, 9, 0, tzinfo=UTC)
DAY = "20250303"


def _ticket(store: Store, number: str) -> int:
    return store.insert("tickets", {"number": number, "subject": "s", "status": "new",
                                    "priority": "normal", "language": "de",
                                    "created_at": NOW, "updated_at": NOW})


def _numbers(store: Store) -> set[str]:
    return {t["number"] for t in store.rows("SELECT number FROM tickets")}


@contextmanager
def held_open(store: Store, write: Callable[[Store], object]) -> Iterator[Future]:
    """A write transaction in a thread of its own, kept open until the block ends (then it
    commits); the block starts once ``write`` ran inside it."""
    written, release = threading.Event(), threading.Event()

    def writer() -> object:
        with store.transaction():
            result = write(store)
            written.set()
            release.wait()
        return result

    with ThreadPoolExecutor(1) as pool:
        done = pool.submit(writer)
        try:
            wait_until(lambda: written.is_set() or done.done(), message="the writer wrote")
            assert written.is_set(), done.result()
            yield done
        finally:
            release.set()


def _database(url: str) -> str:
    return urlsplit(url).path.lstrip("/")


@pytest.fixture
def url(pg) -> str:
    return pg.new_database()


def test_a_read_takes_another_connection_while_a_thread_holds_a_write_transaction(url):
    """A customer's page is not kept waiting behind a mail's commit: while one thread holds
    an open write transaction, another thread's read is answered at once, with what was
    committed (not the open transaction's rows); after the commit it sees them."""
    store = Store(url, busy_timeout=2)
    try:
        _ticket(store, "committed")
        with held_open(store, lambda s: _ticket(s, "open")) as writer:
            assert _numbers(store) == {"committed"}
        writer.result()
        assert _numbers(store) == {"committed", "open"}
    finally:
        store.close()


def test_a_second_writer_thread_waits_for_the_first_writers_commit_then_writes(url):
    """Writers of one process still take turns: a second thread's transaction waits while
    the first is open, holding no connection meanwhile (with two, a read still finds one
    free), then runs after the commit: it sees the first one's row."""
    store = Store(url, busy_timeout=10, pool_size=2)
    try:
        with ThreadPoolExecutor(1) as pool:
            with held_open(store, lambda s: _ticket(s, "first")):
                second = pool.submit(_write_second, store)
                assert _numbers(store) == set()
            assert second.result() == {"first"}
        assert _numbers(store) == {"first", "second"}
    finally:
        store.close()


def test_a_writer_waits_at_most_the_busy_timeout_for_another_threads_write(url):
    """While one thread's write transaction is open, another thread's write is a temporary
    failure after the busy timeout ("database busy": the mail is tried again, never
    quarantined); after the commit it writes, and sees what the first wrote."""
    store = Store(url, busy_timeout=0.3)
    try:
        with held_open(store, lambda s: tq.next_counter(s, DAY)) as first, \
                pytest.raises(TemporaryStoreError, match="database busy"):
            _next_counter_in_a_transaction(store)
        assert first.result() == 1
        assert _next_counter_in_a_transaction(store) == 2
    finally:
        store.close()


def test_a_writer_of_another_node_waits_at_the_server_for_the_commit_then_writes(url, pg):
    """The write lock is the cluster's: another node's writer (another store on the same
    database) waits at the server while the first transaction is open, then writes after
    its commit and sees it."""
    store, other = Store(url, busy_timeout=10), Store(url, busy_timeout=10)
    try:
        with ThreadPoolExecutor(1) as pool:
            with held_open(store, lambda s: _ticket(s, "first")):
                second = pool.submit(_write_second, other)
                wait_until(lambda: _waiting_for_a_lock(pg, url),
                           message="the other node's writer waits for the write lock")
            assert second.result() == {"first"}
        assert _numbers(store) == {"first", "second"}
    finally:
        store.close()
        other.close()


def _next_counter_in_a_transaction(store: Store) -> int:
    with store.transaction():
        return tq.next_counter(store, DAY)


def _write_second(store: Store) -> set[str]:
    """Write the ticket "second" in a transaction; the tickets it saw there before."""
    with store.transaction():
        seen = _numbers(store)
        _ticket(store, "second")
    return seen


def _waiting_for_a_lock(pg, url: str) -> bool:
    """Whether a session of the database waits for an advisory lock (the write lock)."""
    with pg.admin() as admin:
        return admin.execute("SELECT count(*) FROM pg_locks l JOIN pg_database d "
                             "ON d.oid = l.database WHERE d.datname = %s AND NOT l.granted "
                             "AND l.locktype = 'advisory'", (_database(url),)).fetchone()[0] > 0


def test_a_pool_taken_longer_than_the_busy_timeout_is_a_temporary_failure(url):
    """With ``pool_size`` 1, a thread that needs a connection while another holds the only
    one in a transaction waits the busy timeout, then fails as temporary ("database busy";
    the mail is tried again later, never quarantined); once it is free, reads work."""
    store = Store(url, busy_timeout=0.3, pool_size=1)
    try:
        with held_open(store, lambda s: _ticket(s, "open")), \
                pytest.raises(TemporaryStoreError, match="database busy"):
            store.rows("SELECT number FROM tickets")
        assert _numbers(store) == {"open"}
    finally:
        store.close()


def test_connections_the_server_ended_are_replaced_before_the_next_statement(url, pg):
    """The server ends every session of the store (restart, failover, idle timeout), the
    four connections of its pool among them: the next statement works at once on a new
    session (not after trying the dead ones in turn, a backoff each), and so do the ones
    after it and a transaction."""
    store = Store(url, busy_timeout=2, pool_size=4)
    try:
        _ticket(store, "before")
        _use_connections(store, 4)
        ended = _end_sessions(pg, url)
        assert len(ended) >= 4
        assert _numbers(store) == {"before"}
        with store.transaction():
            _ticket(store, "after")
        assert _numbers(store) == {"before", "after"}
        assert not ended & _sessions(pg, url)
    finally:
        store.close()


def _use_connections(store: Store, count: int) -> None:
    """Make the store's pool open ``count`` connections: as many threads in a transaction
    (without the write lock) at once."""
    together = threading.Barrier(count + 1, timeout=10)

    def hold() -> None:
        with store.row_locked():
            store.rows("SELECT 1")
            together.wait()

    with ThreadPoolExecutor(count) as pool:
        holders = [pool.submit(hold) for _ in range(count)]
        together.wait()
    for holder in holders:
        holder.result()


def _sessions(pg, url: str) -> set[int]:
    """The backend pids of the store's connections to the database."""
    with pg.admin() as admin:
        return {r[0] for r in admin.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s AND application_name = "
            "'mailbot'", (_database(url),))}


def _end_sessions(pg, url: str) -> set[int]:
    """End the store's sessions as the server does; returns once they are gone."""
    pids = _sessions(pg, url)
    with pg.admin() as admin:
        for pid in pids:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
    wait_until(lambda: not pids & _sessions(pg, url), message="the sessions ended")
    return pids


@pytest.mark.parametrize("size", [0, -2])
def test_a_pool_size_below_one_is_a_config_error_naming_the_key(tmp_path, size):
    """``[store] pool_size`` under 1 stops every command with exit 78, naming file and key."""
    instance = Instance(tmp_path)
    instance.update("store", pool_size=size)
    result = instance.cli("tickets", "list")
    assert result.exit_code == 78
    assert str(instance.config_path) in result.output
    assert "store.pool_size" in result.output and "use 1 or more" in result.output


def test_the_configured_pool_size_is_the_stores(tmp_path, url):
    """``[store] pool_size = 1`` reaches the daemon's store: with its one connection held in
    a transaction, another thread's read is a temporary failure after the busy timeout."""
    instance = Instance(tmp_path)
    instance.update("store", url=url, pool_size=1)
    instance.update("service", busy_timeout_seconds=0.3)
    ctx = open_context(load(instance.config_path))
    try:
        with held_open(ctx.store, lambda s: _ticket(s, "open")), \
                pytest.raises(TemporaryStoreError, match="database busy"):
            _numbers(ctx.store)
    finally:
        ctx.store.close()
