"""One person's data under the GDPR: export everything stored about an address (Art. 15)
and erase it (Art. 17), from the database and the spool.

Both work from one :class:`Footprint`, so what an export shows is what an erasure removes:

- the contact row (address, name, phone);
- the tickets that are only theirs (no one but they, agents and mailbot wrote in them):
  deleted whole, with every message, attachment, event and outbox row.  Deleted, not
  anonymised: what agents wrote there answers the person and quotes them;
- the tickets others wrote in too (a colleague's follow-up, a ticket they were copied on):
  kept with the others' parts.  Their own messages go; in what stays, their address and
  full name are replaced by ``[erased]`` (subjects, texts, recipient lists, event data,
  facts), an event they did is done by ``erased``, a ticket they were the contact of keeps
  no contact, no subject and no call-back number, and another person's raw mail that
  names their address loses its raw bytes (its text stays, redacted);
- mails to them, and notices to agents that name them, in the outbox;
- their mails in the quarantine or held as spam;
- the raw bytes and attachment files of all that, unless something kept refers to them.

The account (the customer's company) stays; the export shows it for context.  Ingest
records stay as hashes (a Message-ID naming the address is replaced), so a re-delivered
mail of theirs is recognised as a duplicate and not filed again.  Deleted rows are
overwritten in the database file (``secure_delete``) and the write-ahead log is
checkpointed.  Not reached: words of theirs quoted by others without their name, logs,
mails already delivered, and backups.
"""

from __future__ import annotations

import contextlib
import email
import email.policy
import json
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mailbot.reading.headers import normalise_address
from mailbot.store import TemporaryStoreError, iso
from mailbot.store import directory as dq
from mailbot.store import privacy as pq

if TYPE_CHECKING:  # annotations only: the context drags in the whole daemon
    from mailbot.context import Context

REDACTED = "[erased]"
ERASED_ACTOR = "erased"
MESSAGE_KEYS = ("direction", "from_addr", "from_name", "to_addrs", "subject", "body",
                "message_id", "created_at")
ATTACHMENT_KEYS = ("filename", "content_type", "size", "sha256")
# The raw mails and the attachments that nothing kept refers to any more, by hash: they go
# once the transaction that let go of them is committed (see :func:`discard`).
Unused = tuple[set[str], set[str]]


@dataclass(frozen=True)
class Footprint:
    """Everything stored about one address, as export shows it and erase removes it."""

    address: str
    contact: dict | None
    account: dict | None
    names: tuple[str, ...]
    own: list[dict]  # tickets only theirs: deleted whole
    shared: list[dict]  # tickets others wrote in too: kept without their parts
    messages: list[dict]  # every message of their own tickets, theirs on shared ones
    others: list[dict]  # the others' messages on shared tickets (redacted where they name them)
    events: list[dict]  # every event of their own tickets, those naming them on shared ones
    outbox: list[dict]
    quarantine: list[dict]
    spam: list[dict]

    @property
    def own_ids(self) -> set[int]:
        """The ids of the tickets that go whole."""
        return {t["id"] for t in self.own}

    @property
    def spool(self) -> set[str]:
        """The hashes of their raw mails (messages, quarantine, held spam)."""
        return ({m["spool_sha256"] for m in self.messages if m["spool_sha256"]}
                | {q["sha256"] for q in self.quarantine if q["sha256"]}
                | {s["sha256"] for s in self.spam})

    @property
    def attachments(self) -> list[tuple[dict, dict]]:
        """Each attachment of their messages with its message."""
        return [(a, m) for m in self.messages for a in m["attachments"]]


class Rehearsed(Exception):
    """Rolls back the transaction of a dry run, carrying what the real run would have done."""


def find(ctx: Context, address: str) -> Footprint:
    """Everything stored about ``address`` (read it inside a transaction to act on it)."""
    address = normalise_address(address)
    store = ctx.store
    contact = dq.contact_by_address(store, address)
    own, shared = _tickets(ctx, address, contact)
    own_ids, shared_ids = {t["id"] for t in own}, {t["id"] for t in shared}
    names = tuple(dict.fromkeys(n.strip() for n in (
        contact["name"] if contact else "", *pq.names_used(store, address)) if n.strip()))
    naming = _matcher(address, names, contact["phone"] if contact else "")
    on_shared = pq.messages(store, shared_ids)
    events = pq.events(store, own_ids) + [
        e for e in pq.events(store, shared_ids)
        if e["actor"] == address or naming.search(json.dumps(e["data"], ensure_ascii=False))]
    outbox = [r for r in pq.outbox_rows(store, address, own_ids | shared_ids)
              if r["ticket_id"] in own_ids or address in (a.lower() for a in r["recipients"])
              or naming.search(mail_text(r["raw"]))]
    return Footprint(
        address=address, contact=contact,
        account=dq.account_by_id(store, contact["account_id"]) if contact else None,
        names=names, own=own, shared=shared,
        messages=pq.messages(store, own_ids) + [m for m in on_shared
                                                if m["from_addr"] == address],
        others=[m for m in on_shared if m["from_addr"] != address], events=events,
        outbox=outbox, quarantine=pq.quarantined_from(store, address),
        spam=pq.spam_from(store, address))


def _tickets(ctx: Context, address: str, contact: dict | None) -> tuple[list[dict], list[dict]]:
    """The tickets only theirs (their contact's, where nobody but they, agents and mailbot
    wrote) and the other tickets that are theirs or name them."""
    store = ctx.store
    theirs = pq.tickets_of_contact(store, contact["id"]) if contact else []
    not_others = {address, "", *ctx.team.addresses(), *ctx.config.support.addresses}
    own = [t for t in theirs if not pq.senders(store, t["id"]) - not_others]
    own_ids = {t["id"] for t in own}
    shared = pq.tickets(store, ({*pq.tickets_naming(store, address)}
                                | {t["id"] for t in theirs}) - own_ids)
    return own, shared


def _matcher(address: str, names: tuple[str, ...], phone: str) -> re.Pattern:
    """A pattern for the address, the full names (two words or more: a single word like
    "Kasse" is too common to replace in others' texts) and the phone number."""
    words = [address, *(n for n in names if len(n.split()) > 1)]
    if len(phone.strip()) >= 6:
        words.append(phone.strip())
    return re.compile("|".join(re.escape(w) for w in sorted(words, key=len, reverse=True)),
                      re.IGNORECASE)


def mail_text(raw: bytes) -> str:
    """A composed mail's headers and text parts, decoded (to look for a name in it)."""
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    parts = [f"{k}: {v}" for k, v in msg.items()]
    for part in msg.walk():
        if part.get_content_maintype() == "text":
            try:
                parts.append(part.get_content())
            except (LookupError, ValueError):  # an unknown charset: its raw text
                parts.append(part.get_payload())
    return "\n".join(parts)


# -- erase -----------------------------------------------------------------------------------

def erase(ctx: Context, address: str, dry_run: bool = False) -> dict[str, int]:
    """Remove a person's data (see the module); what was removed (with ``dry_run``: what
    would be, nothing changed).  Raw mails and attachments go after the commit: a rollback
    keeps them."""
    store = ctx.store
    pq.secure_delete(store, True)
    try:
        counts, unused = commit_or_rehearse(ctx, dry_run,
                                            lambda: _erase(ctx, find(ctx, address)))
    finally:
        pq.secure_delete(store, False)
    if not dry_run:
        discard(ctx, unused)
        with contextlib.suppress(TemporaryStoreError):  # busy: the next checkpoint does it
            pq.checkpoint(store)
    return counts


def commit_or_rehearse(ctx: Context, dry_run: bool,
                       work: Callable[[], tuple[dict[str, int], Unused]],
                       ) -> tuple[dict[str, int], Unused]:
    """Run ``work`` in one transaction; a dry run rolls it back.  Its counts and the raw
    mails and attachments that are unused once it is committed (to :func:`discard` then)."""
    try:
        with ctx.store.transaction():
            counts, unused = work()
            if dry_run:
                raise Rehearsed(counts, unused)
    except Rehearsed as rehearsed:
        counts, unused = rehearsed.args
    return counts, unused


def discard(ctx: Context, unused: Unused) -> None:
    """Forget the bytes of raw mails and attachments nothing refers to any more (after the
    commit that let go of them), wherever they are kept: files or the database."""
    spool, files = unused
    ctx.spool.delete(spool)
    ctx.files.delete(files)


def _erase(ctx: Context, found: Footprint) -> tuple[dict[str, int], Unused]:
    """Delete and redact what ``found`` lists; the counts and the bytes now unused."""
    store = ctx.store
    spool, files = pq.raw_of_tickets(store, found.own_ids)
    spool |= found.spool
    files |= {a["sha256"] for a, _ in found.attachments}
    pq.delete_tickets(store, found.own_ids)
    pq.delete_rows(store, "messages", [m["id"] for m in found.messages
                                       if m["ticket_id"] not in found.own_ids])
    redact = _redactor(found)
    mentions, dropped = _redact_others(ctx, found, redact)
    spool |= dropped
    _redact_events(ctx, found, redact)
    _redact_tickets(ctx, found, redact)
    for table, rows in (("outbox", found.outbox), ("quarantine", found.quarantine),
                        ("spam_held", found.spam)):
        pq.delete_rows(store, table, [r["id"] for r in rows])
    pq.forget_message_ids(store, found.address)
    contacts = pq.delete_contact(store, found.contact["id"]) if found.contact else 0
    spool_files = ctx.spool.present(pq.unused_spool(store, spool))
    attachment_files = ctx.files.present(pq.unused_files(store, files))
    counts = {"contacts": contacts, "tickets_deleted": len(found.own),
              "tickets_kept_without_them": len(found.shared),
              "messages": len(found.messages), "attachments": len(found.attachments),
              "events": len(found.events), "others_messages_redacted": mentions,
              "outbox": len(found.outbox), "quarantine": len(found.quarantine),
              "spam": len(found.spam), "spool_files": len(spool_files),
              "attachment_files": len(attachment_files)}
    return counts, (spool_files, attachment_files)


def _redactor(found: Footprint) -> Callable[[str], str]:
    """Replace the address, full names and phone of a person in a text by ``[erased]``."""
    pattern = _matcher(found.address, found.names,
                       found.contact["phone"] if found.contact else "")
    return lambda text: pattern.sub(REDACTED, text) if text else text


def _redact_others(ctx: Context, found: Footprint,
                   redact: Callable[[str], str]) -> tuple[int, set[str]]:
    """Others' messages on shared tickets lose the person's address and names (and their raw
    bytes when those name the address); how many changed, and the raw hashes let go."""
    changed, dropped = 0, set()
    for message in found.others:
        values = {k: redact(message[k]) for k in ("subject", "body", "html")
                  if redact(message[k]) != message[k]}
        kept = [a for a in message["to_addrs"] if a.lower() != found.address]
        if kept != message["to_addrs"]:
            values["to_addrs"] = kept
        sha = message["spool_sha256"]
        if sha and _raw_names(ctx, sha, found.address):
            values["spool_sha256"] = None
            dropped.add(sha)
        if values:
            pq.rewrite_message(ctx.store, message["id"], values)
            changed += 1
    return changed, dropped


def _raw_names(ctx: Context, sha: str, address: str) -> bool:
    """Whether the raw bytes of a mail contain ``address`` (in any case)."""
    try:
        return address.encode("utf-8") in ctx.spool.get(sha).lower()
    except FileNotFoundError:  # gone already
        return False


def _redact_events(ctx: Context, found: Footprint, redact: Callable[[str], str]) -> None:
    """Events on shared tickets lose the person's address, full names and phone from their
    data; an event the person did is done by ``erased``."""
    for event in found.events:
        if event["ticket_id"] in found.own_ids:
            continue
        actor = ERASED_ACTOR if event["actor"] == found.address else event["actor"]
        data = json.loads(redact(json.dumps(event["data"], ensure_ascii=False)))
        pq.rewrite_event(ctx.store, event["id"], actor, data)


def _redact_tickets(ctx: Context, found: Footprint, redact: Callable[[str], str]) -> None:
    """Shared tickets lose the person's name in subject and facts; a ticket they were the
    contact of also its subject (their words) and call-back number."""
    contact_id = found.contact["id"] if found.contact else None
    for ticket in found.shared:
        theirs = contact_id is not None and ticket["contact_id"] == contact_id
        pq.rewrite_ticket(ctx.store, ticket["id"], {
            "subject": REDACTED if theirs else redact(ticket["subject"]),
            "facts": json.loads(redact(ticket["facts"])),
            "escalation_phone": "" if theirs else redact(ticket["escalation_phone"])})


# -- export ----------------------------------------------------------------------------------

def export(ctx: Context, address: str, files_dir: Path | None = None) -> dict:
    """Everything stored about ``address`` as one JSON document (what erase would remove, and
    the account for context); with ``files_dir`` the raw mails and attachments are
    written there (``mails/<sha256>.eml``, ``files/<sha256>``) and named in the document."""
    with ctx.store.transaction():
        found = find(ctx, address)
    numbers = {t["id"]: t["number"] for t in found.own + found.shared}
    document = {
        "address": found.address, "exported_at": iso(ctx.clock()),
        "contact": _contact(found.contact), "names": list(found.names),
        "account": _account(found.account),
        "tickets": [_ticket(t, found, "deleted") for t in found.own]
        + [_ticket(t, found, "kept without this person's parts") for t in found.shared],
        "outbox": [_outgoing(r, numbers) for r in found.outbox],
        "quarantine": [{k: q[k] for k in ("id", "source", "error", "status", "created_at",
                                          "size", "sha256")} for q in found.quarantine],
        "spam": [{k: s[k] for k in ("id", "source", "message_id", "subject", "reason",
                                    "created_at", "sha256")} for s in found.spam],
        "attachments": [{"ticket": numbers.get(m["ticket_id"]),
                         **{k: a[k] for k in ATTACHMENT_KEYS}} for a, m in found.attachments],
        "raw_mails": [{"sha256": sha, "size": ctx.spool.size(sha)}
                      for sha in sorted(ctx.spool.present(found.spool))],
    }
    if files_dir is not None:
        _copy_files(ctx, document, files_dir)
    return document


def _contact(contact: dict | None) -> dict | None:
    if contact is None:
        return None
    return {k: contact[k] for k in ("address", "name", "phone", "language", "bounced_at",
                                    "bounce_reason")}


def _account(account: dict | None) -> dict | None:
    if account is None:
        return None
    return {k: account[k] for k in ("name", "customer_number", "contract", "domains")}


def _ticket(ticket: dict, found: Footprint, on_erase: str) -> dict:
    return {
        **{k: ticket[k] for k in ("number", "subject", "status", "priority", "language",
                                  "created_at", "closed_at", "escalation_phone")},
        "facts": json.loads(ticket["facts"]), "on_erase": on_erase,
        "messages": [{**{k: m[k] for k in MESSAGE_KEYS},
                      "attachments": [{k: a[k] for k in ATTACHMENT_KEYS}
                                      for a in m["attachments"]]}
                     for m in found.messages if m["ticket_id"] == ticket["id"]],
        "events": [{k: e[k] for k in ("kind", "data", "actor", "created_at")}
                   for e in found.events if e["ticket_id"] == ticket["id"]],
    }


def _outgoing(row: dict, numbers: dict[int, str]) -> dict:
    return {"id": row["id"], "ticket": numbers.get(row["ticket_id"]), "kind": row["kind"],
            "status": row["status"], "recipients": row["recipients"],
            "created_at": row["created_at"], "sent_at": row["sent_at"],
            "mail": mail_text(row["raw"])}


def _copy_files(ctx: Context, document: dict, target: Path) -> None:
    """Write the raw mails and attachments named in ``document`` below ``target``."""
    for entries, kept, folder, suffix in (
            (document["raw_mails"], ctx.spool, "mails", ".eml"),
            (document["attachments"], ctx.files, "files", "")):
        (target / folder).mkdir(mode=0o700, parents=True, exist_ok=True)
        for entry in entries:
            found = kept.present({entry["sha256"]})
            entry["file"] = f"{folder}/{entry['sha256']}{suffix}" if found else None
            if found:
                _write_private(kept.chunks(entry["sha256"]), target / entry["file"])


def _write_private(chunks: Iterable[bytes], target: Path) -> None:
    """Write bytes a chunk at a time into a new file readable by its owner alone (it holds
    someone's mail)."""
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as writing:
        for chunk in chunks:
            writing.write(chunk)
