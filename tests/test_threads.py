"""Threading: which ticket an inbound mail follows up on, and by what evidence."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from mails import SUPPORT, build_mail

from mailbot.outbound.tokens import Signer
from mailbot.reading import message
from mailbot.tickets import threads

SIGNER = Signer("thread-secret")
OLD = "202611200003"  # a ticket whose mails we know by Message-ID
FILED = {"customer-first@kunde.example": 7, "agent-answer@example.com": 7}
OURS = SIGNER.message_id(OLD, "example.com")
TAG = threads.tag_pattern("Ticket#")
ISSUED = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)
ANNAS = SIGNER.read_reply_tag(SIGNER.reply_tag(OLD, "anna@example.com", ISSUED))


def find(raw: bytes) -> threads.ThreadMatch:
    """Thread one raw mail against the known Message-IDs above."""
    return threads.find(message.parse(raw), signer=SIGNER, support_addresses=(SUPPORT,),
                        tag=TAG, lookup=FILED.get)


def reply_address(number: str) -> str:
    """Anna's signed reply address for ``number``."""
    return f"support+{SIGNER.reply_tag(number, 'anna@example.com', ISSUED)}@example.com"


@pytest.mark.parametrize(("mail", "expected"), [
    (dict(to=reply_address(OLD)), threads.ThreadMatch(OLD, None, "reply-address", ANNAS)),
    (dict(to=reply_address(OLD).upper()),
     threads.ThreadMatch(OLD, None, "reply-address", ANNAS)),
    (dict(in_reply_to=OURS), threads.ThreadMatch(OLD, None, "in-reply-to")),
    (dict(in_reply_to="customer-first@kunde.example"),
     threads.ThreadMatch("", 7, "in-reply-to")),
    (dict(references=("unknown@elsewhere", "agent-answer@example.com")),
     threads.ThreadMatch("", 7, "references")),
    (dict(references=(OURS, "unknown@elsewhere")), threads.ThreadMatch(OLD, None, "references")),
    (dict(subject=f"AW: [Ticket#{OLD}] Drucker"), threads.ThreadMatch(OLD, None, "subject-tag")),
    (dict(subject=f"Re: [ticket# {OLD}] Drucker"),
     threads.ThreadMatch(OLD, None, "subject-tag")),
    (dict(in_reply_to="foreign@kunde.example"), threads.ThreadMatch()),
    (dict(subject="Drucker druckt nicht"), threads.ThreadMatch()),
], ids=["reply-address", "reply-address-upper-case", "in-reply-to-ours", "in-reply-to-filed",
        "references-filed", "references-ours", "subject-tag", "subject-tag-loose",
        "in-reply-to-foreign", "nothing"])
def test_thread_evidence(mail, expected):
    """Each kind of evidence finds the right ticket; unrelated mail starts a new one."""
    assert find(build_mail(**mail)) == expected


def test_forged_reply_address_falls_back_to_other_evidence():
    """A reply address with a wrong signature is ignored, never trusted."""
    forged = reply_address(OLD).replace(OLD, "202611200004")
    assert find(build_mail(to=forged)) == threads.ThreadMatch()
    assert find(build_mail(to=forged, subject=f"[Ticket#{OLD}]")).how == "subject-tag"


def test_reply_address_of_another_domain_is_not_ours():
    """A plus address at some other domain is not our reply address."""
    assert not find(build_mail(to=reply_address(OLD).replace("example.com", "evil.test"))).found


def test_header_evidence_beats_the_subject_tag():
    """A reply that quotes another ticket's tag still threads by its headers."""
    match = find(build_mail(in_reply_to=OURS, subject="Re: [Ticket#202611209999] alt"))
    assert (match.ticket_number, match.how) == (OLD, "in-reply-to")


def test_the_latest_reference_wins():
    """Of several known references, the newest (last) one decides."""
    newer = SIGNER.message_id("202611210001", "example.com")
    assert find(build_mail(references=(OURS, newer))).ticket_number == "202611210001"


def test_tag_prefix_is_configurable():
    """A custom tag prefix is recognised and others are not."""
    pattern = threads.tag_pattern("Anfrage-")
    assert threads.subject_numbers("Re: [Anfrage-42] und [Anfrage-43]", pattern) == ("42", "43")
    assert threads.subject_numbers("[Ticket#42]", pattern) == ()
