"""HTML-only mails read as their writers saw them: clean text, and the latest reply cut.

The HTML below is shaped the way Outlook, Outlook on the web, Gmail, Apple Mail,
Thunderbird and an old webmail write it (their markup, classes and quirks, our words).
"""

from __future__ import annotations

import pytest
from mails import build_mail

from mailbot.reading.html import CUT, RULE, html_to_text
from mailbot.reading.message import parse
from mailbot.reading.quotes import latest_reply

LIMIT = 512 * 1024

OUTLOOK_DE = """<html xmlns:v="urn:schemas-microsoft-com:vml" \
xmlns:o="urn:schemas-microsoft-com:office:office" xmlns:w="urn:schemas-microsoft-com:office:word">
<head><meta http-equiv=Content-Type content="text/html; charset=utf-8">
<meta name=Generator content="Microsoft Word 15 (filtered medium)">
<!--[if !mso]><style>v\\:* {behavior:url(#default#VML);}</style><![endif]-->
<style><!--
p.MsoNormal, li.MsoNormal, div.MsoNormal {margin:0cm; font-size:11.0pt; font-family:"Calibri"}
--></style><!--[if gte mso 9]><xml>
<o:shapedefaults v:ext="edit" spidmax="1026" />
</xml><![endif]--></head>
<body lang=DE link="#0563C1" vlink="#954F72" style='word-wrap:break-word'>
<div class=WordSection1>
<p class=MsoNormal>Hallo Herr Schulz,<o:p></o:p></p>
<p class=MsoNormal><o:p>&nbsp;</o:p></p>
<p class=MsoNormal>die Kasse startet nach dem Update nicht mehr:<o:p></o:p></p>
<p class=MsoListParagraph style='text-indent:-18.0pt;mso-list:l0 level1 lfo1'><![if !supportLists]>\
<span style='font-family:Symbol'><span style='mso-list:Ignore'>·<span style='font:7.0pt \
"Times New Roman"'>&nbsp;&nbsp;&nbsp;&nbsp;&nbsp;&nbsp;&nbsp; </span></span></span><![endif]>\
Kasse 1 zeigt Fehler E42<o:p></o:p></p>
<p class=MsoListParagraph style='text-indent:-18.0pt;mso-list:l0 level1 lfo1'><![if !supportLists]>\
<span style='font-family:Symbol'><span style='mso-list:Ignore'>·<span style='font:7.0pt \
"Times New Roman"'>&nbsp;&nbsp;&nbsp;&nbsp;&nbsp;&nbsp;&nbsp; </span></span></span><![endif]>\
Kasse 2 bleibt schwarz<o:p></o:p></p>
<p class=MsoNormal><o:p>&nbsp;</o:p></p>
<p class=MsoNormal>Mit freundlichen Gr&uuml;&szlig;en<o:p></o:p></p>
<p class=MsoNormal><o:p>&nbsp;</o:p></p>
<table class=MsoNormalTable border=0 cellspacing=0 cellpadding=0><tr>
<td width=120 valign=top style='width:90.0pt;padding:0cm 5.4pt 0cm 5.4pt'>
<p class=MsoNormal><img width=100 height=40 style='width:1.0416in;height:.4166in' \
id="Grafik_x0020_1" src="cid:image001.png@01DB3E5A.6F1C2B30" alt="Logo Autohaus Schulz">\
<o:p></o:p></p></td>
<td valign=top style='padding:0cm 5.4pt 0cm 5.4pt'>
<p class=MsoNormal><b><span style='color:#1F3864'>Martin Schulz</span></b><o:p></o:p></p>
<p class=MsoNormal>Gesch&auml;ftsf&uuml;hrer<o:p></o:p></p>
<p class=MsoNormal>Tel. 0911 123456 | <a href="https://www.autohaus-schulz.example/">\
www.autohaus-schulz.example</a><o:p></o:p></p></td></tr></table>
<p class=MsoNormal><o:p>&nbsp;</o:p></p>
<div><div style='border:none;border-top:solid #E1E1E1 1.0pt;padding:3.0pt 0cm 0cm 0cm'>
<p class=MsoNormal><b>Von:</b> Example Support &lt;support@example.com&gt; <br>
<b>Gesendet:</b> Dienstag, 24. November 2026 10:00<br><b>An:</b> Martin Schulz \
&lt;m.schulz@autohaus-schulz.example&gt;<br><b>Betreff:</b> [#1056] Kassensystem<o:p></o:p></p>
</div></div>
<p class=MsoNormal><o:p>&nbsp;</o:p></p>
<p class=MsoNormal>Welche Kasse ist betroffen?<o:p></o:p></p>
</div><img src="https://t.mailtrack.example/open/8f3a2c.gif" width="1" height="1" alt="">
</body></html>"""

OWA_FR = """<html><head>
<meta http-equiv="Content-Type" content="text/html; charset=utf-8">
<style type="text/css" style="display:none;"> P {margin-top:0;margin-bottom:0;} </style>
</head>
<body dir="ltr">
<div class="elementToProof" style="font-family: Aptos, sans-serif; font-size: 12pt;">
Bonjour,</div>
<div class="elementToProof" style="font-family: Aptos, sans-serif; font-size: 12pt;"><br></div>
<div class="elementToProof" style="font-family: Aptos, sans-serif; font-size: 12pt;">
la caisse ne d&eacute;marre toujours pas apr&egrave;s la mise &agrave; jour.</div>
<div class="elementToProof" style="font-family: Aptos, sans-serif; font-size: 12pt;"><br></div>
<div id="Signature"><div style="font-family: Aptos, sans-serif;">Cordialement,<br>Claire Martin\
<br>Boulangerie Martin</div></div>
<div id="appendonsend"></div>
<hr style="display:inline-block;width:98%" tabindex="-1">
<div id="divRplyFwdMsg" dir="ltr"><font face="Calibri, sans-serif" style="font-size:11pt" \
color="#000000"><b>De&nbsp;:</b> Example Support &lt;support@example.com&gt;<br>
<b>Envoy&eacute;&nbsp;:</b> mardi 24 novembre 2026 10:00<br><b>&Agrave;&nbsp;:</b> Claire Martin \
&lt;c.martin@boulangerie-martin.example&gt;<br><b>Objet&nbsp;:</b> [#1060] Caisse</font>\
<div>&nbsp;</div></div>
<div><p>Avez-vous red&eacute;marr&eacute; la caisse ?</p></div>
</body></html>"""

GMAIL_EN = """<div dir="ltr">Hi,<div><br></div><div>the export still fails with <b>error 42</b>. \
See <a href="https://status.example.com/incident/7">the status page</a>.</div><div><br></div>\
<div>Thanks,</div><div>Daniel<br clear="all"><div><br></div><span class="gmail_signature_prefix">\
-- </span><br><div dir="ltr" class="gmail_signature" data-smartmail="gmail_signature">\
<div dir="ltr">Daniel Okafor<div>Okafor Consulting | +44 20 7946 0000</div><div>\
<a href="http://okafor.example">okafor.example</a></div></div></div></div></div><br>\
<div class="gmail_quote gmail_quote_container"><div dir="ltr" class="gmail_attr">On Tue, Nov 24, \
2026 at 10:00 AM Example Support &lt;<a href="mailto:support@example.com">support@example.com</a>\
&gt; wrote:<br></div><blockquote class="gmail_quote" style="margin:0px 0px 0px 0.8ex;border-left:\
1px solid rgb(204,204,204);padding-left:1ex"><div dir="ltr">Does the export work now?<div><br>\
</div><div>Example Support</div></div></blockquote></div>"""

APPLE_IOS_DE = """<html><head><meta http-equiv="content-type" content="text/html; charset=utf-8">\
</head><body dir="auto"><div dir="ltr">Ja, es ist die neueste Version.</div><div dir="ltr"><br>\
</div><div dir="ltr">Grüße</div><div dir="ltr">Petra<br><br><div dir="ltr" \
id="AppleMailSignature">Von meinem iPhone gesendet</div><div dir="ltr"><br><blockquote \
type="cite">Am 24.11.2026 um 10:00 schrieb Example Support &lt;support@example.com&gt;:<br><br>\
</blockquote></div><blockquote type="cite"><div dir="ltr"><span>Welche Version nutzen Sie?</span>\
<br><span></span><br></div></blockquote></div></body></html>"""

THUNDERBIRD_NL = """<!DOCTYPE html>
<html>
  <head>
    <meta http-equiv="Content-Type" content="text/html; charset=UTF-8">
  </head>
  <body>
    <p>Het werkt weer, bedankt.</p>
    <div class="moz-signature">-- <br>
      Sanne de Vries<br>
      Bakkerij De Vries</div>
    <div class="moz-cite-prefix">Op 24-11-2026 om 10:00 schreef Example Support:<br>
    </div>
    <blockquote type="cite"
      cite="mid:ack.1066.77e0f1@mailbot.example">
      <p>Heeft u de kassa opnieuw opgestart?</p>
    </blockquote>
  </body>
</html>"""

WEBMAIL_IT = """<html><body><table width="100%" cellpadding="0" cellspacing="0" border="0">\
<tr><td style="font-family:Arial"><font size="2" face="Arial">Buongiorno,<br><br>la stampante \
&egrave; ancora bloccata.<br><br>Cordiali saluti<br>Marco Rossi</font></td></tr></table>\
<div class="yahoo_quoted" id="yahoo_quoted_1234"><div style="font-family:Helvetica"><div>\
Il marted&igrave; 24 novembre 2026, 10:00:00 CET, Example Support &lt;support@example.com&gt; \
ha scritto:</div><div><br></div><div><br></div><div><div>Ha riavviato la stampante?</div></div>\
</div></div></body></html>"""

NEWSLETTER = """<html><head><title>Neuigkeiten</title><style>.x{color:red}</style></head><body>\
<div style="display:none;max-height:0;overflow:hidden">Vorschautext nur f&uuml;r die Liste</div>\
<table role="presentation" width="600"><tr><td><a href="https://click.example/l/abc">\
<img src="https://cdn.example/logo.png" alt=""></a></td></tr>\
<tr><td><h1>Unsere Preise</h1></td></tr><tr><td><table border="1"><tr><th>Artikel</th>\
<th>Menge</th><th>Preis</th></tr><tr><td>Toner XL</td><td>2</td><td>89,90&nbsp;&euro;</td></tr>\
</table></td></tr><tr><td><hr><p>Abmelden: <a href="https://click.example/u/abc">hier</a></p>\
</td></tr></table><img src="https://open.example/pixel_8f3a.gif" width="1" height="1">\
</body></html>"""

LISTS_AND_PRE = """<p>Fehler:</p><ol><li>Start<li>Export<ul><li>CSV</li><li>PDF<br>auch A3\
</li></ul></li><li>Druck</ol><pre>  Traceback:\n    File "x.py", line 3\n\n\nValueError</pre>\
<p>Zero&#8203;width&shy; and&nbsp;&nbsp;spaces &amp; entities &lt;kept&gt;</p>"""


def text(html: str) -> str:
    return html_to_text(html, LIMIT)


@pytest.mark.parametrize("html", [OUTLOOK_DE, OWA_FR, GMAIL_EN, APPLE_IOS_DE, THUNDERBIRD_NL,
                                  WEBMAIL_IT, NEWSLETTER, LISTS_AND_PRE],
                         ids=["outlook", "owa", "gmail", "apple", "thunderbird", "webmail",
                              "newsletter", "lists"])
def test_no_markup_leftovers(html: str) -> None:
    """No Markdown, tags, styles, image names or tracking addresses reach the agents."""
    result = text(html)
    for leftover in ("* * *", "**", "](", "---|", "<img", "<div", "cid:", "image001", ".gif",
                     ".png", "mso-", "MsoNormal", "color:", "behavior", "&nbsp;", "&amp;",
                     "\xa0", "\u200b"):
        assert leftover not in result, leftover
    assert "\n\n\n" not in result


def test_outlook_reply_reads_as_written() -> None:
    """Outlook's paragraphs, bullets and signature table read as lines; the reply ends
    above its "Von:/Gesendet:" block."""
    assert latest_reply(text(OUTLOOK_DE)) == (
        "Hallo Herr Schulz,\n\ndie Kasse startet nach dem Update nicht mehr:\n"
        "- Kasse 1 zeigt Fehler E42\n- Kasse 2 bleibt schwarz\n\nMit freundlichen Grüßen\n\n"
        "Martin Schulz\nGeschäftsführer\nTel. 0911 123456 | www.autohaus-schulz.example")


def test_outlook_on_the_web_rule_ends_the_reply() -> None:
    """Outlook on the web's <hr> before "De :/Envoyé :" is the rule its plain text has."""
    result = text(OWA_FR)
    assert RULE in result.splitlines()
    assert latest_reply(result) == ("Bonjour,\n\nla caisse ne démarre toujours pas après la "
                                    "mise à jour.\n\nCordialement,\nClaire Martin\n"
                                    "Boulangerie Martin")


def test_gmail_signature_and_quote() -> None:
    """Gmail's "-- " signature prefix and its blockquote come through as in its plain part."""
    result = text(GMAIL_EN)
    assert "--\nDaniel Okafor\nOkafor Consulting | +44 20 7946 0000\nokafor.example" in result
    assert "> Does the export work now?" in result
    assert latest_reply(result) == ("Hi,\n\nthe export still fails with error 42. See the "
                                    "status page <https://status.example.com/incident/7>.\n\n"
                                    "Thanks,\nDaniel")


def test_apple_mail_iphone() -> None:
    """Apple Mail's quote is "> " lines and its device footer is dropped from the reply."""
    result = text(APPLE_IOS_DE)
    assert "Von meinem iPhone gesendet" in result
    assert "> Welche Version nutzen Sie?" in result
    assert latest_reply(result) == "Ja, es ist die neueste Version.\n\nGrüße\nPetra"


def test_thunderbird_signature_and_cite_prefix() -> None:
    """Thunderbird's paragraphs, "-- " signature and "Op … schreef" prefix, in Dutch."""
    result = text(THUNDERBIRD_NL)
    assert result.startswith("Het werkt weer, bedankt.\n\n--\nSanne de Vries\n")
    assert latest_reply(result) == "Het werkt weer, bedankt."


def test_old_webmail_table_layout() -> None:
    """A webmail's <font> and layout table give the text; "Il … ha scritto:" cuts."""
    assert latest_reply(text(WEBMAIL_IT)) == ("Buongiorno,\n\nla stampante è ancora bloccata."
                                              "\n\nCordiali saluti\nMarco Rossi")


def test_hidden_parts_images_and_tables() -> None:
    """Hidden preheaders, titles and images give nothing; a data table keeps its rows."""
    result = text(NEWSLETTER)
    assert "Vorschautext" not in result and "Neuigkeiten" not in result
    assert "Artikel | Menge | Preis\nToner XL | 2 | 89,90 €" in result
    assert "Abmelden: hier <https://click.example/u/abc>" in result
    assert "logo" not in result and "pixel" not in result


def test_lists_pre_and_entities() -> None:
    """Numbered and nested lists, preformatted text, entities and invisible characters."""
    assert text(LISTS_AND_PRE) == (
        "Fehler:\n\n1. Start\n2. Export\n  - CSV\n  - PDF\n    auch A3\n3. Druck\n\n"
        "  Traceback:\n    File \"x.py\", line 3\n\nValueError\n\n"
        "Zerowidth and  spaces & entities <kept>")


def test_html_only_mail_is_parsed_to_clean_text() -> None:
    """An HTML-only mail's body as stored on the ticket is the clean text."""
    msg = parse(build_mail(text=None, html=OUTLOOK_DE, transfer="base64"))
    assert msg.text == text(OUTLOOK_DE)
    assert msg.text.startswith("Hallo Herr Schulz,\n\ndie Kasse startet")


@pytest.mark.parametrize("hostile", [
    "<a " * 40000, "<![" * 40000, "</" * 40000, "<a b='" * 40000, "<!--" * 40000,
    "<div>" * 100000 + "x" + "</div>" * 100000, "<span>" * 50000 + "</div>" * 50000,
    "<table><tr><td>x" * 20000, "<blockquote>" * 30000 + "Zeile<br>" * 30000,
    "<ul>" * 30000 + "<li>x" * 30000], ids=lambda h: repr(h[:12]))
def test_hostile_html_returns_bounded_text(hostile: str) -> None:
    """Markup that stalls (minutes) or crashes the stdlib HTML parser gives text back,
    at most a few times longer than the markup read."""
    result = html_to_text(hostile, LIMIT)
    assert len(result) <= 10 * LIMIT
    assert set(result) <= set(f"x Zeile>_-|\n{CUT}")


def test_html_over_the_limit_says_it_was_cut() -> None:
    """Text cut at the limit ends with a line saying so; whole text does not."""
    html = "<p>Erster Absatz</p>" + "<p>" + "viel Text " * 100 + "</p>"
    assert html_to_text(html, len(html)) == "Erster Absatz\n\n" + ("viel Text " * 100).strip()
    assert html_to_text(html, 40) == f"Erster Absatz\n\nviel Text viel Te\n\n{CUT}"
    assert html_to_text("<blockquote>" * 10, 30) == CUT


def test_deep_quotes_and_lists_are_capped() -> None:
    """Quote marks and list indents stop growing with the nesting."""
    quoted = text("<blockquote>" * 50 + "tief")
    assert quoted == "> " * 8 + "tief"
    listed = text("Liste:" + "<ul><li>" * 50 + "tief")
    assert listed.splitlines()[-1] == "  " * 3 + "- tief"
