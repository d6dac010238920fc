"""Priority, contract raise, entitlement and response deadlines (mailbot.policy) as tables."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from mailbot.policy.bizhours import BusinessDuration, CalendarConfig
from mailbot.policy.rules import (
    DEFAULT_CALENDAR,
    ContractPolicy,
    PolicyConfig,
    PriorityRule,
    Targets,
    assess,
    build_policy,
    calendar_for,
    classify,
    contract_raise,
    is_entitled,
    raise_priority,
    resolve_targets,
    update_due,
    validate_contract,
)

BERLIN = ZoneInfo("Europe/Berlin")
POLICY = build_policy(PolicyConfig())
MAINTENANCE = ContractPolicy(name="Wartung Gold", tier="maintenance")
POS_MAINTENANCE = ContractPolicy(name="Kasse Plus", tier="maintenance", calendar="pos")
NO_CONTRACT = ContractPolicy(name="ohne Vertrag", tier="none")


def at(text: str) -> datetime:
    """A Berlin wall-clock time from 'YYYY-MM-DD HH:MM'."""
    return datetime.fromisoformat(text).replace(tzinfo=BERLIN)


@pytest.mark.parametrize(
    ("subject", "body", "priority", "matched"),
    [
        ("Totalausfall", "Seit 8 Uhr geht gar nichts.", "urgent", "Totalausfall"),
        ("Kasse", "Die Kasse funktioniert nicht mehr.", "urgent", "funktioniert nicht mehr"),
        ("Login", "Der Login geht nicht mehr", "urgent", "geht nicht mehr"),
        ("DRINGEND: Server", "bitte melden", "urgent", "DRINGEND"),
        ("Webshop", "Der Shop ist nicht erreichbar.", "urgent", "nicht erreichbar"),
        ("Serverausfall", "", "urgent", "Serverausfall"),
        ("URGENT", "our site is down", "urgent", "URGENT"),
        ("Outage", "", "urgent", "Outage"),
        ("Export", "The export is not working\nsince the update", "urgent", "not working"),
        ("Login", "Login doesn't work", "urgent", "doesn't work"),
        ("Fehler beim Drucken", "", "high", "Fehler"),
        ("Druck", "Es kommt ein Druckfehler", "high", "Druckfehler"),
        ("Problem mit dem Export", "", "high", "Problem"),
        ("Saving", "I get an error when saving", "high", "error"),
        ("Bug in report", "", "high", "Bug"),
        ("Frage zur Lizenz", "", "low", "Frage"),
        ("Anfrage", "Wie kann ich Benutzer anlegen?", "low", "Anfrage"),
        ("Verbesserungsvorschlag", "", "low", "Verbesserungsvorschlag"),
        ("Feature request: dark mode", "", "low", "Feature request"),
        ("Question about invoices", "", "low", "Question"),
        ("Frage", "Das System ist ausgefallen!", "urgent", "ausgefallen"),
        ("Rechnung", "Bitte senden Sie mir eine Kopie.", "normal", ""),
    ],
)
def test_initial_priority_from_rules(subject, body, priority, matched):
    """A mail gets its priority from German or English words, the most urgent rule winning."""
    match = classify(subject, body, POLICY.rating)
    assert (match.priority, match.matched_text) == (priority, matched)


@pytest.mark.parametrize(
    ("subject", "body", "priority"),
    [
        ("Re: Rechnung", "Danke!\n> Das System funktioniert nicht\n> Totalausfall", "normal"),
        ("Re: Ticket", "Danke!\n\nAm 20.11.2026 um 10:00 schrieb Support:\nAusfall", "normal"),
        ("AW: Termin", "Passt.\n-----Ursprüngliche Nachricht-----\nDringend!", "normal"),
        ("Angebot", "Kein Problem, wir warten.", "normal"),
        ("Hallo", "Es ist nicht dringend, nur eine Frage.", "low"),
        ("Hello", "Not urgent, a question.", "low"),
        ("Update", "Die Installation lief fehlerfrei.", "normal"),
        ("Danke", "Danke für den Bugfix.", "normal"),
        ("Export", "x " * 3000 + "Totalausfall", "normal"),
    ],
)
def test_priority_ignores_false_positives(subject, body, priority):
    """Quoted history, negations and text beyond the first 4 KB do not raise the priority."""
    assert classify(subject, body, POLICY.rating).priority == priority


def test_rule_name_is_reported():
    """An agent can see which rule made a ticket urgent."""
    match = classify("Outage", "", POLICY.rating)
    assert (match.rule_name, match.matched_text) == ("outage", "Outage")


def test_custom_rules_are_tried_most_urgent_first():
    """Configured rules apply in priority order, whatever their order in the config file."""
    rules = (PriorityRule("wishes", "low", ("kasse",)), PriorityRule("pos", "urgent", ("bon",)))
    policy = build_policy(PolicyConfig(rules=rules, default_priority="high"))
    assert classify("Kasse druckt keinen Bon", "", policy.rating).rule_name == "pos"
    assert classify("Kassenbuch", "", policy.rating).priority == "high"


@pytest.mark.parametrize(
    ("base", "contract", "priority"),
    [
        ("normal", MAINTENANCE, "high"),
        ("low", MAINTENANCE, "normal"),
        ("urgent", MAINTENANCE, "urgent"),
        ("normal", NO_CONTRACT, "normal"),
        ("normal", None, "normal"),
        ("low", ContractPolicy("Platin", "maintenance", raise_levels=2), "high"),
        ("high", ContractPolicy("Premium", "premium"), "high"),
        ("low", ContractPolicy("Premium", "premium", raise_levels=5), "urgent"),
    ],
)
def test_contract_raise(base, contract, priority):
    """A maintenance contract raises a ticket one level, never beyond urgent."""
    assert raise_priority(base, contract_raise(contract)) == priority


@pytest.mark.parametrize(
    ("contract", "entitled"),
    [(None, False), (NO_CONTRACT, False), (MAINTENANCE, True), (ContractPolicy("P", "x"), True)],
)
def test_entitlement(contract, entitled):
    """Only customers with a contract are entitled to support."""
    assert is_entitled(contract) is entitled


def test_work_order(tmp_path):
    """Agents work urgent tickets first, entitled ones first within a priority, then by
    earliest deadline (the order `tickets list` reads from the store, a page at a time)."""
    from mailbot.store import Store
    from mailbot.store import tickets as tq

    tickets = [
        ("stranger urgent", False, "urgent", at("2026-11-23 10:00")),
        ("contract low", True, "low", at("2026-11-20 10:00")),
        ("contract urgent later", True, "urgent", at("2026-11-23 12:00")),
        ("contract urgent sooner", True, "urgent", at("2026-11-23 11:00")),
        ("contract high no deadline", True, "high", None),
        ("contract high", True, "high", at("2026-11-30 10:00")),
        ("stranger normal", False, "normal", at("2026-11-19 10:00")),
        ("resolved urgent", True, "urgent", at("2026-11-19 10:00")),
    ]
    store = Store(tmp_path / "db.sqlite3")
    with store.transaction():
        for n, (subject, entitled, priority, due) in enumerate(tickets):
            status = "resolved" if subject.startswith("resolved") else \
                ("new", "open", "waiting")[n % 3]
            store.insert("tickets", {"number": str(n), "subject": subject, "status": status,
                                     "priority": priority, "entitled": int(entitled),
                                     "language": "de", "created_at": at("2026-11-19 09:00"),
                                     "updated_at": at("2026-11-19 09:00"),
                                     "first_response_due": due})
    ordered = [t["subject"] for t in tq.work_list(store)]
    assert [t["subject"] for t in tq.listing(store, ("new", "open", "waiting"))] == ordered
    assert ordered == [
        "contract urgent sooner", "contract urgent later", "stranger urgent", "contract high",
        "contract high no deadline", "stranger normal", "contract low",
    ]  # fmt: skip
    assert [t["subject"] for t in tq.work_list(store, limit=2, offset=2)] == \
        ["stranger urgent", "contract high"]
    store.close()


@pytest.mark.parametrize(
    ("priority", "first", "update", "resolution"),
    [
        ("urgent", (0, 4), (0, 4), (2, 0)),
        ("high", (1, 0), (1, 0), (5, 0)),
        ("normal", (2, 0), (2, 0), (10, 0)),
        ("low", (5, 0), (5, 0), (20, 0)),
    ],
)
def test_default_targets(priority, first, update, resolution):
    """Default first-response, update and resolution targets follow the seeds."""
    targets = resolve_targets(POLICY, priority, None)
    expected = [BusinessDuration(d, timedelta(hours=h)) for d, h in (first, update, resolution)]
    assert [targets.first_response, targets.update, targets.resolution] == expected


def test_targets_override_per_policy_and_contract():
    """A contract's own targets win; fields it leaves empty come from the policy."""
    policy = build_policy(PolicyConfig(targets={"urgent": Targets(first_response="2h")}))
    contract = ContractPolicy("Gold", "maintenance", targets={"urgent": Targets(update="1h")})
    targets = resolve_targets(policy, "urgent", contract)
    assert targets.first_response == BusinessDuration(0, timedelta(hours=2))
    assert targets.update == BusinessDuration(0, timedelta(hours=1))
    assert targets.resolution == BusinessDuration(2)


@pytest.mark.parametrize(
    ("subject", "contract", "received", "priority", "first_response", "next_open"),
    [
        ("Totalausfall", MAINTENANCE, "2026-11-20 15:30", "urgent", "2026-11-23 12:30", None),
        ("Fehler", MAINTENANCE, "2026-11-20 15:30", "urgent", "2026-11-23 12:30", None),
        ("Fehler", None, "2026-11-20 15:30", "high", "2026-11-23 15:30", None),
        ("Hallo", None, "2026-11-21 11:00", "normal", "2026-11-24 16:00", "2026-11-23 09:00"),
        ("Frage", None, "2026-06-03 10:00", "low", "2026-06-11 10:00", None),
        ("Ausfall", POS_MAINTENANCE, "2026-11-21 18:00", "urgent", "2026-11-23 11:00", None),
        ("Ausfall", POS_MAINTENANCE, "2026-11-22 18:00", "urgent", "2026-11-23 13:00",
         "2026-11-23 09:00"),
    ],
)  # fmt: skip
def test_assess_new_ticket(subject, contract, received, priority, first_response, next_open):
    """A new ticket gets its priority, first-response deadline and out-of-hours notice."""
    result = assess(classify(subject, "", POLICY.rating), contract, at(received), POLICY)
    assert result.priority == priority
    assert result.first_response_due == at(first_response)
    assert result.received_in_hours is (next_open is None)
    assert result.next_opening == (at(next_open) if next_open else None)
    assert result.update_due is None


def test_assess_explains_priority_and_calendar():
    """The assessment says which rule matched and which contract raised the priority."""
    result = assess(classify("Fehler", "Beim Export", POLICY.rating), POS_MAINTENANCE,
                    at("2026-11-20 10:00"), POLICY)
    assert (result.base_priority, result.priority) == ("high", "urgent")
    assert (result.rule_name, result.matched_text, result.raised_by) == (
        "impairment", "Fehler", "Kasse Plus",
    )  # fmt: skip
    assert (result.calendar, result.entitled, result.problem_report) == ("pos", True, True)
    assert result.resolution_due == at("2026-11-23 10:00")


def test_stranger_question_is_not_a_problem_report():
    """A question from an unknown sender is low priority and no problem report."""
    result = assess(classify("Frage zum Angebot", "", POLICY.rating), None, at("2026-11-23 10:00"),
                    POLICY)
    assert (result.priority, result.entitled, result.problem_report) == ("low", False, False)
    assert result.calendar == DEFAULT_CALENDAR


def test_update_deadline_after_customer_follow_up():
    """After a customer writes again, the next agent answer is due within the update target."""
    assert update_due(POLICY, MAINTENANCE, "urgent", at("2026-11-20 15:00")) == at(
        "2026-11-23 12:00"
    )


@pytest.mark.parametrize(
    ("config", "key"),
    [
        (PolicyConfig(rules=(PriorityRule("x", "critical", ("a",)),)), "policy.rules[0].priority"),
        (PolicyConfig(rules=(PriorityRule("x", "high", ("a", "(")),)),
         "policy.rules[0].patterns[1]"),
        (PolicyConfig(rules=(PriorityRule("x", "high", ("a?",)),)), "policy.rules[0].patterns[0]"),
        (PolicyConfig(default_priority="medium"), "policy.default_priority"),
        (PolicyConfig(targets={"urgent": Targets(first_response="4 hours")}),
         "policy.targets.urgent.first_response"),
        (PolicyConfig(targets={"p1": Targets()}), "policy.targets.p1"),
        (PolicyConfig(calendar=CalendarConfig(hours=("mon 09:00-25:00",))),
         "policy.calendar.hours[0]"),
        (PolicyConfig(calendars={"pos": CalendarConfig(timezone="Nowhere")}),
         "policy.calendars.pos.timezone"),
        (PolicyConfig(calendars={"default": CalendarConfig()}), "policy.calendars.default"),
        (PolicyConfig(scan_chars=0), "policy.scan_chars"),
    ],
)  # fmt: skip
def test_bad_policy_config_names_the_key(config, key):
    """A mistake in mailbot.toml's policy section is reported with the key to fix."""
    with pytest.raises(ValueError, match="^" + re.escape(key) + ": "):
        build_policy(config)


@pytest.mark.parametrize(
    ("contract", "key"),
    [
        (ContractPolicy("A", "maintenance", calendar="shop"), "contract.calendar"),
        (ContractPolicy("A", raise_levels=-2), "contract.raise_levels"),
        (ContractPolicy("A", targets={"high": Targets(resolution="x")}),
         "contract.targets.high.resolution"),
    ],
)  # fmt: skip
def test_bad_contract_names_the_key(contract, key):
    """A contract naming an unknown calendar or a bad target is reported with the key."""
    with pytest.raises(ValueError, match="^" + re.escape(key) + ": "):
        validate_contract(contract, POLICY)


def test_default_config_has_the_point_of_sale_calendar():
    """Point-of-sale contracts get Mon-Sat 09:00-20:00 out of the box (seed 000)."""
    assert calendar_for(POLICY, POS_MAINTENANCE)[0] == "pos"
    assert calendar_for(POLICY, MAINTENANCE)[0] == DEFAULT_CALENDAR
