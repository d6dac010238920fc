"""A customer number in a stranger's mail is a claim: agents see it, and the contract counts
only for the account's own mail domains, after an agent's #confirm or an operator's
`mailbot accounts link` (or at once with `[directory] claims = "trust"`)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from conftest import AGENTS
from daemon_util import REPO
from mails import build_mail

from mailbot.policy.bizhours import add_business_time, parse_duration
from mailbot.policy.rules import PolicyConfig, build_policy, calendar_for

ACCOUNTS = REPO / "mailbot" / "examples" / "accounts.example.toml"
TUESDAY_10 = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)  # 10:00 in Berlin
ANNA = (AGENTS[0]["name"], AGENTS[0]["address"])
STRANGER = ("Max Neu", "max@unbekannt.example")
COLLEAGUE = ("Eva Muster", "eva@muster-maschinenbau.de")  # a domain of account 10001
CLAIM_LINE = "Unsere Kundennummer ist 10001, bitte schnell helfen."
# "Fehler" makes a mail high; the maintenance contract of account 10001 raises it to urgent.
PROBLEM = {"subject": "Fehler beim Drucken", "text": f"Hallo,\n{CLAIM_LINE}\nGruß Max\n"}


def desk_with_accounts(make_desk, **sections):
    """A desk with the example customer list imported (account 10001: contract "wartung")."""
    desk = make_desk(TUESDAY_10, **sections)
    result = desk.instance.cli("accounts", "import", str(ACCOUNTS))
    assert result.exit_code == 0, result.output
    return desk


def new_ticket(desk, sender=STRANGER, **mail) -> str:
    """File one mail (a problem report naming customer number 10001 unless told otherwise)."""
    outcome = desk.receive(build_mail(sender=sender, **{**PROBLEM, **mail}))
    assert outcome.status == "created", outcome
    desk.now += timedelta(minutes=1)
    return outcome.ticket_number


def treatment(desk, number: str) -> tuple:
    """What the contract decides on a ticket: priority, entitlement, account, contract."""
    shown = desk.instance.cli_json("tickets", "show", number)
    return shown["priority"], shown["entitled"], shown["account"], shown["contract"]


def agent_command(desk, number: str, text: str) -> None:
    """Anna's reply through the reply address of her mail about the ticket."""
    [notice] = [m for m in desk.outbox(to=ANNA[1]) if f"[Ticket#{number}]" in m["Subject"]
                and m["Reply-To"]][-1:]
    outcome = desk.receive(build_mail(sender=ANNA, to=str(notice["Reply-To"]),
                                      subject=f"Re: {notice['Subject']}", text=text))
    assert outcome.ticket_number == number, outcome


NO_CONTRACT = ("high", False, None, None)
CONTRACT = ("urgent", True, "Muster Maschinenbau GmbH", "wartung")


def test_a_strangers_customer_number_is_a_claim_agents_see(make_desk):
    """A stranger quoting customer number 10001 gets no contract priority; the agents see the
    claim (event, new-ticket mail, `tickets show`); the acknowledgement reveals nothing."""
    desk = desk_with_accounts(make_desk)
    number = new_ticket(desk)
    assert treatment(desk, number) == NO_CONTRACT
    [claim] = desk.events(number, "customer_number_claim")
    assert {k: claim["data"][k] for k in ("customer_number", "account", "line", "from")} == \
        {"customer_number": "10001", "account": "Muster Maschinenbau GmbH", "line": CLAIM_LINE,
         "from": STRANGER[1]}
    [notice] = desk.outbox(kind="agent_new_ticket", to=ANNA[1])
    text = notice.get_content()
    assert "Kunde:        unbekannt" in text
    assert "Kundennummer 10001 von Muster Maschinenbau GmbH, NICHT bestätigt" in text
    assert f"aus der Zeile: „{CLAIM_LINE}“" in text and "#confirm" in text
    shown = desk.instance.cli("tickets", "show", number).output
    assert "claim: customer number 10001 of Muster Maschinenbau GmbH" in shown
    assert "NOT confirmed" in shown and CLAIM_LINE in shown
    [ack] = desk.outbox(kind="acknowledgement", to=STRANGER[1])
    assert "Priorität: hoch" in ack.get_content()
    for secret in ("Muster", "wartung", "dringend"):
        assert secret not in ack.as_string()
    later = new_ticket(desk, text="Noch ein Fehler, wieder bei uns.\n")
    assert treatment(desk, later) == NO_CONTRACT  # nothing was stored on the contact
    assert desk.events(later, "customer_number_claim") == []


def test_a_sender_from_an_account_domain_gets_the_contract_as_before(make_desk):
    """The account's own mail domain is evidence: contract priority, no claim."""
    desk = desk_with_accounts(make_desk)
    number = new_ticket(desk, sender=COLLEAGUE)
    assert treatment(desk, number) == CONTRACT
    assert desk.events(number, "customer_number_claim") == []
    assert "Priorität: dringend" in desk.outbox(kind="acknowledgement")[0].get_content()


def test_confirm_by_an_agent_gives_the_contract_now_and_to_later_mails(make_desk):
    """#confirm links the sender to the account: the ticket is raised with the contract's
    deadline (events say why), and the sender's next mail is a contract customer's."""
    desk = desk_with_accounts(make_desk)
    number = new_ticket(desk)
    agent_command(desk, number, "#confirm\n#note\nHerr Neu ist neu bei Muster, passt.")
    assert treatment(desk, number) == CONTRACT
    ticket = desk.ticket(number)
    calendar = calendar_for(build_policy(PolicyConfig()), None)[1]
    assert datetime.fromisoformat(ticket["first_response_due"]) == add_business_time(
        calendar, datetime.fromisoformat(ticket["created_at"]), parse_duration("4h"))
    [account] = desk.events(number, "account")
    assert account["actor"] == ANNA[1] and "confirmed by anna@example.com" in \
        account["data"]["reason"]
    assert desk.events(number, "priority")[-1]["data"]["to"] == "urgent"
    assert desk.instance.cli_json("tickets", "show", number)["claims"][0]["confirmed"]
    later = new_ticket(desk, text="Wieder ein Fehler.\n")
    assert treatment(desk, later) == CONTRACT


@pytest.mark.parametrize(("claims", "mail", "error"), [
    ("confirm", {"text": "Kein Hinweis auf einen Kunden.\n"},
     "keine angegebene Kundennummer"),
    ("domain", {}, "mailbot accounts link ADRESSE 10001"),
])
def test_confirm_without_a_confirmable_claim_changes_nothing(make_desk, claims, mail, error):
    """#confirm on a ticket without a claim, or with claims = "domain" (a number never
    counts), is an error mail to the agent and changes nothing."""
    desk = desk_with_accounts(make_desk, directory={"claims": claims})
    number = new_ticket(desk, **mail)
    agent_command(desk, number, "#confirm\nPasst.")
    [mail_back] = desk.outbox(kind="agent_error")
    assert error in mail_back.get_content()
    assert treatment(desk, number) == NO_CONTRACT
    assert desk.events(number, "account") == [] and desk.outbox(kind="agent_reply") == []


def test_domain_mode_shows_the_claim_but_never_counts_it(make_desk):
    """With claims = "domain" the agents still see the number, with the operator's way."""
    desk = desk_with_accounts(make_desk, directory={"claims": "domain"})
    number = new_ticket(desk)
    assert treatment(desk, number) == NO_CONTRACT
    text = desk.outbox(kind="agent_new_ticket", to=ANNA[1])[0].get_content()
    assert f"mailbot accounts link {STRANGER[1]} 10001" in text
    assert "Bestätigen mit #confirm" not in text


def test_accounts_link_confirms_like_an_agent(make_desk):
    """`mailbot accounts link ADDRESS NUMBER` gives the open ticket and later mails the
    contract; an unknown number is exit 65 with a clear message and changes nothing."""
    desk = desk_with_accounts(make_desk)
    number = new_ticket(desk)
    refused = desk.instance.cli("accounts", "link", STRANGER[1], "99999")
    assert refused.exit_code == 65
    assert "no account has the customer number '99999'" in refused.stderr
    assert treatment(desk, number) == NO_CONTRACT
    linked = desk.instance.cli("accounts", "link", STRANGER[1].upper(), "10001")
    assert linked.exit_code == 0, linked.output
    assert f"contract treatment for ticket(s) {number}" in linked.stdout
    assert treatment(desk, number) == CONTRACT
    [account] = desk.events(number, "account")
    assert account["actor"] == "operator"
    later = new_ticket(desk, text="Wieder ein Fehler.\n")
    assert treatment(desk, later) == CONTRACT


def test_trust_mode_keeps_the_old_behaviour(make_desk):
    """claims = "trust": the number links the sender at once, for this and later mails."""
    desk = desk_with_accounts(make_desk, directory={"claims": "trust"})
    number = new_ticket(desk)
    assert treatment(desk, number) == CONTRACT
    assert desk.events(number, "customer_number_claim") == []
    later = new_ticket(desk, text="Wieder ein Fehler, diesmal ohne Nummer.\n")
    assert treatment(desk, later) == CONTRACT


def test_a_claim_made_in_a_followup_reaches_the_agents_once(make_desk):
    """Asked for the number, the customer names it in a follow-up: one claim event, shown
    in the agents' follow-up mail; the same number again adds nothing."""
    desk = desk_with_accounts(make_desk)
    number = new_ticket(desk, text="Hallo,\nder Drucker geht nicht.\n")
    assert desk.events(number, "customer_number_claim") == []
    for _ in range(2):
        desk.receive(build_mail(sender=STRANGER, subject=f"Re: [Ticket#{number}] Fehler",
                                text=f"{CLAIM_LINE}\n"))
    assert len(desk.events(number, "customer_number_claim")) == 1
    followups = desk.outbox(kind="agent_followup", to=ANNA[1])
    assert all("Kundennummer 10001 von Muster Maschinenbau GmbH, NICHT bestätigt"
               in m.get_content() for m in followups) and len(followups) == 2
