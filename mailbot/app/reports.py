"""What the CLI shows: tickets in work order, ticket details, outbox and quarantine tables."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from mailbot.outbound.wording import moment
from mailbot.settings.config import Config, ImapConfig, RelayConfig
from mailbot.store import Store
from mailbot.store import directory as dq
from mailbot.store import tickets as tq
from mailbot.tickets import identify, lifecycle

ATTACHMENT_KEYS = ("filename", "content_type", "size", "sha256")
CLAIM_KEYS = ("customer_number", "account", "line", "from", "confirmed", "created_at")


def ticket_list(store: Store, show_all: bool, limit: int = -1, offset: int = 0) -> list[dict]:
    """A page of the tickets as agents should work them, as plain dicts."""
    if show_all:
        return _rows(tq.listing(store, lifecycle.STATUSES, limit, offset))
    return _rows(tq.work_list(store, limit, offset))


def ticket_search(store: Store, text: str, limit: int) -> list[dict]:
    """Tickets whose subject or messages mention ``text``, newest first, as plain dicts."""
    return _rows(tq.search(store, text, limit))


def _rows(rows: list[dict]) -> list[dict]:
    keys = ("number", "subject", "status", "priority", "entitled", "contact", "account",
            "contract", "owner", "first_response_due", "created_at")
    return [{k: (bool(r[k]) if k == "entitled" else r[k]) for k in keys} for r in rows]


def ticket_list_text(rows: list[dict], zone: str) -> str:
    """A table of tickets for the terminal; deadlines in the support's local time, and a
    star marks customers with a contract."""
    if not rows:
        return "no tickets"
    lines = [f"{'NUMBER':<14} {'PRIO':<7} {'STATUS':<9} {'DUE':<17} {'CONTACT':<28}  SUBJECT"]
    for r in rows:
        due = datetime.fromisoformat(r["first_response_due"]).astimezone(ZoneInfo(zone)) \
            .strftime("%Y-%m-%d %H:%M") if r["first_response_due"] else "-"
        mark = "*" if r["entitled"] else " "
        lines.append(f"{r['number']:<14} {r['priority']:<7} {r['status']:<9} {due:<17} "
                     f"{(r['contact'] or ''):<28} {mark}{r['subject'][:60]}")
    return "\n".join(lines)


def ticket_detail(store: Store, number: str, claims: str = "confirm") -> dict | None:
    """Everything about one ticket, as plain data (the `tickets show --json` document);
    ``claims`` is ``[directory] claims``: only "confirm" makes a claim confirmable."""
    ticket = tq.by_number(store, number)
    if ticket is None:
        return None
    contact = dq.contact_by_id(store, ticket["contact_id"])
    account = dq.account_by_id(store, ticket["account_id"])
    parent = tq.by_id(store, ticket["parent_id"]) if ticket["parent_id"] else None
    return {
        **{k: ticket[k] for k in ("number", "subject", "status", "priority", "owner",
                                  "created_at", "updated_at", "closed_at", "language",
                                  "first_response_due", "first_response_at",
                                  "first_response_met", "update_due", "resolution_due",
                                  "facts", "missing", "escalated_at", "escalation_phone")},
        "entitled": bool(ticket["entitled"]),
        "contact": contact["address"] if contact else None,
        "contact_name": contact["name"] if contact else None,
        "account": account["name"] if account else None,
        "customer_number": account["customer_number"] if account else None,
        "contract": ticket["contract"],
        "parent": parent["number"] if parent else None,
        "claims": [{**{k: c[k] for k in CLAIM_KEYS}, "confirmable": not c["confirmed"]
                    and claims == "confirm"}
                   for c in identify.claims_of(store, ticket)],
        "messages": [_message(m) for m in tq.messages(store, ticket["id"])],
        "events": [{k: e[k] for k in ("kind", "data", "actor", "created_at")}
                   for e in tq.events(store, ticket["id"])],
    }


def _claim_text(claim: dict) -> str:
    """One customer number claim for the terminal, with how to confirm it while open."""
    ways = [f"mailbot accounts link {claim['from']} {claim['customer_number']}"]
    if claim["confirmable"]:
        ways.insert(0, "an agent's #confirm")
    state = "confirmed" if claim["confirmed"] else f"NOT confirmed ({' or '.join(ways)})"
    return (f"  claim: customer number {claim['customer_number']} of {claim['account']} "
            f"from {claim['from']}, {state}; from the line: {claim['line']}")


def _message(row: dict) -> dict:
    return {"direction": row["direction"], "from": row["from_addr"],
            "from_name": row["from_name"], "to": row["to_addrs"], "subject": row["subject"],
            "body": row["body"], "message_id": row["message_id"],
            "created_at": row["created_at"],
            "attachments": [{k: a[k] for k in ATTACHMENT_KEYS} for a in row["attachments"]]}


def ticket_detail_text(data: dict, zone: str) -> str:
    """A readable ticket for the terminal, times in the support's time zone."""
    def when(key: str) -> str:
        return moment(data[key], zone, "en") or "-"

    lines = [f"Ticket {data['number']}: {data['subject']}",
             f"  status {data['status']}, priority {data['priority']}, owner "
             f"{data['owner'] or '-'}",
             f"  contact {data['contact'] or '-'}, account {data['account'] or '-'}, "
             f"contract {data['contract'] or '-'}",
             f"  created {when('created_at')}",
             f"  first response due {when('first_response_due')}, answered "
             f"{when('first_response_at')}",
             f"  update due {when('update_due')}, resolution due {when('resolution_due')}"]
    if data["facts"]:
        lines.append(f"  facts {data['facts']}")
    if data["missing"]:
        lines.append(f"  missing {', '.join(data['missing'])}")
    if data["parent"]:
        lines.append(f"  follows up on {data['parent']}")
    lines += [_claim_text(c) for c in data["claims"]]
    for m in data["messages"]:
        lines += ["", f"--- {m['direction']} from {m['from']}, "
                      f"{moment(m['created_at'], zone, 'en')}",
                  m["body"].rstrip()]
        lines += [f"    [attachment] {a['filename']} ({a['content_type']}, {a['size']} bytes)"
                  for a in m["attachments"]]
    lines += ["", "Events:"] + [f"  {e['created_at']} {e['kind']} {e['data']}"
                                for e in data["events"]]
    return "\n".join(lines)


def outbox_text(rows: list[dict]) -> str:
    """A table of outbound mails."""
    if not rows:
        return "outbox is empty"
    return "\n".join(f"{r['id']:>6} {r['status']:<8} {r['kind']:<16} {r['ticket'] or '-':<14} "
                     f"{', '.join(r['recipients'])} tries={r['attempts']} {r['last_error']}"
                     for r in rows)


def quarantine_text(rows: list[dict]) -> str:
    """A table of quarantined mails."""
    if not rows:
        return "quarantine is empty"
    lines = [f"{'ID':>6}  {'FIRST SEEN':<16}  {'LAST SEEN':<16}  {'COPIES':>6}  {'SIZE':>9}  "
             f"{'SOURCE':<12}  {'SENDER':<28}  REASON"]
    for r in rows:
        lines.append(f"{r['id']:>6}  {r['created_at'][:16]:<16}  "
                     f"{(r.get('last_seen_at') or r['created_at'])[:16]:<16}  "
                     f"{r.get('copies', 1):>6}  {r.get('size', 0):>9}  {r['source']:<12}  "
                     f"{(r.get('sender') or '-'):<28}  {r['error']}")
    return "\n".join(lines)


def config_summary(config: Config) -> str:
    """What a config means, in a few lines, for `mailbot check-config`."""
    relay = f"SMTP relay {config.relay.host}:{config.relay.port} ({config.relay.security}" \
        f"{_login_text(config.relay)})" if config.relay.host else f"Maildir {config.maildir}"
    listener = config.listener
    lines = [
        "config OK",
        f"  data directory: {config.data_dir}",
        f"  support address: {', '.join(config.support.addresses)}",
        f"  listener: {listener.protocol} on {listener.host}:{listener.port}"
        if listener.enabled else "  listener: off",
        f"  outbound: {relay}",
        f"  web: {config.web.base_url}" if config.web.enabled else "  web: off",
        f"  signing secret: {'configured' if config.support.signing_secret else 'generated'}",
        f"  agents in the config: {len(config.team.agents)}"
        + (f", plus the file {config.team.file}" if config.team.file else ""),
    ]
    lines += [f"  imap: {c.label} folder {c.folder} ({c.security}{_login_text(c)}) -> "
              f"{c.done_folder or 'flag Seen'}" for c in config.imap]
    return "\n".join(lines)


def _login_text(table: ImapConfig | RelayConfig) -> str:
    """How a mailbox or the relay logs in, for the summary: OAuth2 with its provider and
    grant (a password says nothing)."""
    if table.auth != "oauth2":
        return ""
    return f", OAuth2 {table.oauth2.provider} {table.oauth2.grant.replace('_', ' ')}"


def status_text(document: dict, zone: str) -> str:
    """`mailbot status` for the terminal: the verdict, its reasons, then one line a source."""
    head = f"mailbot: {document['status']}"
    if document.get("pid") and document["status"] != "not running":
        head += (f" (pid {document['pid']}, running since "
                 f"{_local(document['started_at'], zone)})")
    lines = [head, *(f"  ! {reason}" for reason in document["reasons"])]
    if document["sources"]:
        lines.append(f"{'SOURCE':<30} {'STATE':<10} {'SINCE':<16} {'FAILS':>5} {'MAILS':>6} "
                     f"{'LAST SUCCESS':<16}  LAST ERROR")
    for s in document["sources"]:
        error = f"{_local(s['last_error_at'], zone)} {s['last_error']}" if s["last_error"] \
            else "-"
        lines.append(f"{s['name']:<30} {s['state']:<10} {_local(s['since'], zone):<16} "
                     f"{s['failures']:>5} {s['handled']:>6} "
                     f"{_local(s['last_success'], zone):<16}  {error}")
    return "\n".join(lines)


def _local(moment: str | None, zone: str) -> str:
    """An ISO time from the status file in the support's time zone, to the minute."""
    if not moment:
        return "-"
    return datetime.fromisoformat(moment).astimezone(ZoneInfo(zone)).strftime("%Y-%m-%d %H:%M")


def accounts_text(rows: list[dict]) -> str:
    """A table of accounts for the terminal."""
    if not rows:
        return "no accounts (import them with `mailbot accounts import FILE`)"
    lines = [f"{'NAME':<28} {'NUMBER':<12} {'CONTRACT':<16} {'CONTACTS':>8} {'OPEN':>5}  DOMAINS"]
    lines += [f"{r['name'][:28]:<28} {(r['customer_number'] or '-'):<12} "
              f"{(r['contract'] or '-'):<16} {r['contacts']:>8} {r['open_tickets']:>5}  "
              f"{', '.join(r['domains']) or '-'}" for r in rows]
    return "\n".join(lines)


def contacts_text(rows: list[dict]) -> str:
    """A table of contacts for the terminal; a bounced address is marked."""
    if not rows:
        return "no contacts"
    lines = [f"{'ADDRESS':<36} {'NAME':<24} ACCOUNT"]
    lines += [f"{r['address'][:36]:<36} {(r['name'] or '-')[:24]:<24} {r['account'] or '-'}"
              + (f"  [bounced: {r['bounce_reason']}]" if r["bounced_at"] else "")
              for r in rows]
    return "\n".join(lines)


def contact_detail(store: Store, address: str) -> dict | None:
    """One contact with its account and its tickets (the `contacts show --json` document)."""
    from mailbot.reading.headers import normalise_address  # the mail reader: here only

    contact = dq.contact_by_address(store, normalise_address(address))
    if contact is None:
        return None
    account = dq.account_by_id(store, contact["account_id"])
    return {**{k: contact[k] for k in ("address", "name", "phone", "language", "bounced_at",
                                       "bounce_reason")},
            "account": account["name"] if account else None,
            "customer_number": account["customer_number"] if account else None,
            "contract": account["contract"] if account else None,
            "tickets": dq.tickets_of_contact(store, contact["id"])}


def contact_detail_text(data: dict, zone: str) -> str:
    """A contact for the terminal: who, which account, and a table of their tickets."""
    account = (f"{data['account']} ({data['customer_number'] or '-'}, contract "
               f"{data['contract'] or '-'})" if data["account"] else "-")
    lines = [f"Contact {data['address']}",
             f"  name {data['name'] or '-'}, phone {data['phone'] or '-'}, "
             f"language {data['language'] or '-'}",
             f"  account {account}"]
    if data["bounced_at"]:
        lines.append(f"  mail bounced {_local(data['bounced_at'], zone)}: "
                     f"{data['bounce_reason']}")
    return "\n".join([*lines, "", _tickets_table(data["tickets"], zone)])


def account_detail(store: Store, key: str) -> list[dict]:
    """The account with customer number ``key``, else those named ``key``, each with its
    contract, contacts and open tickets (the `accounts show --json` document)."""
    found = dq.account_by_customer_number(store, key)
    accounts = [found] if found else dq.accounts_named(store, key)
    return [{**{k: a[k] for k in ("name", "customer_number", "domains", "language")},
             "contract": dq.contract(store, a["contract"]),
             "contacts": dq.contacts_of_account(store, a["id"]),
             "open_tickets": dq.tickets_of_account(store, a["id"], tq.WORK_STATUSES)}
            for a in accounts]


def account_detail_text(data: dict, zone: str) -> str:
    """An account for the terminal: contract, a table of contacts, one of open tickets."""
    contract = data["contract"]
    terms = "-" if contract is None else (
        f"{contract['name']} (tier {contract['tier']}, calendar "
        f"{contract['calendar'] or 'default'}"
        + (f", raises {contract['raise_levels']}" if contract["raise_levels"] is not None
           else "") + (f"; {contract['description']}" if contract["description"] else "")
        + ")")
    lines = [f"Account {data['name']} ({data['customer_number'] or 'no customer number'})",
             f"  contract {terms}",
             f"  domains {', '.join(data['domains']) or '-'}, language "
             f"{data['language'] or '-'}", "",
             contacts_text([{**c, "account": data["name"]} for c in data["contacts"]]), "",
             _tickets_table(data["open_tickets"], zone, "no open tickets")]
    return "\n".join(lines)


def _tickets_table(rows: list[dict], zone: str, empty: str = "no tickets") -> str:
    """A short table of tickets, newest first, created in the support's local time."""
    if not rows:
        return empty
    lines = [f"{'NUMBER':<14} {'STATUS':<9} {'PRIO':<7} {'CREATED':<16}  SUBJECT"]
    lines += [f"{r['number']:<14} {r['status']:<9} {r['priority']:<7} "
              f"{_local(r['created_at'], zone):<16}  {r['subject'][:60]}" for r in rows]
    return "\n".join(lines)


def counts_text(head: str, counts: dict[str, int]) -> str:
    """A head line and one line per count (``tickets_deleted`` as "tickets deleted")."""
    width = max((len(k) for k in counts), default=0)
    return "\n".join([head, *(f"  {k.replace('_', ' '):<{width}}  {n:>7}"
                              for k, n in counts.items())])


def import_text(counts: dict[str, dict[str, int]]) -> str:
    """What an import did: ``contracts: 1 added, 2 updated; accounts: ...``."""
    return "; ".join(f"{kind}: {done['added']} added, {done['updated']} updated"
                     for kind, done in counts.items())
