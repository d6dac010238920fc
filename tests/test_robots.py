"""Robots and people as real mail programs and servers mark them.

Outlook and Exchange mark a person's ordinary mail with headers that look automatic
(Thread-Index, X-MS-Exchange-*, X-Auto-Response-Suppress); their out-of-office replies come
in many languages; list servers and relays add a second Precedence or Auto-Submitted.  The
headers below are shaped the way Outlook, Exchange Online, Gmail, Apple Mail, Thunderbird,
an old BlackBerry, GMX, Dovecot's Sieve vacation and Zimbra write them.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hygiene_kit import acks_to, detail, ingest, make_ctx

from mailbot.reading.classify import ClassifyContext, Verdict, classify
from mailbot.reading.message import parse

CTX = ClassifyContext(own_addresses=("support@example.com",), loop_id="mailbot-example-1")
ACK_ID = "ack.1042.7f3a9c@mailbot.example"

OUTLOOK = """\
Received: from DB9PR04MB8429.eurprd04.prod.outlook.com ([fe80::3c1a:9d2b:7e41:a0c5])
 by DB9PR04MB8429.eurprd04.prod.outlook.com with mapi id 15.20.8182.018;
 Tue, 24 Nov 2026 10:31:10 +0000
From: "Wolf, Sabine" <s.wolf@elektro-wolf.example>
To: "support@example.com" <support@example.com>
Subject: Lizenz wird nicht erkannt
Thread-Topic: Lizenz wird nicht erkannt
Thread-Index: AdtBnT3kx8Qm2r0bRAuY3dF7v0q1Lw==
Date: Tue, 24 Nov 2026 10:31:10 +0000
Message-ID: <DB9PR04MB8429A1B2C3D4E5F6@DB9PR04MB8429.eurprd04.prod.outlook.com>
Accept-Language: de-DE, en-US
Content-Language: de-DE
X-MS-Has-Attach:
X-MS-TNEF-Correlator:
msip_labels:
X-MS-Exchange-Organization-AuthAs: Internal
X-MS-Exchange-Organization-AuthMechanism: 04
X-MS-Office365-Filtering-Correlation-Id: 5f1c2b30-8a7d-4e21-9c3b-08dd0c6a1f2e
X-MS-Exchange-CrossTenant-OriginalArrivalTime: 24 Nov 2026 10:31:10.1234 (UTC)
X-MS-Exchange-CrossTenant-AuthAs: Internal
X-MS-Exchange-Transport-CrossTenantHeadersStamped: DB9PR04MB8429
{extra}Content-Type: text/plain; charset="utf-8"
Content-Transfer-Encoding: 8bit
MIME-Version: 1.0

Guten Tag,

seit heute wird unsere Lizenz nicht mehr erkannt. Können Sie helfen?

Mit freundlichen Grüßen
Sabine Wolf
"""

EXCHANGE_OOF = """\
From: Julia Becker <j.becker@kunde-gmbh.example>
To: Support <support@example.com>
Subject: {subject} [#1042] Ihre Anfrage
Thread-Topic: [#1042] Ihre Anfrage
Thread-Index: AQHbPm0xJ2Z0ZkF2fUq8b3Wm0x6u9rKyAAAA
Date: Tue, 24 Nov 2026 09:02:10 +0000
Message-ID: <VI1PR06MB4142C3A1D0E5F2A3@VI1PR06MB4142.eurprd06.prod.outlook.com>
In-Reply-To: <{ack}>
References: <{ack}>
Content-Language: {language}
X-MS-Has-Attach:
X-MS-TNEF-Correlator:
Auto-Submitted: auto-generated
X-MS-Exchange-Inbox-Rules-Loop: j.becker@kunde-gmbh.example
X-MS-Exchange-Generated-Message-Source: Mailbox Rules Agent
X-Auto-Response-Suppress: All
Content-Type: text/plain; charset="utf-8"
Content-Transfer-Encoding: 8bit
MIME-Version: 1.0

{body}
"""

PERSON = """\
From: {sender}
To: support@example.com
Subject: {subject}
Date: Tue, 24 Nov 2026 10:00:00 +0100
Message-ID: <{mid}>
{headers}
MIME-Version: 1.0
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: 8bit

Hallo,

der Export bricht ab. Bitte um Hilfe.
"""


def wire(text: str) -> bytes:
    """A mail as it travels: CRLF line ends."""
    return text.replace("\n", "\r\n").encode()


def outlook(extra: str = "") -> bytes:
    """An ordinary mail from Outlook through Exchange Online, with ``extra`` header lines."""
    return wire(OUTLOOK.replace("{extra}", extra))


def verdict_of(raw: bytes) -> Verdict:
    return classify(parse(raw), CTX)


# -- people ------------------------------------------------------------------------------------


PEOPLE = {
    "gmail": ("Daniel Okafor <daniel.okafor@gmail.example>",
              "X-Gm-Message-State: AOJu0YwQ3kT1f9Rz\n"
              "X-Google-Smtp-Source: AGHT+IF2b8v9xYk0\nDKIM-Signature: v=1; a=rsa-sha256; "
              "d=gmail.example; s=20230601; h=from:to:subject; bh=x; b=y"),
    "apple-mail-iphone": ("Petra Lorenz <p.lorenz@icloud.example>",
                          "X-Mailer: iPhone Mail (21B101)\nContent-Language: de"),
    "thunderbird": ("Sanne de Vries <s.devries@bakkerij.example>",
                    "User-Agent: Mozilla Thunderbird\nContent-Language: nl"),
    "blackberry": ("Tom Baker <tom@baker.example>",
                   "X-Mailer: BlackBerry Email (10.3.3.3216)\nImportance: Normal"),
    "gmx-webmail": ("Jürgen Müller <j.mueller@gmx.example>",
                    "X-Priority: 3\nImportance: normal\nX-Provags-ID: V03:K1:abc\n"
                    "UI-OutboundReport: notjunk:1;M01:P0:QYz"),
    "precedence-first-class": ("Kunde <k@firma.example>", "Precedence: first-class"),
    "auto-submitted-no": ("Kunde <k@firma.example>", "Auto-Submitted: no"),
}


@pytest.mark.parametrize("client", sorted(PEOPLE))
def test_person_mail_is_a_customer(client: str) -> None:
    """Ordinary mail from mail programs is a customer's and is acknowledged."""
    sender, headers = PEOPLE[client]
    raw = wire(PERSON.format(sender=sender, subject="Export bricht ab",
                             mid=f"{client}.1@mail.example", headers=headers))
    verdict = verdict_of(raw)
    assert (verdict.kind, verdict.acknowledge) == ("customer", True), verdict


@pytest.mark.parametrize("suppress", ["", "X-Auto-Response-Suppress: DR, RN, NRN, OOF\n",
                                      "X-Auto-Response-Suppress: OOF\n"])
def test_outlook_mail_is_a_customer(suppress: str) -> None:
    """Outlook's Thread-Index and X-MS-Exchange-* headers, and a suppression of receipts
    or out-of-office notices only, leave a person's mail a customer's, acknowledged."""
    verdict = verdict_of(outlook(suppress))
    assert (verdict.kind, verdict.acknowledge) == ("customer", True), verdict


@pytest.mark.parametrize("suppress", [
    "X-Auto-Response-Suppress: All\n",
    "X-Auto-Response-Suppress: DR, OOF, AutoReply\n",
    "X-Auto-Response-Suppress: DR, RN\nX-Auto-Response-Suppress: AutoReply\n"])
def test_sender_asking_for_no_auto_reply_gets_none(suppress: str) -> None:
    """A person's mail asking that no automatic reply answer it (Outlook's meeting
    responses, some plain sends) is a customer's, but gets no acknowledgement."""
    verdict = verdict_of(outlook(suppress))
    assert (verdict.kind, verdict.acknowledge) == ("customer", False)
    assert "X-Auto-Response-Suppress" in verdict.reason


# -- robots and auto-replies -------------------------------------------------------------------


OUT_OF_OFFICE = [
    ("de-DE", "Automatische Antwort:", "Ich bin bis 1. Dezember nicht im Büro."),
    ("en-GB", "Automatic reply:", "I am out of the office until 1 December."),
    ("fr-FR", "Réponse automatique :", "Je suis absente jusqu'au 1er décembre."),
    ("es-ES", "Respuesta automática:", "Estoy fuera de la oficina hasta el 1 de diciembre."),
    ("it-IT", "Risposta automatica:", "Sono fuori ufficio fino al 1° dicembre."),
    ("nl-NL", "Automatisch antwoord:", "Ik ben afwezig tot 1 december."),
    ("fi-FI", "Automaattinen vastaus:", "Olen poissa toimistolta 1. joulukuuta asti."),
]


@pytest.mark.parametrize(("language", "subject", "body"), OUT_OF_OFFICE,
                         ids=[o[0] for o in OUT_OF_OFFICE])
def test_exchange_out_of_office_in_any_language(language: str, subject: str,
                                                body: str) -> None:
    """Exchange's out-of-office replies are auto-replies, whatever language they speak
    (Finnish has no subject rule: the inbox-rule reply headers say it)."""
    raw = wire(EXCHANGE_OOF.format(subject=subject, ack=ACK_ID, language=language, body=body))
    verdict = verdict_of(raw)
    assert (verdict.kind, verdict.acknowledge) == ("auto_reply", False)


def test_exchange_rule_forward_is_a_robot_not_an_auto_reply() -> None:
    """An inbox rule's forward replies to nothing: a robot's mail, filed unanswered."""
    raw = outlook("X-MS-Exchange-Inbox-Rules-Loop: s.wolf@elektro-wolf.example\n"
                  "Auto-Submitted: auto-generated\n")
    assert verdict_of(raw).kind == "robot"


@pytest.mark.parametrize(("headers", "kind"), [
    ("Precedence: first-class\nPrecedence: bulk", "robot"),
    ("Precedence: junk\nPrecedence: first-class", "robot"),
    ("Auto-Submitted: no\nAuto-Submitted: auto-generated", "robot"),
    ("Auto-Submitted: no\nAuto-Submitted: auto-replied", "auto_reply"),
    ("Precedence: list\nPrecedence: auto_reply", "auto_reply"),
    ("X-Autoreply: no\nX-Autoreply: yes", "auto_reply"),
])
def test_every_copy_of_a_signal_header_counts(headers: str, kind: str) -> None:
    """A relay or list server adds its own Precedence or Auto-Submitted below the
    sender's: the second copy decides as much as the first."""
    raw = wire(PERSON.format(sender="Kunde <k@firma.example>", subject="Frage",
                             mid="copies.1@firma.example", headers=headers))
    assert verdict_of(raw).kind == kind


@pytest.mark.parametrize("headers", [
    # Dovecot Pigeonhole (Sieve vacation)
    "Auto-Submitted: auto-replied (vacation)\nPrecedence: bulk",
    # Zimbra out of office
    "Auto-Submitted: auto-replied (zimbra; vacation)\nPrecedence: bulk",
    # Exim autoreply transport
    "X-Autorespond: Urlaub bis 1.12.\nPrecedence: bulk",
])
def test_mta_vacation_replies_are_auto_replies(headers: str) -> None:
    """Vacation replies of the mail servers are auto-replies, not list mail."""
    raw = wire(PERSON.format(sender="Kunde <k@firma.example>", subject="Re: [#1042] Frage",
                             mid="vacation.1@firma.example", headers=headers))
    assert verdict_of(raw).kind == "auto_reply"


# -- what the customer and the agents see --------------------------------------------------------


def test_outlook_customers_are_filed_and_answered_as_they_asked(tmp_path: Path) -> None:
    """An Outlook customer gets a ticket and an acknowledgement; one whose Outlook asked for
    no automatic reply gets a ticket and no acknowledgement; an Italian out-of-office reply
    to that acknowledgement is a note on the first ticket, not a ticket of its own."""
    ctx = make_ctx(tmp_path)
    first = ingest(ctx, outlook())
    assert first.status == "created"
    [ack] = acks_to(ctx, "s.wolf@elektro-wolf.example")
    quiet = ingest(ctx, outlook("X-Auto-Response-Suppress: All\n").replace(
        b"DB9PR04MB8429A1B2C3D4E5F6@", b"DB9PR04MB8429A1B2C3D4E5F7@"))
    assert quiet.status == "created" and quiet.ticket_number != first.ticket_number
    assert len(acks_to(ctx, "s.wolf@elektro-wolf.example")) == 1
    [held] = [e["data"]["reason"] for e in detail(ctx, quiet.ticket_number)["events"]
              if e["kind"] == "acknowledgement_held"]
    assert "the sender asked for no automatic reply" in held  # agents see why
    oof = ingest(ctx, wire(EXCHANGE_OOF.format(
        subject="Risposta automatica:", ack=ack["message_id"], language="it-IT",
        body="Sono fuori ufficio fino al 1° dicembre.")))
    assert (oof.status, oof.ticket_number) == ("note", first.ticket_number)
    kinds = [event["kind"] for event in detail(ctx, first.ticket_number)["events"]]
    assert "auto_reply" in kinds
