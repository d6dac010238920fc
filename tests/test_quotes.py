"""Quote stripping: only what the author wrote reaches the ticket and the customer."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailbot.reading.quotes import latest_reply, new_words, own_text

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


# Replies as the mail programs of the seven languages write them: (label, text, the reply,
# a piece of the quoted history that must be gone).
EUROPE = [
    ("gmail-fr-wrapped", """Merci, ça marche maintenant.

Le mar. 24 nov. 2026 à 10:00, Example Support <support@example.com> a
écrit :

> Pouvez-vous vérifier les paramètres ?
>
""", "Merci, ça marche maintenant.", "paramètres"),
    ("apple-fr", """C'est la dernière version.

Le 24 nov. 2026 à 10:00, Example Support <support@example.com> a écrit :

> Quelle version utilisez-vous ?
""", "C'est la dernière version.", "Quelle version"),
    ("outlook-fr", """Bonjour,

la caisse ne démarre toujours pas.

Cordialement,
Claire Martin

De : Support <support@example.com>
Envoyé : mardi 24 novembre 2026 10:00
À : Claire Martin <c.martin@boulangerie-martin.fr>
Objet : [#1060] Caisse

Avez-vous redémarré la caisse ?
""", "Bonjour,\n\nla caisse ne démarre toujours pas.\n\nCordialement,\nClaire Martin",
     "redémarré"),
    ("thunderbird-fr-original", """C'est fait.

-------- Message original --------
Sujet : [#1061] Export
Date : 24/11/2026 10:00
De : Example Support <support@example.com>
Pour : Claire Martin <c.martin@boulangerie-martin.fr>

L'export est-il complet ?
""", "C'est fait.", "complet"),
    ("gmail-es", """Gracias, ya funciona.

El mar, 24 nov 2026 a las 10:00, Example Support (<support@example.com>)
escribió:

> ¿Puede comprobar la configuración?
""", "Gracias, ya funciona.", "configuración"),
    ("outlook-es", """Sigue sin funcionar.

De: Soporte <support@example.com>
Enviado: martes, 24 de noviembre de 2026 10:00
Para: Lucía Gómez <lucia.gomez@ferreteria-gomez.es>
Asunto: [#1062] Impresora

¿Ha reiniciado la impresora?
""", "Sigue sin funcionar.", "reiniciado"),
    ("outlook-es-original", """Hecho.

-----Mensaje original-----
De: Soporte [mailto:support@example.com]
Enviado el: martes, 24 de noviembre de 2026 10:00
Asunto: [#1063] Exportación

¿Está completa la exportación?
""", "Hecho.", "completa"),
    ("gmail-it-wrapped-address", """Grazie, adesso funziona.

Il giorno mar 24 nov 2026 alle ore 10:00 Example Support <
support@example.com> ha scritto:

> Può controllare le impostazioni?
""", "Grazie, adesso funziona.", "impostazioni"),
    ("outlook-it", """Il problema persiste.

Da: Assistenza <support@example.com>
Inviato: martedì 24 novembre 2026 10:00
A: Marco Rossi <m.rossi@studio-rossi.it>
Oggetto: [#1064] Stampante

Ha riavviato la stampante?
""", "Il problema persiste.", "riavviato"),
    ("outlook-it-original", """Fatto.

-----Messaggio originale-----
Da: Assistenza [mailto:support@example.com]
Inviato: martedì 24 novembre 2026 10:00
Oggetto: [#1065] Esportazione

L'esportazione è completa?
""", "Fatto.", "completa"),
    ("gmail-nl", """Bedankt, het werkt weer.

Op di 24 nov 2026 om 10:00 schreef Example Support <support@example.com>:

> Kunt u de instellingen controleren?
""", "Bedankt, het werkt weer.", "instellingen"),
    ("apple-nl", """Het is de nieuwste versie.

Op 24 nov. 2026 om 10:00 heeft Example Support <support@example.com> het volgende geschreven:

> Welke versie gebruikt u?
""", "Het is de nieuwste versie.", "Welke versie"),
    ("outlook-nl", """Het probleem blijft.

Van: Support <support@example.com>
Verzonden: dinsdag 24 november 2026 10:00
Aan: Sanne de Vries <s.devries@bakkerij-devries.nl>
Onderwerp: [#1066] Kassa

Heeft u de kassa opnieuw opgestart?
""", "Het probleem blijft.", "opgestart"),
    ("outlook-nl-original", """Gedaan.

-----Oorspronkelijk bericht-----
Van: Support [mailto:support@example.com]
Verzonden: dinsdag 24 november 2026 10:00
Onderwerp: [#1067] Export

Is de export compleet?
""", "Gedaan.", "compleet"),
    ("gmail-pl-wrapped", """Dziękuję, działa.

W dniu wt., 24.11.2026 o 10:00 Example Support <support@example.com>
napisał(a):

> Proszę sprawdzić ustawienia.
""", "Dziękuję, działa.", "ustawienia"),
    ("thunderbird-pl", """To najnowsza wersja.

W dniu 24.11.2026 o 10:00, Example Support pisze:
> Której wersji Pan używa?
""", "To najnowsza wersja.", "wersji"),
    ("webmail-pl-dnia", """Nadal nie działa.

Dnia 24 listopada 2026 10:00 Example Support <support@example.com> napisał(a):

> Czy drukarka została uruchomiona ponownie?
""", "Nadal nie działa.", "drukarka"),
    ("apple-pl", """Tak, to działa.

Wiadomość napisana przez Example Support <support@example.com> w dniu 24.11.2026, o godz. 10:00:

> Czy eksport działa?
""", "Tak, to działa.", "eksport"),
    ("outlook-pl", """Problem nadal występuje.

Od: Pomoc <support@example.com>
Wysłano: wtorek, 24 listopada 2026 10:00
Do: Jan Kowalski <j.kowalski@sklep-kowalski.pl>
Temat: [#1068] Drukarka

Czy zrestartował Pan drukarkę?
""", "Problem nadal występuje.", "zrestartował"),
    ("outlook-pl-original", """Zrobione.

-----Oryginalna wiadomość-----
Od: Pomoc [mailto:support@example.com]
Wysłano: wtorek, 24 listopada 2026 10:00
Temat: [#1069] Eksport

Czy eksport jest kompletny?
""", "Zrobione.", "kompletny"),
    ("gmx-de-sent-first", """Danke, erledigt.

Gesendet: Dienstag, 24. November 2026 um 10:00 Uhr
Von: "Example Support" <support@example.com>
An: "Petra Lorenz" <p.lorenz@kunde-webshop.de>
Betreff: [#1070] Export

Ist der Export jetzt vollständig?
""", "Danke, erledigt.", "vollständig"),
    ("hotmail-en-date-first", """Fine now, thanks.

________________________________
Date: Tue, 24 Nov 2026 10:00:00 +0100
Subject: [#1071] Export
From: support@example.com
To: d.okafor@hotmail.example

Does the export work now?
""", "Fine now, thanks.", "export work"),
    ("gmail-en-three-lines", """Works for me.

On Tue, Nov 24, 2026 at 10:00 AM, Example Support
<support@example.com>
wrote:

> Does it work?
""", "Works for me.", "Does it work"),
    ("gmail-de-forward", """Siehe unten, bitte prüfen.

---------- Weitergeleitete Nachricht ---------
Von: Lieferant <info@lieferant.example>
Date: Di., 24. Nov. 2026 um 09:00 Uhr
Subject: Lieferung

Die Lieferung verzögert sich.
""", "Siehe unten, bitte prüfen.", "verzögert"),
    ("apple-de-forward", """Zur Info.

Anfang der weitergeleiteten Nachricht:

Von: Lieferant <info@lieferant.example>
Betreff: Lieferung
Datum: 24. November 2026 um 09:00:00 MEZ
An: Petra Lorenz <p.lorenz@kunde-webshop.de>

Die Lieferung verzögert sich.
""", "Zur Info.", "verzögert"),
]


@pytest.mark.parametrize(("text", "expected", "history"), [e[1:] for e in EUROPE],
                         ids=[e[0] for e in EUROPE])
def test_reply_shapes_of_seven_languages(text: str, expected: str, history: str) -> None:
    """French, Spanish, Italian, Dutch, Polish, German and English clients: the author's
    text without the quote header or the history below it."""
    assert latest_reply(text) == expected


@pytest.mark.parametrize(("text", "expected", "history"), [e[1:] for e in EUROPE],
                         ids=[e[0] for e in EUROPE])
def test_own_text_cuts_at_the_same_markers(text: str, expected: str, history: str) -> None:
    """Facts and priority rules read what the author wrote, cut where latest_reply cuts."""
    own = own_text(text, 20000)
    assert history not in own
    assert expected in own
    assert new_words(text) == expected


@pytest.mark.parametrize("text", [
    "Hallo,\n\nDatum: 24.11.2026\nBetreff: Rechnung 4711\n\nBitte prüfen.\n",
    "Le produit fonctionne.\nLe technicien a écrit un rapport.\n",
    "Op maandag schreef ik al dat de kassa stuk is.\nGraag snel hulp.\n",
    "Il tecnico ha scritto il rapporto\ne la stampante funziona.\n"])
def test_words_of_the_markers_inside_own_text_cut_nothing(text: str) -> None:
    """Header-like or attribution-like words in a customer's own text are not history."""
    assert latest_reply(text) == text.strip()
    assert own_text(text, 20000) == text


def test_bullet_list_survives() -> None:
    """A customer's "- item" list is kept, not mistaken for a signature."""
    reply = latest_reply(BULLETS)
    assert "- Kasse 1 zeigt Fehler E42\n- Kasse 2 startet nicht\n-Drucker bleibt stumm" in reply
    assert reply.endswith("Gruß\nMartin")
    assert "Welche Fehler" not in reply


DEVICE_FOOTERS = [
    "Sent from my iPhone", "Sent from my Verizon Wireless BlackBerry",
    "Sent from Mail for Windows", "Get Outlook for iOS<https://aka.ms/o0ukef>",
    "Gesendet von meinem iPad", "Von meinem iPhone gesendet",
    "Von meinem Samsung Galaxy Smartphone gesendet.", "Gesendet mit der WEB.DE Mail App",
    "Outlook für Android herunterladen<https://aka.ms/ghei36>", "Envoyé de mon iPhone",
    "Envoyé depuis mon smartphone Samsung Galaxy.", "Enviado desde mi iPhone",
    "Obtener Outlook para Android", "Inviato da iPhone", "Verzonden vanaf mijn iPhone",
    "Wysłane z iPhone'a"]


@pytest.mark.parametrize("footer", DEVICE_FOOTERS)
def test_device_footer_dropped(footer: str) -> None:
    """"Sent from my …" lines at the end of a reply, in any of the seven languages, say
    nothing the agent or customer needs and are dropped (own_text keeps them: a fact)."""
    text = f"Passt so.\n\n{footer}\n"
    assert latest_reply(text) == "Passt so."
    assert footer in own_text(text, 1000)


@pytest.mark.parametrize("text", [
    "Sent from my iPhone the export fails too.\nDetails below.\n",
    "Here is another email\n\nSent from my desk, which is easier than my phone.\n",
    "Die Rechnung stimmt nicht.\n\nVon meinem Konto wurden 50 € zu viel abgebucht.\n"])
def test_sentence_like_a_footer_kept(text: str) -> None:
    """A sentence that merely begins like a device footer is the author's text."""
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


PIECES = ["> ", "On ", "Am ", " schrieb ", " wrote:", ":", "\n", "\n\n", "-- \n", "Von: x\n",
          "Gesendet: y\n", "-----Original Message-----\n", "_" * 40, "- Punkt\n", "Text ",
          "Le ", " a écrit :", "W dniu ", " napisał(a):", "Op ", " schreef ", "De : x\n",
          "Objet : y\n", "Sent from my iPhone", "Inviato da iPhone\n"]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(PIECES) | st.text(max_size=20), max_size=60))
def test_any_text_gives_a_bounded_reply(pieces: list[str]) -> None:
    """Whatever a mail's text looks like, quote stripping answers with part of it."""
    text = "".join(pieces)
    reply = latest_reply(text, max_chars=500)
    assert len(reply) <= 500
    assert (reply == "") or any(line.strip() in text for line in reply.splitlines())
