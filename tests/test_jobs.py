"""The scheduler's jobs, run in-process with a clock the test sets: status mails to customers,
deadline warnings to agents, waiting reminders and auto-close."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta

from daemon_util import REPO
from mails import CUSTOMER, build_mail
from servers import wait_until

import mailbot.store
from mailbot.tickets import actions, jobs

TUESDAY_10 = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)  # 10:00 in Berlin
TUESDAY_1230 = datetime(2026, 11, 24, 11, 30, tzinfo=UTC)
WEDNESDAY_0930 = datetime(2026, 11, 25, 8, 30, tzinfo=UTC)
FRIDAY_10 = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)
ACCOUNTS = REPO / "mailbot" / "examples" / "accounts.example.toml"
SHOP = ("Bernd Schmidt", "bernd@baeckerei-schmidt.de")  # account 10002, contract "kasse"


def new_ticket(desk, text: str = "Hallo,\nder Drucker druckt nicht mehr schön.\n") -> str:
    """File a customer mail at the desk's time and return its ticket number."""
    return desk.receive(build_mail(subject="Drucker", text=text)).ticket_number


def urgent_ticket(desk) -> str:
    """A ticket from an outage report (4 business hours to respond)."""
    return new_ticket(desk, "Totalausfall: die Kasse funktioniert nicht.\n")


def runs(desk, job, *moments: datetime) -> list[int]:
    """Run ``job`` at each moment in turn; what each run produced."""
    counts = []
    for moment in moments:
        desk.now = moment
        counts.append(desk.run(job))
    return counts


def status_mails(desk) -> list[str]:
    """The status mails queued for the customer, as their bodies."""
    return [m.get_content() for m in desk.outbox(kind="status_changed", to=CUSTOMER[1])]


def test_deadline_warning_fires_once_before_and_once_at_breach(make_desk):
    """Agents hear once an hour before the response deadline and once when it passes."""
    desk = make_desk(TUESDAY_10)
    number = urgent_ticket(desk)
    due = datetime.fromisoformat(desk.ticket(number)["first_response_due"])
    assert due == TUESDAY_10 + timedelta(hours=4)
    lead = timedelta(minutes=60)
    assert runs(desk, jobs.deadline_warnings, due - lead - MINUTE, due - lead, due - lead / 2,
                due, due + lead) == [0, 1, 0, 1, 0]
    subjects = [m["Subject"] for m in desk.outbox(kind="deadline_warning", to="anna@example.com")]
    assert subjects == [f"[Ticket#{number}] Frist läuft ab: Drucker",
                        f"[Ticket#{number}] Frist überschritten: Drucker"]
    assert [e["kind"] for e in desk.ctx.store.rows(
        "SELECT kind FROM events WHERE kind LIKE 'deadline%' ORDER BY id")] == \
        ["deadlines", "deadline_warning", "deadline_breached"]


def test_deadline_warning_waits_for_business_hours(make_desk):
    """A warning due at night or before opening is sent when support opens, not earlier."""
    desk = make_desk(TUESDAY_1230)
    number = urgent_ticket(desk)
    assert datetime.fromisoformat(desk.ticket(number)["first_response_due"]) == WEDNESDAY_0930
    tuesday_night = TUESDAY_1230 + timedelta(hours=9)
    before_opening = WEDNESDAY_0930 - timedelta(minutes=45)
    opening = WEDNESDAY_0930 - timedelta(minutes=30)
    assert runs(desk, jobs.deadline_warnings, tuesday_night, before_opening, opening,
                WEDNESDAY_0930) == [0, 0, 1, 1]


def test_no_deadline_warning_once_answered(make_desk):
    """An answered ticket raises no first-response warnings."""
    desk = make_desk(TUESDAY_10)
    number = urgent_ticket(desk)
    desk.now += timedelta(hours=1)
    actions.reply(desk.ctx, number, "Wir sind dran.", "anna@example.com")
    assert desk.ticket(number)["first_response_met"] == 1
    assert runs(desk, jobs.deadline_warnings, TUESDAY_10 + timedelta(hours=5)) == [0]


def test_status_changes_within_the_window_make_one_mail(make_desk):
    """Two quick status changes reach the customer as one mail with the final status."""
    desk = make_desk(TUESDAY_10)
    number = new_ticket(desk)
    actions.set_status(desk.ctx, number, "open")
    desk.now += timedelta(seconds=10)
    actions.set_status(desk.ctx, number, "waiting")
    settled = desk.now + timedelta(seconds=60)
    assert runs(desk, jobs.status_notifications, settled - MINUTE / 60, settled,
                settled + MINUTE) == [0, 1, 0]
    [body] = status_mails(desk)
    assert "Wir benötigen weitere Informationen von Ihnen" in body


def test_status_change_and_back_sends_nothing(make_desk):
    """A change that is undone within the window is not worth a mail."""
    desk = make_desk(TUESDAY_10)
    number = new_ticket(desk)
    actions.set_status(desk.ctx, number, "waiting")
    desk.now += timedelta(minutes=5)
    desk.run(jobs.status_notifications)
    actions.set_status(desk.ctx, number, "open")
    actions.set_status(desk.ctx, number, "waiting")
    assert runs(desk, jobs.status_notifications, desk.now + 2 * MINUTE,
                desk.now + 60 * MINUTE) == [0, 0]
    assert len(status_mails(desk)) == 1


def test_customer_is_not_told_about_their_own_reply(make_desk):
    """The ticket reopened by the customer's own reply brings them no status mail."""
    desk = make_desk(TUESDAY_10)
    number = new_ticket(desk)
    actions.set_status(desk.ctx, number, "waiting")
    desk.now += timedelta(minutes=5)
    assert desk.run(jobs.status_notifications) == 1
    desk.receive(build_mail(subject=f"Re: [Ticket#{number}] Drucker", text="Version 4.2"))
    assert desk.ticket(number)["status"] == "open"
    assert runs(desk, jobs.status_notifications, desk.now + 5 * MINUTE) == [0]
    assert len(status_mails(desk)) == 1


def test_only_configured_statuses_are_announced(make_desk):
    """Statuses the configuration does not name change silently."""
    desk = make_desk(TUESDAY_10, notifications={"statuses": ["resolved"]})
    number = new_ticket(desk)
    actions.set_status(desk.ctx, number, "waiting")
    assert runs(desk, jobs.status_notifications, desk.now + 5 * MINUTE) == [0]
    actions.set_status(desk.ctx, number, "resolved")
    assert runs(desk, jobs.status_notifications, desk.now + 5 * MINUTE) == [1]


def test_waiting_reminder_after_business_days_once(make_desk):
    """After three business days of waiting the customer is reminded, once."""
    desk = make_desk(TUESDAY_10)
    number = new_ticket(desk)
    actions.set_status(desk.ctx, number, "waiting")
    friday_10 = TUESDAY_10 + timedelta(days=3)
    assert runs(desk, jobs.waiting_reminders, friday_10 - MINUTE, friday_10,
                friday_10 + timedelta(hours=2), friday_10 + timedelta(days=3)) == [0, 1, 0, 0]
    [reminder] = desk.outbox(kind="waiting_reminder")
    assert reminder["To"] == CUSTOMER[1]
    assert reminder["Subject"] == f"[Ticket#{number}] Erinnerung: Drucker"


def test_a_ticket_waiting_over_a_weekend_is_not_read_before_its_reminder_is_due(make_desk):
    """Answered and set waiting on Thursday afternoon, the customer is reminded after three
    business days: on Tuesday.  No round before reads the ticket (before, every round from
    Saturday on did, once two calendar days had passed, to find that three business days
    had not); the reminder comes once, and the next stay waits three days of its own."""
    thursday_15 = TUESDAY_10 + timedelta(days=2, hours=5)
    desk = make_desk(thursday_15)
    number = new_ticket(desk)
    actions.reply(desk.ctx, number, "Welche Version nutzen Sie?", "anna@example.com")
    actions.set_status(desk.ctx, number, "waiting")
    settled = thursday_15 + 5 * MINUTE
    assert runs(desk, jobs.status_notifications, settled) == [1]
    weekend = [thursday_15 + timedelta(days=days, hours=hours)
               for days, hours in ((0, 1), (2, 0), (3, 0), (4, 0), (4, 23))]
    assert [round_reads(desk, moment) for moment in weekend] == [0] * len(weekend)
    tuesday_15 = thursday_15 + timedelta(days=5)
    tuesday_1459, tuesday_1501 = tuesday_15 - MINUTE, tuesday_15 + MINUTE
    assert runs(desk, jobs.waiting_reminders, tuesday_1459, tuesday_15, tuesday_1501) == \
        [0, 1, 0]
    actions.set_status(desk.ctx, number, "open")
    actions.set_status(desk.ctx, number, "waiting")
    friday_15, friday_1501 = tuesday_15 + timedelta(days=3), tuesday_1501 + timedelta(days=3)
    assert runs(desk, jobs.waiting_reminders, friday_15, friday_1501) == [0, 1]


def test_auto_close_after_days_with_one_final_mail(make_desk):
    """A ticket resolved for seven days closes with one final mail and no extra status mail."""
    desk = make_desk(TUESDAY_10)
    number = new_ticket(desk)
    actions.set_status(desk.ctx, number, "resolved")
    resolved_at = desk.now
    assert runs(desk, jobs.status_notifications, resolved_at + 2 * MINUTE) == [1]
    week = resolved_at + timedelta(days=7)
    assert runs(desk, jobs.auto_close, week - MINUTE, week, week + MINUTE) == [0, 1, 0]
    assert desk.ticket(number)["status"] == "closed"
    desk.now = week + timedelta(hours=1)
    jobs.run_all(desk.ctx, desk.now)
    assert [m["Subject"] for m in desk.outbox(to=CUSTOMER[1])][1:] == [
        f"[Ticket#{number}] Neuer Status: Drucker",
        f"[Ticket#{number}] Ticket geschlossen: Drucker"]


def round_reads(desk, moment: datetime) -> int:
    """How many rows one round of all jobs at ``moment`` reads from the database."""
    return desk.rows_read(lambda: jobs.run_all(desk.ctx, moment))


def test_a_round_reads_no_ticket_it_has_nothing_to_do_for(make_desk):
    """Open tickets whose deadlines are hours away or already announced, tickets waiting or
    resolved for less than their period: a round (every 15 s in the daemon) reads none of
    them, so its memory and time do not grow with the desk.  Before, each round read every
    open ticket, and the daemon grew by a megabyte every thousand mails (bench/soak.py)."""
    desk = make_desk(TUESDAY_10)
    urgent = [urgent_ticket(desk) for _ in range(4)]
    for status in ("waiting", "resolved"):
        for number in [new_ticket(desk) for _ in range(4)]:
            actions.set_status(desk.ctx, number, status)
    assert runs(desk, jobs.status_notifications, TUESDAY_10 + 5 * MINUTE) == [8]
    nothing_due = TUESDAY_10 + 10 * MINUTE
    assert round_reads(desk, nothing_due) == 0
    due = datetime.fromisoformat(desk.ticket(urgent[0])["first_response_due"])
    assert round_reads(desk, due) > 0
    assert len(desk.outbox(kind="deadline_warning", to="anna@example.com")) == 4
    next_round, afternoon = due + MINUTE, due + 2 * timedelta(hours=1)
    assert round_reads(desk, next_round) == 0
    assert round_reads(desk, afternoon) == 0


def test_deadlines_breached_after_closing_are_read_only_in_their_calendars_hours(make_desk):
    """Two urgent tickets breach their deadline on Friday afternoon, one of a customer whose
    contract has the point-of-sale calendar (Mon-Sat 09:00-20:00), one of a stranger (the
    default calendar, Mon-Fri 09:00-16:00), and no round ran meanwhile.  Friday night a round
    reads neither (before, every round of the night and the weekend read both); Saturday
    morning only the shop's agents hear of theirs, the stranger's breach waits for Monday."""
    desk = make_desk(FRIDAY_10)
    result = desk.instance.cli("accounts", "import", str(ACCOUNTS))
    assert result.exit_code == 0, result.output
    stranger = urgent_ticket(desk)
    shop = desk.receive(build_mail(sender=SHOP, subject="Kasse",
                                   text="Totalausfall: die Kasse funktioniert nicht.\n"))
    assert desk.ticket(shop.ticket_number)["contract"] == "kasse"
    dues = {datetime.fromisoformat(desk.ticket(n)["first_response_due"])
            for n in (stranger, shop.ticket_number)}
    friday_14 = FRIDAY_10 + timedelta(hours=4)
    assert dues == {friday_14}
    friday_night, saturday_10 = FRIDAY_10 + timedelta(hours=12), FRIDAY_10 + timedelta(days=1)
    saturday_1001, saturday_night = saturday_10 + MINUTE, saturday_10 + timedelta(hours=12)
    monday_9, monday_901 = FRIDAY_10 + timedelta(days=3), FRIDAY_10 + timedelta(days=3) + MINUTE
    assert round_reads(desk, friday_night) == 0
    assert desk.outbox(kind="deadline_warning") == []
    assert round_reads(desk, saturday_10) > 0
    breached = [m["Subject"] for m in desk.outbox(kind="deadline_warning", to="anna@example.com")]
    assert breached == [f"[Ticket#{shop.ticket_number}] Frist überschritten: Kasse"]
    assert round_reads(desk, saturday_1001) == 0
    assert round_reads(desk, saturday_night) == 0
    assert runs(desk, jobs.deadline_warnings, monday_9, monday_901) == [1, 0]
    told = [m["Subject"] for m in desk.outbox(kind="deadline_warning", to="anna@example.com")]
    assert told[1:] == [f"[Ticket#{stranger}] Frist überschritten: Drucker"]


def test_a_round_works_through_more_tickets_than_a_page(make_desk, monkeypatch):
    """Jobs read their tickets a page at a time; every ticket of a round is handled once,
    also tickets on the same deadline to the microsecond across a page's end."""
    monkeypatch.setattr(mailbot.store, "PAGE", 3)
    desk = make_desk(TUESDAY_10)
    numbers = [urgent_ticket(desk) for _ in range(10)]
    dues = {desk.ticket(n)["first_response_due"] for n in numbers}
    assert len(dues) == 1
    due = datetime.fromisoformat(dues.pop())
    assert runs(desk, jobs.deadline_warnings, due - MINUTE, due - MINUTE, due, due) == \
        [10, 0, 10, 0]
    for number in numbers:
        actions.set_status(desk.ctx, number, "waiting")
    settled, again = due + 2 * MINUTE, due + 3 * MINUTE
    assert runs(desk, jobs.status_notifications, settled, again) == [10, 0]
    later = due + timedelta(days=7)
    assert runs(desk, jobs.waiting_reminders, later, later) == [10, 0]
    for number in numbers:
        actions.set_status(desk.ctx, number, "resolved")
    closing = later + timedelta(days=7, minutes=1)
    assert runs(desk, jobs.auto_close, closing) == [10]
    assert {desk.ticket(n)["status"] for n in numbers} == {"closed"}
    warned = desk.ctx.store.rows("SELECT ticket_id, kind, COUNT(*) AS n FROM events WHERE kind "
                                 "IN ('deadline_warning', 'deadline_breached', "
                                 "'waiting_reminder') GROUP BY ticket_id, kind")
    assert len(warned) == 30 and {r["n"] for r in warned} == {1}


def test_notification_run_interrupted_midway_sends_each_mail_once(make_desk, monkeypatch):
    """A notification run that dies halfway, run again, tells every customer exactly once."""
    desk = make_desk(TUESDAY_10)
    numbers = [new_ticket(desk) for _ in range(3)]
    for number in numbers:
        actions.set_status(desk.ctx, number, "waiting")
    real_build, calls = desk.ctx.composer.build, []

    def crash_on_second(kind, *args, **kwargs):
        calls.append(kind)
        if len(calls) == 2:
            raise RuntimeError("process killed while composing")
        return real_build(kind, *args, **kwargs)

    monkeypatch.setattr(desk.ctx.composer, "build", crash_on_second)
    desk.now += 5 * MINUTE
    assert jobs.run_all(desk.ctx, desk.now).get("status_notifications") is None
    assert len(status_mails(desk)) == 1
    monkeypatch.setattr(desk.ctx.composer, "build", real_build)
    assert runs(desk, jobs.status_notifications, desk.now + MINUTE, desk.now + 2 * MINUTE) == \
        [2, 0]
    per_ticket = desk.ctx.store.rows(
        "SELECT t.number, COUNT(o.id) AS n FROM tickets t LEFT JOIN outbox o ON "
        "o.ticket_id = t.id AND o.kind = 'status_changed' GROUP BY t.id ORDER BY t.id")
    assert per_ticket == [{"number": n, "n": 1} for n in numbers]


KILLABLE_RUN = """
import sys
from datetime import datetime
from pathlib import Path
from mailbot.tickets import jobs
from mailbot.settings.config import load
from mailbot.context import open_context
now = datetime.fromisoformat(sys.argv[2])
ctx = open_context(load(Path(sys.argv[1])), clock=lambda: now)
print("ready", flush=True)
sys.stdin.readline()
jobs.status_notifications(ctx, now)
print("done", flush=True)
"""


def test_notification_run_killed_for_real_sends_each_mail_once(make_desk):
    """A notification process killed with SIGKILL mid-run, then run again, tells every
    customer exactly once."""
    desk = make_desk(TUESDAY_10)
    numbers = [new_ticket(desk) for _ in range(40)]
    for number in numbers:
        actions.set_status(desk.ctx, number, "waiting")
    later = (desk.now + 5 * MINUTE).isoformat()
    child = subprocess.Popen([sys.executable, "-c", KILLABLE_RUN,
                              str(desk.instance.config_path), later],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "ready"
    child.stdin.write("go\n")
    child.stdin.flush()
    wait_until(lambda: status_rows(desk) > 0 or child.poll() is not None, 20,
               message="the first status mail of the run")
    child.kill()
    child.wait(10)
    before = status_rows(desk)
    desk.now = datetime.fromisoformat(later) + MINUTE
    assert desk.run(jobs.status_notifications) == len(numbers) - before
    per_ticket = desk.ctx.store.rows(
        "SELECT COUNT(o.id) AS n FROM tickets t LEFT JOIN outbox o ON "
        "o.ticket_id = t.id AND o.kind = 'status_changed' GROUP BY t.id")
    assert [r["n"] for r in per_ticket] == [1] * len(numbers)


def status_rows(desk) -> int:
    """How many status mails are in the outbox (read by a second process's commits)."""
    return desk.ctx.store.row("SELECT COUNT(*) AS n FROM outbox "
                              "WHERE kind = 'status_changed'")["n"]
