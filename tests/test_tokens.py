"""Signed tokens: customer links, reply addresses and our own Message-IDs."""

from __future__ import annotations

import hashlib
import hmac
import time
from datetime import UTC, datetime, timedelta

import pytest

from mailbot.outbound.tokens import ReplyTag, Signer, TokenError, TokenExpired, agent_id

NUMBER = "202611240007"


@pytest.fixture
def signer() -> Signer:
    """A signer with one current secret and a link lifetime of one hour."""
    return Signer("current-secret", max_age_seconds=3600)


def test_link_token_round_trips_to_its_ticket(signer):
    """A link in a customer mail opens exactly the ticket it was made for."""
    token = signer.link_token("escalate", NUMBER)
    assert signer.read_link_token("escalate", token) == NUMBER


def test_link_token_for_one_purpose_does_not_work_for_another(signer):
    """A ticket-page link cannot be used as an escalation link."""
    token = signer.link_token("ticket", NUMBER)
    with pytest.raises(TokenError):
        signer.read_link_token("escalate", token)


@pytest.mark.parametrize("change", [
    lambda t: t[:-5] + ("A" if t[-5] != "A" else "B") + t[-4:],
    lambda t: t.swapcase(),
    lambda t: "x" + t,
    lambda t: "",
], ids=["signature", "case", "prefix", "empty"])
def test_tampered_link_token_is_rejected(signer, change):
    """An edited link is refused, never mapped to some ticket."""
    token = signer.link_token("escalate", NUMBER)
    with pytest.raises(TokenError):
        signer.read_link_token("escalate", change(token))


def test_link_signed_with_another_secret_is_rejected(signer):
    """A link forged with a different secret is refused."""
    token = Signer("someone-else").link_token("escalate", NUMBER)
    with pytest.raises(TokenError):
        signer.read_link_token("escalate", token)


def made_ago(signer: Signer, seconds: float, monkeypatch) -> str:
    """An escalation token for NUMBER as if it had been made ``seconds`` ago."""
    then = time.time() - seconds
    with monkeypatch.context() as patch:
        patch.setattr(time, "time", lambda: then)
        return signer.link_token("escalate", NUMBER)


@pytest.mark.parametrize(("max_age", "age"), [(-1, 0), (0, 2), (3600, 365 * 86400)],
                         ids=["max-age-minus-1", "max-age-0", "last-year"])
def test_link_token_past_its_lifetime_is_expired(max_age, age, monkeypatch):
    """A link older than its lifetime says it expired (not that it is forged)."""
    token = made_ago(Signer("s"), age, monkeypatch)
    with pytest.raises(TokenExpired):
        Signer("s", max_age_seconds=max_age).read_link_token("escalate", token)


def test_link_token_within_its_lifetime_works(signer, monkeypatch):
    """A link made a while ago but within its lifetime still works."""
    assert signer.read_link_token("escalate", made_ago(signer, 3000, monkeypatch)) == NUMBER


def test_links_made_before_a_key_rotation_still_work():
    """After rotating the secret, links already sent to customers keep working."""
    token = Signer("old-secret").link_token("ticket", NUMBER)
    rotated = Signer("new-secret", old_secrets=("old-secret",))
    assert rotated.read_link_token("ticket", token) == NUMBER
    assert Signer("new-secret").link_token("ticket", NUMBER) != token
    with pytest.raises(TokenError):
        Signer("new-secret").read_link_token("ticket", token)


ANNA = "anna@example.com"
ISSUED = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)


def test_reply_tag_names_ticket_agent_and_day_even_when_the_case_changes(signer):
    """A reply address survives mail systems that change its case; it says whom it was sent
    to and how old it is."""
    tag = signer.reply_tag(NUMBER, ANNA, ISSUED)
    read = signer.read_reply_tag(tag)
    assert read == signer.read_reply_tag(tag.upper())
    assert read == ReplyTag(NUMBER, agent_id(ANNA), read.issued_day)
    assert read.sent_to("Anna@Example.com") and not read.sent_to("ben@example.com")
    assert read.age_days(ISSUED + timedelta(days=30, hours=15)) == 31  # by UTC dates
    assert tag == tag.lower() and len(f"support+{tag}") <= 64


@pytest.mark.parametrize("forge", [
    lambda tag: tag.replace(NUMBER, "202611240008"),
    lambda tag: tag.replace(agent_id(ANNA), agent_id("ben@example.com")),
    lambda tag: tag.replace(f"-{tag.split('-')[2]}-", f"-{int(tag.split('-')[2]) + 9}-"),
    lambda tag: tag[:-1] + ("0" if tag[-1] != "0" else "1"),
    lambda tag: tag.rpartition("-")[0],
    lambda tag: "",
], ids=["other-number", "other-agent", "later-day", "mac", "no-mac", "empty"])
def test_forged_reply_tag_is_rejected(signer, forge):
    """A reply address edited to point at another ticket, agent or day is not trusted."""
    assert signer.read_reply_tag(forge(signer.reply_tag(NUMBER, ANNA, ISSUED))) is None


def test_reply_tag_without_an_agent_is_no_longer_accepted(signer):
    """The per-ticket tags of earlier versions (signed, but for no agent) are refused."""
    mac = hmac.new(b"current-secret", f"reply:{NUMBER}".encode(), hashlib.sha256).hexdigest()
    assert signer.read_reply_tag(f"t{NUMBER}-{mac[:16]}") is None


def test_reply_tag_of_a_rotated_secret_is_still_accepted():
    """Reply addresses in mails sent before a key rotation still thread."""
    tag = Signer("old-secret").reply_tag(NUMBER, ANNA, ISSUED)
    assert Signer("new", old_secrets=("old-secret",)).read_reply_tag(tag).ticket_number == NUMBER
    assert Signer("new").read_reply_tag(tag) is None


def test_our_message_ids_are_recognised_and_unique(signer):
    """Every mail we send has its own Message-ID, and a reply to any of them is recognised."""
    first = signer.message_id(NUMBER, "example.com")
    second = signer.message_id(NUMBER, "example.com")
    assert first != second
    assert first.endswith("@example.com")
    assert signer.read_message_id(first) == NUMBER
    assert signer.read_message_id(first.upper()) == NUMBER  # case-insensitive like addresses


@pytest.mark.parametrize("forge", [
    lambda mid: mid.replace(NUMBER, "202611240008"),
    lambda mid: mid.replace(".", "..", 1),
    lambda mid: "mb.x" + mid,
    lambda mid: "someone@example.com",
], ids=["other-number", "shape", "prefix", "foreign"])
def test_foreign_or_forged_message_ids_are_not_ours(signer, forge):
    """A Message-ID we did not sign does not claim a ticket."""
    assert signer.read_message_id(forge(signer.message_id(NUMBER, "example.com"))) is None


def test_unknown_link_purpose_is_a_programming_error(signer):
    """Only the known link purposes can be signed."""
    with pytest.raises(ValueError, match="unknown token purpose"):
        signer.link_token("admin", NUMBER)



def test_a_damaged_message_id_of_ours_is_just_not_ours(signer):
    """A flipped byte that makes our Message-ID's signature non-ASCII is not a crash."""
    genuine = signer.message_id(NUMBER, "example.com")
    local, _, domain = genuine.partition("@")
    damaged = f"{local[:-1]}ü@{domain}"
    assert signer.read_message_id(genuine) == NUMBER
    assert signer.read_message_id(damaged) is None
