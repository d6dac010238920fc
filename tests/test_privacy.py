"""Personal data: `mailbot contacts export` shows everything stored about a person and
`mailbot contacts erase` removes exactly that (GDPR Art. 15 and 17), and retention deletes
closed tickets and their raw bytes when they are old enough, with a clock the test sets."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

from daemon_util import REPO, Instance
from mails import build_mail

import mailbot.store
from mailbot.tickets import actions, jobs, retention

ACCOUNTS = REPO / "mailbot" / "examples" / "accounts.example.toml"
NOW = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)  # Tuesday 10:00 in Berlin
ANNA = ("Anna Meier", "anna.meier@muster-maschinenbau.de")  # imported, account 10001
EVA = ("Eva Muster", "eva@muster-maschinenbau.de")  # a colleague: the account's domain
JUERGEN = ("Jürgen Müller", "juergen.mueller@kunde.example")  # another customer
SECRET_WORD = "Zwiebelturm"  # in Anna's mails and nowhere else
PLAN = ("zwiebelturm-plan.pdf", "application/pdf", b"%PDF-1.4 Zwiebelturm Bauplan\n" * 40)
PHOTO = ("foto.jpg", "image/jpeg", b"\xff\xd8\xff\xe0 Annas Foto " * 64)
LOGO = ("logo.png", "image/png", b"\x89PNG\r\n\x1a\n our shared logo " * 32)  # in many mails


def sha(attachment: tuple[str, str, bytes]) -> str:
    """The content hash an attachment is stored under."""
    return hashlib.sha256(attachment[2]).hexdigest()


def receive(desk, sender, subject, text, *attachments) -> str:
    """File one mail at the desk's time; its ticket number (one minute passes)."""
    outcome = desk.receive(build_mail(sender=sender, subject=subject, text=text,
                                      attachments=attachments))
    assert outcome.status in ("created", "followup"), outcome
    desk.now += timedelta(minutes=1)
    return outcome.ticket_number


def anna_and_her_colleague(make_desk):
    """Anna's own ticket (two attachments), her ticket Eva followed up on, Eva's ticket Anna
    wrote in, and Jürgen's ticket of another customer; the tickets' numbers."""
    desk = make_desk(NOW)
    assert desk.instance.cli("accounts", "import", str(ACCOUNTS)).exit_code == 0
    own = receive(desk, ANNA, f"{SECRET_WORD} undicht", f"Der {SECRET_WORD} tropft.\n",
                  PLAN, LOGO)
    hers = receive(desk, ANNA, "Presse steht", f"Die Presse am {SECRET_WORD} steht.\n", PHOTO)
    receive(desk, EVA, f"Re: [Ticket#{hers}] Presse steht", "Eva hier: die Presse läuft "
            "wieder, danke.\n")
    evas = receive(desk, EVA, "Kran defekt", "Der Kran in Halle 3 ist defekt.\n")
    receive(desk, ANNA, f"Re: [Ticket#{evas}] Kran defekt",
            f"Auch der Kran am {SECRET_WORD} ist defekt.\n")
    other = receive(desk, JUERGEN, "Drucker druckt nicht", "Hallo, der Drucker streikt.\n",
                    LOGO)
    return desk, {"own": own, "hers": hers, "evas": evas, "other": other}


def counts_of(output: str) -> dict[str, int]:
    """The counts a command printed under its head line ("  tickets deleted   1")."""
    return {name.strip(): int(n) for name, n in
            (line.rsplit(None, 1) for line in output.splitlines()[1:])}


def traces(desk, *words: str, vacuum: bool = False) -> list[str]:
    """Where any of ``words`` (any case) is still written: the SQLite database file (every
    table, free pages too; after a VACUUM if asked), its write-ahead log, the spool and the
    files; with PostgreSQL, the chunks of raw mails and attachments in the database."""
    data_dir = desk.ctx.config.data_dir
    database = data_dir / "mailbot.sqlite3"
    if vacuum and database.is_file():
        conn = sqlite3.connect(database)
        conn.execute("VACUUM")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.close()
    paths = [database, Path(f"{database}-wal")]
    paths += [p for folder in ("spool", "files") for p in (data_dir / folder).rglob("*")]
    kept = [(p.name, p.read_bytes()) for p in paths if p.is_file()]
    kept += [(f"{r['kind']} {r['sha256']}", r["data"]) for r in desk.ctx.store.rows(
        "SELECT kind, sha256, data FROM blob_chunks")]
    return [f"{name}: {w}" for name, data in kept for w in words
            if w.lower().encode() in data.lower()]


def test_export_shows_everything_erase_removes_and_erase_leaves_no_trace(make_desk, tmp_path):
    """Export has Anna's words, tickets and files; erase removes them from the database file
    and the spool (grep finds neither address, name nor her word), keeps Eva's parts of the
    shared tickets and leaves Jürgen's ticket as it was; her old mail stays a duplicate."""
    desk, numbers = anna_and_her_colleague(make_desk)
    bot = desk.instance
    jurgen_before = bot.ticket(numbers["other"])

    out, files = tmp_path / "anna.json", tmp_path / "anna-files"
    result = bot.cli("contacts", "export", ANNA[1], "--out", str(out), "--with-files", str(files))
    assert result.exit_code == 0, result.output
    assert out.stat().st_mode & 0o777 == 0o600
    document = json.loads(out.read_text(encoding="utf-8"))
    assert document["contact"]["name"] == "Anna Meier"
    assert document["account"]["customer_number"] == "10001"
    on_erase = {t["number"]: t["on_erase"] for t in document["tickets"]}
    assert on_erase == {numbers["own"]: "deleted",
                        numbers["hers"]: "kept without this person's parts",
                        numbers["evas"]: "kept without this person's parts"}
    assert SECRET_WORD in json.dumps(document["tickets"], ensure_ascii=False)
    listed = {a["sha256"]: a for a in document["attachments"]}
    assert {sha(PLAN), sha(PHOTO), sha(LOGO)} <= set(listed)
    assert (files / listed[sha(PLAN)]["file"]).read_bytes() == PLAN[2]
    assert len(document["raw_mails"]) == 3
    assert all((files / m["file"]).is_file() for m in document["raw_mails"])
    assert any(m["recipients"] == [ANNA[1]] for m in document["outbox"])  # acknowledgements

    refused = bot.cli("contacts", "erase", ANNA[1])
    assert refused.exit_code == 2 and "--yes" in refused.output
    dry = bot.cli("contacts", "erase", ANNA[1], "--dry-run")
    assert dry.exit_code == 0 and "would erase" in dry.stdout
    assert bot.cli_json("contacts", "show", ANNA[1])["name"] == "Anna Meier"
    erased = bot.cli("contacts", "erase", ANNA[1], "--yes")
    assert erased.exit_code == 0, erased.output
    assert erased.stdout.replace("erased", "would erase", 1) == dry.stdout
    counts = counts_of(erased.stdout)
    assert (counts["contacts"], counts["tickets deleted"], counts["tickets kept without them"],
            counts["spool files"], counts["attachment files"]) == (1, 1, 2, 3, 2)  # not the logo

    # Not even in free pages or the log as erase left them (secure_delete, checkpoint):
    assert traces(desk, ANNA[1], ANNA[0], SECRET_WORD) == []
    assert traces(desk, ANNA[1], ANNA[0], SECRET_WORD, vacuum=True) == []
    assert bot.cli("contacts", "show", ANNA[1]).exit_code == 1
    assert bot.cli("tickets", "show", numbers["own"]).exit_code == 1
    hers = bot.ticket(numbers["hers"])
    assert (hers["contact"], hers["subject"]) == (None, "[erased]")
    assert [m["from"] for m in hers["messages"]] == [EVA[1]]
    evas = bot.ticket(numbers["evas"])
    assert [(m["from"], m["body"]) for m in evas["messages"]] == [
        (EVA[1], "Der Kran in Halle 3 ist defekt.")]
    assert evas["subject"] == "Kran defekt" and evas["contact"] == EVA[1]
    assert bot.ticket(numbers["other"]) == jurgen_before
    assert desk.ctx.files.present({sha(LOGO)})


def test_her_old_mail_delivered_again_after_erasure_is_a_duplicate(make_desk):
    """The ingest records stay (a hash and a Message-ID): a re-delivered mail of an erased
    person is recognised and files nothing again."""
    desk = make_desk(NOW)
    raw = build_mail(sender=ANNA, subject=f"{SECRET_WORD} undicht", text="Hilfe\n",
                     message_id="first@muster-maschinenbau.de")
    assert desk.receive(raw).status == "created"
    assert desk.instance.cli("contacts", "erase", ANNA[1], "--yes").exit_code == 0
    assert desk.instance.tickets() == []
    assert desk.receive(raw).status == "duplicate"
    assert desk.instance.tickets() == [] and not spooled(desk, raw)  # her bytes stay gone


def test_erase_of_an_unknown_address_erases_nothing(make_desk):
    """An address nothing is stored about: every count 0, nothing changed."""
    desk = make_desk(NOW)
    receive(desk, JUERGEN, "Drucker", "Hallo\n")
    result = desk.instance.cli("contacts", "erase", "nobody@example.org", "--yes")
    assert result.exit_code == 0
    assert set(counts_of(result.stdout).values()) == {0}
    assert len(desk.instance.tickets()) == 1


# -- retention -------------------------------------------------------------------------------

DAY = timedelta(days=1)
START = datetime(2025, 1, 6, 9, 0, tzinfo=UTC)
OLD_FILE = ("alt.txt", "text/plain", b"only in the oldest ticket\n" * 20)
MID_FILE = ("mittel.txt", "text/plain", b"only in the middle ticket\n" * 20)
RULES = {"raw_days": 30, "tickets_days": 365, "quarantine_days": 60}


def closed_ticket(desk, subject: str, *attachments) -> tuple[str, bytes]:
    """A ticket of Jürgen's filed and closed at the desk's time; its number and raw mail."""
    raw = build_mail(sender=JUERGEN, subject=subject, text=f"{subject}\n",
                     attachments=attachments)
    number = desk.receive(raw).ticket_number
    actions.set_status(desk.ctx, number, "closed")
    return number, raw


def spooled(desk, raw: bytes) -> bool:
    """Whether the raw bytes of a mail are in the spool (files, or the PostgreSQL store)."""
    return bool(desk.ctx.spool.present({hashlib.sha256(raw).hexdigest()}))


def stored_file(desk, attachment) -> bool:
    """Whether an attachment's bytes are kept (files, or the PostgreSQL store)."""
    return bool(desk.ctx.files.present({sha(attachment)}))


def quarantined_mail(desk, subject: str) -> bytes:
    """A mail with more attachments than ``[limits] max_attachments`` (3): quarantined."""
    raw = build_mail(sender=JUERGEN, subject=subject, attachments=tuple(
        (f"{i}.txt", "text/plain", f"{subject} {i}".encode()) for i in range(4)))
    assert desk.receive(raw).status == "quarantined"
    return raw


def test_retention_deletes_what_is_due_and_keeps_the_rest(make_desk):
    """At day 400: the ticket closed on day 1 is gone whole, the one closed on day 300 keeps
    its texts but no raw mail or own file, the one closed on day 380 and an open one are
    untouched, a file still used is kept, the day-10 quarantine entry goes; a dry run counts
    the same and changes nothing; a re-delivered old mail is a duplicate, and its bytes
    are not written to the spool again."""
    desk = make_desk(START, retention=RULES, limits={"max_attachments": 3})
    open_number = receive(desk, JUERGEN, "Offen seit langem", "noch offen\n")
    old, old_raw = closed_ticket(desk, "Alt", OLD_FILE, LOGO)
    desk.now = START + 10 * DAY
    old_quarantine = quarantined_mail(desk, "Q alt")
    desk.now = START + 300 * DAY
    mid, mid_raw = closed_ticket(desk, "Mittel", MID_FILE, LOGO)
    desk.now = START + 380 * DAY
    recent, recent_raw = closed_ticket(desk, "Neu", LOGO)
    new_quarantine = quarantined_mail(desk, "Q neu")
    desk.now = START + 400 * DAY

    before = desk.instance.tickets()
    planned = retention.run(desk.ctx, desk.now, dry_run=True)
    assert desk.instance.tickets() == before and spooled(desk, old_raw)
    done = jobs.run_daily(desk.ctx, desk.now)
    assert done == planned == {"tickets_deleted": 1, "tickets_raw_deleted": 1,
                               "quarantine": 1, "spool_files": 3, "attachment_files": 2}

    assert {t["number"] for t in desk.instance.tickets()} == {open_number, mid, recent}
    assert desk.instance.cli("tickets", "show", old).exit_code == 1
    middle = desk.instance.ticket(mid)
    assert middle["messages"][0]["body"] == "Mittel"
    assert middle["messages"][0]["attachments"] == []
    assert [e["data"] for e in middle["events"] if e["kind"] == "retention"] == [
        {"raw_mails": 1, "attachments": 2}]
    assert desk.instance.ticket(recent)["messages"][0]["attachments"]
    assert not spooled(desk, old_raw) and not spooled(desk, mid_raw)
    assert spooled(desk, recent_raw)
    assert not stored_file(desk, OLD_FILE) and not stored_file(desk, MID_FILE)
    assert stored_file(desk, LOGO)  # the recent ticket still has it
    assert [not spooled(desk, old_quarantine), spooled(desk, new_quarantine)] == [True, True]
    assert desk.instance.count("quarantine") == 1

    assert desk.receive(old_raw).status == "duplicate"
    assert desk.receive(mid_raw).status == "duplicate"
    assert {t["number"] for t in desk.instance.tickets()} == {open_number, mid, recent}
    assert not spooled(desk, old_raw) and not spooled(desk, mid_raw)  # not written again


def test_retention_works_in_pages_and_reads_only_what_is_due(make_desk, monkeypatch):
    """Raw retention works through more closed tickets than a page and a batch; the next day
    it reads none of the tickets whose raw mails are gone already (it read every ticket
    ever closed, each day, all at once)."""
    monkeypatch.setattr(mailbot.store, "PAGE", 2)
    monkeypatch.setattr(retention, "BATCH", 3)
    desk = make_desk(START, retention={"raw_days": 30})
    raws = [closed_ticket(desk, f"Kasse {i}", (f"log{i}.txt", "text/plain", b"log %d\n" % i))[1]
            for i in range(7)]
    desk.now = START + 31 * DAY
    assert jobs.run_daily(desk.ctx, desk.now)["tickets_raw_deleted"] == 7
    assert not any(spooled(desk, raw) for raw in raws)
    desk.now += DAY
    assert desk.rows_read(lambda: jobs.run_daily(desk.ctx, desk.now)) == 0


def test_retention_by_command_prints_counts_and_is_off_by_default(make_desk):
    """`mailbot retention run` (the real clock: a ticket closed in 2020 is due) deletes it,
    `--dry-run` only counts; without [retention] it says that it keeps everything."""
    desk = make_desk(datetime(2020, 3, 2, 9, 0, tzinfo=UTC), retention={"tickets_days": 30})
    closed_ticket(desk, "Alt")
    bot = desk.instance
    dry = bot.cli("retention", "run", "--dry-run")
    assert dry.exit_code == 0 and "would delete" in dry.stdout
    assert counts_of(dry.stdout)["tickets deleted"] == 1, dry.stdout
    assert len(bot.tickets()) == 1
    done = bot.cli("retention", "run")
    assert done.exit_code == 0 and counts_of(done.stdout) == counts_of(dry.stdout)
    assert bot.tickets() == []
    bot.update("retention", tickets_days=0)
    assert "retention is off" in bot.cli("retention", "run").stdout
    assert jobs.run_daily(make_desk(NOW).ctx, NOW) == {}  # the daemon's job: nothing to do


def test_a_negative_retention_is_a_config_error(tmp_path):
    """check-config names the key of a negative number of days."""
    bot = Instance(tmp_path)
    bot.update("retention", raw_days=-1)
    result = bot.cli("check-config")
    assert result.exit_code == 78
    assert "retention" in result.stderr and "raw_days -1 must be 0" in result.stderr


def test_export_files_are_private(make_desk, tmp_path):
    """The copied files of an export are as private as the spool (0600 in 0700 folders)."""
    desk = make_desk(NOW)
    receive(desk, ANNA, "Foto", "anbei\n", PHOTO)
    target = tmp_path / "out"
    assert desk.instance.cli("contacts", "export", ANNA[1], "--with-files",
                             str(target)).exit_code == 0
    copied = target / "files" / sha(PHOTO)
    assert copied.read_bytes() == PHOTO[2]
    assert os.stat(target / "files").st_mode & 0o777 == 0o700
