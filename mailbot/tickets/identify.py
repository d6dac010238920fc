"""The identify step: who wrote a mail (contact, account, contract) and by what evidence."""

from __future__ import annotations

from dataclasses import dataclass

from mailbot.store import Store
from mailbot.store import directory as q


@dataclass(frozen=True)
class Identity:
    """Who wrote a mail: contact, account, contract, and how we know."""

    contact: dict | None = None
    account: dict | None = None
    contract: dict | None = None
    matched_by: str = ""

    @property
    def known(self) -> bool:
        """Whether the sender was recognised at all."""
        return self.account is not None or self.contact is not None


def identify(store: Store, address: str, customer_numbers: tuple[str, ...] = ()) -> Identity:
    """Match a sender by exact address, then mail domain, then a customer number in the text."""
    contact = q.contact_by_address(store, address) if address else None
    if contact and contact["account_id"] is not None:
        return _with_account(store, contact, q.account_by_id(store, contact["account_id"]),
                             "address")
    account = q.account_by_domain(store, address.rpartition("@")[2]) if address else None
    if account:
        return _with_account(store, contact, account, "domain")
    for number in customer_numbers:
        account = q.account_by_customer_number(store, number)
        if account:
            return _with_account(store, contact, account, "customer_number")
    return Identity(contact=contact, matched_by="address" if contact else "")


def _with_account(store: Store, contact: dict | None, account: dict, how: str) -> Identity:
    return Identity(contact=contact, account=account,
                    contract=q.contract(store, account.get("contract")), matched_by=how)


