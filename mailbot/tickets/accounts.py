"""The customer list: importing contracts, accounts and contacts from a TOML or CSV file,
and linking one sender's address to an account.

One import is one transaction: a bad row names its file, row and column, and nothing
of the file is kept.
"""

from __future__ import annotations

import csv
import re
import tomllib
from pathlib import Path

from mailbot.context import Context
from mailbot.policy.config import ContractPolicy, Targets
from mailbot.policy.rules import Policy, validate_contract
from mailbot.reading.headers import normalise_address, normalise_domain
from mailbot.settings.schema import ConfigError, convert
from mailbot.store import Store
from mailbot.store import directory as q
from mailbot.store import tickets as tq
from mailbot.tickets import assessment, guards, lifecycle

_SPLIT = re.compile(r"[\s,;]+")


class DirectoryImportError(ValueError):
    """The accounts file has a bad row; the message names the row and the column."""


def import_file(store: Store, path: Path, policy: Policy | None = None) -> dict[str, int]:
    """Import contracts, accounts and contacts from a TOML or CSV file; counts per kind.

    With a policy, contract calendars and targets are checked against it first.
    """
    if path.suffix.lower() == ".toml":
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    elif path.suffix.lower() == ".csv":
        data = _csv_data(path)
    else:
        raise DirectoryImportError(f"{path}: unsupported file type (use .toml or .csv)")
    with store.transaction():
        return _import(store, data, str(path), policy)


def link(ctx: Context, address: str, number: str, actor: str = "operator",
         ) -> tuple[dict, list[str]]:
    """Link ``address`` to the account with customer number ``number`` (an operator's word,
    as good as an agent's #confirm): its later mails get the contract, and its tickets that
    are not closed and have no account get the contract treatment now.  The account and
    the numbers of those tickets; a DirectoryImportError for an unknown number or address.
    """
    address = normalise_address(address)
    problem = guards.undeliverable(address)
    if problem:
        raise DirectoryImportError(problem)
    now = ctx.clock()
    with ctx.store.transaction():
        account = q.account_by_customer_number(ctx.store, number.strip())
        if account is None:
            raise DirectoryImportError(f"no account has the customer number {number.strip()!r}")
        q.upsert_contact(ctx.store, {"address": address, "name": "", "account_id": account["id"],
                                     "phone": "", "language": ""})
        open_statuses = tuple(s for s in lifecycle.STATUSES if s != "closed")
        tickets = [t for t in tq.listing(ctx.store, open_statuses)
                   if t["contact"] == address and t["account_id"] is None]
        for ticket in tickets:
            assessment.contract_treatment(ctx, ticket, account, f"{address} linked to customer "
                                          f"number {account['customer_number']} by {actor}",
                                          actor, now)
    return account, [t["number"] for t in tickets]


def _import(store: Store, data: dict, source: str, policy: Policy | None) -> dict[str, int]:
    for i, row in enumerate(data.get("contracts", [])):
        _import_contract(store, row, f"{source}: contracts[{i}]", policy)
    keys: dict[str, int] = {}
    for i, row in enumerate(data.get("accounts", [])):
        _import_account(store, row, f"{source}: accounts[{i}]", keys)
    for i, row in enumerate(data.get("contacts", [])):
        _import_contact(store, row, f"{source}: contacts[{i}]", keys)
    return {k: len(data.get(k, [])) for k in ("contracts", "accounts", "contacts")}


def _import_contract(store: Store, row: dict, where: str, policy: Policy | None) -> None:
    _require(row, ("name",), where)
    record = {"name": row["name"], "tier": row.get("tier", "none"),
              "raise_levels": row.get("raise_levels"), "calendar": row.get("calendar", ""),
              "description": row.get("description", ""), "targets": row.get("targets", {})}
    if policy is not None:
        _check_contract(record, policy, where)
    q.upsert_contract(store, record)


def _import_account(store: Store, row: dict, where: str, keys: dict[str, int]) -> None:
    """Import one account; remember its id under its name and its customer number."""
    _require(row, ("name",), where)
    if row.get("contract") and not q.contract(store, row["contract"]):
        q.upsert_contract(store, {"name": row["contract"], "tier": row.get(
            "contract_tier", "maintenance"), "raise_levels": None, "calendar": "",
            "description": "", "targets": {}})
    account_id = q.upsert_account(store, {
        "name": row["name"], "customer_number": str(row.get("customer_number") or "") or None,
        "domains": [normalise_domain(d) for d in row.get("domains", [])],
        "contract": row.get("contract") or None, "language": row.get("language", "")})
    keys[row["name"]] = keys[str(row.get("customer_number") or row["name"])] = account_id


def _import_contact(store: Store, row: dict, where: str, keys: dict[str, int]) -> None:
    _require(row, ("address",), where)
    account = str(row.get("account") or "")
    if account and account not in keys:
        found = q.account_by_customer_number(store, account)
        if not found:
            raise DirectoryImportError(f"{where}: account {account!r} is not defined")
        keys[account] = found["id"]
    q.upsert_contact(store, {"address": normalise_address(row["address"]),
                             "name": row.get("name", ""),
                             "account_id": keys.get(account), "phone": row.get("phone", ""),
                             "language": row.get("language", "")})


def _check_contract(record: dict, policy: Policy, where: str) -> None:
    try:
        targets = convert(dict[str, Targets], record["targets"], "targets")
        contract = ContractPolicy(name=record["name"], tier=record["tier"],
                                  raise_levels=-1 if record["raise_levels"] is None
                                  else record["raise_levels"],
                                  calendar=record["calendar"], targets=targets)
        validate_contract(contract, policy, "contract")
    except (ConfigError, ValueError) as exc:
        raise DirectoryImportError(f"{where}: {exc}") from exc


def _require(row: dict, keys: tuple[str, ...], where: str) -> None:
    for key in keys:
        if not row.get(key):
            raise DirectoryImportError(f"{where}: {key} is required")


def _csv_data(path: Path) -> dict:
    accounts: dict[str, dict] = {}
    contacts = []
    with path.open(newline="", encoding="utf-8-sig") as handle:
        for line, row in enumerate(csv.DictReader(handle), start=2):
            name = (row.get("account") or "").strip()
            if name and name not in accounts:
                accounts[name] = {
                    "name": name, "customer_number": (row.get("customer_number") or "").strip(),
                    "domains": [d for d in _SPLIT.split(row.get("domains") or "") if d],
                    "contract": (row.get("contract") or "").strip(),
                    "contract_tier": (row.get("contract_tier") or "maintenance").strip(),
                    "language": (row.get("language") or "").strip()}
            address = (row.get("contact") or "").strip()
            if address:
                contacts.append({"address": address, "name": (row.get("name") or "").strip(),
                                 "account": name, "phone": (row.get("phone") or "").strip(),
                                 "language": (row.get("language") or "").strip()})
            elif not name:
                raise DirectoryImportError(f"{path}:{line}: a row needs an account or a contact")
    return {"accounts": list(accounts.values()), "contacts": contacts}
