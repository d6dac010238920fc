"""The data's lifecycle: `mailbot migrate`, `backup` and `restore`, with a real daemon running."""

from __future__ import annotations

import asyncio
import json
import re
import smtplib
import sqlite3
import stat
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer
from daemon_util import DaemonProcess, Instance, rows_read
from mails import CUSTOMER, SUPPORT, build_mail
from sqlite_utils import Database

from mailbot.context import Context, open_context
from mailbot.inbound import pipeline
from mailbot.settings.config import load
from mailbot.store import schema
from mailbot.tickets import actions, jobs
from mailbot.web.server import make_app

TUESDAY_10 = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)  # 10:00 in Berlin, business hours


OLD_SCHEMA = 6  # what an older mailbot left: the first six migrations


def old_database(path: Path, applied: int = OLD_SCHEMA) -> None:
    """A database as an older mailbot left it: only its first ``applied`` migrations."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    db = Database(path)
    schema.migrations.apply(db, stop_before=schema.known()[applied])
    db.close()


def needs() -> str:
    """The sentence every command says about a database at :data:`OLD_SCHEMA`."""
    return f"the database is at schema {OLD_SCHEMA}, this mailbot needs " \
        f"{len(schema.known())}: run `mailbot migrate`"


def log_file(number: int) -> tuple[str, bytes]:
    """The attachment of the ``number``-th mail: a name and bytes of its own."""
    return f"log-{number}.txt", f"Fehlerprotokoll {number}\n".encode() * 40


def mail_with_log(number: int) -> bytes:
    """A customer's mail with its own log file attached."""
    name, payload = log_file(number)
    return build_mail(subject=f"Kasse {number} startet nicht",
                      attachments=((name, "text/plain", payload),))


def new_instance(root: Path) -> Instance:
    """A mailbot installation in a new folder ``root``."""
    root.mkdir(parents=True)
    return Instance(root)


def filed_instance(root: Path) -> Instance:
    """An instance whose database holds one ticket with an attachment (filed by `ingest`)."""
    instance = new_instance(root)
    mail = root / "mail.eml"
    mail.write_bytes(mail_with_log(0))
    filed = instance.run("ingest", str(mail))
    assert filed.returncode == 0, filed.stderr
    return instance


class MailStream:
    """Customer mails delivered over SMTP, one after another, until stopped."""

    def __init__(self, instance: Instance) -> None:
        self.instance = instance
        self.sent = 0
        self.halt = threading.Event()
        self.pool = ThreadPoolExecutor(1)
        self.done = self.pool.submit(self._deliver)

    def _deliver(self) -> None:
        with smtplib.SMTP(*self.instance.listener, timeout=10) as client:
            while not self.halt.is_set():
                client.sendmail(CUSTOMER[1], [SUPPORT], mail_with_log(self.sent))
                self.sent += 1

    def stop(self) -> None:
        """Stop after the mail in hand (each one counted was accepted: 250, committed);
        an error in delivering fails the test here."""
        self.halt.set()
        self.done.result(30)
        self.pool.shutdown()


async def _downloads(instance: Instance, number: str) -> dict[str, bytes]:
    ctx = open_context(load(instance.config_path))
    try:
        async with TestClient(TestServer(make_app(ctx))) as client:
            base = f"/t/{ctx.signer.link_token('ticket', number)}"
            page = await (await client.get(base)).text()
            links = re.findall(r'<a href="([^"]+/a/\d+)" download>([^<]+)</a>', page)
            return {name: await (await client.get(f"/t/{href}")).read()
                    for href, name in links}
    finally:
        ctx.store.close()


def downloads(instance: Instance, number: str) -> dict[str, bytes]:
    """Every attachment the customer's ticket page offers, downloaded through its link."""
    return asyncio.run(_downloads(instance, number))


def modes(root: Path) -> set[tuple[str, int]]:
    """The kinds and permission bits of everything under ``root``."""
    return {("dir" if p.is_dir() else "file", stat.S_IMODE(p.stat().st_mode))
            for p in root.rglob("*")}


def test_a_backup_taken_while_the_daemon_files_mail_restores_the_same_tickets(tmp_path):
    """`mailbot backup` beside a daemon that keeps filing mail is consistent and verified;
    restored into a new data directory, its tickets read as they did, attachments too."""
    live, fresh = new_instance(tmp_path / "live"), new_instance(tmp_path / "fresh")
    dest = tmp_path / "backups" / "monday"
    with live.start():
        stream = MailStream(live)
        live.wait_tickets(3, timeout=30)
        before = stream.sent
        made = live.run("backup", str(dest))
        during = stream.sent - before
        stream.stop()
    assert made.returncode == 0, made.stderr
    assert b"verified" in made.stdout
    assert during > 0, "no mail was filed while the backup ran"
    assert modes(dest) == {("dir", 0o700), ("file", 0o600)}
    manifest = json.loads((dest / "manifest.json").read_bytes())

    restored = fresh.cli("restore", str(dest))
    assert restored.exit_code == 0, restored.output
    restored_list = fresh.tickets()
    numbers = [t["number"] for t in restored_list]
    assert len(numbers) == manifest["counts"]["tickets"] >= 3
    assert restored_list == [t for t in live.tickets() if t["number"] in numbers]
    for number in (numbers[0], numbers[-1]):
        assert fresh.ticket(number) == live.ticket(number)
        [attachment] = fresh.ticket(number)["messages"][0]["attachments"]
        name = attachment["filename"]
        assert downloads(fresh, number) == {name: log_file(int(name[4:-4]))[1]}


@pytest.mark.parametrize("damage", ["attachment", "database"])
def test_restore_refuses_a_damaged_backup_and_says_why(tmp_path, damage):
    """A flipped bit in an attachment or a truncated database: restore names the file and
    what is wrong with it, and writes nothing."""
    live = filed_instance(tmp_path / "live")
    dest = tmp_path / "backup"
    assert live.cli("backup", str(dest)).exit_code == 0
    if damage == "attachment":
        [target] = (dest / "files").glob("*/*")
        damaged = bytearray(target.read_bytes())
        damaged[10] ^= 1
        target.write_bytes(bytes(damaged))
        reason = f"files/{target.parent.name}/{target.name}: damaged"
    else:
        target = dest / "mailbot.sqlite3"
        size = target.stat().st_size
        with open(target, "r+b") as handle:
            handle.truncate(size // 2)
        reason = f"mailbot.sqlite3: {size // 2} bytes, the manifest says {size} (truncated"
    fresh = new_instance(tmp_path / "fresh")
    refused = fresh.cli("restore", str(dest))
    assert refused.exit_code == 65
    assert reason in refused.stderr
    assert not fresh.db_path.exists()


def test_backup_and_restore_never_overwrite(tmp_path):
    """A backup goes only into a new or empty folder; a restore only into an empty data
    directory, or with --force, which moves the old contents aside instead of deleting."""
    live = filed_instance(tmp_path / "live")
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("mine")
    refused = live.cli("backup", str(taken))
    assert refused.exit_code == 73 and "not an empty folder" in refused.stderr
    assert [p.name for p in taken.iterdir()] == ["notes.txt"]
    assert not (tmp_path / "taken.partial").exists()

    empty = tmp_path / "empty"
    empty.mkdir()
    assert live.cli("backup", str(empty)).exit_code == 0
    tickets = live.tickets()
    refused = live.cli("restore", str(empty))
    assert refused.exit_code == 73 and "is not empty" in refused.stderr
    forced = live.cli("restore", "--force", str(empty))
    assert forced.exit_code == 0, forced.output
    [aside] = live.db_path.parent.glob("replaced-*")
    assert str(aside) in forced.stdout
    assert {"mailbot.sqlite3", "spool", "files"} <= {p.name for p in aside.iterdir()}
    assert live.tickets() == tickets


def test_migrate_and_restore_are_refused_while_the_daemon_runs(tmp_path):
    """The daemon holds its data directory: `migrate` and `restore` say who runs there and
    change nothing; `migrate --check` only reads and answers."""
    live = Instance(tmp_path)
    backup = tmp_path / "backup"
    with live.start() as daemon:
        assert live.cli("backup", str(backup)).exit_code == 0
        holder = f"in use by mailbot run (pid {daemon.process.pid}): stop it first"
        for args in (("migrate",), ("restore", "--force", str(backup))):
            refused = live.cli(*args)
            assert (refused.exit_code, holder in refused.stderr) == (75, True), args
        assert live.cli("migrate", "--check").exit_code == 0
        assert not list(live.db_path.parent.glob("replaced-*"))
    done = live.cli("migrate")
    assert done.exit_code == 0 and "nothing to migrate" in done.stdout


def test_the_daemon_refuses_an_old_schema_until_it_is_migrated(tmp_path):
    """An older database stops `mailbot run` with exit 78 (systemd does not restart it) and
    the sentence saying what to do; after `mailbot migrate` it starts and files mail."""
    live = Instance(tmp_path)
    old_database(live.db_path)
    daemon = DaemonProcess(live.config_path, live.listener)
    daemon.start(wait=False)
    assert daemon.process.wait(60) == 78
    assert needs() in daemon.log()
    pending = live.cli("migrate", "--check")
    assert pending.exit_code == 1 and needs() in pending.stdout
    migrated = live.cli("migrate")
    assert migrated.exit_code == 0
    assert f"from schema {OLD_SCHEMA} to {len(schema.known())}" in migrated.stdout
    assert live.cli("migrate", "--check").exit_code == 0
    with live.start():
        with smtplib.SMTP(*live.listener, timeout=10) as client:
            client.sendmail(CUSTOMER[1], [SUPPORT], mail_with_log(1))
        live.wait_tickets(1)


def test_ingest_on_an_old_schema_defers_the_mail_until_migrated(tmp_path):
    """`mailbot ingest` exits 75 on an older database (the MTA keeps the mail and retries),
    logs why, and files the same mail once migrated."""
    live = Instance(tmp_path)
    old_database(live.db_path)
    raw = mail_with_log(7)
    deferred = live.run("ingest", "--verbose", input=raw)
    assert deferred.returncode == 75
    assert needs() in deferred.stderr.decode()
    assert live.count("ingest") == 0
    assert live.cli("migrate").exit_code == 0
    retried = live.run("ingest", input=raw)
    assert retried.returncode == 0, retried.stderr
    assert [t["subject"] for t in live.tickets()] == ["Kasse 7 startet nicht"]


def test_commands_refuse_an_old_schema_and_a_restored_old_backup_asks_for_migrate(tmp_path):
    """No command migrates behind the operator's back: they exit 78 with the sentence; an
    old backup restores and says to migrate."""
    old = new_instance(tmp_path / "old")
    old_database(old.db_path)
    refused = old.cli("tickets", "list")
    assert refused.exit_code == 78 and needs() in refused.stderr
    backup = tmp_path / "backup"
    assert old.cli("backup", str(backup)).exit_code == 0
    fresh = new_instance(tmp_path / "fresh")
    restored = fresh.cli("restore", str(backup))
    assert restored.exit_code == 0
    assert needs().replace("the database", "the restored database") in restored.stdout
    assert fresh.cli("tickets", "list").exit_code == 78
    assert fresh.cli("migrate").exit_code == 0
    assert fresh.cli("tickets", "list").exit_code == 0


def back_to_schema_13(db_path) -> None:
    """The database as the mailbot before m014_told_stages left it."""
    with sqlite3.connect(db_path) as conn:
        conn.execute("DROP INDEX tickets_remind_at")
        for deadline in ("first_response", "update"):  # m013's indexes, which m014 replaced
            conn.execute(f"DROP INDEX tickets_{deadline}_due")
        conn.execute("CREATE INDEX tickets_first_response_due ON tickets(first_response_due, "
                     "id) WHERE status IN ('new', 'open') AND first_response_at IS NULL")
        conn.execute("CREATE INDEX tickets_update_due ON tickets(update_due, id) "
                     "WHERE status IN ('new', 'open') AND update_due IS NOT NULL")
        for column in ("first_response_told", "update_told", "remind_at"):
            conn.execute(f"ALTER TABLE tickets DROP COLUMN {column}")
        conn.execute("DELETE FROM _sqlite_migrations WHERE name = 'm014_told_stages'")
    conn.close()


def back_to_schema_12(db_path) -> None:
    """The database as the mailbot before m013_job_lookups left it."""
    back_to_schema_13(db_path)
    with sqlite3.connect(db_path) as conn:
        for index in ("tickets_status_since", "tickets_first_response_due",
                      "tickets_update_due", "events_status_pending", "attachments_sha256"):
            conn.execute(f"DROP INDEX {index}")
        conn.execute("ALTER TABLE tickets DROP COLUMN status_since")
        conn.execute("DELETE FROM _sqlite_migrations WHERE name = 'm013_job_lookups'")
    conn.close()


def upgraded(live: Instance, ctx: Context, back_to: Callable[[Path], None]) -> Context:
    """``live``'s database closed, taken back by ``back_to`` as an older mailbot left it and
    upgraded with `mailbot migrate`; a context on it with ``ctx``'s clock."""
    ctx.store.close()
    back_to(live.db_path)
    assert live.cli("migrate").exit_code == 0
    return open_context(load(live.config_path), clock=ctx.clock)


def test_a_ticket_waiting_before_the_upgrade_is_reminded_from_its_last_status_change(tmp_path):
    """`mailbot migrate` to the schema that keeps when each ticket entered its status
    (``status_since``) dates the tickets already there from their history: a ticket set
    waiting on Tuesday before the upgrade is reminded on Friday, once, as before."""
    live = Instance(tmp_path)
    now = [TUESDAY_10]
    ctx = open_context(load(live.config_path), clock=lambda: now[0])
    number = pipeline.ingest(ctx, build_mail(subject="Kasse"), "test").ticket_number
    set_waiting = now[0] = TUESDAY_10 + timedelta(minutes=30)
    actions.set_status(ctx, number, "waiting")
    ctx = upgraded(live, ctx, back_to_schema_12)
    try:
        friday = set_waiting + timedelta(days=3)
        moments = (friday - timedelta(minutes=1), friday, friday + timedelta(hours=1))
        assert [jobs.waiting_reminders(ctx, moment) for moment in moments] == [0, 1, 0]
        reminded = ctx.store.row("SELECT e.data FROM events e JOIN tickets t ON "
                                 "t.id = e.ticket_id WHERE t.number = ? AND "
                                 "e.kind = 'waiting_reminder'", (number,))
        since = set_waiting.isoformat(timespec="microseconds")
        assert json.loads(reminded["data"]) == {"since": since}
    finally:
        ctx.store.close()


def test_after_the_upgrade_what_was_told_is_not_told_again_and_what_was_not_is(tmp_path):
    """`mailbot migrate` to the schema that keeps on the ticket what the jobs told takes it
    from the events: a breach the agents heard of before the upgrade and a reminder the
    customer had are not repeated, and no round reads them again; a breach not yet told
    (only its warning was) is told after it, once."""
    live = Instance(tmp_path)
    live.settings["team.agents"] = [{"address": "anna@example.com", "name": "Anna Agent"}]
    live.write()
    now = [TUESDAY_10]
    ctx = open_context(load(live.config_path), clock=lambda: now[0])
    outage = "Totalausfall: die Kasse funktioniert nicht.\n"
    told = pipeline.ingest(ctx, build_mail(subject="Kasse", text=outage), "test").ticket_number
    now[0] = TUESDAY_10 + timedelta(minutes=30)
    warned = pipeline.ingest(ctx, build_mail(subject="Drucker", text=outage,
                                             sender=("Max Neu", "max@neu.example")),
                             "test").ticket_number
    waiting = pipeline.ingest(ctx, build_mail(subject="Scanner", sender=(
        "Eva Alt", "eva@alt.example")), "test").ticket_number
    actions.set_status(ctx, waiting, "waiting")
    first_breach, friday = TUESDAY_10 + timedelta(hours=4), now[0] + timedelta(days=3)
    assert jobs.deadline_warnings(ctx, first_breach) == 2  # a breach and a warning
    assert jobs.waiting_reminders(ctx, friday) == 1
    ctx = upgraded(live, ctx, back_to_schema_13)
    try:
        second_breach = first_breach + timedelta(minutes=30)
        assert [jobs.deadline_warnings(ctx, at) for at in (second_breach, second_breach)] \
            == [1, 0]
        breaches = ctx.store.rows("SELECT t.number FROM events e JOIN tickets t ON "
                                  "t.id = e.ticket_id WHERE e.kind = 'deadline_breached' "
                                  "ORDER BY e.id")
        assert [r["number"] for r in breaches] == [told, warned]
        later = friday + timedelta(hours=1)
        assert rows_read(ctx.store, lambda: jobs.waiting_reminders(ctx, later)) == 0
        reminders = ctx.store.rows("SELECT id FROM events WHERE kind = 'waiting_reminder'")
        assert len(reminders) == 1
    finally:
        ctx.store.close()


def test_a_database_of_a_newer_mailbot_is_refused(tmp_path):
    """After a downgrade, commands, `migrate` and a restore of its backup refuse the newer
    database and name the migration this mailbot does not know."""
    live = new_instance(tmp_path / "live")
    assert live.cli("tickets", "list").exit_code == 0  # a new database, current schema
    with sqlite3.connect(live.db_path) as conn:
        conn.execute("INSERT INTO _sqlite_migrations(migration_set, name, applied_at) "
                     "VALUES ('mailbot', 'm999_from_the_future', '2027-01-01')")
    conn.close()
    newer = f"is at schema {len(schema.known()) + 1}, this mailbot needs " \
        f"{len(schema.known())}: it was written by a newer mailbot (m999_from_the_future)"
    for args in (("tickets", "list"), ("migrate",), ("migrate", "--check")):
        refused = live.cli(*args)
        assert (refused.exit_code, newer in refused.stderr) == (78, True), args
    assert live.cli("backup", str(tmp_path / "backup")).exit_code == 0
    fresh = new_instance(tmp_path / "fresh")
    refused = fresh.cli("restore", str(tmp_path / "backup"))
    assert (refused.exit_code, f"the backup {newer}" in refused.stderr) == (78, True)
    assert not fresh.db_path.exists()
