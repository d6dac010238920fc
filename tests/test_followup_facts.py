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


def test_a_ticket_from_the_null_sender_gets_no_automatic_mail_later(make_desk):
    """RFC 3834: a mail from MAIL FROM:<> is filed, but neither its acknowledgement nor
    a later status mail goes to the From address; a normal customer's ticket still gets both."""
    from mailbot.inbound import pipeline
    from mailbot.inbound.source import Envelope
    from mailbot.tickets import actions, jobs

    desk = make_desk(TUESDAY_10)
    quiet = pipeline.ingest(desk.ctx, build_mail(subject="Ohne Absender"), "smtp",
                            envelope=Envelope(sender=""))
    normal = desk.receive(build_mail(subject="Normal",
                                     sender=("Anna Berg", "anna.berg@kunde.example")))
    for number in (quiet.ticket_number, normal.ticket_number):
        actions.set_status(desk.ctx, number, "resolved")
    desk.now = desk.now.replace(hour=12)
    assert desk.run(jobs.status_notifications) == 1
    assert desk.outbox(kind="status_changed", to="anna.berg@kunde.example")
    assert not desk.outbox(kind="status_changed", to="juergen.mueller@kunde.example")
    assert not desk.outbox(kind="acknowledgement", to="juergen.mueller@kunde.example")
