"""`mailbot migrate --to postgresql://...`: an SQLite installation, filed by real mail, moved
into a real PostgreSQL database and verified; a mailbot on that database alone (a new data
directory: nothing of the old node) reads, serves and files as the old one did.  A refused
or failed move leaves the target as it was and the SQLite installation untouched."""

from __future__ import annotations

import contextlib
import hashlib
import json
import sqlite3
from email import message_from_bytes
from email import policy as email_policy
from pathlib import Path

import psycopg
import pytest
from conftest import AGENTS
from daemon_util import Instance
from mails import CUSTOMER, build_mail
from pg import PASSWORD
from sqlite_utils import Database

from mailbot.app.upkeep import LOCK_FILE
from mailbot.store import schema

ANNA = (AGENTS[0]["name"], AGENTS[0]["address"])
LOG = ("log.txt", "text/plain", b"Kasse 3: Fehler 0x17 beim Start\n" * 300)
PICTURES = tuple((f"bild{i}.png", "image/png", f"png {i}".encode()) for i in range(2))


def installation(root: Path) -> Instance:
    """An SQLite installation filed by `mailbot ingest`: a customer's mail with a log file
    and the agent's answer to it, a mail quarantined for having too many attachments, and a
    mail held as spam."""
    root.mkdir()
    instance = Instance(root)
    instance.settings["team.agents"] = list(AGENTS)
    instance.settings["limits"] = {"max_attachments": 1}
    instance.write()
    mails = {"log": build_mail(subject="Kasse startet nicht", attachments=(LOG,)),
             "pictures": build_mail(subject="Zwei Bilder", attachments=PICTURES),
             "spam": build_mail(subject="Gewinnspiel", headers=(("X-Spam-Flag", "YES"),))}
    for name, raw in mails.items():
        (root / f"{name}.eml").write_bytes(raw)
    filed = instance.cli("ingest", *(str(root / f"{name}.eml") for name in mails))
    assert filed.exit_code == 0, filed.output
    [ticket] = instance.tickets()
    answer = build_mail(sender=ANNA, to=reply_to(instance, ANNA[1]),
                        subject=f"Re: [Ticket#{ticket['number']}]",
                        text="Bitte starten Sie die Kasse neu.\n")
    assert instance.cli("ingest", input=answer).exit_code == 0
    return instance


def reply_to(instance: Instance, agent: str) -> str:
    """The Reply-To of the last mail queued for ``agent`` (signed for that agent)."""
    mails = [message_from_bytes(r["raw"], policy=email_policy.default)
             for r in instance.query("SELECT recipients, raw FROM outbox ORDER BY id")
             if agent in json.loads(r["recipients"])]
    return str(mails[-1]["Reply-To"])


def on_postgres(root: Path, url: str, like: Instance) -> Instance:
    """A mailbot with the settings of ``like`` on the database ``url``, in a new folder."""
    root.mkdir()
    settings = json.loads(json.dumps(like.settings))
    settings["service"]["data_dir"] = str(root / "data")
    settings["store"] = {"url": url}
    return Instance(root, settings)


def desk(instance: Instance) -> dict:
    """What an operator reads: every ticket in full, the outbox, the quarantine, the held
    spam."""
    return {"tickets": [instance.ticket(t["number"]) for t in instance.tickets()],
            "list": instance.tickets(),
            "outbox": instance.cli_json("outbox", "list"),
            "quarantine": instance.cli_json("quarantine", "list"),
            "spam": instance.cli_json("spam", "list")}


def files_of(instance: Instance) -> dict[str, object]:
    """Every file of the data directory with its bytes (the lock aside), the SQLite database
    as its SQL dump (any process's last connection may fold its write-ahead log into the
    file)."""
    data = instance.db_path.parent
    found: dict[str, object] = {str(p.relative_to(data)): p.read_bytes()
                                for p in data.rglob("*") if p.is_file()
                                and not p.name.startswith((instance.db_path.name, LOCK_FILE))}
    with contextlib.closing(sqlite3.connect(instance.db_path)) as conn:
        found[instance.db_path.name] = list(conn.iterdump())
    return found


def tables(url: str) -> dict[str, int]:
    """The row count of each table of a PostgreSQL database (none: no tables)."""
    with psycopg.connect(url) as conn:
        names = [r[0] for r in conn.execute(
            "SELECT table_name FROM information_schema.tables "
            "WHERE table_schema = current_schema()")]
        return {n: conn.execute(f'SELECT COUNT(*) FROM "{n}"').fetchone()[0]  # noqa: S608
                for n in names}


def shown(url: str) -> str:
    """The URL without its password, as the move prints it."""
    return url.replace(f":{PASSWORD}@", "@")


def test_migrate_to_moves_the_installation_and_the_new_node_works_on_it(tmp_path, pg):
    """A real `mailbot migrate --to` process moves tickets, quarantine, held spam, raw mails
    and attachments; a mailbot on PostgreSQL alone shows the same desk, serves the
    attachment and the raw mails, retries the quarantined mail, and files new mail."""
    old = installation(tmp_path / "old")
    before, untouched = desk(old), files_of(old)
    url = pg.empty_database()

    moved = old.run("migrate", "--to", url)
    output = (moved.stdout + moved.stderr).decode()
    assert moved.returncode == 0, output
    assert "verified" in output and f'url = "{shown(url)}"' in output
    assert PASSWORD not in output
    assert files_of(old) == untouched and desk(old) == before

    new = on_postgres(tmp_path / "new", url, old)
    assert desk(new) == before
    export = tmp_path / "export"
    assert new.cli("contacts", "export", CUSTOMER[1], "--with-files", str(export)).exit_code == 0
    assert (export / "files" / hashlib.sha256(LOG[2]).hexdigest()).read_bytes() == LOG[2]
    spool = {p.name: p.read_bytes() for p in (old.db_path.parent / "spool").glob("*/*")}
    assert {p.stem: p.read_bytes() for p in (export / "mails").iterdir()}.items() \
        <= spool.items()
    [spam] = before["spam"]
    assert "Gewinnspiel" in new.cli("spam", "show", str(spam["id"])).output

    new.update("limits", max_attachments=50)
    [held] = before["quarantine"]
    assert new.cli("quarantine", "retry", str(held["id"])).exit_code == 0
    filed = new.cli("ingest", input=build_mail(subject="Nach dem Umzug"))
    assert "created" in filed.output, filed.output
    after = new.tickets()
    assert sorted(t["subject"] for t in after) == \
        ["Kasse startet nicht", "Nach dem Umzug", "Zwei Bilder"]
    assert [new.ticket(t["number"]) for t in after if t["number"] in
            {b["number"] for b in before["list"]}] == before["tickets"]
    node = new.db_path.parent  # nothing of the mail is kept on the node
    assert not node.exists() or not {p.name for p in node.iterdir()} & {"spool", "files"}


@pytest.mark.parametrize(("made", "code", "reason"), [
    ("INSERT INTO job_runs(name, tick) VALUES ('expire_spam', 7)", 73,
     "holds rows already (in job_runs)"),
    ("DROP TABLE mailbot_migrations", 78, "holds tables that are not mailbot's"),
], ids=["a-mailbot-ran-on-it", "another-application's"])
def test_a_target_in_use_is_refused_and_left_as_it_was(tmp_path, pg, made, code, reason):
    """A database a mailbot ran on (a job's tick recorded), or one with tables of another
    application, is never merged into."""
    old = installation(tmp_path / "old")
    url = pg.new_database()
    with psycopg.connect(url) as conn:
        conn.execute(made)
    before = tables(url)
    refused = old.cli("migrate", "--to", url)
    assert (refused.exit_code, reason in refused.stderr) == (code, True), refused.output
    assert PASSWORD not in refused.output
    assert tables(url) == before


def test_an_sqlite_database_at_an_old_schema_must_be_migrated_first(tmp_path, pg):
    """The move copies only a database at this mailbot's schema."""
    old = Instance(tmp_path)
    old.db_path.parent.mkdir(mode=0o700)
    db = Database(old.db_path)
    schema.migrations.apply(db, stop_before=schema.known()[6])
    db.close()
    url = pg.empty_database()
    refused = old.cli("migrate", "--to", url)
    assert refused.exit_code == 78
    assert "run `mailbot migrate` first, then move it" in refused.stderr
    assert tables(url) == {}


def test_the_move_is_refused_while_the_daemon_runs(tmp_path, pg):
    """The daemon holds its data directory: the move says who and writes nothing."""
    live = Instance(tmp_path)
    url = pg.empty_database()
    with live.start() as daemon:
        refused = live.cli("migrate", "--to", url)
        holder = f"in use by mailbot run (pid {daemon.process.pid}): stop it first"
    assert (refused.exit_code, holder in refused.stderr) == (75, True), refused.output
    assert tables(url) == {}


def test_a_damaged_file_fails_the_move_until_it_is_restored_or_removed(tmp_path, pg):
    """An attachment whose bytes changed on disk fails the move, named with its row, and the
    target stays empty; removed as the message advises, the move goes through and warns
    (exit 1) that the row's file is not there."""
    old = installation(tmp_path / "old")
    sha = hashlib.sha256(LOG[2]).hexdigest()
    damaged = old.db_path.parent / "files" / sha[:2] / sha
    damaged.write_bytes(LOG[2].replace(b"0x17", b"0x18"))
    url = pg.empty_database()

    failed = old.cli("migrate", "--to", url)
    assert failed.exit_code == 65, failed.output
    assert f"{damaged} is damaged" in failed.stderr
    assert "referred to by attachments row 1" in failed.stderr
    assert tables(url) == {}

    damaged.unlink()
    password = tmp_path / "pg.password"
    password.write_text(PASSWORD + "\n")
    moved = old.cli("migrate", "--to", shown(url), "--password-file", str(password))
    assert moved.exit_code == 1, moved.output
    assert f"files/{sha[:2]}/{sha}: referred to by attachments row 1" in moved.stdout
    assert f'password = {{ file = "{password}" }}' in moved.stdout
    new = on_postgres(tmp_path / "new", url, old)
    assert new.tickets() == old.tickets()


def test_a_target_that_does_not_keep_what_it_is_given_fails_verification(tmp_path, pg):
    """A target that changes a byte and drops rows on the way in (triggers, as a faulty
    extension would) fails the verification: the blob and the table are named, and nothing
    is committed."""
    old = installation(tmp_path / "old")
    url = pg.new_database()
    with psycopg.connect(url) as conn:
        conn.execute("""
            CREATE FUNCTION spoil() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
                IF TG_TABLE_NAME IN ('events', 'blobs') THEN RETURN NULL; END IF;
                NEW.data := overlay(NEW.data PLACING 'X'::bytea FROM 7); RETURN NEW;
                END $$;
            CREATE TRIGGER spoil BEFORE INSERT ON blob_chunks FOR EACH ROW
                WHEN (NEW.kind = 'files') EXECUTE FUNCTION spoil();
            CREATE TRIGGER spoil BEFORE INSERT ON events FOR EACH ROW
                WHEN (NEW.kind = 'priority') EXECUTE FUNCTION spoil();
            CREATE TRIGGER spoil BEFORE INSERT ON blobs FOR EACH ROW
                WHEN (NEW.kind = 'spool') EXECUTE FUNCTION spoil()""")
    before = tables(url)
    failed = old.cli("migrate", "--to", url)
    assert failed.exit_code == 65, failed.output
    sha = hashlib.sha256(LOG[2]).hexdigest()
    assert "table events: 5 rows in the target, 6 in the SQLite database" in failed.stderr
    spool = len(list((old.db_path.parent / "spool").glob("*/*")))
    assert f"the target lists 1 blobs, not the {spool + 1} files written" in failed.stderr
    assert f"files/{sha}: the bytes read back from the target do not match its SHA-256" \
        in failed.stderr
    assert tables(url) == before
