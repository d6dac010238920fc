"""Spam is held, never answered; a forged or undeliverable sender gets no acknowledgement.

Real mails through the real pipeline on a real SQLite file, the real `mailbot` CLI: what an
operator sees (`mailbot spam ...`, tickets, metrics) and what leaves (the outbox).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from hygiene_kit import (
    Clock,
    acks_to,
    body_text,
    detail,
    ingest,
    make_ctx,
    outbox_rows,
    run_cli,
    ticket_count,
)
from mails import CUSTOMER, build_mail

from mailbot.context import Context
from mailbot.tickets import jobs

OURS = "mx.example.com"
AGENT = "anna@example.com"
SETUP = f"""
[trust]
authserv_id = "{OURS}"
[[team.agents]]
address = "{AGENT}"
name = "Anna Agent"
"""
SENDER = CUSTOMER[1]
FOREFRONT = "CIP:203.0.113.9;CTRY:NL;LANG:en;SCL:{};SRV:;IPV:NLI;SFV:SPM;H:mail.example;"
# The filter in front of us said spam, in every form mailbot reads.
SPAM_VERDICTS = {
    "spamassassin-flag": [("X-Spam-Flag", "YES")],
    "spamassassin-status": [("X-Spam-Status", "Yes, score=7.3 required=5.0 tests=BAYES_99,"
                                              "URIBL_BLOCKED autolearn=no version=4.0.0")],
    "rspamd-x-spam": [("X-Spam", "Yes")],
    "rspamd-reject": [("X-Rspamd-Action", "reject")],
    "rspamd-add-header": [("X-Rspamd-Action", "add header")],
    "rspamd-rewrite-subject": [("X-Rspamd-Action", "rewrite subject")],
    "exchange-scl-5": [("X-MS-Exchange-Organization-SCL", "5")],
    "exchange-scl-9": [("X-MS-Exchange-Organization-SCL", "9")],
    "forefront-scl-6": [("X-Forefront-Antispam-Report", FOREFRONT.format(6))],
    "dmarc-fail-ours": [("Authentication-Results",
                         f"{OURS}; spf=pass smtp.mailfrom=bank.example; dkim=none; "
                         "dmarc=fail (p=reject) header.from=bank.example")],
    # The sender's own "no" beside the filter's "yes", in both orders: the filter wins.
    "sender-no-below-filter-yes": [("X-Spam-Flag", "YES"), ("X-Spam-Flag", "NO")],
    "sender-no-above-filter-yes": [("X-Spam-Flag", "NO"), ("X-Spam-Flag", "YES")],
    "sender-no-status-and-filter-scl": [("X-Spam-Status", "No, score=-5.0"),
                                        ("X-MS-Exchange-Organization-SCL", "7")],
}
# Verdicts that are not spam: filed and answered as always.
HAM_VERDICTS = {
    "spamassassin-no": [("X-Spam-Flag", "NO"), ("X-Spam-Status", "No, score=1.2 required=5.0")],
    "rspamd-no-action": [("X-Rspamd-Action", "no action"), ("X-Spam", "No")],
    "rspamd-greylist": [("X-Rspamd-Action", "greylist")],
    "exchange-scl-4": [("X-MS-Exchange-Organization-SCL", "4")],
    "exchange-scl-trusted": [("X-MS-Exchange-Organization-SCL", "-1")],
    "forefront-scl-4": [("X-Forefront-Antispam-Report", FOREFRONT.format(4))],
    "dmarc-fail-other-server": [("Authentication-Results",
                                 "mx.evil.example; dmarc=fail header.from=kunde.example")],
}


@pytest.fixture
def clock() -> Clock:
    """The instance's clock (Tuesday 24 Nov 2026, 10:00 Berlin), moved by the tests."""
    return Clock()


@pytest.fixture
def ctx(tmp_path: Path, clock: Clock) -> Context:
    """An instance trusting our border MTA's Authentication-Results, with one agent."""
    return make_ctx(tmp_path, SETUP, clock=clock)


def mail(headers: list[tuple[str, str]], subject: str = "Drucker druckt nicht",
         sender: tuple[str, str] = CUSTOMER) -> bytes:
    """A customer's mail carrying ``headers`` (as the filter or the sender wrote them)."""
    return build_mail(subject=subject, sender=sender, headers=tuple(headers))


def held(ctx: Context) -> list[dict]:
    """What `mailbot spam list --json` shows."""
    result = run_cli(ctx, "spam", "list", "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def run_json(ctx: Context, *args: str) -> object:
    """The parsed output of a `mailbot ... --json` command that must succeed."""
    result = run_cli(ctx, *args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def metric(ctx: Context, line_start: str) -> float:
    """The value of one metric line of /metrics (as the daemon renders it)."""
    for line in ctx.metrics.render().decode().splitlines():
        if line.startswith(line_start + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no metric {line_start}")


@pytest.mark.parametrize("headers", SPAM_VERDICTS.values(), ids=SPAM_VERDICTS.keys())
def test_spam_by_any_verdict_is_held_without_ticket_or_mail(ctx, headers):
    """No ticket, no acknowledgement, no agent notice; `spam list` shows it and why."""
    outcome = ingest(ctx, mail(headers, subject="Cheap watches"))
    assert outcome.status == "spam"
    assert ticket_count(ctx) == 0 and outbox_rows(ctx) == []
    [entry] = held(ctx)
    assert entry["from_addr"] == SENDER and entry["subject"] == "Cheap watches"
    assert entry["reason"] and entry["reason"] in outcome.detail
    assert metric(ctx, 'mailbot_mails_ingested_total{outcome="spam"}') == 1
    assert metric(ctx, "mailbot_spam_held") == 1


@pytest.mark.parametrize("headers", HAM_VERDICTS.values(), ids=HAM_VERDICTS.keys())
def test_a_verdict_that_is_not_spam_files_and_answers_as_always(ctx, headers):
    """Below the SCL threshold, rspamd's harmless actions, another server's DMARC claim."""
    outcome = ingest(ctx, mail(headers))
    assert outcome.status == "created"
    assert len(acks_to(ctx, SENDER)) == 1 and held(ctx) == []


def test_the_reason_names_the_filters_verdict(ctx):
    """An operator sees which header said spam, with the SCL threshold or our MTA's name."""
    ingest(ctx, mail(SPAM_VERDICTS["exchange-scl-9"], subject="one"))
    ingest(ctx, mail(SPAM_VERDICTS["dmarc-fail-ours"], subject="two"))
    reasons = [e["reason"] for e in held(ctx)]
    assert reasons == ["header X-MS-Exchange-Organization-SCL: 9 (SCL threshold 5)",
                       f"DMARC failed for bank.example (Authentication-Results of {OURS})"]


def test_released_spam_is_filed_and_acknowledged_once(ctx, tmp_path):
    """`spam release` files the mail with its acknowledgement; a re-delivery stays a duplicate."""
    raw = mail(SPAM_VERDICTS["spamassassin-flag"])
    path = tmp_path / "spam.eml"
    path.write_bytes(raw)
    delivered = run_cli(ctx, "ingest", str(path))  # as the MTA's pipe: delivered, exit 0
    assert delivered.exit_code == 0 and ": spam " in delivered.output
    assert ingest(ctx, raw).status == "duplicate"  # the same bytes again: held once
    [entry] = held(ctx)

    released = run_cli(ctx, "spam", "release", str(entry["id"]))
    assert released.exit_code == 0, released.output
    assert f"{entry['id']}: created " in released.output
    [ticket] = run_json(ctx, "tickets", "list")
    assert ticket["contact"] == SENDER and held(ctx) == []
    [ack] = acks_to(ctx, SENDER)
    assert ticket["number"] in body_text(ack["raw"])
    assert [r["kind"] for r in outbox_rows(ctx) if AGENT in r["recipients"]] == \
        ["agent_new_ticket"]

    assert ingest(ctx, raw).status == "duplicate"  # re-delivered after the release
    again = run_cli(ctx, "spam", "release", str(entry["id"]))
    assert again.exit_code == 65 and "no mail held as spam" in again.output
    assert ticket_count(ctx) == 1 and len(acks_to(ctx, SENDER)) == 1


def test_held_spam_writes_no_attachment_files_until_released(ctx):
    """Spam's attachments stay inside its raw bytes; released, the ticket has the file."""
    payload = b"%PDF-1.4 invoice " * 100
    raw = build_mail(headers=(("X-Spam-Flag", "YES"),),
                     attachments=(("rechnung.pdf", "application/pdf", payload),))
    ingest(ctx, raw)
    digest = hashlib.sha256(payload).hexdigest()
    assert not ctx.files.present({digest})
    [entry] = held(ctx)
    assert run_cli(ctx, "spam", "release", str(entry["id"])).exit_code == 0
    [ticket] = run_json(ctx, "tickets", "list")
    [message] = detail(ctx, ticket["number"])["messages"]
    assert [a["filename"] for a in message["attachments"]] == ["rechnung.pdf"]
    assert ctx.files.get(digest) == payload


def test_another_copy_of_held_spam_is_a_duplicate_too(ctx):
    """The same Message-ID in other bytes (a copy to an alias) is held no second time."""
    first = mail(SPAM_VERDICTS["rspamd-reject"])
    copy = first.replace(b"Drucker druckt nicht", b"Drucker druckt nicht ")
    ingest(ctx, first)
    assert ingest(ctx, copy).status == "duplicate"
    assert len(held(ctx)) == 1 and ticket_count(ctx) == 0


def test_show_lets_an_operator_judge_a_held_mail(ctx):
    """`spam show` prints why it was held, its headers and its text."""
    ingest(ctx, mail(SPAM_VERDICTS["spamassassin-status"], subject="Gewinnspiel"))
    [entry] = held(ctx)
    shown = run_cli(ctx, "spam", "show", str(entry["id"]))
    assert shown.exit_code == 0, shown.output
    assert "held because header X-Spam-Status: Yes, score=7.3" in shown.output
    assert "subject: Gewinnspiel" in shown.output
    assert "unser Drucker druckt nicht" in shown.output
    assert run_cli(ctx, "spam", "show", str(entry["id"] + 1)).exit_code == 65


def test_delete_forgets_the_mail_and_its_raw_bytes(ctx):
    """Deleted spam is gone with its spool file; sent again, it is held again."""
    raw = mail(SPAM_VERDICTS["spamassassin-flag"])
    ingest(ctx, raw)
    [entry] = held(ctx)
    assert ctx.spool.present({entry["sha256"]})

    deleted = run_cli(ctx, "spam", "delete", str(entry["id"]))
    assert deleted.exit_code == 0, deleted.output
    assert held(ctx) == [] and not ctx.spool.present({entry["sha256"]})
    assert metric(ctx, "mailbot_spam_held") == 0
    assert run_cli(ctx, "spam", "delete", str(entry["id"])).exit_code == 65
    assert run_cli(ctx, "spam", "release", str(entry["id"])).exit_code == 65

    assert ingest(ctx, raw).status == "spam" and ctx.spool.get(entry["sha256"]) == raw
    assert ticket_count(ctx) == 0 and outbox_rows(ctx) == []


def test_held_spam_expires_after_keep_days(ctx, clock):
    """The scheduler's jobs delete a held mail after [spam] keep_days, not before."""
    ingest(ctx, mail(SPAM_VERDICTS["spamassassin-flag"], subject="old"))
    clock.advance(days=10)
    ingest(ctx, mail(SPAM_VERDICTS["spamassassin-flag"], subject="newer"))
    first_sha = held(ctx)[0]["sha256"]

    assert jobs.run_all(ctx, clock.advance(days=19, hours=23))["expire_spam"] == 0
    assert [e["subject"] for e in held(ctx)] == ["old", "newer"]
    assert jobs.run_all(ctx, clock.advance(hours=2))["expire_spam"] == 1
    assert [e["subject"] for e in held(ctx)] == ["newer"]
    assert not ctx.spool.present({first_sha})


def test_keep_days_is_configurable(tmp_path, clock):
    """[spam] keep_days = 2: gone after two days."""
    ctx = make_ctx(tmp_path, "[spam]\nkeep_days = 2\n", clock=clock)
    ingest(ctx, mail(SPAM_VERDICTS["rspamd-x-spam"]))
    assert jobs.run_all(ctx, clock.advance(days=2, seconds=1))["expire_spam"] == 1
    assert held(ctx) == []


def test_with_spam_holding_off_spam_is_filed_as_before(tmp_path, clock):
    """[spam] enabled = false: the filter's verdict changes nothing."""
    ctx = make_ctx(tmp_path, SETUP + "[spam]\nenabled = false\n", clock=clock)
    assert ingest(ctx, mail(SPAM_VERDICTS["spamassassin-flag"])).status == "created"
    assert len(acks_to(ctx, SENDER)) == 1 and held(ctx) == []


def test_the_scl_threshold_is_configurable(tmp_path, clock):
    """[spam] scl_threshold = 9: SCL 8 is filed, SCL 9 held."""
    ctx = make_ctx(tmp_path, "[spam]\nscl_threshold = 9\n", clock=clock)
    scl = "X-MS-Exchange-Organization-SCL"
    assert ingest(ctx, mail([(scl, "8")], subject="eight")).status == "created"
    assert ingest(ctx, mail([(scl, "9")], subject="nine")).status == "spam"


FORGED = {
    "spf-fail": ((f"{OURS}; spf=fail smtp.mailfrom=kunde.example; dkim=none; dmarc=none",),
                 CUSTOMER, "SPF failed for kunde.example (Authentication-Results of "
                           f"{OURS})",
                 f"SPF ist für kunde.example fehlgeschlagen (Authentication-Results von {OURS})"),
    "no-mailbox": ((), ("Jemand", "jemand@mail.invalid"), "is not a deliverable address",
                   "an die Absenderadresse jemand@mail.invalid lässt sich keine E-Mail "
                   "zustellen"),
}


@pytest.mark.parametrize(("results", "sender", "reason", "worded"), FORGED.values(),
                         ids=FORGED.keys())
def test_no_backscatter_the_ticket_is_filed_and_agents_see_why(ctx, results, sender, reason,
                                                                worded):
    """SPF failed at our MTA, or no valid mailbox: a ticket, no acknowledgement, the reason
    on the ticket (for operators) and, in German words, in the agents' new-ticket mail."""
    outcome = ingest(ctx, mail([("Authentication-Results", r) for r in results],
                               sender=sender))
    assert outcome.status == "created" and held(ctx) == []
    assert outbox_rows(ctx, "acknowledgement") == []
    [event] = [e for e in detail(ctx, outcome.ticket_number)["events"]
               if e["kind"] == "acknowledgement_held"]
    assert reason in event["data"]["reason"]
    [notice] = outbox_rows(ctx, "agent_new_ticket")
    assert worded in " ".join(body_text(notice["raw"]).split())


def test_the_agents_mail_says_nothing_of_a_held_acknowledgement_when_one_went(ctx):
    """An SPF pass at our MTA: the acknowledgement goes, the agents' mail has no such line."""
    results = f"{OURS}; spf=pass smtp.mailfrom=kunde.example; dmarc=pass"
    outcome = ingest(ctx, mail([("Authentication-Results", results)]))
    assert outcome.status == "created" and len(acks_to(ctx, SENDER)) == 1
    [notice] = outbox_rows(ctx, "agent_new_ticket")
    assert "Eingangsbestätigung" not in body_text(notice["raw"])

