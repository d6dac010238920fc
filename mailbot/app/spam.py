"""What `mailbot spam` prints: the held mails as a table, and one held mail in full."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo


def _printable(text: str) -> str:
    """A sender's text for the terminal: control characters shown escaped, never obeyed."""
    return "".join(c if c.isprintable() or c in "\n\t" else repr(c)[1:-1] for c in text)


def _local(when: str, zone: str) -> str:
    """A stored time in the support's time zone, to the minute."""
    return datetime.fromisoformat(when).astimezone(ZoneInfo(zone)).strftime("%Y-%m-%d %H:%M")


def held_text(rows: list[dict], zone: str) -> str:
    """A table of held mails: id, when, sender, subject and the filter's verdict."""
    if not rows:
        return "no mail is held as spam"
    lines = [f"{'ID':>6} {'RECEIVED':<17} {'FROM':<30} {'SUBJECT':<40} REASON"]
    lines += [f"{r['id']:>6} {_local(r['created_at'], zone):<17} "
              f"{_printable(r['from_addr'])[:30]:<30} {_printable(r['subject'])[:40]:<40} "
              f"{_printable(r['reason'])}" for r in rows]
    return "\n".join(lines)


def held_detail_text(data: dict, zone: str) -> str:
    """One held mail: why and when it was held, its headers and its text."""
    lines = [f"Held mail {data['id']}: {_printable(data['subject'])}",
             f"  from {_printable(data['from_addr']) or '-'}, received "
             f"{_local(data['created_at'], zone)} via {data['source']}",
             f"  held because {_printable(data['reason'])}",
             f"  Message-ID {_printable(data['message_id']) or '-'}, spool {data['sha256']}",
             ""]
    lines += [f"{name}: {_printable(value)}" for name, value in data["headers"]]
    lines += ["", _printable(data["text"].rstrip())]
    return "\n".join(lines)
