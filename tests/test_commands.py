"""Commands in agents' replies (#status, #priority, #assign, #take, #note, #close) and the
operator's CLI commands that do the same: `mailbot tickets set-status / assign / reply`."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from conftest import AGENTS
from mails import CUSTOMER, build_mail

from mailbot.reading import quotes
from mailbot.tickets import commands, jobs
from mailbot.tickets.commands import Command

TUESDAY_10 = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)
ANNA = (AGENTS[0]["name"], AGENTS[0]["address"])
AGENT_ADDRESSES = tuple(a["address"] for a in AGENTS)

THUNDERBIRD_DE = """#status waiting
Hallo Herr Müller,
bitte schicken Sie uns die Versionsnummer.

Am 24.11.2026 um 10:00 schrieb Jürgen Müller via Support:
> Hallo,
> unser Drucker druckt nicht.
"""
OUTLOOK_DE = """#priority high
#assign ben@example.com

Wir kümmern uns darum.

-----Ursprüngliche Nachricht-----
Von: Support <support@example.com>
Gesendet: Dienstag, 24. November 2026 10:00
An: anna@example.com
Betreff: Neues Ticket: Drucker druckt nicht
#close
"""
OUTLOOK_EN = """#note
The customer called, he will send a screenshot.

From: Support <support@example.com>
Sent: Tuesday, November 24, 2026 10:00 AM
To: anna@example.com
Subject: New ticket: printer does not print
"""
GMAIL_EN = """
#take
#CLOSE

Fixed in release 4.3, closing.

On Tue, Nov 24, 2026 at 10:00 AM Support <support@example.com> wrote:
> #status open
"""
COMMAND_IN_TEXT = "Hallo,\n#close\nich schließe das Ticket noch nicht.\n"


@pytest.mark.parametrize(("reply", "expected", "text"), [
    (THUNDERBIRD_DE, [Command("status", "waiting")],
     "Hallo Herr Müller,\nbitte schicken Sie uns die Versionsnummer."),
    (OUTLOOK_DE, [Command("priority", "high"), Command("assign", "ben@example.com")],
     "Wir kümmern uns darum."),
    (OUTLOOK_EN, [Command("note")], "The customer called, he will send a screenshot."),
    (GMAIL_EN, [Command("take"), Command("close")], "Fixed in release 4.3, closing."),
    (COMMAND_IN_TEXT, [], COMMAND_IN_TEXT.strip()),
], ids=["thunderbird-de", "outlook-de", "outlook-en", "gmail-en", "not-at-top"])
def test_commands_are_read_from_the_top_of_the_reply_only(reply, expected, text):
    """Commands count only at the top of the agent's own text, never inside the quote."""
    parsed = commands.parse(quotes.latest_reply(reply), AGENT_ADDRESSES)
    assert (list(parsed.commands), parsed.text, parsed.errors) == (expected, text, ())


@pytest.mark.parametrize(("line", "error"), [
    ("#frobnicate now", "unknown command #frobnicate"),
    ("#status pending", "#status pending: use one of new, open"),
    ("#priority sky-high", "#priority sky-high: use one of urgent"),
    ("#priority", "#priority needs a value"),
    ("#assign eve@example.com", "not a configured agent"),
    ("#take me", "#take takes no value"),
])
def test_bad_commands_are_explained(line, error):
    """A wrong command gets a sentence that says what is wrong and what is allowed."""
    parsed = commands.parse(f"{line}\nText", AGENT_ADDRESSES)
    assert len(parsed.errors) == 1 and error in str(parsed.errors[0])


def test_last_status_command_wins():
    """With several status commands the last one decides; #close means closed."""
    parsed = commands.parse("#status waiting\n#close\n#status resolved", AGENT_ADDRESSES)
    assert commands.target_status(parsed.commands) == "resolved"


def new_ticket(desk) -> str:
    """File a customer mail and return its ticket number."""
    return desk.receive(build_mail(subject="Drucker druckt nicht")).ticket_number


def reply_address(desk, number: str, agent: str = ANNA[1]) -> str:
    """The Reply-To of the latest mail about ticket ``number`` to ``agent``: the address
    signed for that agent."""
    mails = [m for m in desk.outbox(to=agent)
             if f"[Ticket#{number}]" in m["Subject"] and m["Reply-To"]]
    return str(mails[-1]["Reply-To"])


def agent_reply(desk, number: str, text: str, sender: tuple[str, str] = ANNA) -> None:
    """An agent's reply through the reply address of its notification."""
    outcome = desk.receive(build_mail(sender=sender, to=reply_address(desk, number, sender[1]),
                                      subject="Re: Neues Ticket", text=text))
    assert outcome.ticket_number == number, outcome


def test_note_never_reaches_the_customer(make_desk):
    """A reply starting with #note is kept as an internal note; the customer gets nothing."""
    desk = make_desk(TUESDAY_10)
    number = new_ticket(desk)
    agent_reply(desk, number, "#note\nKunde hat angerufen, Rückruf morgen.")
    assert [m["Subject"] for m in desk.outbox(to=CUSTOMER[1])] == \
        [f"[Ticket#{number}] Drucker druckt nicht"]
    assert desk.events(number, "note")[0]["actor"] == ANNA[1]
    assert desk.ticket(number)["status"] == "new"


def test_assign_to_a_stranger_is_refused(make_desk):
    """#assign to an address that is no agent changes nothing and tells the agent why."""
    desk = make_desk(TUESDAY_10)
    number = new_ticket(desk)
    agent_reply(desk, number, "#assign eve@example.com\nEve übernimmt.")
    [error] = desk.outbox(kind="agent_error")
    assert error["To"] == ANNA[1]
    assert "#assign eve@example.com: diese Adresse gehört zu keinem Agenten" in \
        error.get_content()
    assert not desk.ticket(number)["owner"]
    assert len(desk.outbox(to=CUSTOMER[1])) == 1  # the acknowledgement only


def test_take_priority_and_close_apply_with_the_answer(make_desk):
    """#take, #priority and #close change the ticket in one go, and the answer goes out."""
    desk = make_desk(TUESDAY_10)
    number = new_ticket(desk)
    agent_reply(desk, number, "#take\n#priority low\n#close\nIst in Version 4.3 behoben.")
    ticket = desk.ticket(number)
    assert (ticket["owner"], ticket["priority"], ticket["status"]) == (ANNA[1], "low", "closed")
    [answer] = desk.outbox(kind="agent_reply")
    assert "Ist in Version 4.3 behoben." in answer.get_content()


def test_agent_attachments_reach_the_customer(make_desk):
    """A file the agent attaches to the reply goes to the customer and is kept on the ticket."""
    desk = make_desk(TUESDAY_10)
    number = new_ticket(desk)
    manual = ("Anleitung Kasse.pdf", "application/pdf", b"%PDF-1.4 manual")
    outcome = desk.receive(build_mail(sender=ANNA, to=reply_address(desk, number),
                                      subject="Re: Neues Ticket", attachments=(manual,),
                                      text="Anbei die Anleitung."))
    assert outcome.ticket_number == number
    [answer] = desk.outbox(kind="agent_reply")
    [sent] = list(answer.iter_attachments())
    assert (sent.get_filename(), sent.get_content()) == (manual[0], manual[2])
    out = [m for m in desk.instance.cli_json("tickets", "show", number)["messages"]
           if m["direction"] == "out"]
    assert [a["filename"] for a in out[0]["attachments"]] == [manual[0]]


def test_followup_reaches_agents_without_the_quoted_history(make_desk):
    """Agents read only the customer's new words; the full mail stays on the ticket."""
    desk = make_desk(TUESDAY_10)
    number = new_ticket(desk)
    text = ("Die Version ist 4.2.1.\n\nAm 24.11.2026 um 10:00 schrieb Support:\n"
            "> vielen Dank für Ihre Nachricht.\n> Ticketnummer " + number + "\n")
    desk.receive(build_mail(subject=f"Re: [Ticket#{number}] Drucker", text=text))
    [followup] = desk.outbox(kind="agent_followup", to=ANNA[1])
    body = followup.get_content()
    assert "Die Version ist 4.2.1." in body and "vielen Dank" not in body
    assert "Zitierter Verlauf ausgeblendet" in body
    stored = desk.instance.cli_json("tickets", "show", number)["messages"][-1]["body"]
    assert "vielen Dank für Ihre Nachricht." in stored


def test_taking_a_new_ticket_opens_it(make_desk):
    """#take alone makes the agent the owner and opens the ticket, with one status mail."""
    desk = make_desk(TUESDAY_10)
    number = new_ticket(desk)
    agent_reply(desk, number, "#take\n#note\nIch schaue mir das an.")
    ticket = desk.ticket(number)
    assert (ticket["owner"], ticket["status"]) == (ANNA[1], "open")
    assert [e["data"]["to"] for e in desk.events(number, "status")] == ["open"]


def test_assigned_ticket_notifies_only_its_owner(make_desk):
    """After #assign the customer's follow-ups go to the new owner alone."""
    desk = make_desk(TUESDAY_10)
    number = new_ticket(desk)
    agent_reply(desk, number, "#assign BEN@example.com\n#note\nBen kennt den Kunden.")
    desk.receive(build_mail(subject=f"Re: [Ticket#{number}] Drucker", text="Noch da?"))
    [followup] = desk.outbox(kind="agent_followup")
    assert followup["To"] == "ben@example.com"


def mail_and_cli_tickets(desk) -> tuple[str, str]:
    """Two tickets: one handled by an agent's mail, one by the operator's CLI, identically."""
    by_mail, by_cli = new_ticket(desk), new_ticket(desk)
    agent_reply(desk, by_mail, "#status waiting\n#assign ben@example.com\nBitte Version senden.")
    for args in (("set-status", by_cli, "waiting"), ("assign", by_cli, "ben@example.com")):
        result = desk.instance.cli("tickets", *args)
        assert result.exit_code == 0, result.output
    result = desk.instance.cli("tickets", "reply", by_cli, "--agent", ANNA[1],
                               input=b"Bitte Version senden.\n")
    assert result.exit_code == 0, result.output
    return by_mail, by_cli


def test_cli_does_what_mail_commands_do(make_desk):
    """set-status, assign and reply from the CLI leave the same events and mails as by mail."""
    desk = make_desk(datetime.now(UTC))
    by_mail, by_cli = mail_and_cli_tickets(desk)
    desk.now += timedelta(minutes=5)
    assert desk.run(jobs.status_notifications) == 2
    tickets = [desk.ticket(n) for n in (by_mail, by_cli)]
    assert [(t["status"], t["owner"]) for t in tickets] == [("waiting", "ben@example.com")] * 2
    kinds = [Counter(e["kind"] for e in desk.ctx.store.rows(
        "SELECT kind FROM events WHERE ticket_id = ?", (t["id"],))) for t in tickets]
    assert kinds[0] == kinds[1]
    sent = [[(r["kind"], tuple(r["recipients"])) for r in desk.ctx.store.rows(
        "SELECT kind, recipients FROM outbox WHERE ticket_id = ? ORDER BY id", (t["id"],))]
        for t in tickets]
    assert sorted(sent[0]) == sorted(sent[1])
    answers = desk.outbox(kind="agent_reply")
    assert [a["From"] for a in answers] == ['Anna Agent <support@example.com>'] * 2
    assert all("Bitte Version senden." in a.get_content() for a in answers)


@pytest.mark.parametrize(("args", "error"), [
    (("set-status", "{n}", "pending"), "unknown status 'pending'; use one of new, open"),
    (("set-status", "{n}", "new"), "cannot become new"),
    (("assign", "{n}", "eve@example.com"), "eve@example.com is not a configured agent"),
    (("reply", "{n}", "--agent", "eve@example.com"), "not a configured agent"),
    (("set-status", "19990101-0001", "open"), "no ticket 19990101-0001"),
])
def test_cli_refuses_bad_values(make_desk, args, error):
    """A bad status, agent or ticket number is refused with exit 65 and changes nothing."""
    desk = make_desk(datetime.now(UTC))
    number = new_ticket(desk)
    operator_args = [a.format(n=number) for a in args]
    desk.instance.cli("tickets", "set-status", number, "open")
    result = desk.instance.cli("tickets", *operator_args, input=b"Text")
    assert result.exit_code == 65 and error in result.stderr
    assert (desk.ticket(number)["status"], desk.ticket(number)["owner"]) == ("open", "")
    assert desk.outbox(kind="agent_reply") == []


def test_cli_note_from_file_stays_internal(make_desk, tmp_path):
    """`tickets reply --note --file F` records an internal note and mails nobody."""
    desk = make_desk(datetime.now(UTC))
    number = new_ticket(desk)
    note = tmp_path / "note.txt"
    note.write_text("Rückruf vereinbart für Donnerstag.\n", encoding="utf-8")
    queued = len(desk.outbox())
    result = desk.instance.cli("tickets", "reply", number, "--note", "--file", str(note))
    assert result.exit_code == 0, result.output
    assert len(desk.outbox()) == queued
    [row] = desk.ctx.store.rows("SELECT body FROM messages WHERE direction = 'note'")
    assert row["body"] == "Rückruf vereinbart für Donnerstag."
    assert desk.events(number, "note")[0]["actor"] == "operator"
