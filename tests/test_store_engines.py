"""The store on both engines: SQLite and a real PostgreSQL server of this test session.

What an operator notices: the ``[store] url`` chooses the engine (a bad one is a config
error naming file and key), a mail is one transaction on either (all or nothing, ticket
numbers without gaps), a busy or unreachable database is a temporary failure (the MTA
keeps the mail), and a lost connection heals by itself.
"""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from daemon_util import Instance
from mails import build_mail
from servers import free_port, wait_until

from mailbot.store import Store, TemporaryStoreError
from mailbot.store import tickets as tq
from mailbot.store.dialect import to_pyformat

pytestmark = pytest.mark.both_stores
NOW = datetime(2025, 3, 3, 9, 0, tzinfo=UTC)


@pytest.fixture
def store_where(store_url, tmp_path) -> str:
    """What a Store is opened on: a new SQLite file or a fresh PostgreSQL database."""
    return store_url or f"sqlite://{tmp_path}/db/mailbot.sqlite3"


@pytest.fixture
def store(store_where):
    """A Store on the engine of this test."""
    opened = Store(store_where, busy_timeout=0.3)
    yield opened
    opened.close()


def _ticket(store: Store, number: str) -> int:
    return store.insert("tickets", {"number": number, "subject": "s", "status": "new",
                                    "priority": "normal", "language": "de",
                                    "created_at": NOW, "updated_at": NOW, "entitled": True})


def test_a_failed_transaction_leaves_nothing_and_gives_its_ticket_number_back(store):
    """A mail that fails mid-transaction leaves no row, and the next ticket of the day gets
    the number the failed one had taken: numbers stay gap-free."""
    with store.transaction():
        assert tq.next_counter(store, "20250303") == 1
        _ticket(store, "20250303-1")
    with pytest.raises(RuntimeError), store.transaction():
        assert tq.next_counter(store, "20250303") == 2
        _ticket(store, "20250303-2")
        with store.transaction():  # nested: part of the one around it
            tq.add_event(store, tq.by_number(store, "20250303-2")["id"], "x", {}, NOW)
        raise RuntimeError("the mail broke")
    assert tq.by_number(store, "20250303-2") is None
    with store.transaction():
        assert tq.next_counter(store, "20250303") == 2
    assert tq.by_number(store, "20250303-1")["entitled"] == 1


def test_a_second_writer_waits_for_the_first_then_gives_up_as_temporary(store, store_where):
    """While one connection (another process, another node) holds a write transaction,
    a second one waits at most its busy timeout and then fails as temporary, never as a
    broken mail; once the first commits the second writes."""
    other = Store(store_where, busy_timeout=0.3)
    try:
        with store.transaction():
            _ticket(store, "held")
            with pytest.raises(TemporaryStoreError), other.transaction():
                _ticket(other, "waiting")
        with other.transaction():
            _ticket(other, "waiting")
        assert {t["number"] for t in tq.listing(store, ("new",))} == {"held", "waiting"}
    finally:
        other.close()


def test_search_and_listing_ignore_case_and_take_all_without_a_limit(store):
    """Agents search any case and list every ticket; the same on both engines."""
    with store.transaction():
        for n in range(3):
            _ticket(store, f"n{n}")
        tq.update(store, tq.by_number(store, "n1")["id"], subject="Drucker 100% kaputt")
    assert [t["number"] for t in tq.search(store, "drucker 100%", 10)] == ["n1"]
    assert [t["number"] for t in tq.search(store, "100_", 10)] == []
    assert len(tq.listing(store, ("new",))) == 3
    assert len(tq.listing(store, ("new",), limit=2)) == 2


def test_the_work_list_holds_the_open_tickets_in_work_order(store):
    """The agents' work list (read through its own index on both engines) holds new, open
    and waiting tickets, urgent and entitled first, and pages like the full listing."""
    with store.transaction():
        for n, (status, priority, entitled) in enumerate([
                ("open", "low", 0), ("closed", "urgent", 1), ("waiting", "urgent", 0),
                ("new", "urgent", 1), ("resolved", "high", 1), ("open", "normal", 1)]):
            _ticket(store, f"w{n}")
            tq.update(store, tq.by_number(store, f"w{n}")["id"], status=status,
                      priority=priority, entitled=entitled)
    assert [t["number"] for t in tq.work_list(store)] == ["w3", "w2", "w5", "w0"]
    assert [t["number"] for t in tq.work_list(store, limit=2, offset=1)] == ["w2", "w5"]


def test_a_mail_is_filed_through_the_cli_on_the_configured_store(tmp_path, store_url):
    """`mailbot ingest` files into the database of ``[store] url`` (the desk's tests cover
    the pipeline; this is the config path an operator writes)."""
    instance = Instance(tmp_path)
    if store_url:
        instance.update("store", url=store_url)
    result = instance.cli("ingest", input=build_mail(subject="Über den Store"))
    assert result.exit_code == 0, result.output
    assert [t["subject"] for t in instance.tickets()] == ["Über den Store"]
    assert instance.count("outbox", "kind = 'acknowledgement'") == 1


def test_migrate_works_on_postgresql_and_backup_points_to_its_own_tools(tmp_path, pg):
    """`mailbot migrate` acts on the configured store; `mailbot backup` copies a data
    directory with its SQLite file and refuses a PostgreSQL store, saying what to use."""
    instance = Instance(tmp_path)
    instance.update("store", url=pg.new_database())
    assert instance.cli("ingest", input=build_mail()).exit_code == 0
    checked = instance.cli("migrate", "--check")
    assert checked.exit_code == 0 and "as this mailbot needs" in checked.output
    refused = instance.cli("backup", str(tmp_path / "copy"))
    assert refused.exit_code == 78 and "pg_dump" in refused.output
    assert not (tmp_path / "copy").exists()


@pytest.mark.parametrize(("url", "reason"), [
    ("mysql://db/mailbot", "sqlite:///"),
    ("sqlite://relative.sqlite3", "absolute path"),
    ("postgresql:///mailbot", "names no host"),
    ("postgresql://db.example:99999/mailbot", "not a PostgreSQL URL"),
    ("postgresql://db.example:5432", "names no database"),
])
def test_a_bad_store_url_is_a_config_error_naming_file_and_key(tmp_path, url, reason):
    """A [store] url mailbot cannot open stops every command with exit 78, naming the
    file, the key and why."""
    instance = Instance(tmp_path)
    instance.update("store", url=url)
    result = instance.cli("tickets", "list")
    assert result.exit_code == 78
    assert str(instance.config_path) in result.output
    assert "store.url" in result.output and reason in result.output


def test_the_password_may_come_from_the_environment(tmp_path, pg, monkeypatch):
    """``password = { env = ... }`` completes a URL without one; a wrong password is a
    temporary failure of `mailbot ingest` (exit 75: the MTA keeps the mail)."""
    parts = urlsplit(pg.new_database())
    bare = urlunsplit(parts._replace(netloc=f"{parts.username}@{parts.hostname}:{parts.port}"))
    instance = Instance(tmp_path)
    instance.update("store", url=bare, password={"env": "MAILBOT_TEST_PG_PASSWORD"})
    monkeypatch.setenv("MAILBOT_TEST_PG_PASSWORD", parts.password)
    assert instance.cli("ingest", input=build_mail()).exit_code == 0
    monkeypatch.setenv("MAILBOT_TEST_PG_PASSWORD", "wrong")
    assert instance.cli("ingest", input=build_mail(subject="zwei")).exit_code == 75


def test_a_database_that_is_down_is_a_temporary_failure(tmp_path):
    """Nothing listening at the URL: `mailbot ingest` exits 75, nothing is lost."""
    instance = Instance(tmp_path)
    instance.update("store", url=f"postgresql://u:p@127.0.0.1:{free_port()}/mailbot")
    result = instance.cli("ingest", input=build_mail())
    assert result.exit_code == 75


def _end_session(pg, pid: int) -> None:
    """The server ends session ``pid`` (as a restart or an idle timeout would), and it is gone."""
    with pg.admin() as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        wait_until(lambda: not admin.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s",
                                             (pid,)).fetchall(), message="the session ended")


def test_a_session_the_server_ends_fails_its_transaction_and_the_next_call_works(pg):
    """The server ends the store's session (restart, failover, idle timeout): a transaction
    that meets it is a temporary failure (its mail is retried); an idle connection it
    ended is replaced before a statement meets it, so the next calls work."""
    store = Store(pg.new_database())
    try:
        with pytest.raises(TemporaryStoreError), store.transaction():
            _end_session(pg, store.row("SELECT pg_backend_pid() AS pid")["pid"])
            store.row("SELECT 1 AS x")
        assert store.row("SELECT 1 AS x") == {"x": 1}
        _end_session(pg, store.row("SELECT pg_backend_pid() AS pid")["pid"])
        assert store.row("SELECT 1 AS x") == {"x": 1}
    finally:
        store.close()


def test_a_new_empty_postgresql_database_gets_the_schema_once(pg):
    """Nodes starting together on an empty database: one creates the schema, every one
    finds it current."""
    url = pg.empty_database()
    stores = [Store(url) for _ in range(3)]
    try:
        assert all(s.schema_version().current for s in stores)
        with psycopg.connect(url) as conn:
            names = [r[0] for r in conn.execute("SELECT name FROM mailbot_migrations")]
        assert len(names) == len(set(names)) == stores[0].schema_version().needed
    finally:
        for s in stores:
            s.close()


def test_sqlite_placeholders_become_psycopg_ones_outside_quotes():
    """The one rewrite every PostgreSQL statement gets: ``?``/``:name`` become psycopg's,
    ``%`` is doubled, quoted text and ``::`` casts keep their colons and question marks."""
    assert to_pyformat("SELECT 'a?:b%' || x::text FROM t WHERE a = ? AND b LIKE :p") == \
        "SELECT 'a?:b%%' || x::text FROM t WHERE a = %s AND b LIKE %(p)s"
