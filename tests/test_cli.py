"""The `mailbot` command line: ingest exit codes for MTAs, and the inspection commands."""

from __future__ import annotations

import mailbox
import subprocess
import sys

import pytest
from daemon_util import REPO, Instance
from mails import CUSTOMER, build_mail

EXAMPLES = REPO / "mailbot" / "examples"

EX_OK, EX_DATAERR, EX_TEMPFAIL = 0, 65, 75


@pytest.fixture
def bot(tmp_path) -> Instance:
    """An instance without a relay (outbound mail goes to its Maildir)."""
    return Instance(tmp_path)


def test_ingest_from_stdin_files_the_mail_and_exits_0(bot):
    """An MTA piping a mail into `mailbot ingest` gets 0 and a ticket exists."""
    result = bot.run("ingest", input=build_mail(subject="Per Pipe"))
    assert result.returncode == EX_OK, result.stderr.decode()
    assert "created" in result.stdout.decode()
    assert [t["subject"] for t in bot.tickets()] == ["Per Pipe"]


def test_ingest_of_a_mail_that_cannot_be_processed_exits_0_and_quarantines_it(bot):
    """An empty mail is quarantined and kept: exit 0, so the MTA neither retries nor bounces
    it, and nothing internal is printed where a bounce would show it."""
    result = bot.run("ingest", input=b"")
    assert result.returncode == EX_OK
    assert b"ParseError" not in result.stdout + result.stderr
    [held] = bot.cli_json("quarantine", "list")
    assert (held["error"], held["source"]) == ("the mail is empty", "pipe")


def test_ingest_while_the_database_is_locked_exits_75_so_the_mta_retries(bot):
    """A busy database is a temporary failure (EX_TEMPFAIL); nothing is filed or quarantined."""
    bot.update("service", busy_timeout_seconds=0.2)
    raw = build_mail(subject="Später bitte")
    with bot.write_locked():
        result = bot.run("ingest", input=raw)
    assert result.returncode == EX_TEMPFAIL, result.stderr.decode()
    assert "temporary failure" in result.stderr.decode()
    assert bot.tickets() == [] and bot.cli_json("quarantine", "list") == []
    assert bot.run("ingest", input=raw).returncode == EX_OK  # the MTA's retry works
    assert [t["subject"] for t in bot.tickets()] == ["Später bitte"]


def test_ingest_of_several_files_files_each(bot, tmp_path):
    """`mailbot ingest FILE...` files every file, quarantines the broken one, exits 0."""
    good, bad = tmp_path / "good.eml", tmp_path / "bad.eml"
    good.write_bytes(build_mail(subject="Aus Datei"))
    bad.write_bytes(b"   \r\n")
    result = bot.cli("ingest", str(good), str(bad))
    assert result.exit_code == EX_OK
    assert [t["subject"] for t in bot.tickets()] == ["Aus Datei"]
    assert [h["source"] for h in bot.cli_json("quarantine", "list")] == ["cli"]


def test_ingesting_the_same_mail_twice_is_a_no_op(bot):
    """An MTA that delivers twice does not create a second ticket."""
    raw = build_mail(subject="Doppelt")
    assert bot.cli("ingest", input=raw).exit_code == EX_OK
    again = bot.cli("ingest", input=raw)
    assert again.exit_code == EX_OK and "duplicate" in again.stdout
    assert len(bot.tickets()) == 1


def test_tickets_show_json_has_everything_about_a_ticket(bot):
    """`tickets show --json` has the fields agents and scripts rely on."""
    bot.cli("ingest", input=build_mail(subject="Lizenzfrage", text="Wie verlängere ich?\n",
                                       attachments=(("lizenz.txt", "text/plain", b"ABC-123"),)))
    [row] = bot.tickets()
    ticket = bot.ticket(row["number"])
    assert {"number", "subject", "status", "priority", "contact", "account", "contract",
            "created_at", "messages"} <= set(ticket)
    assert (ticket["subject"], ticket["status"], ticket["contact"], ticket["account"]) == \
        ("Lizenzfrage", "new", CUSTOMER[1], None)
    [msg] = ticket["messages"]
    assert (msg["direction"], msg["from"], msg["subject"], msg["body"]) == \
        ("in", CUSTOMER[1], "Lizenzfrage", "Wie verlängere ich?")
    [attachment] = msg["attachments"]
    assert (attachment["filename"], attachment["content_type"], attachment["size"]) == \
        ("lizenz.txt", "text/plain", 7)
    assert len(attachment["sha256"]) == 64


def test_tickets_show_of_an_unknown_number_fails(bot):
    """Asking for a ticket that does not exist says so and exits non-zero."""
    result = bot.cli("tickets", "show", "199901010001")
    assert result.exit_code == 1 and "no ticket 199901010001" in result.output


def test_ticket_of_an_imported_account_shows_account_and_contract(bot):
    """A sender from an imported customer's domain is filed under that account and contract."""
    imported = bot.cli("accounts", "import", str(EXAMPLES / "accounts.example.toml"))
    assert imported.exit_code == 0, imported.output
    sender = ("Max Muster", "max@muster-maschinenbau.de")
    bot.cli("ingest", input=build_mail(subject="Maschine steht", sender=sender))
    [row] = bot.tickets()
    ticket = bot.ticket(row["number"])
    assert (ticket["account"], ticket["contract"]) == ("Muster Maschinenbau GmbH", "wartung")


def test_outbox_list_and_flush_deliver_the_acknowledgement_into_the_maildir(bot, tmp_path):
    """`outbox list` shows the queued acknowledgement; `outbox flush` delivers it now."""
    bot.cli("ingest", input=build_mail(subject="Bitte antworten"))
    [pending] = bot.cli_json("outbox", "list")
    assert (pending["status"], pending["kind"], pending["recipients"]) == \
        ("pending", "acknowledgement", [CUSTOMER[1]])
    flushed = bot.cli("outbox", "flush")
    assert flushed.exit_code == 0, flushed.output
    assert "delivered 1, still pending 0" in flushed.output
    assert [r["status"] for r in bot.cli_json("outbox", "list")] == ["sent"]
    [ack] = list(mailbox.Maildir(tmp_path / "data" / "maildir"))
    assert ack["Subject"].startswith(f"[Ticket#{pending['ticket']}]")


def test_quarantine_retry_files_held_mail_after_the_limit_is_raised(bot):
    """A mail held for a limit is filed by `quarantine retry` once the operator raised it."""
    bot.update("limits", max_attachments=1)
    files = tuple((f"bild{i}.png", "image/png", b"png") for i in range(2))
    assert bot.cli("ingest", input=build_mail(subject="Zwei Bilder", attachments=files)) \
        .exit_code == EX_OK
    [held] = bot.cli_json("quarantine", "list")
    assert "2 attachments, over the limit of 1" in held["error"]
    assert bot.cli("quarantine", "retry").exit_code == EX_DATAERR  # still too many
    bot.update("limits", max_attachments=50)
    [held] = bot.cli_json("quarantine", "list")
    retried = bot.cli("quarantine", "retry", str(held["id"]))
    assert retried.exit_code == 0, retried.output
    assert [t["subject"] for t in bot.tickets()] == ["Zwei Bilder"]
    assert bot.cli_json("quarantine", "list") == []


def test_broken_mail_while_the_database_is_locked_is_a_temporary_failure(bot):
    """Even a mail bound for quarantine gets 75 while the database is busy, not a crash."""
    bot.update("service", busy_timeout_seconds=0.2)
    with bot.write_locked():
        result = bot.run("ingest", input=b"")
    assert result.returncode == EX_TEMPFAIL, result.stderr.decode()


def test_fetch_reads_each_mailbox_once_and_files_its_mail(tmp_path, imap_user, dovecot):
    """`mailbot fetch` files what waits in the mailbox, moves it, and exits 0."""
    bot = Instance.for_servers(tmp_path, imap=imap_user)
    dovecot.append(imap_user.username, "INBOX", build_mail(subject="Per Abruf"))
    result = bot.run("fetch")
    assert result.returncode == EX_OK, result.stderr.decode()
    assert "imap:support: filed 1" in result.stdout.decode()
    assert [t["subject"] for t in bot.tickets()] == ["Per Abruf"]
    assert dovecot.message_count(imap_user.username, "INBOX") == 0
    assert dovecot.message_count(imap_user.username, "Processed") == 1


def test_fetch_beside_a_running_daemon_leaves_the_mailbox_to_it(tmp_path, imap_user, dovecot):
    """The daemon holds the mailbox's lease: `mailbot fetch` on the same database says so
    and reads nothing (exit 0), and the mail is filed once, by the daemon."""
    bot = Instance.for_servers(tmp_path, imap=imap_user)
    dovecot.append(imap_user.username, "INBOX", build_mail(subject="Nur einmal"))
    with bot.start():
        bot.wait_tickets(1)  # the daemon works the mailbox: it holds the lease
        result = bot.run("fetch")
        assert result.returncode == EX_OK, result.stderr.decode()
        assert "imap:support: worked by a running mailbot" in result.stdout.decode()
        assert [t["subject"] for t in bot.tickets()] == ["Nur einmal"]


def test_fetch_from_an_unreachable_mailbox_exits_75_and_says_why(tmp_path, imap_user):
    """A mailbox that cannot be reached is a temporary failure named with its reason."""
    bot = Instance.for_servers(tmp_path, imap=imap_user)
    bot.settings["imap"][0]["password"] = "wrong"
    bot.write()
    result = bot.run("fetch")
    assert result.returncode == EX_TEMPFAIL
    assert "imap:support: cannot read the mailbox" in result.stderr.decode()
    assert bot.tickets() == []


NULL_ENVELOPE = "null envelope sender (MAIL FROM:<>)"


@pytest.mark.parametrize(("how", "reason"), [
    (("--sender", ""), NULL_ENVELOPE), (("--sender", "MAILER-DAEMON"), NULL_ENVELOPE),
    ("Return-Path: <MAILER-DAEMON>\r\n", NULL_ENVELOPE),
    ("Return-Path: <>\r\n", "empty Return-Path <>")])
def test_ingest_of_a_null_sender_mail_files_it_without_acknowledgement(bot, how, reason):
    """A person's From over a null envelope sender (as Postfix's pipe gives it on the command
    line, or writes it as Return-Path) opens a ticket but gets no acknowledgement (RFC 3834),
    and agents see why."""
    raw = build_mail(subject="Ohne Absender")
    options = how if isinstance(how, tuple) else ()
    if not options:
        raw = how.encode() + raw
    result = bot.run("ingest", *options, "--recipient", "support@example.com", input=raw)
    assert result.returncode == EX_OK, result.stderr.decode()
    [row] = bot.tickets()
    events = [e for e in bot.ticket(row["number"])["events"]
              if e["kind"] == "acknowledgement_held"]
    assert [e["data"]["reason"] for e in events] == [reason]
    assert bot.cli_json("outbox", "list") == []


def test_ingest_with_a_person_as_envelope_sender_is_acknowledged(bot):
    """The MTA's --sender of a person: the acknowledgement is queued as before."""
    result = bot.run("ingest", "--sender", CUSTOMER[1], input=build_mail(subject="Mit Absender"))
    assert result.returncode == EX_OK, result.stderr.decode()
    assert [r["kind"] for r in bot.cli_json("outbox", "list")] == ["acknowledgement"]


def test_tickets_list_pages_and_search_finds_text(bot):
    """`tickets list --limit/--offset` pages the work order; `tickets search` finds a word of
    a mail (any case, `%` taken literally) and prints a table."""
    for n in range(5):
        bot.run("ingest", input=build_mail(subject=f"Fall {n}", message_id=f"<p{n}@x.example>",
                                           text=f"Seriennummer SN-{n}00 defekt, 100% kaputt\n"))
    first = bot.cli_json("tickets", "list", "--limit", "2")
    rest = bot.cli_json("tickets", "list", "--limit", "10", "--offset", "2")
    assert len(first) == 2 and len(rest) == 3
    assert {t["number"] for t in first}.isdisjoint(t["number"] for t in rest)
    [found] = bot.cli_json("tickets", "search", "sn-300")
    assert found["subject"] == "Fall 3"
    assert len(bot.cli_json("tickets", "search", "100%")) == 5
    assert bot.cli_json("tickets", "search", "50%") == []
    assert "NUMBER" in bot.cli("tickets", "search", "Fall").stdout


READING_COMMANDS = [("tickets", "list"), ("tickets", "search", "x"), ("tickets", "show", "1"),
                    ("accounts", "list"), ("contacts", "list"), ("outbox", "list"),
                    ("quarantine", "list")]
# What filing, sending and the policy need, and the reading commands do not: loading it
# made `tickets list` take 0.6 s (bench/listing.py measures the time).
FILING_MODULES = ("mailbot.context", "mailbot.inbound.pipeline", "mailbot.outbound.compose",
                  "mailbot.policy.rules", "jinja2", "holidays", "asyncio")


@pytest.mark.parametrize("command", READING_COMMANDS, ids=" ".join)
def test_reading_commands_load_only_the_store(bot, command):
    """The commands that only read open the config and the store, not the machinery that
    files and sends (an operator's `tickets list` answers at once at 100k tickets)."""
    probe = ("import sys\nfrom mailbot.app.cli import main\ntry:\n"
             f"    main({['--config', str(bot.config_path), *command]!r})\n"
             "except SystemExit:\n    pass\n"
             f"print('LOADED', sorted(m for m in {FILING_MODULES!r} if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            cwd=bot.root, check=False)
    assert result.stdout.splitlines()[-1] == "LOADED []", result.stdout + result.stderr


def test_accounts_and_contacts_are_listed(bot):
    """After an import, `accounts list` shows each account with its contract and counts,
    `contacts list` each contact with its account."""
    bot.cli("accounts", "import", str(EXAMPLES / "accounts.example.toml"))
    accounts = bot.cli_json("accounts", "list")
    assert accounts and all({"name", "customer_number", "contract", "contacts",
                             "open_tickets", "domains"} <= set(a) for a in accounts)
    contacts = bot.cli_json("contacts", "list")
    assert contacts and all(c["account"] for c in contacts if c["address"])
    assert "NUMBER" in bot.cli("accounts", "list").stdout
    assert "ADDRESS" in bot.cli("contacts", "list", "--limit", "1").stdout
