"""Mail hygiene end to end: robots, out-of-office, bounces, loops, rate limit, own ids, strangers.

Every test runs real mails through the real pipeline on a real SQLite file and looks at
what a user would see: the outbox (what mailbot sends), tickets and their events.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pytest
from hygiene_kit import (
    ALIAS,
    DATA,
    SUPPORT,
    Clock,
    acks_to,
    body_text,
    deliver,
    detail,
    ingest,
    make_ctx,
    outbox_rows,
    parsed,
    replace_headers,
    run_cli,
    ticket_count,
)
from mails import build_mail
from servers import Dovecot, ImapAccount

from mailbot.context import Context
from mailbot.inbound.imap import ImapSource
from mailbot.inbound.source import Feed
from mailbot.settings.config import ImapConfig
from mailbot.status.health import Health
from mailbot.store import directory as dq
from mailbot.store import tickets as tq
from mailbot.tickets import filing, jobs

ROBOT_FILES = sorted((DATA / "robots").glob("*.eml"))
CUSTOMER_FILES = sorted((DATA / "customers").glob("*.eml"))
OOF_FILES = ("outlook_oof_de.eml", "exchange_oof_en.eml", "gmail_vacation.eml",
             "sieve_vacation.eml", "oof_subject_only.eml")
# Permanent DSNs of the corpus: the failed recipient each one names.
DSN_FILES = {
    "postfix_dsn_511.eml": "k.schmidt@kunde-gmbh.de",
    "exchange_ndr_online.eml": "b.lang@steuerbuero-lang.de",
    "exchange_ndr_onprem.eml": "p.koch@stadtwerke-nord.de",
    "gmail_dsn_failure.eml": "tobias.richter1987@gmail.com",
    "exim_plain_bounce.eml": "anfrage@autohaus-zeller.de",
}
# How the corpus names "our" original mail; replaced by the id mailbot really sent.
CORPUS_ID = re.compile(rb"(?:ack|notify|status)\.\d+\.[0-9a-f]+@mailbot\.example")
ALICE = ("Alice Kunde", "alice@kunde.example")
ROBOT_HEADERS = {
    "auto-generated": [("Auto-Submitted", "auto-generated")],
    "auto-notified": [("Auto-Submitted", "auto-notified")],
    "precedence-bulk": [("Precedence", "bulk")],
    "precedence-junk": [("Precedence", "junk")],
    "precedence-list": [("Precedence", "list")],
    "list-id": [("List-Id", "<news.kunde.example>")],
    "list-unsubscribe": [("List-Unsubscribe", "<mailto:leave@kunde.example>")],
    "x-autoreply": [("X-Autoreply", "yes")],
    "x-autorespond": [("X-Autorespond", "Out of office")],
    "x-auto-response-suppress": [("X-Auto-Response-Suppress", "All")],
    "empty-return-path": [("Return-Path", "<>")],
}
ROBOT_SENDERS = ("MAILER-DAEMON@mx.kunde.example", "postmaster@kunde.example",
                 "no-reply@kunde.example", "noreply@kunde.example",
                 "do-not-reply@kunde.example")


@pytest.fixture
def ctx(tmp_path: Path) -> Context:
    """A mailbot instance with its data directory in tmp_path."""
    return make_ctx(tmp_path)


def new_ticket(ctx: Context, sender=ALICE, subject="Drucker druckt nicht",
               text="Hallo,\nder Drucker druckt nicht.\n", **kw) -> tuple[str, dict]:
    """A customer mail that opens a ticket; its number and acknowledgement row."""
    outcome = ingest(ctx, build_mail(sender=sender, subject=subject, text=text, **kw))
    assert outcome.status == "created", outcome
    return outcome.ticket_number, acks_to(ctx, sender[1])[-1]


# -- robots ------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ROBOT_FILES, ids=lambda p: p.stem)
def test_robot_corpus_is_never_acknowledged(ctx: Context, path: Path) -> None:
    """No vacation reply, DSN, list mail, newsletter or receipt of the corpus gets an answer."""
    outcome = ingest(ctx, path.read_bytes())
    assert outcome.status != "quarantined", outcome
    assert outbox_rows(ctx) == []


@pytest.mark.parametrize("name", sorted(ROBOT_HEADERS))
def test_robot_headers_are_never_acknowledged(ctx: Context, name: str) -> None:
    """Mail marked automatic by any RFC 3834 / list / Exchange header gets no acknowledgement."""
    sender = ("Robot", f"{name}@kunde.example")
    outcome = ingest(ctx, build_mail(sender=sender, headers=tuple(ROBOT_HEADERS[name])))
    assert outcome.status != "quarantined", outcome
    assert acks_to(ctx, sender[1]) == []


@pytest.mark.parametrize("address", ROBOT_SENDERS)
def test_robot_senders_are_never_acknowledged(ctx: Context, address: str) -> None:
    """MAILER-DAEMON, postmaster and no-reply senders get no acknowledgement."""
    ingest(ctx, build_mail(sender=("System", address), subject="Ihre Bestellung"))
    assert outbox_rows(ctx) == []


def test_robots_and_customers_end_to_end(ctx: Context, tmp_path: Path) -> None:
    """Of the whole corpus delivered, only the real customers receive an acknowledgement."""
    for path in ROBOT_FILES + CUSTOMER_FILES:
        ingest(ctx, path.read_bytes())
    deliver(ctx)
    maildir = ctx.config.maildir / "new"
    delivered = [parsed(p.read_bytes()) for p in maildir.iterdir()]
    customers = {parsed(p.read_bytes())["From"].addresses[0].addr_spec.lower()
                 for p in CUSTOMER_FILES}
    to = {m["To"].addresses[0].addr_spec.lower() for m in delivered}
    assert to == customers
    assert len(delivered) == len(customers)
    assert all(m["Auto-Submitted"] == "auto-replied" for m in delivered)


def test_outgoing_mail_carries_anti_loop_headers(ctx: Context) -> None:
    """Every acknowledgement says it is automatic, asks for no auto-reply and names us."""
    _, ack = new_ticket(ctx)
    msg = parsed(ack["raw"])
    assert msg["Auto-Submitted"] == "auto-replied"
    assert msg["X-Auto-Response-Suppress"] == "All"
    assert msg["X-Mailbot-Loop"] == "mb-test"
    assert ctx.signer.read_message_id(ack["message_id"]) is not None


# -- out of office -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", OOF_FILES)
def test_out_of_office_is_a_note_without_status_change(ctx: Context, name: str) -> None:
    """A vacation reply to our acknowledgement lands on the ticket as a note; nothing else."""
    raw = (DATA / "robots" / name).read_bytes()
    sender = parsed(raw)["From"].addresses[0]
    number, ack = new_ticket(ctx, sender=(sender.display_name, sender.addr_spec.lower()))
    ticket = tq.by_number(ctx.store, number)
    with ctx.store.transaction():
        filing.change_status(ctx, ticket, "waiting", ctx.clock())
    before = len(outbox_rows(ctx))
    outcome = ingest(ctx, CORPUS_ID.sub(ack["message_id"].encode(), raw))
    assert (outcome.status, outcome.ticket_number) == ("note", number)
    data = detail(ctx, number)
    assert data["status"] == "waiting"
    assert [m["direction"] for m in data["messages"]] == ["in", "auto"]
    assert data["events"][-1]["kind"] == "auto_reply"
    assert len(outbox_rows(ctx)) == before


def test_out_of_office_subjects_without_headers(ctx: Context) -> None:
    """"Abwesenheitsnotiz", "Automatische Antwort", "Out of Office", "Autoreply": a note each."""
    number, ack = new_ticket(ctx)
    for subject in ("Abwesenheitsnotiz: Drucker druckt nicht",
                    "Automatische Antwort: Drucker druckt nicht",
                    "Out of Office: Drucker druckt nicht", "Autoreply: Drucker druckt nicht"):
        outcome = ingest(ctx, build_mail(subject=subject, sender=ALICE,
                                         in_reply_to=ack["message_id"]))
        assert (outcome.status, outcome.ticket_number) == ("note", number), subject
    assert detail(ctx, number)["status"] == "new"
    assert len(outbox_rows(ctx)) == 1


def test_out_of_office_for_unknown_ticket_is_dropped(ctx: Context) -> None:
    """A vacation reply that belongs to no ticket opens none and is not answered."""
    outcome = ingest(ctx, (DATA / "robots" / "outlook_oof_de.eml").read_bytes())
    assert outcome.status == "ignored"
    assert ticket_count(ctx) == 0
    assert outbox_rows(ctx) == []


# -- bounces -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(DSN_FILES))
def test_bounce_marks_outbox_notes_ticket_and_holds_next_mail(ctx: Context, name: str) -> None:
    """A DSN for our mail: row bounced, note with recipient and reason, next mail held."""
    recipient = DSN_FILES[name]
    number, ack = new_ticket(ctx, sender=("Kunde", recipient))
    assert deliver(ctx) == 1
    dsn = CORPUS_ID.sub(ack["message_id"].encode(), (DATA / "robots" / name).read_bytes())
    outcome = ingest(ctx, dsn)
    assert (outcome.status, outcome.ticket_number) == ("bounce", number)
    row = outbox_rows(ctx, "acknowledgement")[0]
    assert row["status"] == "bounced"
    assert "5.1" in row["last_error"]
    data = detail(ctx, number)
    assert data["messages"][-1]["direction"] == "note"
    bounce = next(e["data"] for e in data["events"] if e["kind"] == "bounce")
    assert bounce["recipients"] == [recipient]
    assert bounce["status"].startswith("5.1") and bounce["reason"]
    assert dq.contact_by_address(ctx.store, recipient)["bounced_at"]
    assert_next_notification_held(ctx, number, recipient)


def assert_next_notification_held(ctx: Context, number: str, recipient: str) -> None:
    """Change the ticket's status: the status mail to the bounced address is held, visibly."""
    ticket = tq.by_number(ctx.store, number)
    with ctx.store.transaction():
        filing.change_status(ctx, ticket, "open", ctx.clock(), actor="agent@example.com")
    ctx.clock.advance(minutes=5)
    jobs.run_all(ctx, ctx.clock())
    notification = outbox_rows(ctx)[-1]
    assert notification["kind"] != "acknowledgement"
    assert notification["recipients"] == [recipient]
    assert notification["status"] == "held"
    assert deliver(ctx) == 0
    shown = run_cli(ctx, "tickets", "show", number, "--json")
    assert shown.exit_code == 0, shown.output
    held = [e for e in json.loads(shown.output)["events"] if e["kind"] == "mail_held"]
    assert held and held[-1]["data"]["recipients"] == [recipient]
    assert "5.1" in held[-1]["data"]["reason"]


def test_customer_writing_again_clears_the_bounce(ctx: Context) -> None:
    """Once the bounced address writes to us again, its mail is delivered again."""
    recipient = DSN_FILES["postfix_dsn_511.eml"]
    _, ack = new_ticket(ctx, sender=("Kunde", recipient))
    dsn = CORPUS_ID.sub(ack["message_id"].encode(),
                        (DATA / "robots" / "postfix_dsn_511.eml").read_bytes())
    ingest(ctx, dsn)
    new_ticket(ctx, sender=("Kunde", recipient), subject="Neue Adresse geht wieder")
    assert outbox_rows(ctx, "acknowledgement")[-1]["status"] == "pending"


# -- loops -------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["loop-header", "from-support", "from-alias",
                                     "from-plus-address", "our-own-ack"])
def test_our_own_mail_never_opens_a_ticket(ctx: Context, variant: str) -> None:
    """Mail carrying our loop header or sent from our own support address opens no ticket."""
    if variant == "our-own-ack":
        _, ack = new_ticket(ctx)
        raw = ack["raw"]
    else:
        sender = {"from-support": SUPPORT, "from-alias": ALIAS,
                  "from-plus-address": "support+t123-abc@example.com"}.get(variant, ALICE[1])
        headers = (("X-Mailbot-Loop", "mb-test"),) if variant == "loop-header" else ()
        raw = build_mail(sender=("Support", sender), headers=headers, subject="Hallo")
    before = (ticket_count(ctx), len(outbox_rows(ctx)))
    outcome = ingest(ctx, raw)
    assert outcome.status == "ignored", outcome
    assert (ticket_count(ctx), len(outbox_rows(ctx))) == before


def test_rate_limit_silences_the_sixth_acknowledgement(ctx: Context, caplog) -> None:
    """The 6th new mail from one sender within an hour gets no answer, and the log says so."""
    caplog.set_level(logging.INFO)
    numbers = []
    for i in range(6):
        ctx.clock.advance(minutes=5)
        numbers.append(new_ticket_any(ctx, f"Frage Nummer {i}"))
    assert len(acks_to(ctx, ALICE[1])) == 5
    held = [e for e in detail(ctx, numbers[-1])["events"] if e["kind"] == "acknowledgement_held"]
    assert held and "rate limit" in held[0]["data"]["reason"]
    assert any("rate limit" in r.getMessage() and ALICE[1] in r.getMessage()
               for r in caplog.records if r.levelno >= logging.INFO)
    ctx.clock.advance(minutes=40)
    new_ticket_any(ctx, "Eine Stunde später")
    assert len(acks_to(ctx, ALICE[1])) == 6


def new_ticket_any(ctx: Context, subject: str) -> str:
    """Open a ticket from Alice (acknowledged or not); its number."""
    outcome = ingest(ctx, build_mail(sender=ALICE, subject=subject))
    assert outcome.status == "created", outcome
    return outcome.ticket_number


# -- our own signed Message-IDs ------------------------------------------------------------------


def test_forged_message_id_does_not_thread(ctx: Context) -> None:
    """A reply citing a made-up "mb.<number>.<nonce>.<mac>" id opens a new ticket."""
    number, ack = new_ticket(ctx)
    forged = f"mb.{number}.0123456789ab.deadbeefcafe@example.com"
    assert ctx.signer.read_message_id(forged) is None
    for headers in ({"in_reply_to": forged}, {"references": (forged,)}):
        outcome = ingest(ctx, build_mail(sender=ALICE, subject="Weitere Frage", **headers))
        assert outcome.status == "created" and outcome.ticket_number != number, outcome
    genuine = ingest(ctx, build_mail(sender=ALICE, subject="Antwort",
                                     in_reply_to=ack["message_id"]))
    assert (genuine.status, genuine.ticket_number) == ("followup", number)


def test_same_mail_to_two_support_addresses_is_one_ticket(ctx: Context) -> None:
    """A mail To one support address and Cc another is one ticket with one acknowledgement."""
    raw = build_mail(sender=ALICE, to=SUPPORT, headers=(("Cc", ALIAS),))
    assert ingest(ctx, raw).status == "created"
    assert ticket_count(ctx) == 1
    assert len(acks_to(ctx, ALICE[1])) == 1


def test_same_mail_in_two_mailboxes_is_one_ticket(ctx: Context, dovecot: Dovecot) -> None:
    """The copies delivered to two IMAP mailboxes (support@ and hilfe@) make one ticket."""
    raw = build_mail(sender=ALICE, to=SUPPORT, headers=(("Cc", ALIAS),))
    users = [dovecot.new_user(), dovecot.new_user()]
    for user, address in zip(users, (SUPPORT, ALIAS), strict=True):
        dovecot.append(user.username, "INBOX", f"Delivered-To: {address}\r\n".encode() + raw)
    feed = Feed(file=lambda raw, source: ingest(ctx, raw, source), flush=lambda: None)
    filed = [imap_source(user).run_once(feed) for user in users]
    assert filed == [1, 1]
    assert ticket_count(ctx) == 1
    assert len(acks_to(ctx, ALICE[1])) == 1
    assert all(dovecot.message_count(u.username) == 0 for u in users)


def test_copies_without_message_id_are_one_ticket(ctx: Context) -> None:
    """Two copies of a mail without Message-ID (different Received lines) make one ticket."""
    raw = build_mail(sender=ALICE, to=SUPPORT, message_id="")
    first = ingest(ctx, b"Received: from a.example by mx1\r\n" + raw)
    second = ingest(ctx, b"Received: from a.example by mx2\r\n" + raw)
    assert (first.status, second.status) == ("created", "duplicate")
    assert ticket_count(ctx) == 1


def imap_source(user: ImapAccount) -> ImapSource:
    """An IMAP source for one Dovecot user."""
    cfg = ImapConfig(host=user.host, port=user.port, username=user.username,
                     password=user.password, security="plain", done_folder="Processed",
                     name=user.username)
    return ImapSource(cfg, lambda mailbox, value: True, Health())


# -- strangers ---------------------------------------------------------------------------------

SECRET_SUBJECT = "Zugang Buchhaltung Falkenstein"
SECRET_BODY = "Das Kennwort der Buchhaltung lautet Zebra-Kolibri-42.\n"


def customer_account(ctx: Context) -> None:
    """The account "Kunde GmbH" owns the domain kunde.example."""
    with ctx.store.transaction():
        dq.upsert_account(ctx.store, {"name": "Kunde GmbH", "customer_number": "10001",
                                      "domains": ["kunde.example"], "contract": None,
                                      "language": "de"})


def stranger_setup(tmp_path: Path, mode: str) -> tuple[Context, str]:
    """An instance with ``stranger_followup = mode`` and Alice's confidential ticket."""
    ctx = make_ctx(tmp_path, f'[hygiene]\nstranger_followup = "{mode}"\n', clock=Clock())
    customer_account(ctx)
    number, _ = new_ticket(ctx, subject=SECRET_SUBJECT, text=SECRET_BODY)
    return ctx, number


def stranger_mail(number: str, sender=("Mallory", "mallory@fremd.example")) -> bytes:
    """A mail with a genuine ticket tag from someone else."""
    return build_mail(sender=sender, subject=f"Re: [Ticket#{number}] Frage",
                      text="Wie ist der Stand?\n")


def test_stranger_opens_linked_ticket_and_learns_nothing(tmp_path: Path) -> None:
    """A stranger using a ticket's tag gets a new ticket; the answer reveals nothing of the old."""
    ctx, number = stranger_setup(tmp_path, "new_linked")
    outcome = ingest(ctx, stranger_mail(number))
    assert outcome.status == "created" and outcome.ticket_number != number
    assert detail(ctx, outcome.ticket_number)["parent"] == number
    assert len(detail(ctx, number)["messages"]) == 1
    ack = acks_to(ctx, "mallory@fremd.example")
    assert len(ack) == 1
    text = body_text(ack[0]["raw"]) + ack[0]["raw"].decode("ascii", "replace")
    for secret in ("Falkenstein", "Buchhaltung", "Zebra-Kolibri-42", "alice@kunde.example"):
        assert secret not in text


def test_stranger_mode_note(tmp_path: Path) -> None:
    """With stranger_followup = "note" the mail is an internal note; the stranger hears nothing."""
    ctx, number = stranger_setup(tmp_path, "note")
    outcome = ingest(ctx, stranger_mail(number))
    assert (outcome.status, outcome.ticket_number) == ("note", number)
    data = detail(ctx, number)
    assert data["status"] == "new"
    assert data["messages"][-1]["direction"] == "note"
    assert any(e["kind"] == "stranger_mail" for e in data["events"])
    assert ticket_count(ctx) == 1
    assert acks_to(ctx, "mallory@fremd.example") == []


def test_stranger_mode_accept(tmp_path: Path) -> None:
    """With stranger_followup = "accept" the mail is a follow-up on the tagged ticket."""
    ctx, number = stranger_setup(tmp_path, "accept")
    outcome = ingest(ctx, stranger_mail(number))
    assert (outcome.status, outcome.ticket_number) == ("followup", number)
    assert ticket_count(ctx) == 1


@pytest.mark.parametrize("who", ["colleague", "contact", "participant"])
def test_people_of_the_ticket_are_not_strangers(tmp_path: Path, who: str) -> None:
    """The contact, a colleague from the same account and a Cc'd participant follow up."""
    ctx = make_ctx(tmp_path)
    customer_account(ctx)
    number, _ = new_ticket(ctx, headers=(("Cc", "partner@extern.example"),))
    sender = {"colleague": ("Bob", "bob@kunde.example"), "contact": ALICE,
              "participant": ("Partner", "partner@extern.example")}[who]
    outcome = ingest(ctx, stranger_mail(number, sender=sender))
    assert (outcome.status, outcome.ticket_number) == ("followup", number)


def test_tagged_mail_with_reply_headers_stripped_is_followup(ctx: Context) -> None:
    """The contact replying with only the subject tag (no threading headers) follows up."""
    number, _ = new_ticket(ctx)
    raw = replace_headers(stranger_mail(number, sender=ALICE), In_Reply_To=None)
    assert ingest(ctx, raw).status == "followup"


def test_mail_without_sender_address_is_not_acknowledged(ctx: Context) -> None:
    """A mail with no usable From address becomes a ticket, but no answer goes to nowhere."""
    raw = replace_headers(build_mail(), From="Kunde ohne Adresse")
    outcome = ingest(ctx, raw)
    assert outcome.status == "created"
    assert outbox_rows(ctx) == []
    held = [e for e in detail(ctx, outcome.ticket_number)["events"]
            if e["kind"] == "acknowledgement_held"]
    assert held and "no sender address" in held[0]["data"]["reason"]
