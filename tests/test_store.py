"""The SQLite store on a real file: migrations, WAL, foreign keys, atomicity, ticket numbers."""

from __future__ import annotations

import sqlite3
import stat
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from mails import build_mail

from mailbot.context import Context, open_context
from mailbot.inbound import pipeline
from mailbot.inbound.source import TemporaryFailure
from mailbot.settings.config import Config, ServiceConfig, SupportConfig
from mailbot.store import Store, TemporaryStoreError
from mailbot.store.schema import migrations


def make_context(data_dir: Path, clock=None) -> Context:
    """A context on its own connection to the database in ``data_dir``."""
    config = Config(service=ServiceConfig(data_dir=str(data_dir)),
                    support=SupportConfig(signing_secret="store-test"))
    return open_context(config, clock) if clock else open_context(config)


def test_a_new_database_file_is_migrated_with_wal_and_foreign_keys(tmp_path):
    """The first start creates the schema in WAL mode with foreign keys enforced."""
    store = Store(tmp_path / "db" / "mailbot.sqlite3")
    assert store.row("PRAGMA journal_mode")["journal_mode"] == "wal"
    assert store.row("PRAGMA foreign_keys")["foreign_keys"] == 1
    assert migrations.applied(store.db)
    assert migrations.pending(store.db) == []
    assert {"tickets", "messages", "outbox", "ingest", "quarantine"} <= \
        set(store.db.table_names())
    store.close()


def test_stores_opened_at_once_on_a_new_file_create_the_schema_once(tmp_path):
    """Processes starting together on a new database: one migrates, the others go on."""
    path = tmp_path / "new" / "mailbot.sqlite3"
    count = 6
    start = threading.Barrier(count)

    def open_store(_: int) -> Store:
        start.wait(10)
        return Store(path)

    with ThreadPoolExecutor(count) as pool:
        stores = list(pool.map(open_store, range(count)))
    names = [m.name for m in migrations.applied(stores[0].db)]
    assert names and len(names) == len(set(names))
    assert all(migrations.pending(store.db) == [] for store in stores)
    for store in stores:
        store.close()


def test_the_database_is_private_to_its_owner(tmp_path):
    """The database and its WAL are 0600 in a 0700 directory, whatever the umask."""
    store = Store(tmp_path / "data" / "mailbot.sqlite3")
    with store.transaction():
        store.execute("INSERT INTO ticket_counters(day, counter) VALUES ('20260101', 1)")
    for path in (store.path, store.path.parent, store.path.with_name("mailbot.sqlite3-wal")):
        assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0, path
    store.close()


def test_reopening_applies_each_migration_only_once(tmp_path):
    """Restarting keeps the data and does not run migrations again."""
    path = tmp_path / "mailbot.sqlite3"
    first = Store(path)
    with first.transaction():
        first.execute("INSERT INTO ticket_counters(day, counter) VALUES ('20260101', 3)")
    first.close()
    second = Store(path)
    assert second.row("SELECT counter FROM ticket_counters")["counter"] == 3
    names = [m.name for m in migrations.applied(second.db)]
    assert len(names) == len(set(names))
    second.close()


def test_foreign_keys_are_enforced(tmp_path):
    """A message for a ticket that does not exist is refused."""
    store = Store(tmp_path / "mailbot.sqlite3")
    with pytest.raises(sqlite3.IntegrityError), store.transaction():
        store.insert("messages", {"ticket_id": 999, "direction": "in", "created_at": "x"})
    store.close()


def test_a_failed_transaction_leaves_nothing_behind(tmp_path):
    """When filing fails half-way, none of its writes are kept."""
    store = Store(tmp_path / "mailbot.sqlite3")
    with pytest.raises(RuntimeError), store.transaction():
        store.execute("INSERT INTO ticket_counters(day, counter) VALUES ('20260101', 1)")
        raise RuntimeError("crash in the middle")
    assert store.rows("SELECT * FROM ticket_counters") == []
    store.close()


def test_a_locked_database_is_a_temporary_failure(tmp_path):
    """While another process holds the write lock, a write fails as temporary (retry later)."""
    path = tmp_path / "mailbot.sqlite3"
    store = Store(path, busy_timeout=0.1)
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(TemporaryStoreError), store.transaction():
            store.execute("INSERT INTO ticket_counters(day, counter) VALUES ('d', 1)")
        assert store.rows("SELECT * FROM ticket_counters") == []  # reads still work
    finally:
        other.execute("ROLLBACK")
        other.close()
        store.close()


def test_a_writer_waiting_for_another_thread_gives_up_after_the_busy_timeout(tmp_path):
    """The busy timeout also bounds the wait for this process's connection, held by a thread."""
    store = Store(tmp_path / "mailbot.sqlite3", busy_timeout=0.2)
    holding, release = threading.Event(), threading.Event()
    waited: list[object] = []

    def hold() -> None:
        with store.transaction():
            holding.set()
            release.wait(30)

    def write() -> None:
        try:
            with store.transaction():
                store.execute("INSERT INTO ticket_counters(day, counter) VALUES ('d', 1)")
            waited.append("written")
        except TemporaryStoreError as exc:
            waited.append(exc)

    holder, writer = threading.Thread(target=hold), threading.Thread(target=write)
    holder.start()
    try:
        assert holding.wait(10)
        writer.start()
        writer.join(20)
        assert not writer.is_alive(), "the writer waited far beyond its busy timeout"
        assert [type(w) for w in waited] == [TemporaryStoreError]
    finally:
        release.set()
        holder.join(10)
        writer.join(10)
        store.close()


def test_a_full_database_is_a_temporary_failure_and_the_mail_is_filed_once_after(tmp_path):
    """SQLITE_FULL while filing: nothing is filed or quarantined; with room, filed once."""
    ctx = make_context(tmp_path / "data")
    raw = build_mail(subject="Platte voll", text="Ein langer Bericht. " * 2000)  # needs pages
    pages = ctx.store.row("PRAGMA page_count")["page_count"]
    ctx.store.execute(f"PRAGMA max_page_count = {pages}")  # the database cannot grow
    with pytest.raises(TemporaryFailure, match="full"):
        pipeline.ingest(ctx, raw, "test")
    assert ctx.store.rows("SELECT * FROM quarantine") == []
    assert ctx.store.rows("SELECT * FROM tickets") == []
    ctx.store.execute("PRAGMA max_page_count = 1073741823")  # space freed
    assert pipeline.ingest(ctx, raw, "test").status == "created"
    assert pipeline.ingest(ctx, raw, "test").status == "duplicate"
    assert len(ctx.store.rows("SELECT * FROM tickets")) == 1
    ctx.store.close()


def test_ticket_numbers_stay_unique_and_increasing_with_two_writers(tmp_path):
    """Daemon and CLI filing at once never hand out the same ticket number twice."""
    writers = [make_context(tmp_path / "data") for _ in range(2)]
    per_writer = 60

    def file_mails(ctx: Context, name: str) -> None:
        for i in range(per_writer):
            sender = (f"Kunde {name}{i}", f"{name}{i}@kunde.example")
            outcome = pipeline.ingest(ctx, build_mail(subject=f"{name} {i}", sender=sender),
                                      "test")
            assert outcome.status == "created", outcome

    threads = [threading.Thread(target=file_mails, args=(ctx, f"w{n}"))
               for n, ctx in enumerate(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    numbers = [r["number"] for r in writers[0].store.rows("SELECT number FROM tickets ORDER BY id")]
    assert len(numbers) == 2 * per_writer
    assert numbers == sorted(set(numbers))
    for ctx in writers:
        ctx.store.close()


def test_ticket_numbers_carry_the_local_date_and_restart_counting_each_day(tmp_path):
    """Numbers read like 202611240001: the Berlin date of receipt plus a daily counter."""
    now = [datetime(2026, 11, 24, 22, 30, tzinfo=UTC)]  # 23:30 in Berlin
    ctx = make_context(tmp_path / "data", clock=lambda: now[0])
    numbers = []
    for i, step in enumerate([timedelta(0), timedelta(minutes=20), timedelta(hours=2)]):
        now[0] += step
        raw = build_mail(subject=f"Mail {i}", sender=(f"K{i}", f"k{i}@kunde.example"))
        numbers.append(pipeline.ingest(ctx, raw, "test").ticket_number)
    assert numbers == ["202611240001", "202611240002", "202611250001"]
    ctx.store.close()
