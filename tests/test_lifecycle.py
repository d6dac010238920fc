"""The ticket lifecycle: allowed status changes, and what a customer's reply does to a ticket."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import product

import pytest
from mails import CUSTOMER, build_mail

from mailbot.policy.bizhours import add_business_time
from mailbot.tickets import actions, clocks, lifecycle

TUESDAY_10 = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)  # 10:00 in Berlin, business hours
SUBJECT = "Drucker druckt nicht"

FORBIDDEN = {("open", "new"), ("waiting", "new"), ("resolved", "new"), ("resolved", "waiting"),
             ("closed", "new"), ("closed", "waiting"), ("closed", "resolved")}


def follow_up(number: str, text: str = "Hier ist die Version: 4.2.1") -> bytes:
    """The customer's answer to one of our mails about ticket ``number``."""
    return build_mail(subject=f"Re: [Ticket#{number}] {SUBJECT}", text=text)


def new_ticket(desk) -> str:
    """File a first customer mail and return its ticket number."""
    outcome = desk.receive(build_mail(subject=SUBJECT))
    assert outcome.status == "created", outcome
    return outcome.ticket_number


@pytest.mark.parametrize(("current", "target"), list(product(lifecycle.STATUSES, repeat=2)))
def test_transition_table(current, target):
    """Tickets move forward freely, reopen to open, and never go back to new or from closed."""
    if (current, target) in FORBIDDEN:
        with pytest.raises(lifecycle.TransitionError, match=f"{current} ticket cannot"):
            lifecycle.check_transition(current, target)
    else:
        lifecycle.check_transition(current, target)


def test_unknown_status_is_refused_with_the_known_ones():
    """Asking for a status that does not exist names the statuses there are."""
    with pytest.raises(lifecycle.TransitionError, match="use one of new, open, waiting"):
        lifecycle.check_transition("open", "pending")


@pytest.mark.parametrize(("current", "after"), [
    ("new", "new"), ("open", "open"), ("waiting", "open"), ("resolved", "open"),
    ("closed", "open"),
])
def test_customer_reply_table(current, after):
    """A customer's reply reopens tickets that wait for them or were resolved."""
    assert lifecycle.after_customer_reply(current) == after


@pytest.mark.parametrize(("mode", "days", "action"), [
    ("new_linked", 1, "new_linked"), ("reopen", 400, "reopen"),
    ("reopen_within_days", 14, "reopen"), ("reopen_within_days", 14.01, "new_linked"),
])
def test_closed_followup_table(mode, days, action):
    """A reply to a closed ticket reopens it or opens a new one, as configured."""
    assert lifecycle.closed_followup_action(mode, days, 14) == action


@pytest.mark.parametrize("status", ["waiting", "resolved"])
def test_customer_reply_reopens_ticket(make_desk, status):
    """When the customer answers a waiting or resolved ticket, it is open again."""
    desk = make_desk(TUESDAY_10)
    number = new_ticket(desk)
    actions.set_status(desk.ctx, number, status)
    desk.now += timedelta(hours=1)
    outcome = desk.receive(follow_up(number))
    assert (outcome.status, outcome.ticket_number) == ("followup", number)
    assert desk.ticket(number)["status"] == "open"
    last = desk.events(number, "status")[-1]
    assert (last["data"], last["actor"]) == ({"from": status, "to": "open"}, CUSTOMER[1])


def closed_ticket(desk) -> str:
    """A ticket that was resolved and then closed."""
    number = new_ticket(desk)
    actions.set_status(desk.ctx, number, "resolved")
    actions.set_status(desk.ctx, number, "closed")
    return number


def test_reply_to_closed_ticket_opens_a_new_one_referring_to_it(make_desk):
    """By default a reply to a closed ticket becomes a new ticket that names the old one."""
    desk = make_desk(TUESDAY_10)
    old = closed_ticket(desk)
    desk.now += timedelta(days=30)
    outcome = desk.receive(follow_up(old))
    assert outcome.status == "created" and outcome.ticket_number != old
    assert desk.ticket(outcome.ticket_number)["parent_id"] == desk.ticket(old)["id"]
    assert desk.events(outcome.ticket_number, "created")[0]["data"]["parent"] == old
    assert desk.ticket(old)["status"] == "closed"


def test_reply_to_closed_ticket_reopens_it_in_reopen_mode(make_desk):
    """With closed_followup = "reopen" the old ticket opens again, however old it is."""
    desk = make_desk(TUESDAY_10, tickets={"closed_followup": "reopen"})
    old = closed_ticket(desk)
    desk.now += timedelta(days=300)
    outcome = desk.receive(follow_up(old))
    assert (outcome.status, outcome.ticket_number) == ("followup", old)
    assert desk.ticket(old)["status"] == "open"


@pytest.mark.parametrize(("days_later", "reopened"), [(13, True), (15, False)])
def test_reply_to_closed_ticket_reopens_only_within_days(make_desk, days_later, reopened):
    """With "reopen_within_days" a recent ticket reopens; an older one gets a new ticket."""
    desk = make_desk(TUESDAY_10, tickets={"closed_followup": "reopen_within_days",
                                          "reopen_days": 14})
    old = closed_ticket(desk)
    desk.now += timedelta(days=days_later)
    outcome = desk.receive(follow_up(old))
    assert (outcome.ticket_number == old) is reopened
    assert desk.ticket(old)["status"] == ("open" if reopened else "closed")


def test_waiting_for_the_customer_pauses_the_deadlines(make_desk):
    """Business time a ticket waits for the customer moves its open deadlines back."""
    desk = make_desk(TUESDAY_10)
    number = new_ticket(desk)
    before = desk.ticket(number)
    actions.set_status(desk.ctx, number, "waiting")
    desk.now = TUESDAY_10 + timedelta(days=1, hours=2)  # Wednesday 12:00
    desk.receive(follow_up(number))
    after = desk.ticket(number)
    assert after["status"] == "open"
    waited = timedelta(hours=9)  # Tuesday 10:00-16:00 and Wednesday 09:00-12:00
    calendar = clocks.calendar_of(desk.ctx, after)
    for key in ("first_response_due", "resolution_due"):
        expected = add_business_time(calendar, datetime.fromisoformat(before[key]), waited)
        assert datetime.fromisoformat(after[key]) == expected, key
