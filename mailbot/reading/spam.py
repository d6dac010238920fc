"""Whether the spam filter in front of mailbot called a mail spam: its verdict headers, read.

mailbot runs no filter of its own: the MTA's filter (SpamAssassin, rspamd, Exchange Online
Protection) writes its verdict into headers, and each rule here reads one header form.  A
rule is a pure function of the message and a small context that returns why the mail is
spam, or ``None``; the first rule in :data:`RULES` that answers wins.

A sender can add any header, but cannot remove the one the filter added: a verdict header
present more than once counts as spam if any copy says so (a sender's own
``X-Spam-Flag: NO`` never overrides the filter's ``YES``).  Headers that only a sender could
have written to harm itself (a forged ``YES``) are believed for the same reason.  Only
Authentication-Results need a trust anchor, ``[trust] authserv_id``
(see :mod:`mailbot.reading.authentication`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from mailbot.reading.authentication import authentication
from mailbot.reading.message import Message


@dataclass(frozen=True)
class SpamContext:
    """What reading the verdicts needs to know about this instance."""

    # Microsoft's spam confidence level (-1..9) from which a mail is spam.
    scl_threshold: int = 5
    # The authserv-id of our border MTA; "" believes no Authentication-Results.
    authserv_id: str = ""


# rspamd's actions that mean spam ("add header" is how a milter delivers a spam verdict);
# "greylist" and "soft reject" are delays, "no action" is ham.
_RSPAMD_SPAM_ACTIONS = frozenset({"reject", "add header", "rewrite subject"})
_FOREFRONT_SCL_RE = re.compile(r"(?:^|;)\s*SCL\s*:\s*(-?\d+)\s*(?:;|$)", re.IGNORECASE)
# How much of a header value a reason quotes.
_QUOTED_CHARS = 120


def spam_reason(msg: Message, ctx: SpamContext) -> str:
    """Why the filter in front called ``msg`` spam (the first rule of :data:`RULES`), or ``""``."""
    for rule in RULES:
        reason = rule(msg, ctx)
        if reason:
            return reason
    return ""


def _one_line(value: str) -> str:
    """A header value unfolded and cut, fit to be quoted in a reason."""
    return " ".join(value.split())[:_QUOTED_CHARS]


def _first_token(value: str) -> str:
    """Leading keyword of a header value: 'Yes, score=7.2 required=5.0' -> 'yes'."""
    match = re.match(r"\s*([\w-]+)", value)
    return match.group(1).lower() if match else ""


def _says_yes(msg: Message, name: str) -> str | None:
    """``header NAME: VALUE`` for the first copy of header ``name`` whose verdict is yes."""
    for value in msg.header_all(name):
        if _first_token(value) == "yes":
            return f"header {name}: {_one_line(value)}"
    return None


def spam_flag(msg: Message, ctx: SpamContext) -> str | None:
    """SpamAssassin's ``X-Spam-Flag: YES``."""
    return _says_yes(msg, "X-Spam-Flag")


def spam_status(msg: Message, ctx: SpamContext) -> str | None:
    """SpamAssassin's ``X-Spam-Status: Yes, score=7.2 required=5.0 tests=...``."""
    return _says_yes(msg, "X-Spam-Status")


def rspamd_spam(msg: Message, ctx: SpamContext) -> str | None:
    """rspamd's ``X-Spam: Yes`` (its milter headers)."""
    return _says_yes(msg, "X-Spam")


def rspamd_action(msg: Message, ctx: SpamContext) -> str | None:
    """rspamd's ``X-Rspamd-Action``: reject, add header or rewrite subject mean spam."""
    for value in msg.header_all("X-Rspamd-Action"):
        action = " ".join(value.replace("_", " ").lower().split())
        if action in _RSPAMD_SPAM_ACTIONS:
            return f"header X-Rspamd-Action: {_one_line(value)}"
    return None


def _scl_at_least(values: list[tuple[str, str]], threshold: int) -> str | None:
    """The first (level, quoted value) whose spam confidence level reaches ``threshold``."""
    for level, value in values:
        if re.fullmatch(r"-?\d+", level) and int(level) >= threshold:
            return f"{value} (SCL threshold {threshold})"
    return None


def exchange_scl(msg: Message, ctx: SpamContext) -> str | None:
    """Exchange's ``X-MS-Exchange-Organization-SCL`` at or above the threshold."""
    name = "X-MS-Exchange-Organization-SCL"
    return _scl_at_least([(v.strip(), f"header {name}: {_one_line(v)}")
                          for v in msg.header_all(name)], ctx.scl_threshold)


def forefront_scl(msg: Message, ctx: SpamContext) -> str | None:
    """The ``SCL:n`` of Exchange Online Protection's ``X-Forefront-Antispam-Report``."""
    name = "X-Forefront-Antispam-Report"
    levels = []
    for value in msg.header_all(name):
        match = _FOREFRONT_SCL_RE.search(" ".join(value.split()))
        if match:
            levels.append((match.group(1), f"header {name}: SCL:{match.group(1)}"))
    return _scl_at_least(levels, ctx.scl_threshold)


def dmarc_fail(msg: Message, ctx: SpamContext) -> str | None:
    """DMARC failed in the Authentication-Results of our own border MTA (a forged From)."""
    verdicts = authentication(msg, ctx.authserv_id)
    if verdicts.dmarc != "fail":
        return None
    return f"{verdicts.failed} (Authentication-Results of {ctx.authserv_id})"


# Every header form of a verdict; the order only decides which reason is named.
RULES: tuple[Callable[[Message, SpamContext], str | None], ...] = (
    spam_flag,
    spam_status,
    rspamd_spam,
    rspamd_action,
    exchange_scl,
    forefront_scl,
    dmarc_fail,
)
