"""Quote stripping: only what the author wrote reaches the ticket and the customer."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailbot.reading import quotes
from mailbot.reading.quotes import latest_reply

OUTLOOK_DE = """Hallo Herr Schulz,

bitte starten Sie die Kasse neu.

Viele Grüße
Anna Berg

Von: Martin Schulz <m.schulz@autohaus-schulz.de>
Gesendet: Dienstag, 24. November 2026 10:00
An: Support <support@example.com>
Betreff: [#1056] Kassensystem startet nicht

Die Kasse startet nicht.
"""

OUTLOOK_EN = """Please try the new licence key.

________________________________
From: Daniel Okafor <daniel.okafor@gmail.com>
Sent: Tuesday, November 24, 2026 10:00 AM
To: Support <support@example.com>
Subject: [#1055] Licence key

The key fails.
"""

OUTLOOK_URSPRUENGLICH = """Erledigt, danke!

-----Ursprüngliche Nachricht-----
Von: Support <support@example.com>
Gesendet: Dienstag, 24. November 2026 10:00
An: Petra Lorenz <p.lorenz@kunde-webshop.de>
Betreff: [#1057] Export

Ist der Export jetzt vollständig?
"""

OUTLOOK_ORIGINAL = """Works now.

-----Original Message-----
From: Support [mailto:support@example.com]
Sent: Tuesday, November 24, 2026 10:00 AM
Subject: [#1058] Export

Does the export work now?
"""

THUNDERBIRD_DE = """Das Update hat geholfen.

Am 24.11.2026 um 10:00 schrieb Example Support:
> Bitte installieren Sie das Update 3.2.
"""

THUNDERBIRD_EN = """The update fixed it.

On 24/11/2026 10:00, Example Support wrote:
> Please install update 3.2.
"""

GMAIL_DE = """Danke, funktioniert.

Am Di., 24. Nov. 2026 um 10:00 Uhr schrieb Example Support <support@example.com>:

> Bitte prüfen Sie die Einstellungen.
>
"""

GMAIL_EN_WRAPPED = """Thanks, that did it.

On Tue, Nov 24, 2026 at 10:00 AM Example Support <support@example.com>
wrote:

> Please check the settings.
"""

APPLE_MAIL = """Yes, it is the latest version.

Sent from my iPhone

> On 24. Nov 2026, at 10:00, Example Support <support@example.com> wrote:
>
> Which version do you use?
"""

SIGNATURE = "Bitte um Rückruf.\n\n-- \nMartin Schulz\nAutohaus Schulz GmbH\nTel. 0911 123456\n"

BULLETS = """Hallo,

folgende Fehler treten auf:
- Kasse 1 zeigt Fehler E42
- Kasse 2 startet nicht
-Drucker bleibt stumm

Gruß
Martin

Am 24.11.2026 um 10:00 schrieb Example Support:
> Welche Fehler sehen Sie?
"""

BOTTOM_POST = """Am 24.11.2026 um 10:00 schrieb Example Support:
> Welche Version nutzen Sie?

Version 3.1.
"""

INLINE = """Hallo,

Am 24.11.2026 um 10:00 schrieb Example Support:
> Welche Version nutzen Sie?

Version 3.1.

> Seit wann tritt der Fehler auf?

Seit Montag.

> Viele Grüße
> Support
"""

REPLIES = [
    ("outlook-de", OUTLOOK_DE, "Hallo Herr Schulz,\n\nbitte starten Sie die Kasse neu.\n\n"
                               "Viele Grüße\nAnna Berg"),
    ("outlook-en", OUTLOOK_EN, "Please try the new licence key."),
    ("ursprüngliche-nachricht", OUTLOOK_URSPRUENGLICH, "Erledigt, danke!"),
    ("original-message", OUTLOOK_ORIGINAL, "Works now."),
    ("thunderbird-de", THUNDERBIRD_DE, "Das Update hat geholfen."),
    ("thunderbird-en", THUNDERBIRD_EN, "The update fixed it."),
    ("gmail-de", GMAIL_DE, "Danke, funktioniert."),
    ("gmail-en-wrapped", GMAIL_EN_WRAPPED, "Thanks, that did it."),
    ("apple-mail-iphone", APPLE_MAIL, "Yes, it is the latest version."),
    ("signature", SIGNATURE, "Bitte um Rückruf."),
    ("bottom-post", BOTTOM_POST, "Version 3.1."),
    ("inline", INLINE, "Hallo,\n\n> Welche Version nutzen Sie?\n\nVersion 3.1.\n\n"
                       "> Seit wann tritt der Fehler auf?\n\nSeit Montag."),
    ("crlf", THUNDERBIRD_EN.replace("\n", "\r\n"), "The update fixed it."),
    ("no-quote", "Nur eine kurze Frage.\n", "Nur eine kurze Frage."),
]


@pytest.mark.parametrize(("text", "expected"), [r[1:] for r in REPLIES],
                         ids=[r[0] for r in REPLIES])
def test_reply_shapes(text: str, expected: str) -> None:
    """The author's text of common German and English clients, without history."""
    assert latest_reply(text) == expected


def test_bullet_list_survives() -> None:
    """A customer's "- item" list is kept, not mistaken for a signature."""
    reply = latest_reply(BULLETS)
    assert "- Kasse 1 zeigt Fehler E42\n- Kasse 2 startet nicht\n-Drucker bleibt stumm" in reply
    assert reply.endswith("Gruß\nMartin")
    assert "Welche Fehler" not in reply


@pytest.mark.parametrize("footer", ["Sent from my iPhone", "Gesendet von meinem iPad",
                                    "Von meinem iPhone gesendet", "Get Outlook for Android"])
def test_device_footer_dropped(footer: str) -> None:
    """"Sent from my …" lines at the end say nothing and are dropped."""
    assert latest_reply(f"Passt so.\n\n{footer}\n") == "Passt so."


def test_sent_from_inside_text_kept() -> None:
    """A sentence that merely mentions a device, above more text, is kept."""
    text = "Sent from my iPhone the export fails too.\nDetails below.\n"
    assert latest_reply(text) == text.strip()


@pytest.mark.parametrize("text", ["", "\n\n  \n", "> alles zitiert\n> mehr\n",
                                  "On Tue, Nov 24, 2026 at 10:00 AM X <x@y.de> wrote:\n> hi\n"])
def test_nothing_of_own(text: str) -> None:
    """Empty or fully quoted input gives an empty reply."""
    assert latest_reply(text) == ""


def test_signature_only_is_not_lost() -> None:
    """Text that is only a signature is returned rather than nothing."""
    assert latest_reply("-- \nMartin Schulz\n") == "-- \nMartin Schulz"


def test_pathological_line_returns() -> None:
    """A hostile 20 KB line cannot stall the pipeline: the reply comes back whole."""
    line = ("Am schrieb " * 2000)[:20000]
    assert latest_reply(line) == line


def test_many_pathological_lines_return() -> None:
    """Many long, attribution-like lines still give the author's text back."""
    text = "\n".join([("Am 1 schrieb " * 20)[:200]] * 100)
    assert latest_reply(text).startswith("Am 1 schrieb")


def test_input_is_bounded() -> None:
    """Only the first max_chars characters are looked at."""
    assert latest_reply("a" * 50, max_chars=10) == "a" * 10


def test_library_failure_falls_back(monkeypatch: pytest.MonkeyPatch) -> None:
    """When the quote library breaks, our own stripper still finds the reply."""
    class Broken:
        def __init__(self, **_: object) -> None:
            pass

        def read(self, text: str) -> None:
            raise RuntimeError("boom")

    monkeypatch.setattr(quotes, "EmailReplyParser", Broken)
    assert latest_reply(OUTLOOK_URSPRUENGLICH) == "Erledigt, danke!"
    assert latest_reply(GMAIL_EN_WRAPPED) == "Thanks, that did it."


@pytest.mark.parametrize(("text", "expected"), [r[1:] for r in REPLIES],
                         ids=[r[0] for r in REPLIES])
def test_over_budget_falls_back(text: str, expected: str) -> None:
    """With no time budget for the library, the fast stripper gives the same replies."""
    assert latest_reply(text, timeout=0.0) == expected


PIECES = ["> ", "On ", "Am ", " schrieb ", " wrote:", ":", "\n", "\n\n", "-- \n", "Von: x\n",
          "Gesendet: y\n", "-----Original Message-----\n", "_" * 40, "- Punkt\n", "Text "]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(PIECES) | st.text(max_size=20), max_size=60))
def test_any_text_gives_a_bounded_reply(pieces: list[str]) -> None:
    """Whatever a mail's text looks like, quote stripping answers with part of it."""
    text = "".join(pieces)
    reply = latest_reply(text, max_chars=500)
    assert len(reply) <= 500
    assert (reply == "") or any(line.strip() in text for line in reply.splitlines())
