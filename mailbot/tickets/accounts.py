"""Importing the customer list: contracts, accounts and contacts from a TOML or CSV file.

One import is one transaction: a bad row names its file, row and column, and nothing
of the file is kept.
"""

from __future__ import annotations

import csv
import re
import tomllib
from pathlib import Path

from mailbot.policy.config import ContractPolicy, Targets
from mailbot.policy.rules import Policy, validate_contract
from mailbot.settings.schema import ConfigError, convert
from mailbot.store import Store
from mailbot.store import directory as q

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
        "domains": [d.lower() for d in row.get("domains", [])],
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
    q.upsert_contact(store, {"address": row["address"], "name": row.get("name", ""),
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
