"""Agent mail is authenticated: each agent's reply address is signed for that agent and day,
an answer through it from anyone else, too late, or disowned by the agent's domain in our
border MTA's Authentication-Results is not applied, and the sender is told why."""

from __future__ import annotations

import hashlib
import hmac
import re
from datetime import UTC, datetime, timedelta

import pytest
from conftest import AGENTS
from daemon_util import SECRET, Instance
from mails import CUSTOMER, SUPPORT, build_mail
from servers import ImapAccount, SmtpSink

TUESDAY_10 = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)
ANNA = (AGENTS[0]["name"], AGENTS[0]["address"])
BEN = (AGENTS[1]["name"], AGENTS[1]["address"])
OUR_MTA = "mx.example.com"


def new_ticket(desk) -> str:
    """A customer's mail; the ticket number."""
    return desk.receive(build_mail(subject="Drucker druckt nicht")).ticket_number


def reply_address(desk, number: str, agent: str) -> str:
    """The Reply-To of the latest mail about ticket ``number`` that went to ``agent``."""
    mails = [m for m in desk.outbox(to=agent) if f"[Ticket#{number}]" in m["Subject"]
             and m["Reply-To"]]
    return str(mails[-1]["Reply-To"])


def answer(desk, number: str, sender: tuple[str, str], to: str,
           text: str = "#status waiting\nBitte senden Sie uns die Version.", headers=()):
    """A reply with a command and an answer for the customer, sent to ``to``."""
    return desk.receive(build_mail(sender=sender, to=to, subject=f"Re: [Ticket#{number}]",
                                   text=text, headers=headers))


def assert_not_applied(desk, number: str, sender: str, reason: str) -> None:
    """Nothing changed and nothing went to the customer; the ticket notes why; the sender
    got one explanation."""
    assert desk.ticket(number)["status"] == "new"
    assert [m for m in desk.outbox(kind="agent_reply") if number in m["Subject"]] == []
    [refused] = desk.events(number, "agent_mail_refused")
    assert (refused["data"]["from"], refused["data"]["reason"]) == (sender, reason)
    assert len(desk.outbox(kind="agent_refused", to=sender)) == 1


def test_each_agent_gets_its_own_short_reply_address(make_desk):
    """One mail per agent, each with a reply address of its own that fits in a local part."""
    desk = make_desk(TUESDAY_10)
    number = new_ticket(desk)
    notices = desk.outbox(kind="agent_new_ticket")
    assert [str(n["To"]) for n in notices] == [ANNA[1], BEN[1]]
    addresses = {reply_address(desk, number, a) for a in (ANNA[1], BEN[1])}
    assert len(addresses) == 2
    assert all(len(a.partition("@")[0]) <= 64 and a == a.lower() for a in addresses)


def test_another_agents_reply_address_is_refused_and_explained(make_desk):
    """Ben answering through Anna's address changes nothing; he is told why and can answer
    through the fresh address of the explanation."""
    desk = make_desk(TUESDAY_10)
    number = new_ticket(desk)
    outcome = answer(desk, number, BEN, reply_address(desk, number, ANNA[1]))
    assert outcome.status == "note"
    assert_not_applied(desk, number, BEN[1], "other_agent")
    [explanation] = desk.outbox(kind="agent_refused")
    body = explanation.get_content()
    assert "NICHT ausgeführt" in body and "Kollegin oder einen Kollegen" in body
    assert "Bitte senden Sie uns die Version." in body
    answer(desk, number, BEN, str(explanation["Reply-To"]))
    assert desk.ticket(number)["status"] == "waiting"
    assert len(desk.outbox(kind="agent_reply")) == 1


def test_an_expired_reply_address_is_refused(make_desk):
    """After [team] reply_token_days the address no longer acts; within them it does."""
    desk = make_desk(TUESDAY_10, team={"reply_token_days": 10})
    number, late = new_ticket(desk), new_ticket(desk)
    desk.now += timedelta(days=10)
    answer(desk, number, ANNA, reply_address(desk, number, ANNA[1]))
    assert desk.ticket(number)["status"] == "waiting"
    desk.now += timedelta(days=1)
    answer(desk, late, ANNA, reply_address(desk, late, ANNA[1]))
    assert_not_applied(desk, late, ANNA[1], "expired")
    assert "älter als 10 Tage" in desk.outbox(kind="agent_refused")[0].get_content()


def test_a_non_agent_with_a_valid_reply_address_is_refused(make_desk):
    """A notification forwarded to the customer: the customer's answer through it is kept as
    a note, applies nothing, and the explanation carries no reply address."""
    desk = make_desk(TUESDAY_10)
    number = new_ticket(desk)
    answer(desk, number, CUSTOMER, reply_address(desk, number, ANNA[1]), text="#close\nDanke!")
    assert_not_applied(desk, number, CUSTOMER[1], "not_agent")
    [explanation] = desk.outbox(kind="agent_refused")
    assert explanation["Reply-To"] is None and SUPPORT in explanation.get_content()
    assert desk.events(number, "customer_reply") == []


def test_an_old_reply_address_without_an_agent_is_not_accepted(make_desk):
    """The per-ticket addresses of earlier versions (signed, but for no agent) act no more."""
    desk = make_desk(TUESDAY_10)
    number = new_ticket(desk)
    mac = hmac.new(SECRET.encode(), f"reply:{number}".encode(), hashlib.sha256).hexdigest()
    outcome = answer(desk, number, ANNA, f"support+t{number}-{mac[:16]}@example.com")
    assert outcome.status == "suspicious"
    assert desk.ticket(number)["status"] == "new" and desk.outbox(kind="agent_reply") == []


@pytest.mark.parametrize(("results", "applied"), [
    (f"{OUR_MTA}; spf=fail smtp.mailfrom=example.com; dkim=fail header.d=example.com", False),
    (f"{OUR_MTA}; spf=softfail smtp.mailfrom=example.com; dkim=none", False),
    (f"{OUR_MTA}; spf=fail smtp.mailfrom=example.com; dkim=pass header.d=example.com", True),
    (f"{OUR_MTA}; spf=pass smtp.mailfrom=example.com; dkim=none", True),
    ("mx.evil.example; spf=fail smtp.mailfrom=example.com; dkim=fail", True),
], ids=["both-fail", "neither-passes", "dkim-passes", "spf-passes", "not-our-mta"])
def test_agent_mail_disowned_by_its_domain_is_refused(make_desk, results, applied):
    """With [trust] authserv_id, our MTA's DKIM and SPF verdicts decide; others are claims."""
    desk = make_desk(TUESDAY_10, trust={"authserv_id": OUR_MTA})
    number = new_ticket(desk)
    answer(desk, number, ANNA, reply_address(desk, number, ANNA[1]),
           headers=(("Authentication-Results", results),))
    if applied:
        assert desk.ticket(number)["status"] == "waiting"
    else:
        assert_not_applied(desk, number, ANNA[1], "unauthenticated")
        assert "weder per DKIM noch per SPF" in desk.outbox(kind="agent_refused")[0] \
            .get_content()


# -- the daemon: IMAP in, SMTP out -------------------------------------------------------------

REPLY_TO = re.compile(r"support\+t(\d+)-[0-9a-f]{8}-\d+-[0-9a-f]{16}@example\.com")


def test_daemon_explains_a_refused_answer_by_mail(tmp_path, dovecot, imap_user: ImapAccount,
                                                  smtp_sink: SmtpSink):
    """Through the running daemon: Ben answers Anna's notification; he gets the explanation,
    the customer nothing but the acknowledgement, and the ticket notes it."""
    bot = Instance.for_servers(tmp_path, imap_user, smtp_sink)
    bot.settings["team.agents"] = list(AGENTS)
    bot.write()
    with bot.start():
        dovecot.append(imap_user.username, "INBOX", build_mail(subject="Drucker druckt nicht"))
        notice = smtp_sink.wait_for(lambda m: m.rcpt_tos == (ANNA[1],))[0]
        number = REPLY_TO.fullmatch(str(notice.message["Reply-To"])).group(1)
        dovecot.append(imap_user.username, "INBOX", build_mail(
            sender=BEN, to=str(notice.message["Reply-To"]), subject=f"Re: {notice.subject}",
            text="#close\nErledigt."))
        explanation = smtp_sink.wait_for(lambda m: m.rcpt_tos == (BEN[1],)
                                         and "nicht ausgeführt" in m.subject)[0]
        smtp_sink.wait_for(lambda m: m.rcpt_tos == (CUSTOMER[1],))  # the acknowledgement
    assert REPLY_TO.fullmatch(str(explanation.message["Reply-To"]))
    ticket = bot.ticket(number)
    assert ticket["status"] == "new"
    assert [e["data"]["reason"] for e in ticket["events"]
            if e["kind"] == "agent_mail_refused"] == ["other_agent"]
    assert [m.subject for m in smtp_sink.messages if CUSTOMER[1] in m.rcpt_tos] == \
        [f"[Ticket#{number}] Drucker druckt nicht"]
