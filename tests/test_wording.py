"""What people read: greetings, local times, German words in German mails, one tag, "-- "."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from mails import build_mail

from mailbot.outbound.wording import person_name

TUESDAY_10 = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)  # 10:00 in Berlin


def body(mail) -> str:
    """The text of a queued mail."""
    return mail.get_content()


def test_a_greeting_names_people_only():
    """Display names of people are used, roles and shared mailboxes are not."""
    assert person_name("Anna Berg") == "Anna Berg"
    assert person_name("Müller, Bernd") == "Bernd Müller"
    assert person_name("Kasse") == "" and person_name("Kasse Filiale Nord") == ""
    assert person_name("Support Team") == "" and person_name("anna") == ""


def test_the_acknowledgement_greets_a_person_by_name_and_a_till_neutrally(make_desk):
    """"Guten Tag Anna Berg," for a person; "Guten Tag," for "Kasse <kasse@…>"."""
    desk = make_desk(TUESDAY_10)
    desk.receive(build_mail(sender=("Anna Berg", "anna.berg@kunde.example")))
    desk.receive(build_mail(sender=("Kasse", "kasse@laden.example")))
    [anna] = desk.outbox(kind="acknowledgement", to="anna.berg@kunde.example")
    [till] = desk.outbox(kind="acknowledgement", to="kasse@laden.example")
    assert body(anna).startswith("Guten Tag Anna Berg,")
    assert body(till).startswith("Guten Tag,")


def test_mails_are_dated_in_local_time_with_the_offset(make_desk):
    """The Date header is the support's local time (+0100 in November), not UTC."""
    desk = make_desk(TUESDAY_10)
    desk.receive(build_mail())
    [ack] = desk.outbox(kind="acknowledgement")
    assert ack["Date"].endswith("10:00:00 +0100")


def test_agents_read_german_words_and_local_times(make_desk):
    """The new-ticket mail to agents: priority and deadline in German, local time, no ISO
    timestamps, no English rule text, a signature separator "-- "."""
    desk = make_desk(TUESDAY_10)
    desk.receive(build_mail(text="Totalausfall: die Kasse funktioniert nicht.\n"))
    [mail] = desk.outbox(kind="agent_new_ticket", to="anna@example.com")
    text = body(mail)
    assert "(dringend: Regel „" in text
    assert re.search(r"Antwort bis: +Dienstag, 24\.11\.2026, 14:00 Uhr", text), text
    assert not re.search(r"\d{4}-\d\d-\d\dT\d\d:", text)
    assert " matched " not in text and "(urgent" not in text
    assert "-- " in text.splitlines()  # the signature separator, with its space


def test_the_tag_stays_once_in_a_subject_whatever_its_spelling(make_desk):
    """A subject that already carries the ticket's tag (other case, a space) gets no second."""
    from mailbot.outbound.compose import tagged_subject

    assert tagged_subject("Ticket#", "202611240001", "Re: [ticket# 202611240001] Drucker") \
        == "Re: [ticket# 202611240001] Drucker"
    assert tagged_subject("Ticket#", "202611240001", "Drucker") == \
        "[Ticket#202611240001] Drucker"
