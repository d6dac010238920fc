"""A follow-up that brings what was missing: the ticket's facts grow, nothing is asked twice."""

from __future__ import annotations

from datetime import UTC, datetime

from mails import build_mail

TUESDAY_10 = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)


def test_a_follow_up_fills_in_the_missing_facts(make_desk):
    """The version named in the customer's answer is on the ticket and no longer missing."""
    desk = make_desk(TUESDAY_10)
    first = desk.receive(build_mail(subject="Absturz", text="Fehler: Export stürzt ab.\n"))
    before = desk.ticket(first.ticket_number)
    assert "version" in before["missing"]
    desk.receive(build_mail(subject=f"Re: [Ticket#{first.ticket_number}] Absturz",
                            text="Wir nutzen Version 4.2.1 auf Windows 11.\n"))
    after = desk.ticket(first.ticket_number)
    assert after["facts"]["version"] == ["4.2.1"]
    assert after["facts"]["device"] == ["Windows 11"]
    assert "version" not in after["missing"] and "device" not in after["missing"]
    [event] = desk.events(first.ticket_number, "facts_updated")
    assert event["data"]["added"]["version"] == ["4.2.1"]
