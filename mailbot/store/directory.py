"""Queries on contracts, accounts and contacts."""

from __future__ import annotations

import json
from datetime import datetime

from mailbot.store import Store, iso


def contact_by_address(store: Store, address: str) -> dict | None:
    """The contact with exactly this address, or None."""
    return store.row("SELECT * FROM contacts WHERE address = ?", (address.lower(),))


def contact_by_id(store: Store, contact_id: int | None) -> dict | None:
    """The contact with this row id, or None."""
    if contact_id is None:
        return None
    return store.row("SELECT * FROM contacts WHERE id = ?", (contact_id,))


def account_by_id(store: Store, account_id: int | None) -> dict | None:
    """The account with this row id, or None."""
    if account_id is None:
        return None
    return _decode(store.row("SELECT * FROM accounts WHERE id = ?", (account_id,)))


def account_by_domain(store: Store, domain: str) -> dict | None:
    """The account that owns a mail domain, or None."""
    row = store.row("SELECT account_id FROM account_domains WHERE domain = ?", (domain.lower(),))
    return account_by_id(store, row["account_id"]) if row else None


def account_by_customer_number(store: Store, number: str) -> dict | None:
    """The account with this customer number, or None."""
    return _decode(store.row("SELECT * FROM accounts WHERE customer_number = ?", (number,)))


def contract(store: Store, name: str | None) -> dict | None:
    """The contract with this name, or None."""
    if not name:
        return None
    row = store.row("SELECT * FROM contracts WHERE name = ?", (name,))
    if row is not None:
        row["targets"] = json.loads(row["targets"] or "{}")
    return row


def upsert_contract(store: Store, record: dict) -> None:
    """Create or replace a contract by name."""
    store.execute(
        "INSERT INTO contracts(name, tier, raise_levels, calendar, description, targets) "
        "VALUES (:name, :tier, :raise_levels, :calendar, :description, :targets) "
        "ON CONFLICT(name) DO UPDATE SET tier = excluded.tier, "
        "raise_levels = excluded.raise_levels, calendar = excluded.calendar, "
        "description = excluded.description, targets = excluded.targets",
        {**record, "targets": json.dumps(record.get("targets") or {}, sort_keys=True)})


def account_by_key(store: Store, customer_number: str | None, name: str) -> dict | None:
    """The account an import means: by customer number when it has one, else by name."""
    if customer_number:
        return account_by_customer_number(store, customer_number)
    return _decode(store.row("SELECT * FROM accounts WHERE name = ? ORDER BY id LIMIT 1",
                             (name,)))


def accounts_named(store: Store, name: str) -> list[dict]:
    """The accounts with exactly this name (names need not be unique)."""
    return [_decode(r) for r in store.rows("SELECT * FROM accounts WHERE name = ? ORDER BY id",
                                           (name,))]


def upsert_account(store: Store, record: dict) -> int:
    """Create or update an account (keyed by customer number, else name); its id."""
    existing = account_by_key(store, record.get("customer_number"), record["name"])
    values = {**record, "domains": json.dumps(list(record.get("domains", ())))}
    if existing:
        store.execute("UPDATE accounts SET name = :name, customer_number = :customer_number, "
                      "domains = :domains, contract = :contract, language = :language "
                      "WHERE id = :id", {**values, "id": existing["id"]})
        account_id = existing["id"]
    else:
        account_id = store.row(
            "INSERT INTO accounts(name, customer_number, domains, contract, language) "
            "VALUES (:name, :customer_number, :domains, :contract, :language) RETURNING id",
            values)["id"]
    store.execute("DELETE FROM account_domains WHERE account_id = ?", (account_id,))
    for domain in record.get("domains", ()):
        store.execute("INSERT INTO account_domains(domain, account_id) VALUES (?, ?) "
                      "ON CONFLICT(domain) DO UPDATE SET account_id = excluded.account_id",
                      (domain.lower(), account_id))
    return account_id


def flag_bounce(store: Store, address: str, reason: str, at: datetime) -> None:
    """Mark an address whose mail bounced permanently (creating the contact if needed)."""
    store.execute("INSERT INTO contacts(address, bounced_at, bounce_reason) VALUES (?, ?, ?) "
                  "ON CONFLICT(address) DO UPDATE SET bounced_at = excluded.bounced_at, "
                  "bounce_reason = excluded.bounce_reason", (address.lower(), iso(at), reason))


def clear_bounce(store: Store, address: str) -> None:
    """Forget a bounce: the address just proved it works by writing to us."""
    store.execute("UPDATE contacts SET bounced_at = NULL, bounce_reason = '' "
                  "WHERE address = ? AND bounced_at IS NOT NULL", (address.lower(),))


def contact_bounce(store: Store, address: str) -> str:
    """The bounce reason of an address that bounced permanently, or ``""``."""
    row = store.row("SELECT bounce_reason FROM contacts WHERE address = ? "
                    "AND bounced_at IS NOT NULL", (address,))
    return (row["bounce_reason"] or "bounced") if row else ""


def upsert_contact(store: Store, record: dict) -> int:
    """Create or update a contact by address; its id."""
    return store.row(
        "INSERT INTO contacts(address, name, account_id, phone, language) "
        "VALUES (:address, :name, :account_id, :phone, :language) ON CONFLICT(address) DO "
        "UPDATE SET name = CASE WHEN excluded.name != '' THEN excluded.name "
        "ELSE contacts.name END, "
        "account_id = COALESCE(excluded.account_id, contacts.account_id), "
        "phone = CASE WHEN excluded.phone != '' THEN excluded.phone ELSE contacts.phone END, "
        "language = CASE WHEN excluded.language != '' THEN excluded.language "
        "ELSE contacts.language END RETURNING id",
        {**record, "address": record["address"].lower()})["id"]


def accounts(store: Store) -> list[dict]:
    """Every account with its contract, its number of contacts and of open tickets."""
    return [_decode(r) for r in store.rows(
        "SELECT a.*, (SELECT COUNT(*) FROM contacts c WHERE c.account_id = a.id) AS contacts, "
        "(SELECT COUNT(*) FROM tickets t WHERE t.account_id = a.id "
        "AND t.status IN ('new', 'open', 'waiting')) AS open_tickets "
        "FROM accounts a ORDER BY a.name")]


def contacts(store: Store, limit: int, offset: int = 0) -> list[dict]:
    """A page of the contacts by address, with their account's name."""
    return store.rows(
        "SELECT c.address, c.name, c.phone, c.language, c.bounced_at, c.bounce_reason, "
        "a.name AS account FROM contacts c LEFT JOIN accounts a ON a.id = c.account_id "
        "ORDER BY c.address LIMIT ? OFFSET ?", (limit, offset))


def contacts_of_account(store: Store, account_id: int) -> list[dict]:
    """The contacts of one account by address."""
    return store.rows("SELECT address, name, phone, language, bounced_at, bounce_reason "
                      "FROM contacts WHERE account_id = ? ORDER BY address", (account_id,))


def tickets_of_account(store: Store, account_id: int, statuses: tuple[str, ...]) -> list[dict]:
    """The account's tickets in some statuses, newest first, with their contact's address."""
    return store.rows(
        "SELECT t.number, t.subject, t.status, t.priority, t.created_at, t.closed_at, "  # noqa: S608
        "c.address AS contact FROM tickets t LEFT JOIN contacts c ON c.id = t.contact_id "
        f"WHERE t.account_id = ? AND t.status IN ({store.dialect.each('?', 'text')}) "
        "ORDER BY t.id DESC", (account_id, json.dumps(list(statuses))))


def tickets_of_contact(store: Store, contact_id: int) -> list[dict]:
    """The tickets whose contact this is, newest first."""
    return store.rows("SELECT number, subject, status, priority, created_at, closed_at "
                      "FROM tickets WHERE contact_id = ? ORDER BY id DESC", (contact_id,))


def _decode(row: dict | None) -> dict | None:
    if row is not None and isinstance(row.get("domains"), str):
        row["domains"] = json.loads(row["domains"])
    return row
