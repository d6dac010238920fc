"""Plain text of an HTML mail, as its writer saw it on the screen.

Agents read an HTML-only mail as text, and the quote cutter reads that text, so the text
keeps what the eye and the cutter need and nothing else:

- paragraphs and lines as the mail program laid them out: Outlook's ``<p class=MsoNormal>``
  lines and ``&nbsp;`` blank lines, Gmail's and Apple Mail's ``<div>`` lines and
  ``<div><br></div>`` blank lines; never more than one blank line in a row;
- a ``<blockquote>`` as "> " lines (the quote cutter drops them), a ``<hr>`` as the
  32-underscore rule Outlook writes into its own plain text above a quoted header block;
- lists as "- " and "1. " items (Outlook's ``mso-list:Ignore`` bullets too), table rows as
  lines with " | " between the cells that hold text, so a signature laid out in a table
  reads as its lines;
- a link as its text, followed by ``<target>`` where the target says more than the text;
- no images (logos and tracking pixels carry no words), nothing of ``<head>``, ``<style>``,
  ``<script>``, comments, Outlook's ``<xml>``, or elements hidden with ``display:none``.

Signatures stay as written (Gmail's and Thunderbird's "-- " prefix included): the quote
cutter decides about them as it does for plain text.

html2text writes Markdown ("* * *", "**", "[text](url)", "---|---" rows) and stands on the
stdlib HTMLParser, which takes minutes on some hostile input (``"<a " * 40000``) and raises
on other (``"<![" * 40000``).  Here tags are found with patterns that never backtrack beyond
the token they consume, and the open elements are kept on a list: time and memory stay
linear however deep the nesting (the "> " prefix and list indents are capped).
"""

from __future__ import annotations

import html as entities
import re
from collections.abc import Iterator
from dataclasses import dataclass, field

# One start or end tag; an attribute value left open runs to the end, as in a browser.
_TAG_RE = re.compile(
    r"<(/?)([A-Za-z][^\s/>]*+)((?:[^>=]++|=\s*+(?:\"[^\"]*+\"?|'[^']*+'?|[^\s>]*+))*+)(>?)")
_ATTR_RE = re.compile(r"([^\s=/>\"']+)(?:\s*=\s*(?:\"([^\"]*)\"|'([^']*)'|([^\s>]*)))?")
_SPACE_RE = re.compile(r"[ \t\n\r\f]+")
_HIDDEN_RE = re.compile(r"display\s*:\s*none", re.IGNORECASE)
_NO_MARGIN_RE = re.compile(r"(?:^|;)\s*margin\s*:\s*0[a-z]*\s*(?:;|$)", re.IGNORECASE)
_MSO_BULLET_RE = re.compile(r"mso-list\s*:\s*ignore", re.IGNORECASE)
_BLANK_LINES_RE = re.compile(r"\n{3,}")
_INVISIBLE = dict.fromkeys(map(ord, "\u200b\ufeff\xad"))

# Elements whose content is never shown; those whose content is not even markup.
_HIDDEN = frozenset({"style", "script", "title", "template", "xml"})
_RAW_TEXT = frozenset({"style", "script", "title", "textarea", "xmp", "iframe", "noembed",
                       "noframes"})
_VOID = frozenset({"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta",
                   "param", "source", "track", "wbr", "keygen", "basefont", "bgsound", "frame",
                   "image"})
# Blocks set off by a blank line, and blocks that only begin and end a line.
_PARAGRAPHS = frozenset({"p", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "pre",
                         "address", "figure", "fieldset", "ul", "ol", "dl"})
_LINES = frozenset({"div", "section", "article", "header", "footer", "main", "nav", "aside",
                    "center", "caption", "details", "summary", "figcaption", "form", "table",
                    "tr", "li", "dt", "dd", "menu", "dir", "body", "html", "legend", "hgroup",
                    "tbody", "thead", "tfoot"})
_LISTS = ("ul", "ol", "menu", "dir")
# A new item, row or cell closes the open one of its kind inside the same list, table or row.
_SIBLINGS = {"li": (("li",), _LISTS), "dt": (("dt", "dd"), ("dl",)),
             "dd": (("dt", "dd"), ("dl",)), "tr": (("tr",), ("table",)),
             "td": (("td", "th"), ("tr", "table")), "th": (("td", "th"), ("tr", "table"))}
MAX_QUOTE_PREFIX = 8
MAX_LIST_INDENT = 3
RULE = "_" * 32
# The last line of the text of an HTML body cut at its limit.
CUT = "[…]"


def html_to_text(html: str, max_chars: int) -> str:
    """Readable plain text of an HTML body (see the module's policy).

    Only the first ``max_chars`` characters of the HTML are read; the text of a longer one
    ends with a line :data:`CUT`, so that the reader knows there is more (in the mail).
    """
    page = _Page()
    for kind, name, rest in _tokens(html[:max_chars]):
        if kind == "text":
            page.text(rest)
        elif kind == "start":
            page.start(name.lower(), rest)
        else:
            page.end(name.lower())
    text = page.result()
    return f"{text}\n\n{CUT}".lstrip("\n") if len(html) > max_chars else text


def _tokens(html: str) -> Iterator[tuple[str, str, str]]:
    """("text", "", text), ("start", name, attributes) and ("end", name, "") in order.

    Comments, declarations and processing instructions are dropped, and so is the content
    of raw-text elements (style, script ...); a tag left open at the end is dropped.
    """
    pos, size = 0, len(html)
    while pos < size:
        lt = html.find("<", pos)
        if lt < 0:
            yield "text", "", html[pos:]
            return
        if lt > pos:
            yield "text", "", html[pos:lt]
        tag = _TAG_RE.match(html, lt)
        if tag is None:
            pos = _after_markup(html, lt)
            if pos == lt + 1:
                yield "text", "", "<"
            continue
        if not tag.group(4):
            return
        closing, name, attributes = tag.group(1, 2, 3)
        yield ("end" if closing else "start"), name, attributes
        pos = tag.end()
        if not closing and name.lower() in _RAW_TEXT:
            pos = _raw_text_end(html, pos, name.lower())


def _after_markup(html: str, lt: int) -> int:
    """Where a comment, declaration or bogus tag starting at ``lt`` ends (lt + 1: text)."""
    if html.startswith("<!--", lt):
        end = html.find("-->", lt + 2)
        return len(html) if end < 0 else end + 3
    if html.startswith(("<!", "<?", "</"), lt):
        end = html.find(">", lt + 2)
        return len(html) if end < 0 else end + 1
    return lt + 1


def _raw_text_end(html: str, pos: int, name: str) -> int:
    """Where the content of a raw-text element ends: at its end tag (or the very end)."""
    found = re.compile(rf"</{name}[\s/>]", re.IGNORECASE).search(html, pos)
    return found.start() if found else len(html)


def _attributes(text: str) -> dict[str, str]:
    """The attributes of a tag, names lower-case, values with entities decoded."""
    found: dict[str, str] = {}
    for match in _ATTR_RE.finditer(text):
        value = next((v for v in match.group(2, 3, 4) if v is not None), "")
        found.setdefault(match.group(1).lower(), _unescape(value))
    return found


# A numeric character reference with more digits than any character has: Python would
# convert all of them (and refuses more than 4,300 digits).
_LONG_CHARREF_RE = re.compile(r"&#(?:0*+[0-9]{8,}|[xX]0*+[0-9a-fA-F]{7,});?")


def _unescape(text: str) -> str:
    """Entities and character references decoded; one no character has becomes U+FFFD."""
    return entities.unescape(_LONG_CHARREF_RE.sub("\ufffd", text))


def _link_target(href: str, text: str) -> str:
    """The address a link shows after its text: a web or mail address the text lacks."""
    scheme, _, rest = href.strip().partition(":")
    if scheme.lower() == "mailto":
        target = rest.partition("?")[0].strip()
    elif scheme.lower() in ("http", "https", "ftp"):
        target = href.strip()
    else:
        return ""
    bare = re.sub(r"^(?:https?|ftp)://|^www\.|/$", "", target.lower())
    return "" if not text.strip() or bare in text.lower() else target


def _bullet(text: str) -> str:
    """Outlook's list marker ("·", "o", "§" in a symbol font, or "1.") as plain text."""
    text = text.replace("\xa0", " ").strip()
    return text if any(c.isdigit() for c in text) or len(text) > 1 else "-"


@dataclass
class _Open:
    """An open element: its name, its breaks, and what it changed until it closes."""

    name: str
    margin: int = 0
    effect: str = ""
    saved: object = None


@dataclass
class _Page:
    """The text being written: the open elements, and what the next words need first."""

    out: list[str] = field(default_factory=list)
    stack: list[_Open] = field(default_factory=list)
    where: dict[str, list[int]] = field(default_factory=dict)  # stack positions by name
    newlines: int = 0  # line breaks owed before the next words
    space: bool = False  # a space owed before the next words on this line
    separator: bool = False  # a table cell owes " | " after the words left of it
    words: bool = False  # the current line has visible words
    started: bool = False
    fresh_cell: bool = False  # nothing written in this table cell yet: blocks break no line
    hidden: int = 0
    pre: int = 0
    quote: int = 0
    line_quote: int = 0  # the quote depth of the last line written
    lists: list[list] = field(default_factory=list)  # [ordered, items so far] per open list
    bullet: str = ""  # what the next line starts with inside a list item
    link: list | None = None  # [href, words of its text] of the open link
    marker: list[str] | None = None  # the text of an Outlook list bullet being read
    last_rule: bool = False

    def result(self) -> str:
        """The text: lines without trailing blanks, no blank lines at either end."""
        text = "\n".join(line.rstrip() for line in "".join(self.out).split("\n"))
        return _BLANK_LINES_RE.sub("\n\n", text).strip("\n")

    # -- elements ------------------------------------------------------------------------

    def start(self, name: str, attribute_text: str) -> None:
        """An element opens: the element it closes, its breaks, then its effect."""
        attrs = _attributes(attribute_text) if attribute_text.strip() else {}
        if name in _VOID:
            self._void(name)
            return
        self._close_sibling(name)
        element = _Open(name)
        if name in _PARAGRAPHS or name in _LINES:
            if self.stack and self.stack[-1].name == "p":
                self._pop_to(len(self.stack) - 1)
            element.margin = self._margin(name, attrs)
            self._ensure(element.margin)
        self._enter(element, attrs)
        self.where.setdefault(name, []).append(len(self.stack))
        self.stack.append(element)

    def end(self, name: str) -> None:
        """An element closes, with every element opened inside it and left open."""
        if self.where.get(name):
            self._pop_to(self.where[name][-1])
        elif name == "br":
            self._br()
        elif name == "p":
            self._ensure(2)

    def _void(self, name: str) -> None:
        """An element without content: a line break, or a rule (one for a run of them)."""
        if name == "br":
            self._br()
        elif name == "hr" and not self.last_rule:
            self._ensure(1)
            self._write(RULE)
            self.last_rule = True
            self._ensure(1)

    def _close_sibling(self, name: str) -> None:
        """A new item, row or cell closes the open one of its list, table or row."""
        if name not in _SIBLINGS:
            return
        kinds, containers = _SIBLINGS[name]
        mine = max((self.where[k][-1] for k in kinds if self.where.get(k)), default=-1)
        fence = max((self.where[c][-1] for c in containers if self.where.get(c)), default=-1)
        if mine > fence:
            self._pop_to(mine)

    def _margin(self, name: str, attrs: dict[str, str]) -> int:
        """Line breaks around a block: 2 (a blank line) for paragraphs, 1 for lines."""
        if name in ("ul", "ol", "dl") and self.lists:
            return 1
        if name == "p" and (attrs.get("class", "").startswith("Mso")
                            or _NO_MARGIN_RE.search(attrs.get("style", ""))):
            return 1
        return 2 if name in _PARAGRAPHS else 1

    def _enter(self, element: _Open, attrs: dict[str, str]) -> None:
        """Start what an element changes while it is open."""
        name, style = element.name, attrs.get("style", "")
        if name in _HIDDEN or "hidden" in attrs or _HIDDEN_RE.search(style):
            element.effect, self.hidden = "hidden", self.hidden + 1
        elif _MSO_BULLET_RE.search(style):
            element.effect, element.saved, self.marker = "marker", self.marker, []
        elif name == "a":
            element.effect, element.saved = "link", self.link
            self.link = [attrs.get("href", ""), []]
        elif name in ("td", "th"):
            element.effect, element.saved = "cell", len(self.out)
            self.separator, self.fresh_cell = True, True
        elif name == "blockquote":
            self.quote += 1
        elif name == "pre":
            self.pre += 1
        elif name in _LISTS:
            self.lists.append([name == "ol", 0])
        elif name == "li":
            self._item()

    def _pop_to(self, index: int) -> None:
        """Close the open elements from the innermost down to the one at ``index``."""
        while len(self.stack) > index:
            element = self.stack.pop()
            self.where[element.name].pop()
            self._leave(element)

    def _leave(self, element: _Open) -> None:
        """End what an element changed, then the breaks after a block."""
        name = element.name
        if element.effect == "hidden":
            self.hidden -= 1
        elif element.effect == "marker":
            self._end_marker(element.saved)
        elif element.effect == "link":
            self._end_link(element.saved)
        elif element.effect == "cell":
            self._end_cell(element.saved)
        elif name == "blockquote":
            self.quote -= 1
        elif name == "pre":
            self.pre -= 1
        elif name in _LISTS:
            self.lists.pop()
        elif name == "li":
            self.bullet = ""
        self._ensure(element.margin)

    def _item(self) -> None:
        """A list item: its bullet starts the next line."""
        if not self.lists:
            self.bullet = "- "
            return
        entry = self.lists[-1]
        entry[1] += 1
        self.bullet = f"{entry[1]}. " if entry[0] else "- "

    def _end_marker(self, saved: object) -> None:
        """Outlook's list bullet read: it starts the item's line as "- " or "1. "."""
        text, self.marker = "".join(self.marker or ()), saved
        if text.strip(" \xa0"):
            self._write(_bullet(text))
            self.space = True

    def _end_link(self, saved: object) -> None:
        """A link read: its target follows its text where it says more."""
        href, words = self.link or ("", [])
        self.link = saved
        target = _link_target(href, " ".join(words))
        if target:
            self.space = True
            self._write(f"<{target}>")

    def _end_cell(self, written_before: object) -> None:
        """A cell that held text keeps its row on one line: its breaks owed are dropped."""
        if len(self.out) != written_before:
            self.newlines = 0
        self.fresh_cell = False

    # -- text ------------------------------------------------------------------------------

    def text(self, data: str) -> None:
        """Text between tags: entities decoded, white space collapsed (kept inside <pre>)."""
        if self.hidden:
            return
        data = _unescape(data).translate(_INVISIBLE)
        if self.pre:
            self._pre_text(data)
            return
        for index, word in enumerate(_SPACE_RE.split(data)):
            if index:
                self.space = True
            if word:
                self._write(word.replace("\xa0", " "))

    def _pre_text(self, data: str) -> None:
        """Preformatted text: its spaces and line breaks as written."""
        for index, line in enumerate(data.replace("\r\n", "\n").replace("\r", "\n").split("\n")):
            if index and self.started:
                self.newlines += 1
            if line:
                self._write(line.replace("\xa0", " "))

    def _br(self) -> None:
        """A line break (two in a row: a blank line; more add nothing)."""
        if not self.hidden and self.started:
            self.newlines = min(self.newlines + 1, 2)

    def _ensure(self, count: int) -> None:
        """At least ``count`` line breaks before the next words (1: a new line, 2: a blank)."""
        if count and not self.hidden and not self.fresh_cell and self.started:
            self.newlines = max(self.newlines, count)

    def _write(self, text: str) -> None:
        """Words on the page, after the breaks, prefix, space or separator they are owed."""
        if self.hidden:
            return
        if self.marker is not None:
            self.marker.append(text)
            return
        if self.newlines and self.started:
            self._new_line()
        elif not self.started:
            self._prefix()
        elif self.separator and self.words:
            self.out.append(" | ")
        elif self.space and self.words:
            self.out.append(" ")
        self.out.append(text)
        self.started, self.fresh_cell, self.last_rule = True, False, False
        self.newlines, self.space, self.separator = 0, False, False
        self.words = self.words or bool(text.strip())
        if self.link is not None and len(self.link[1]) < 16:
            self.link[1].append(text)

    def _new_line(self) -> None:
        """The owed line breaks; blank lines inside a quote keep its ">"."""
        blank = ("> " * min(self.quote, self.line_quote, MAX_QUOTE_PREFIX)).rstrip()
        self.out.append("\n" + (blank + "\n") * (min(self.newlines, 2) - 1))
        self._prefix()

    def _prefix(self) -> None:
        """The start of a line: its quote marks, list indent and bullet."""
        prefix = "> " * min(self.quote, MAX_QUOTE_PREFIX)
        if self.lists or self.bullet:
            prefix += "  " * min(max(len(self.lists) - 1, 0), MAX_LIST_INDENT)
            prefix += self.bullet or "  "
        self.out.append(prefix)
        self.line_quote, self.bullet, self.words = self.quote, "", False
