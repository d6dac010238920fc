"""Classification of inbound mail: robots, auto-replies, bounces and loops never get an answer."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from mailbot.reading.classify import ClassifyContext, classify
from mailbot.reading.dsn import Bounce, parse_bounce
from mailbot.reading.message import Message, ParseError, parse

DATA = Path(__file__).parent / "data"
CTX = ClassifyContext(
    own_addresses=("support@example.com", "hilfe@example.de"),
    loop_id="mailbot-example-1",
    agent_addresses=("anna.berg@example.com",),
)

# Every mail of the corpus and the kind it must be classified as.
EXPECTED_KINDS = {
    "customers/contact_form_feedback_id.eml": "customer",
    "customers/gmail_en_followup.eml": "customer",
    "customers/outlook_de_question.eml": "customer",
    "customers/outlook_de_reply.eml": "customer",
    "robots/exchange_inbox_rule_forward.eml": "robot",
    "robots/exchange_ndr_online.eml": "bounce",
    "robots/exchange_ndr_onprem.eml": "bounce",
    "robots/exchange_oof_en.eml": "auto_reply",
    "robots/exim_plain_bounce.eml": "bounce",
    "robots/gmail_dsn_failure.eml": "bounce",
    "robots/gmail_vacation.eml": "auto_reply",
    "robots/mailing_list.eml": "robot",
    "robots/monitoring_alert.eml": "robot",
    "robots/newsletter.eml": "robot",
    "robots/noreply_notification.eml": "robot",
    "robots/oof_subject_only.eml": "auto_reply",
    "robots/outlook_oof_de.eml": "auto_reply",
    "robots/postfix_dsn_511.eml": "bounce",
    "robots/postfix_dsn_delayed.eml": "bounce",
    "robots/qmail_failure_notice.eml": "bounce",
    "robots/read_receipt.eml": "robot",
    "robots/sieve_vacation.eml": "auto_reply",
}

# What each bounce says: permanent?, failed recipients, status, Message-ID of our mail.
EXPECTED_BOUNCES = {
    "robots/postfix_dsn_511.eml":
        (True, ("k.schmidt@kunde-gmbh.de",), "5.1.1", "ack.1047.c0ffee@mailbot.example"),
    "robots/postfix_dsn_delayed.eml":
        (False, ("info@tischlerei-vogel.de",), "4.4.1", "status.1048.0b57a1@mailbot.example"),
    "robots/exchange_ndr_online.eml":
        (True, ("b.lang@steuerbuero-lang.de",), "5.1.10", "notify.1049.ab12cd@mailbot.example"),
    "robots/exchange_ndr_onprem.eml":
        (True, ("p.koch@stadtwerke-nord.de",), "5.1.1", "ack.1050.77e0f1@mailbot.example"),
    "robots/gmail_dsn_failure.eml":
        (True, ("tobias.richter1987@gmail.com",), "5.1.1", "ack.1051.3e4f5a@mailbot.example"),
    "robots/exim_plain_bounce.eml":
        (True, ("anfrage@autohaus-zeller.de",), "5.1.1", "ack.1052.d15ea5@mailbot.example"),
    "robots/qmail_failure_notice.eml":
        (True, ("kassenwart@verein-sportfreunde.de",), "5.1.1",
         "status.1053.be11a0@mailbot.example"),
}


def load(name: str) -> Message:
    return parse((DATA / name).read_bytes())


def mail(headers: str, body: str = "Hallo,\n\nbitte helfen Sie mir.\n") -> Message:
    base = ("From: Kunde <kunde@firma.de>\nTo: support@example.com\nSubject: Frage\n"
            "Message-ID: <q1@firma.de>\n")
    return parse(f"{base}{headers}\n{body}".encode())


def test_table_covers_every_corpus_file() -> None:
    """Every robot and customer mail in the corpus has an expected kind in the table."""
    found = {str(p.relative_to(DATA)) for p in DATA.glob("*/*.eml")}
    assert found == set(EXPECTED_KINDS)


@pytest.mark.parametrize(("name", "kind"), sorted(EXPECTED_KINDS.items()))
def test_corpus_kind(name: str, kind: str) -> None:
    """Each real-looking mail gets its kind, a reason, and an answer only if from a customer."""
    verdict = classify(load(name), CTX)
    assert (verdict.kind, verdict.acknowledge) == (kind, kind == "customer")
    assert verdict.reason


@pytest.mark.parametrize(("name", "expected"), sorted(EXPECTED_BOUNCES.items()))
def test_bounce_details(name: str, expected: tuple) -> None:
    """A bounce names the failed recipient, the status, and which of our mails bounced."""
    bounce = parse_bounce(load(name))
    assert isinstance(bounce, Bounce)
    assert (bounce.permanent, bounce.recipients, bounce.status,
            bounce.original_message_id) == expected
    assert bounce.reason


def test_bounce_reason_carries_the_diagnostic() -> None:
    """The agents see the remote server's own words about why the mail bounced."""
    bounce = parse_bounce(load("robots/exchange_ndr_online.eml"))
    assert bounce is not None
    assert "RESOLVER.ADR.RecipientNotFound" in bounce.reason


@pytest.mark.parametrize("name", [n for n, k in EXPECTED_KINDS.items() if k != "bounce"])
def test_non_bounces_have_no_bounce(name: str) -> None:
    """Customer mails, auto-replies and other robots are never taken for a bounce."""
    assert parse_bounce(load(name)) is None


def test_success_report_is_not_a_bounce() -> None:
    """A delivery report that only says "delivered" marks nothing bounced."""
    raw = (DATA / "robots/postfix_dsn_511.eml").read_bytes()
    raw = raw.replace(b"Action: failed", b"Action: delivered")
    raw = raw.replace(b"Status: 5.1.1", b"Status: 2.0.0")
    msg = parse(raw)
    assert parse_bounce(msg) is None
    assert classify(msg, CTX).kind == "robot"


def test_bounce_id_from_in_reply_to_when_nothing_attached() -> None:
    """A DSN without the returned original still finds our mail through In-Reply-To."""
    msg = mail("X-Failed-Recipients: weg@firma.de\nIn-Reply-To: <ack.9.ab@mailbot.example>",
               "550 5.1.1 <weg@firma.de>: user unknown\n")
    bounce = parse_bounce(msg)
    assert bounce is not None
    assert (bounce.original_message_id, bounce.recipients) == ("ack.9.ab@mailbot.example",
                                                              ("weg@firma.de",))


def test_loop_header_is_a_loop() -> None:
    """Our own mail coming back with our loop header never opens a ticket."""
    verdict = classify(mail("X-Mailbot-Loop: mailbot-example-1"), CTX)
    assert (verdict.kind, verdict.acknowledge) == ("loop", False)
    assert "X-Mailbot-Loop" in verdict.reason


def test_other_instance_loop_header_is_a_robot() -> None:
    """Mail from another mailbot instance is filed but never answered."""
    assert classify(mail("X-Mailbot-Loop: someone-else"), CTX).kind == "robot"


@pytest.mark.parametrize("sender", ["support@example.com", "Support+t0k3n@Example.com",
                                    "hilfe@example.de"])
def test_mail_from_own_address_is_a_loop(sender: str) -> None:
    """Mail from one of our own support addresses (also a reply address) is a loop."""
    msg = parse(f"From: {sender}\nTo: support@example.com\nSubject: Hi\n\nx\n".encode())
    assert classify(msg, CTX).kind == "loop"


def test_agent_mail() -> None:
    """Mail from a configured agent is an agent mail and gets no acknowledgement."""
    msg = parse(b"From: Anna Berg <anna.berg@example.com>\nTo: support@example.com\n"
                b"Subject: Re: [#1] x\n\n#take\n")
    assert (classify(msg, CTX).kind, classify(msg, CTX).acknowledge) == ("agent", False)


@pytest.mark.parametrize(("headers", "kind"), [
    ("Auto-Submitted: no", "customer"),
    ("Auto-Submitted: auto-notified", "robot"),
    ("Auto-Submitted: auto-replied; owner-email=x@y.de", "auto_reply"),
    ("X-Autoreply: yes", "auto_reply"),
    ("X-Autorespond: Out of office", "auto_reply"),
    ("Precedence: auto_reply", "auto_reply"),
    ("Precedence: junk", "robot"),
    ("Precedence: first-class", "customer"),
    # Outlook writes X-Auto-Response-Suppress on a person's mail too (issue 14): never a robot
    ("X-Auto-Response-Suppress: OOF, DR, RN, NRN", "customer"),
    ("X-Auto-Response-Suppress: All", "customer"),
    ("X-Auto-Response-Suppress: None", "customer"),
    ("Return-Path: <>", "robot"),
    ("Feedback-ID: 42:shop:ses", "customer"),
    ("Content-Type: multipart/report; report-type=delivery-status; boundary=x", "robot"),
])
def test_header_signals(headers: str, kind: str) -> None:
    """Each robot header alone decides; harmless headers leave a customer mail alone."""
    assert classify(mail(headers), CTX).kind == kind


@pytest.mark.parametrize("sender", ["MAILER-DAEMON@mx.firma.de", "postmaster@firma.de",
                                    "noreply@shop.de", "no-reply@shop.de",
                                    "do-not-reply@shop.de", "donotreply@shop.de",
                                    "bounces+123@lists.shop.de"])
def test_robot_senders(sender: str) -> None:
    """Mail from daemon and no-reply addresses is filed but never answered."""
    msg = parse(f"From: {sender}\nTo: support@example.com\nSubject: Info\n\nx\n".encode())
    assert classify(msg, CTX).kind == "robot"


@pytest.mark.parametrize(("subject", "kind"), [
    ("Automatische Antwort: Ihre Anfrage", "auto_reply"),
    ("AW: Abwesenheitsnotiz: Rechnung", "auto_reply"),
    ("RE: Out of Office: Rechnung", "auto_reply"),
    ("Out of the office until Monday", "auto_reply"),
    ("Auto-Reply: your message", "auto_reply"),
    ("Automatic reply: Ticket", "auto_reply"),
    ("I am out of the office", "auto_reply"),
    ("Ich bin nicht im Büro", "auto_reply"),
    ("Urlaub", "auto_reply"),
    ("Vacation: back on 1 December", "auto_reply"),
    ("Abwesend (bis 30.11.)", "auto_reply"),
    ("Réponse automatique : Votre demande", "auto_reply"),
    ("Respuesta automática: Pedido", "auto_reply"),
    ("Risposta automatica: Ordine", "auto_reply"),
    ("Automatisch antwoord: Bestelling", "auto_reply"),
    ("Frage zu Out of Office-Funktion", "customer"),
    ("Re: Urlaubsplanung im Portal", "customer"),
    ("Vacation deals for your team", "customer"),
    ("Drucker meldet: Out of Office", "customer"),
])
def test_out_of_office_subjects(subject: str, kind: str) -> None:
    """Vacation subjects are recognised only at the start, after Re:/AW: prefixes."""
    msg = parse(f"From: k@firma.de\nTo: support@example.com\nSubject: {subject}\n\nx\n".encode())
    assert classify(msg, CTX).kind == kind


def test_vacation_words_in_body_only_are_a_customer() -> None:
    """A customer who mentions their holiday in the text still gets an answer."""
    verdict = classify(mail("", "Ich bin im Urlaub, Out of Office, Abwesenheitsnotiz.\n"), CTX)
    assert verdict.acknowledge


CORPUS_BYTES = [p.read_bytes() for p in sorted(DATA.glob("*/*.eml"))]
HEADER_NAMES = ["Auto-Submitted", "Precedence", "List-Id", "Return-Path", "Content-Type",
                "X-Auto-Response-Suppress", "X-Failed-Recipients", "From", "Subject",
                "X-Mailbot-Loop", "In-Reply-To"]


@st.composite
def mutated_mails(draw: st.DrawFn) -> bytes:
    """A corpus mail with random cuts, insertions and header lines, or random bytes."""
    raw = draw(st.sampled_from(CORPUS_BYTES)) if draw(st.booleans()) else draw(st.binary())
    for _ in range(draw(st.integers(0, 4))):
        at = draw(st.integers(0, len(raw)))
        cut = draw(st.integers(0, 64))
        insert = draw(st.binary(max_size=64) | st.builds(
            lambda n, v: f"\n{n}: {v}\n".encode("utf-8", "surrogatepass"),
            st.sampled_from(HEADER_NAMES), st.text(max_size=40)))
        raw = raw[:at] + insert + raw[at + cut:]
    return raw


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_mails())
def test_classify_never_raises(raw: bytes) -> None:
    """No mail that the parser accepts makes classification or bounce parsing crash."""
    try:
        msg = parse(raw)
    except (ParseError, UnicodeError):
        assume(False)
        return
    verdict = classify(msg, CTX)
    assert verdict.kind in {"customer", "agent", "auto_reply", "bounce", "robot", "loop"}
    parse_bounce(msg)
