"""Every mail we send speaks one language: no English in a German mail, no German in an
English one, and every time in it is local, in the mail's language.

One scenario per service language drives every kind of mail through the real paths
(customer mail, agent replies and commands, refused and suspicious agent mail, held
acknowledgements, scheduler jobs, escalation, a relay that refuses or never takes a mail,
relays and a Maildir that fail for reasons of ours) and every reason code the core can word;
then each queued mail is read in the language its Content-Language header names, with what
people wrote (texts, names, subjects, the relay's or the system's own answer) taken out, as
that is quoted, not ours.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from email import policy as email_policy
from email.message import EmailMessage
from functools import partial
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.handlers import Sink
from aiosmtpd.smtp import AuthResult
from conftest import AGENTS
from daemon_util import REPO
from mails import build_mail
from servers import LOOPBACK, SmtpSink, free_port

from mailbot.outbound.sender import flush
from mailbot.outbound.transports import (
    DeliveryError,
    MaildirTransport,
    SmtpTransport,
    transport_for,
)
from mailbot.outbound.wording import SENTENCES, sentence
from mailbot.settings.config import OAuth2Config, RelayConfig
from mailbot.tickets import escalation, guards, jobs, lifecycle, notify

TUESDAY_10 = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)  # 10:00 in Berlin
BERLIN = ZoneInfo("Europe/Berlin")
AUTHSERV = "mx.example.com"
ANNA = (AGENTS[0]["name"], AGENTS[0]["address"])
BEN = (AGENTS[1]["name"], AGENTS[1]["address"])
ACCOUNTS = REPO / "mailbot" / "examples" / "accounts.example.toml"
KINDS = sorted(p.stem for p in (REPO / "mailbot" / "templates" / "de" / "mail").glob("*.txt"))
# Operators' data from the example customer list: names they chose, shown as they are.
OPERATOR_WORDS = ("Muster Maschinenbau GmbH", "wartung")
RELAY_REFUSES = {"weg@kunde.example": "550 5.1.1 no such user",
                 "voll@kunde.example": "452 4.2.2 mailbox full"}
PHONE = "+49 221 1234567"
# What people write, in the desk's language: quoted in our mails, never our words.
PEOPLE = {
    "de": {
        "customer": ("Jürgen Müller", "juergen.mueller@kunde.example"),
        "subject": "Kasse funktioniert nicht",
        "text": "Hallo,\ndie Kasse funktioniert nicht mehr.\n",
        "followup": "Sie geht immer noch nicht, bitte rufen Sie an.\n",
        "answer": "Guten Tag,\nbitte starten Sie die Kasse neu.\n",
        "claim": "Hallo,\nunsere Kundennummer ist {number}, bitte helfen.\nGruß Max\n",
        "stranger": ("Max Neu", "max@unbekannt.example"),
    },
    "en": {
        "customer": ("Jane Miller", "jane.miller@customer.example"),
        "subject": "Till not working",
        "text": "Hello,\nthe till is not working any more.\n",
        "followup": "It is still down, please call me.\n",
        "answer": "Hello,\nplease restart the till.\n",
        "claim": "Hello,\nour customer number is {number}, please help.\nRegards, Max\n",
        "stranger": ("Max New", "max@unknown.example"),
    },
}
# Words of one language that never appear in a mail of the other (word-wise, any case).
# Statuses and priorities count too: the values of commands are taken out first.
ENGLISH = ("the", "is", "are", "were", "has", "have", "been", "not", "no", "and", "of", "to",
           "for", "with", "from", "by", "at", "on", "your", "you", "we", "our", "please",
           "reply", "failed", "could", "would", "this", "that", "which", "be", "ticket was",
           "new", "open", "waiting", "resolved", "closed", "urgent", "high", "low", "none",
           "unknown", "customer", "contract", "subject", "error")
GERMAN = ("der", "die", "das", "und", "nicht", "ist", "sie", "ihre", "ihr", "wurde", "bitte",
          "mit", "für", "von", "zu", "keine", "kein", "keiner", "oder", "auf", "ein", "eine",
          "wir", "uns", "unsere", "noch", "dem", "den", "uhr", "tage", "neu", "offen",
          "dringend", "hoch", "niedrig", "unbekannt", "kunde", "vertrag", "betreff")
# What agents type: commands with their value, and the values a command allows.
COMMANDS = re.compile(r"#\w+(?: \S+)?|" + "|".join(
    re.escape(", ".join(values)) for values in (lifecycle.STATUSES, lifecycle.PRIORITIES)))
# A phrase of each branch of the templates (and of the note on a file left out): each must
# have been rendered.
BRANCHES = {
    "de": ("Ein Mitarbeiter bearbeitet jetzt", "Wir benötigen weitere Informationen",
           "Ihr Anliegen ist gelöst", "Ihr Ticket ist geschlossen", "Frist läuft ab",
           "Frist überschritten", "Frist für die erste Antwort", "Frist für die nächste Antwort",
           "nur für die Mitarbeiter", "Kollegin oder einen Kollegen", "gilt deshalb nicht mehr",
           "weder per DKIM noch per SPF", "Bestätigen mit #confirm",
           "Zuordnen kann sie nur ein Betreiber", "lang versucht",
           "außerhalb unserer Supportzeiten", "ergänzen Sie bitte", "zu groß für diese E-Mail"),
    "en": ("An agent is now working", "We need more information from you",
           "Your request has been resolved", "Your ticket is closed", "Deadline approaching",
           "Deadline breached", "the first response deadline", "the next answer deadline",
           "meant for the staff", "sent to a colleague", "is no longer valid",
           "neither by DKIM nor by SPF", "Confirm with #confirm", "Only an operator can link",
           "though we tried for", "outside our support hours", "please include in your reply",
           "too large for this mail"),
}
UMLAUTS = re.compile(r"[äöüßÄÖÜ„“]")
ISO_TIME = re.compile(r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d|\bUTC\b|\+00:00")
CLOCK = re.compile(r"\b\d\d:\d\d\b(?:–\d\d:\d\d)?")


class FailingRelays:
    """Where mail cannot go for a reason of ours, not for the relay's answer: a relay
    without SMTPUTF8, one that refuses our login, one without OAuth2 for our token login,
    a port nobody listens on, and a Maildir that is a file."""

    def __init__(self, root: Path) -> None:
        self.plain = Controller(Sink(), hostname=LOOPBACK, port=free_port(),
                                enable_SMTPUTF8=False)
        self.refusing = Controller(Sink(), hostname=LOOPBACK, port=free_port(),
                                   auth_require_tls=False, authenticator=_refuse_login)
        self.closed_port = free_port()
        self.maildir = root / "maildir-that-is-a-file"
        self.maildir.write_text("", encoding="utf-8")

    def __enter__(self) -> FailingRelays:
        self.plain.start()
        self.refusing.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.plain.stop()
        self.refusing.stop()

    def transports(self, relay: RelayConfig) -> dict[str, SmtpTransport | MaildirTransport]:
        """A transport for each reason code of ours a temporary failure has, after
        ``relay`` (plain, on this host), and the relay without SMTPUTF8 (``no_smtputf8``)."""
        oauth2 = OAuth2Config(provider="generic", client_id="mailbot", client_secret="geheim",
                              token_url=f"http://{LOOPBACK}:{self.closed_port}/token",
                              scope="smtp")
        return {
            "no_smtputf8": SmtpTransport(replace(relay, port=self.plain.port)),
            "relay_connection": SmtpTransport(replace(relay, port=self.closed_port)),
            "relay_login": SmtpTransport(replace(relay, port=self.refusing.port,
                                                 username="mailbot", password="falsch")),
            "relay_token": SmtpTransport(replace(relay, port=self.plain.port, auth="oauth2",
                                                 username="support@example.com",
                                                 oauth2=oauth2)),
            "maildir_unwritable": MaildirTransport(self.maildir),
        }


def _refuse_login(server, session, envelope, mechanism, auth_data) -> AuthResult:
    """aiosmtpd's authenticator of a relay that refuses every login."""
    return AuthResult(success=False, handled=False)


@pytest.fixture
def failing_relays(tmp_path) -> Iterator[FailingRelays]:
    """The relays and the Maildir of :class:`FailingRelays`, running."""
    with FailingRelays(tmp_path) as relays:
        yield relays


class Scenario:
    """A desk in one service language (and one whose claims only operators link), its
    agents and the people writing to it; ``quoted`` is everything people wrote."""

    def __init__(self, make_desk, sink: SmtpSink, language: str) -> None:
        self.sink = sink
        self.people = PEOPLE[language]
        relay = {"host": sink.host, "port": sink.port, "security": "plain",
                 "timeout_seconds": 5}
        self.desk = make_desk(TUESDAY_10, service={"language": language}, relay=relay,
                              trust={"authserv_id": AUTHSERV}, outbox={"lifetime_days": 1},
                              hygiene={"max_acks_per_hour": 1})
        self.operator = make_desk(TUESDAY_10, service={"language": language},
                                  directory={"claims": "domain"})
        for desk in (self.desk, self.operator):
            imported = desk.instance.cli("accounts", "import", str(ACCOUNTS))
            assert imported.exit_code == 0, imported.output
        self.quoted = [*OPERATOR_WORDS, *RELAY_REFUSES.values(), PHONE]
        self.escalated_at: datetime | None = None

    def mail(self, desk=None, **fields) -> str:
        """A mail to support (by default the scenario's customer with the problem); the
        number of its ticket, "" for none."""
        mail = {"sender": self.people["customer"], "subject": self.people["subject"],
                "text": self.people["text"], **fields}
        self.quoted += [mail["subject"], *mail["sender"], *mail["text"].splitlines()]
        outcome = (desk or self.desk).receive(build_mail(**mail))
        self.later()
        return outcome.ticket_number

    def agent(self, number: str, text: str, who=ANNA, through: str = "",
              headers: tuple = (), desk=None) -> None:
        """A reply through a reply address (``who``'s own of today unless told otherwise)."""
        desk = desk or self.desk
        self.mail(desk, sender=who, to=through or desk.reply_address(number, who[1]),
                  subject=f"Re: [Ticket#{number}]", text=text, headers=headers)

    def later(self, **delta: float) -> None:
        """Let time pass on both desks (a minute unless told otherwise)."""
        for desk in (self.desk, self.operator):
            desk.now += timedelta(**(delta or {"minutes": 1}))

    def run(self, job) -> None:
        """One scheduler job at the desk's time."""
        self.desk.run(job)

    def deliver(self, transport=None) -> None:
        """`mailbot outbox flush`: hand every due mail to the relay (or ``transport``),
        failures reported."""
        ctx = self.desk.ctx
        asyncio.run(flush(ctx, transport or transport_for(ctx.config),
                          on_failed=partial(notify.delivery_failed, ctx)))

    def answers(self) -> list[str]:
        """What the relays and the system answered to the mails given up on (quoted in
        the agents' notices as it is, never our words)."""
        rows = self.desk.ctx.store.rows("SELECT data FROM events WHERE kind = 'mail_failed'")
        return [json.loads(row["data"])["answer"] for row in rows]

    def mails(self) -> list[tuple[str, EmailMessage]]:
        """Every mail either desk queued, with its kind."""
        return [(row["kind"], message_from_bytes(row["raw"], policy=email_policy.default))
                for desk in (self.desk, self.operator)
                for row in desk.ctx.store.rows("SELECT kind, raw FROM outbox ORDER BY id")]


def drive_every_mail(s: Scenario) -> None:
    """Every kind of mail, with every reason and variant the code words."""
    people, answer = s.people, s.people["answer"]
    # A new ticket (acknowledgement, agents' mail), a follow-up, an answer, status mails.
    number = s.mail()
    s.mail(subject=f"Re: [Ticket#{number}] {people['subject']}", text=people["followup"])
    s.agent(number, f"#status waiting\n{answer}")
    s.later(minutes=5)
    s.run(jobs.status_notifications)
    s.later(days=6)
    s.run(jobs.waiting_reminders)
    s.agent(number, "#status open")
    s.later(minutes=5)
    s.run(jobs.status_notifications)
    s.agent(number, f"#status resolved\n{answer}")
    s.later(minutes=5)
    s.run(jobs.status_notifications)
    s.later(days=8)
    s.run(jobs.auto_close)
    s.mail(sender=("Eva Muster", "eva@muster-maschinenbau.de"))  # a contract raises it
    closing = s.mail()
    s.agent(closing, f"#close\n{answer}")
    s.later(minutes=5)
    s.run(jobs.status_notifications)
    # Deadlines: the first response, warned and breached; the next answer after a follow-up.
    s.later(days=(TUESDAY_10 + timedelta(weeks=3) - s.desk.now).days)
    late = s.mail()  # urgent: due four business hours later
    s.agent(late, f"#note\n{answer}")
    for hours in (3.5, 1):
        s.later(hours=hours)
        s.run(jobs.deadline_warnings)
    s.agent(late, answer)
    s.mail(subject=f"Re: [Ticket#{late}] {people['subject']}", text=people["followup"])
    for _ in range(24):  # through the night into the next business hours
        s.later(hours=1)
        s.run(jobs.deadline_warnings)
    s.later(hours=(20 - s.desk.now.astimezone(BERLIN).hour) % 24)
    s.mail()  # at 20:00, after hours: the acknowledgement says when we start
    # Escalation: the agents' call-back mail and the customer's confirmation.
    escalating = s.mail()
    s.escalated_at = s.desk.now
    escalation.escalate(s.desk.ctx, escalating, PHONE)
    # Every command error, one reply each (statuses in words, the agent's text quoted).
    target = s.mail()
    s.agent(target, f"#take\n{answer}")
    for command in ("#frobnicate", "#priority", "#take me", "#status pending",
                    "#priority sky-high", "#assign eve@example.com", "#status new",
                    "#confirm"):
        s.agent(target, f"{command}\n{answer}")
    claimed = s.mail(sender=people["stranger"], text=people["claim"].format(number=20001))
    store = s.desk.ctx.store  # an operator deletes the claimed account by hand meanwhile
    for table in ("account_domains", "contacts"):
        store.execute(f"DELETE FROM {table} WHERE account_id IN "  # noqa: S608 - our names
                      "(SELECT id FROM accounts WHERE customer_number = '20001')")
    store.execute("DELETE FROM accounts WHERE customer_number = '20001'")
    s.agent(claimed, "#confirm")
    by_operator = s.mail(s.operator, sender=people["stranger"],
                         text=people["claim"].format(number=10001))
    s.mail(s.operator, sender=people["stranger"], text=people["followup"],
           subject=f"Re: [Ticket#{by_operator}] {people['subject']}")
    s.agent(by_operator, "#confirm", desk=s.operator)
    # Refused replies: not an agent, a colleague's address, too old, not authenticated.
    anna_today = s.desk.reply_address(target, ANNA[1])
    s.agent(target, answer, who=people["customer"], through=anna_today)
    s.agent(target, answer, who=BEN, through=anna_today)
    s.agent(target, answer, through=s.desk.ctx.composer.reply_address(
        target, ANNA[1], s.desk.now - timedelta(days=31)))
    s.agent(target, answer, headers=(("Authentication-Results", (
        f"{AUTHSERV}; spf=fail smtp.mailfrom=example.com; dkim=fail header.d=example.com")),))
    # Suspicious: an agent's address without a reply address.
    s.mail(sender=ANNA, subject=f"[Ticket#{target}] {people['subject']}")
    # Acknowledgements held, for every reason; a file too big to send along.
    big = (("scan.pdf", "application/pdf", b"%PDF" * 1_400_000),)
    domain = people["customer"][1].partition("@")[2]
    for sender, headers, files in (
            (("", ""), (), ()),
            (("Jemand", "jemand@mail.invalid"), (), ()),
            (people["customer"], (("Authentication-Results", (
                f"{AUTHSERV}; spf=fail smtp.mailfrom={domain}; dmarc=none")),), ()),
            (people["customer"], (("Authentication-Results", (
                f"{AUTHSERV}; dmarc=fail header.from={domain}")),), ()),
            (people["customer"], (), big),  # the second acknowledgement in the hour
            (people["customer"], (("Auto-Submitted", "auto-generated"),), ()),
            (people["customer"], (("X-Auto-Response-Suppress", "All"),), ())):
        s.mail(sender=sender, headers=headers, attachments=files)
    # The relay refuses one address and never takes another: the agents hear of both.
    for address in RELAY_REFUSES:
        s.mail(sender=("", address))
    s.deliver()
    s.later(days=2)
    s.deliver()
    s.sink.reject(BEN[1])  # a mail about no ticket fails too
    s.mail(sender=ANNA, subject=people["subject"])
    s.deliver()


def fail_for_our_reasons(s: Scenario, relays: FailingRelays) -> None:
    """Mails given up on for a reason of ours: the agents' notice words it."""
    # The mail library refuses an address with a control character: an answer to it fails.
    odd = s.mail(sender=("Kunde", "kunde\x01x@kunde.example"))
    s.agent(odd, s.people["answer"])
    s.deliver()
    # A relay without SMTPUTF8 cannot take a mail to an internationalised address.
    transports = relays.transports(s.desk.ctx.config.relay)
    sender = ("Jürgen Groß", "jürgen@kunde.example")  # as Gmail writes it over SMTPUTF8
    s.quoted += [*sender, s.people["subject"], *s.people["text"].splitlines()]
    s.desk.receive(build_mail(sender=(sender[0], "x@kunde.example"), subject=s.people["subject"],
                              text=s.people["text"]).replace(b"x@kunde.example",
                                                             sender[1].encode()))
    s.deliver(transports.pop("no_smtputf8"))
    # The others fail for the mail's whole lifetime.
    for transport in transports.values():
        s.mail()
        s.deliver(transport)
        s.later(days=2)
        s.deliver(transport)
    s.quoted += [str(relays.maildir), *s.answers()]


def readable(text: str, quoted: list[str]) -> str:
    """``text`` without commands, links, addresses and what people wrote: our own words."""
    text = COMMANDS.sub(" ", re.sub(r"https?://\S+|\S+@\S+", " ", text))
    for part in sorted({q.strip() for q in quoted if q.strip()}, key=len, reverse=True):
        text = text.replace(part, " ")
    return " ".join(text.split())


def texts(mail: EmailMessage) -> list[str]:
    """The subject and every text part (the body, notes on files left out)."""
    parts = [str(mail["Subject"])]
    parts += [p.get_content() for p in mail.walk() if p.get_content_type() == "text/plain"]
    return parts


def foreign_words(text: str, language: str) -> list[str]:
    """Words of the other language in ``text`` (umlauts count as German)."""
    words = ENGLISH if language == "de" else GERMAN
    found = [w for w in words if re.search(rf"(?<![\w-]){re.escape(w)}(?![\w-])", text,
                                           re.IGNORECASE)]
    if language == "en":
        found += UMLAUTS.findall(text)
    return found


def badly_dated(text: str, language: str) -> list[str]:
    """Times that are not local times in the language's form ("14:00 Uhr", "14:00 (CET)")."""
    bad = ISO_TIME.findall(text)
    for match in CLOCK.finditer(text):
        after = text[match.end():match.end() + 18]
        local = after.startswith(" Uhr") if language == "de" else \
            re.match(r" \((CET|CEST|Europe/Berlin)\)", after)
        if not local:
            bad.append(text[max(0, match.start() - 30):match.end() + 18])
    return bad


@pytest.mark.parametrize("language", ["de", "en"])
def test_every_mail_speaks_its_own_language_with_local_times(make_desk, smtp_sink,
                                                             failing_relays, language):
    """Each kind of mail, with each reason, in German and in English: our words are all in
    the mail's language, its times are local in the language's form, its Date header too."""
    for address, reply in RELAY_REFUSES.items():
        smtp_sink.reject(address, reply)
    scenario = Scenario(make_desk, smtp_sink, language)
    drive_every_mail(scenario)
    fail_for_our_reasons(scenario, failing_relays)
    mails = scenario.mails()
    ours = [m for _, m in mails if m["Content-Language"] == language]
    assert sorted({kind for kind, m in mails if m["Content-Language"] == language}) == KINDS
    problems = []
    for kind, mail in mails:
        lang = mail["Content-Language"]
        for text in texts(mail):
            words = readable(text, scenario.quoted)
            if foreign := foreign_words(words, lang):
                problems.append(f"{kind} ({lang}): {foreign} in {words!r}")
            if dates := badly_dated(words, lang):
                problems.append(f"{kind} ({lang}): times {dates}")
        if not mail["Date"].endswith("+0100"):  # Berlin in November and December
            problems.append(f"{kind}: Date {mail['Date']}")
    assert not problems, "\n".join(problems)
    everything = " ".join(" ".join(t.split()) for m in ours for t in texts(m))
    # Every reason the core gives was worded (the "held" fallback is for events of older
    # versions, which no path writes now).
    unworded = [code for code, sentence in SENTENCES[language].items()
                if code != "held" and _fixed_part(sentence) not in everything]
    assert not unworded
    assert not [phrase for phrase in BRANCHES[language] if phrase not in everything]
    local = scenario.escalated_at.astimezone(BERLIN)
    shown = f"{local:%d.%m.%Y}, {local:%H:%M} Uhr" if language == "de" else \
        f"{local.day} {local:%B} {local.year}, {local:%H:%M} ({local.tzname()})"
    [call_back] = [m for kind, m in mails if kind == "agent_escalation"
                   and m["To"] == ANNA[1]]
    assert shown in " ".join(call_back.get_content().split())


def _fixed_part(sentence: str) -> str:
    """The longest stretch of a sentence without values: it shows the sentence was used."""
    return max(re.split(r"\{\w+\}", sentence), key=len).strip()


# -- reasons kept as codes, failures as data, files in their charset ----------------------------

def relay_to(sink: SmtpSink) -> dict:
    """The ``[relay]`` section of a desk sending through ``sink``."""
    return {"host": sink.host, "port": sink.port, "security": "plain", "timeout_seconds": 5}


def test_a_held_acknowledgement_is_kept_as_its_reason_code(make_desk):
    """Each reason for holding an acknowledgement is stored on the ticket's event (what
    `tickets show` prints) as its code and values, beside the operators' English detail:
    the agents' mail words the code, nothing reads the English back."""
    desk = make_desk(TUESDAY_10, trust={"authserv_id": AUTHSERV},
                     hygiene={"max_acks_per_hour": 1})
    customer = ("Jane Miller", "jane@kunde.example")
    cases = [
        (("", ""), (), "no_sender", {}),
        (("Jemand", "jemand@mail.invalid"), (), "undeliverable",
         {"address": "jemand@mail.invalid"}),
        (customer, (("Authentication-Results",
                     f"{AUTHSERV}; spf=fail smtp.mailfrom=kunde.example"),), "forged",
         {"method": "SPF", "domain": "kunde.example", "authserv": AUTHSERV}),
        (customer, (), "", {}),  # acknowledged: the first of the hour
        (customer, (), "rate_limit", {"sent": 1}),
        (customer, (("Auto-Submitted", "auto-generated"),), "automatic", {}),
        (customer, (("X-Auto-Response-Suppress", "All"),), "no_auto_reply", {}),
    ]
    for sender, headers, code, values in cases:
        number = desk.receive(build_mail(sender=sender, headers=headers)).ticket_number
        desk.now += timedelta(minutes=1)
        held = [e["data"] for e in desk.events(number, "acknowledgement_held")]
        assert [(h["code"], h["values"]) for h in held] == ([(code, values)] if code else [])
        assert all(h["reason"] for h in held)  # the detail operators read


@pytest.mark.parametrize(("detail", "auto_mail", "code", "values"), [
    ("no sender address to answer to", 1, "no_sender", {}),
    ("'kunde\\x01x@kunde.example' is not a deliverable address: The email address contains "
     "an unsafe character: U+0001.", 1, "undeliverable", {"address": "kunde@kunde.example"}),
    ("rate limit: 3 acknowledgements to kunde@kunde.example in the last hour", 1,
     "rate_limit", {"sent": "3"}),
    ("SPF failed for kunde.example (Authentication-Results of mx.example.com)", 1, "forged",
     {"method": "SPF", "domain": "kunde.example", "authserv": "mx.example.com"}),
    ("DMARC failed (Authentication-Results of mx.example.com)", 1, "forged",
     {"method": "DMARC", "domain": "kunde.example", "authserv": "mx.example.com"}),
    ("X-Auto-Response-Suppress: All: the sender asked for no automatic reply", 0,
     "no_auto_reply", {}),
    ("Auto-Submitted: auto-generated", 0, "automatic", {}),
    ("a reason of a kind this version does not know", 1, "held", {}),
])
def test_an_event_an_older_version_wrote_is_still_worded(detail, auto_mail, code, values):
    """A ticket's event from before reason codes holds only the English detail: it is still
    worded in the agents' language, as the code it stands for ("held" when unknown)."""
    reason = guards.held_reason({"auto_mail": auto_mail}, "kunde@kunde.example",
                                {"reason": detail})
    assert (reason.code, reason.values) == (code, values)
    assert sentence(reason, "de") == SENTENCES["de"][code].format(**values)


def test_a_mail_given_up_on_after_its_lifetime_is_reported_as_expired(make_desk, smtp_sink):
    """A relay that answers 452 for the mail's whole lifetime: the failure reaches the
    agents' notice as data (expired, the relay's own words uncut), the notice says how long
    we tried, and the outbox row still tells operators in English."""
    smtp_sink.reject("voll@kunde.example", "452 4.2.2 mailbox full")
    desk = make_desk(TUESDAY_10, relay=relay_to(smtp_sink), outbox={"lifetime_days": 1},
                     service={"language": "en"})
    reports = []

    def on_failed(row, failure, now) -> None:
        reports.append((row["kind"], failure))
        notify.delivery_failed(desk.ctx, row, failure, now)

    desk.receive(build_mail(sender=("", "voll@kunde.example")))
    for days in (0, 2):
        desk.now += timedelta(days=days)
        asyncio.run(flush(desk.ctx, transport_for(desk.ctx.config), on_failed=on_failed))
    [(kind, failure)] = reports
    assert kind == "acknowledgement"
    assert (failure.expired, failure.reason, failure.answer) == \
        (True, None, "voll@kunde.example: 452 4.2.2 mailbox full")
    notices = [" ".join(m.get_content().split()) for m in desk.outbox(kind="agent_mail_failed")]
    assert notices and all("though we tried for 1 day." in n for n in notices)
    assert all("Error: voll@kunde.example: 452 4.2.2 mailbox full (the mail server's" in n
               for n in notices)
    assert not any("not delivered within" in n for n in notices)
    [row] = [r for r in desk.ctx.store.rows("SELECT kind, last_error FROM outbox")
             if r["kind"] == "acknowledgement"]
    assert row["last_error"].endswith("(not delivered within 1 day(s), 2 attempts)")


def test_our_delivery_errors_carry_a_reason_code_and_the_other_sides_words(
        smtp_sink, failing_relays):
    """Each way a mail cannot go out for a reason of ours gives its reason as a code (worded
    in the agents' mail) and keeps what the relay or the system said apart, as it said it."""
    relay = RelayConfig(host=smtp_sink.host, port=smtp_sink.port, security="plain",
                        timeout_seconds=5)
    cases = {code: (transport, "kunde@kunde.example")
             for code, transport in failing_relays.transports(relay).items()}
    cases["no_smtputf8"] = (cases["no_smtputf8"][0], "jürgen@kunde.example")
    cases["unusable_address"] = (SmtpTransport(relay), "kunde\x01x@kunde.example")
    said = {"relay_connection": "Connect call failed",
            "relay_login": "535 5.7.8 Authentication credentials invalid",
            "relay_token": "offers neither OAUTHBEARER nor XOAUTH2",
            "unusable_address": "prohibited control character",
            "no_smtputf8": "", "maildir_unwritable": "Not a directory"}
    for code, (transport, recipient) in cases.items():
        with pytest.raises(DeliveryError) as failed:
            asyncio.run(transport.send("support@example.com", [recipient], b"Subject: x\r\n\r\nx"))
        error = failed.value
        assert error.reason.code == code, str(error)
        assert said[code] in error.answer if said[code] else error.answer == ""
        assert sentence(error.reason, "en") in str(error)  # the log's line: both
    assert smtp_sink.messages == []


# A customer's notes: Latin-1 from an old Windows program, UTF-8 from a newer one.
LATIN_1 = "Grüße aus Köln!\nDie Kasse zeigt »Fehler 42«. À bientôt, Amélie\n"
UTF_8 = "Protokoll: Größe 5 µm, Preis 12 €, Ελληνικά\n"


def test_text_files_go_out_declared_in_their_charset(make_desk, smtp_sink):
    """A customer's Latin-1 and UTF-8 text files, forwarded to the agents, and an agent's
    Latin-1 file sent on to the customer arrive declared in their charset, their bytes as
    they came: a mail program shows "Grüße", not "Gr��e"."""
    desk = make_desk(TUESDAY_10, relay=relay_to(smtp_sink))
    customer = ("Amélie Roux", "amelie@kunde.example")
    number = desk.receive(build_mail(sender=customer, attachments=(
        ("notiz.txt", "text/plain; charset=iso-8859-1", LATIN_1.encode("latin-1")),
        ("protokoll.log", "text/plain; charset=utf-8", UTF_8.encode("utf-8"))))).ticket_number
    desk.receive(build_mail(sender=ANNA, to=desk.reply_address(number),
                            subject=f"Re: [Ticket#{number}]", text="Anbei die Anleitung.\n",
                            attachments=(("anleitung.txt", "text/plain",
                                          LATIN_1.encode("cp1252")),)))
    asyncio.run(flush(desk.ctx, transport_for(desk.ctx.config)))
    files = {(mail.rcpt_tos[0], part.get_filename()): part
             for mail in smtp_sink.messages for part in mail.message.iter_attachments()}
    expected = {(agent["address"], name): text for agent in AGENTS
                for name, text in (("notiz.txt", LATIN_1), ("protokoll.log", UTF_8))}
    expected[(customer[1], "anleitung.txt")] = LATIN_1
    assert {key: part.get_content() for key, part in files.items()} == expected
    raw = {"notiz.txt": LATIN_1.encode("latin-1"), "protokoll.log": UTF_8.encode("utf-8"),
           "anleitung.txt": LATIN_1.encode("cp1252")}
    assert all(part.get_payload(decode=True) == raw[name] for (_, name), part in files.items())
