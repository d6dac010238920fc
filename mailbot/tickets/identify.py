"""The identify step: who wrote a mail (contact, account, contract) and by what evidence.

An address linked to an account, or a mail domain of an account, is evidence.  A customer
number in the text is only a claim (anyone can write one): unless ``[directory] claims``
is "trust", it is shown to agents on the ticket and counts once an agent confirms it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from mailbot.store import Store
from mailbot.store import directory as q
from mailbot.store import tickets as tq

if TYPE_CHECKING:  # annotations only: the context drags in the whole daemon
    from mailbot.context import Context

CLAIM_EVENT = "customer_number_claim"
# Characters of the line a claim came from that are kept for agents.
CLAIM_LINE_CHARS = 200


@dataclass(frozen=True)
class Claim:
    """A customer number named by a sender not linked to an account: whose, and where."""

    number: str
    account: dict
    # The line of the mail the number was found in, as agents should read it.
    line: str


@dataclass(frozen=True)
class Identity:
    """Who wrote a mail: contact, account, contract, and how we know."""

    contact: dict | None = None
    account: dict | None = None
    contract: dict | None = None
    matched_by: str = ""
    # A customer number the mail names that does not count (yet).
    claim: Claim | None = None

    @property
    def known(self) -> bool:
        """Whether the sender was recognised at all."""
        return self.account is not None or self.contact is not None


def identify(store: Store, address: str, customer_numbers: tuple[str, ...] = (),
             claims: str = "confirm", text: str = "") -> Identity:
    """Match a sender by exact address, then mail domain; a customer number in ``text``
    links only with ``claims = "trust"``, else it is the identity's claim."""
    contact = q.contact_by_address(store, address) if address else None
    if contact and contact["account_id"] is not None:
        return _with_account(store, contact, q.account_by_id(store, contact["account_id"]),
                             "address")
    account = q.account_by_domain(store, address.rpartition("@")[2]) if address else None
    if account:
        return _with_account(store, contact, account, "domain")
    claim = _claim(store, customer_numbers, text)
    if claim and claims == "trust":
        return _with_account(store, contact, claim.account, "customer_number")
    return Identity(contact=contact, matched_by="address" if contact else "", claim=claim)


def _with_account(store: Store, contact: dict | None, account: dict, how: str) -> Identity:
    return Identity(contact=contact, account=account,
                    contract=q.contract(store, account.get("contract")), matched_by=how)


def _claim(store: Store, numbers: tuple[str, ...], text: str) -> Claim | None:
    """The first customer number of a known account, with the line it stands in."""
    for number in numbers:
        account = q.account_by_customer_number(store, number)
        if account:
            line = next((line.strip() for line in text.splitlines() if number in line), number)
            return Claim(number=number, account=account, line=line[:CLAIM_LINE_CHARS])
    return None


def record_claim(ctx: Context, ticket: dict, identity: Identity, sender: str,
                 now: datetime) -> None:
    """Show agents a customer number claim on ``ticket`` (an event): once per number, and
    only while the ticket has no account."""
    claim = identity.claim
    if claim is None or ticket["account_id"] is not None:
        return
    if any(e["kind"] == CLAIM_EVENT and e["data"]["customer_number"] == claim.number
           for e in tq.events(ctx.store, ticket["id"])):
        return
    tq.add_event(ctx.store, ticket["id"], CLAIM_EVENT, {
        "customer_number": claim.number, "account": claim.account["name"],
        "account_id": claim.account["id"], "line": claim.line, "from": sender}, now,
        actor=sender)


def claims_of(store: Store, ticket: dict) -> list[dict]:
    """The customer number claims on a ticket, each marked confirmed once the ticket
    belongs to the claimed account."""
    return [{**e["data"], "created_at": e["created_at"],
             "confirmed": e["data"]["account_id"] == ticket["account_id"]}
            for e in tq.events(store, ticket["id"]) if e["kind"] == CLAIM_EVENT]


def open_claim(ctx: Context, ticket: dict) -> dict | None:
    """The latest claim on a ticket that has no account yet, or None."""
    if ticket["account_id"] is not None:
        return None
    found = claims_of(ctx.store, ticket)
    return found[-1] if found else None
