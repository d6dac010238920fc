"""Authentication-Results: only our border MTA's verdicts count, never a sender's own."""

from __future__ import annotations

from mails import build_mail

from mailbot.reading.authentication import authentication
from mailbot.reading.message import parse

OURS = "mx.example.com"


def verdicts(*headers: str):
    """The verdicts of a mail carrying these Authentication-Results headers (topmost first)."""
    raw = build_mail(headers=tuple(("Authentication-Results", h) for h in headers))
    return authentication(parse(raw), OURS)


def test_our_mtas_verdicts_are_read():
    """SPF, DKIM and DMARC with their domains, as our MTA wrote them."""
    found = verdicts(f"{OURS}; spf=pass smtp.mailfrom=kunde.example; "
                     "dkim=pass header.d=kunde.example; dmarc=pass header.from=kunde.example")
    assert found.spf_pass("kunde.example") and not found.dkim_pass("other.example")
    assert found.dkim_pass("kunde.example") and found.dmarc == "pass" and not found.failed


def test_a_header_of_another_server_is_a_claim_and_ignored():
    """A sender's own "pass" for a name that is not our MTA's changes nothing."""
    found = verdicts("mx.evil.example; spf=pass smtp.mailfrom=kunde.example; dmarc=pass")
    assert not found.known


def test_the_topmost_header_of_our_mta_wins_over_one_the_sender_wrote_below():
    """Our MTA adds its header on top; a forged one of the same name further down loses."""
    found = verdicts(f"{OURS}; spf=fail smtp.mailfrom=bank.example; dmarc=fail "
                     "header.from=bank.example",
                     f"{OURS}; spf=pass smtp.mailfrom=bank.example; dmarc=pass")
    assert found.failed == "DMARC failed for bank.example"


def test_unreadable_headers_and_no_configured_mta_give_nothing():
    """Garbage is skipped; without [trust] authserv_id nothing is believed."""
    assert not verdicts("garbage ;;; ==").known
    raw = build_mail(headers=(("Authentication-Results", f"{OURS}; dmarc=fail"),))
    assert not authentication(parse(raw), "").known
