"""End to end through the `mailbot` CLI: contracts, priorities, response deadlines and
missing information in the acknowledgement, and the order agents work tickets in."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from daemon_util import REPO, Instance
from mails import build_mail
from servers import ReceivedMail, SmtpSink

from mailbot.outbound import wording
from mailbot.policy.bizhours import add_business_time, parse_duration
from mailbot.policy.rules import PolicyConfig, build_policy, calendar_for

ACCOUNTS = REPO / "mailbot" / "examples" / "accounts.example.toml"
ANNA_MEIER = ("Anna Meier", "anna.meier@muster-maschinenbau.de")
STRANGER = ("Max Neu", "max@unbekannt.example")
FRIDAY_15 = datetime(2026, 11, 27, 14, 0, tzinfo=UTC)  # 15:00 in Berlin


@pytest.fixture
def bot(tmp_path, smtp_sink: SmtpSink) -> Instance:
    """An instance relaying to the sink, with the example accounts imported."""
    instance = Instance.for_servers(tmp_path, sink=smtp_sink)
    result = instance.cli("accounts", "import", str(ACCOUNTS))
    assert result.exit_code == 0, result.output
    return instance


def ingest(bot: Instance, raw: bytes) -> str:
    """File one mail with `mailbot ingest` and return its ticket number."""
    result = bot.cli("ingest", input=raw)
    assert result.exit_code == 0, result.output
    return re.match(r"stdin: created (\S+)", result.stdout).group(1)


def acknowledgement(bot: Instance, sink: SmtpSink, number: str) -> str:
    """Deliver the outbox and return the body of the ticket's acknowledgement."""
    result = bot.cli("outbox", "flush")
    assert result.exit_code == 0, result.output
    mail: ReceivedMail = sink.wait_for(lambda m: m.subject.startswith(f"[Ticket#{number}]"))[0]
    return mail.message.get_content()


def test_outage_from_contract_customer_is_urgent_with_deadline(bot, smtp_sink):
    """A maintenance customer's outage report is urgent and the reply names the deadline."""
    number = ingest(bot, build_mail(sender=ANNA_MEIER, subject="Totalausfall Fertigung",
                                    text="Hallo,\nunsere Software funktioniert nicht mehr.\n"))
    ticket = bot.ticket(number)
    assert (ticket["priority"], ticket["entitled"], ticket["contract"]) == \
        ("urgent", True, "wartung")
    [why] = [e["data"] for e in ticket["events"] if e["kind"] == "priority"]
    assert (why["rule"], why["matched"]) == ("outage", "Totalausfall")
    calendar = calendar_for(build_policy(PolicyConfig()), None)[1]
    expected = add_business_time(calendar, datetime.fromisoformat(ticket["created_at"]),
                                 parse_duration("4h"))
    assert datetime.fromisoformat(ticket["first_response_due"]) == expected
    body = acknowledgement(bot, smtp_sink, number)
    assert f"Wir melden uns spätestens {wording.moment(expected, 'Europe/Berlin', 'de')}." \
        in body
    assert "Priorität: dringend" in body and "Kundennummer" not in body


def test_unknown_sender_is_asked_for_customer_number(bot, smtp_sink):
    """A stranger without a customer number is asked for it in the acknowledgement."""
    number = ingest(bot, build_mail(sender=STRANGER, subject="Lizenz verlängern",
                                    text="Guten Tag,\nwie kann ich meine Lizenz verlängern?\n"))
    ticket = bot.ticket(number)
    assert (ticket["account"], ticket["entitled"], ticket["missing"]) == \
        (None, False, ["customer_number"])
    assert "Ihre Kundennummer (wir konnten Ihre E-Mail-Adresse" in \
        acknowledgement(bot, smtp_sink, number)


def test_customer_number_in_text_is_a_claim_and_not_asked_for_again(bot, smtp_sink):
    """A stranger who names a known customer number is not filed under that account (a
    claim, see tests/test_claims.py), nor asked for the number, nor told whose it is."""
    number = ingest(bot, build_mail(sender=STRANGER, subject="Frage zur Kasse",
                                    text="Hallo,\nunsere Kundennummer ist 10002.\n"
                                         "Wie kann ich einen Bon stornieren?\n"))
    ticket = bot.ticket(number)
    assert (ticket["account"], ticket["contract"], ticket["entitled"], ticket["missing"]) == \
        (None, None, False, [])
    assert [c["account"] for c in ticket["claims"]] == ["Bäckerei Schmidt"]
    body = acknowledgement(bot, smtp_sink, number)
    assert "Kundennummer" not in body and "Bäckerei" not in body


def test_ticket_list_orders_work_for_agents(make_desk):
    """Urgent tickets come first, entitled customers first within a priority, then deadline."""
    desk = make_desk(FRIDAY_15)
    assert desk.instance.cli("accounts", "import", str(ACCOUNTS)).exit_code == 0
    mails = {
        "stranger-outage": (STRANGER, "Totalausfall", "Nichts geht mehr."),
        "contract-error": (ANNA_MEIER, "Fehler beim Drucken", "Bitte prüfen."),
        "pos-error": (("Bäcker", "kasse@baeckerei-schmidt.de"), "Fehler an der Kasse", "Hilfe"),
        "stranger-error": (("Eva", "eva@anders.example"), "Problem mit dem Export", "Hilfe"),
        "stranger-plain": (("Udo", "udo@anders.example"), "Rechnung", "Bitte senden."),
    }
    numbers = {}
    for key, (sender, subject, text) in mails.items():
        numbers[desk.receive(build_mail(sender=sender, subject=subject, text=text))
                .ticket_number] = key
        desk.now += timedelta(minutes=1)
    listed = desk.instance.cli_json("tickets", "list")
    assert [numbers[t["number"]] for t in listed] == [
        "pos-error", "contract-error", "stranger-outage", "stranger-error", "stranger-plain"]
    assert [(t["priority"], t["entitled"]) for t in listed] == [
        ("urgent", True), ("urgent", True), ("urgent", False), ("high", False),
        ("normal", False)]
