"""The customer list: importing contracts, accounts and contacts from a TOML or CSV file,
and linking one sender's address to an account.

An import is strict and all or nothing: the whole file is read and checked first (known
tables, known keys, the types of their values, no key given twice, every contract and
account a row refers to defined in the file or the database), then written in one
transaction.  A refusal names the file, the line (TOML: of the table or the key; CSV: of
the row) and the key, and nothing of the file is kept.  A successful import says how many
contracts, accounts and contacts it added and updated.
"""

from __future__ import annotations

import csv
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from mailbot.policy.config import ContractPolicy, Targets
from mailbot.policy.rules import Policy, validate_contract
from mailbot.reading.headers import normalise_address, normalise_domain
from mailbot.settings.schema import ConfigError, convert
from mailbot.store import Store
from mailbot.store import directory as q
from mailbot.store import tickets as tq
from mailbot.tickets import assessment, guards, lifecycle

if TYPE_CHECKING:  # annotations only: the context drags in the whole daemon
    from mailbot.context import Context

_SPLIT = re.compile(r"[\s,;]+")
KINDS = ("contracts", "accounts", "contacts")
# The keys of each table of a TOML customer list, with the types their values may have.
TOML_KEYS: dict[str, dict[str, tuple[type, ...]]] = {
    "contracts": {"name": (str,), "tier": (str,), "raise_levels": (int,), "calendar": (str,),
                  "description": (str,), "targets": (dict,)},
    "accounts": {"name": (str,), "customer_number": (str, int), "domains": (list,),
                 "contract": (str,), "language": (str,)},
    "contacts": {"address": (str,), "name": (str,), "account": (str, int), "phone": (str,),
                 "language": (str,)},
}
REQUIRED = {"contracts": "name", "accounts": "name", "contacts": "address"}
# The columns of a CSV customer list: one row per contact (or per account without one).
CSV_COLUMNS = ("account", "customer_number", "domains", "contract", "contract_tier",
               "language", "contact", "name", "phone")
# Account columns every row of one account must repeat alike (or leave empty).
_CSV_ACCOUNT_COLUMNS = ("customer_number", "domains", "contract")
# TOML headers ([[accounts]], [contracts.targets.urgent]) and keys (name = ...), by line.
_HEADER = re.compile(r"\s*\[(\[)?\s*([^\[\]]+?)\s*\]")
_KEY = re.compile(r"\s*(\"[^\"]*\"|'[^']*'|[A-Za-z0-9_-]+)\s*[=.]")


class DirectoryImportError(ValueError):
    """The accounts file has a bad row; the message names file, line and key."""


@dataclass(frozen=True)
class Place:
    """Where a row of a customer list is written, to name it in an error."""

    source: str
    label: str  # "accounts[1]" (TOML) or "row" (CSV)
    line: int | None = None
    key_lines: dict[str, int] = field(default_factory=dict)
    csv: bool = False

    def error(self, key: str | None, reason: str) -> DirectoryImportError:
        """An import error naming the file, the line of ``key`` (else of the row) and key."""
        line = self.key_lines.get(key, self.line) if key else self.line
        at = f"{self.source}:{line}" if line else self.source
        what = (f"column {key}" if self.csv else f"{self.label}.{key}") if key else self.label
        return DirectoryImportError(f"{at}: {what}: {reason}")


@dataclass
class Listing:
    """A customer list as read from its file, each row with its place.  A CSV's contracts
    are only created, never changed (``replace_contracts`` False): a CSV names no calendar,
    description or targets, which an update would wipe."""

    contracts: list[tuple[dict, Place]] = field(default_factory=list)
    accounts: list[tuple[dict, Place]] = field(default_factory=list)
    contacts: list[tuple[dict, Place]] = field(default_factory=list)
    replace_contracts: bool = True


def import_file(store: Store, path: Path, policy: Policy | None = None,
                ) -> dict[str, dict[str, int]]:
    """Import contracts, accounts and contacts from a TOML or CSV file, all or nothing;
    how many of each kind were added and updated.

    With a policy, contract calendars and targets are checked against it first.
    """
    readers = {".toml": _toml_listing, ".csv": _csv_listing}
    if path.suffix.lower() not in readers:
        raise DirectoryImportError(f"{path}: unsupported file type (use .toml or .csv)")
    try:
        listing = readers[path.suffix.lower()](path)
    except UnicodeDecodeError as exc:
        raise DirectoryImportError(f"{path}: not UTF-8 text (byte {exc.start})") from exc
    except csv.Error as exc:
        raise DirectoryImportError(f"{path}: not readable as CSV: {exc}") from exc
    _check_duplicates(listing)
    if policy is not None:
        for record, place in listing.contracts:
            _check_contract(record, policy, place)
    with store.transaction():
        _check_references(store, listing)
        return _write(store, listing)


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
        contact_id = q.upsert_contact(ctx.store, {"address": address, "name": "",
                                                  "account_id": account["id"],
                                                  "phone": "", "language": ""})
        open_statuses = tuple(s for s in lifecycle.STATUSES if s != "closed")
        tickets = tq.without_account(ctx.store, contact_id, open_statuses)
        for ticket in tickets:
            assessment.contract_treatment(ctx, ticket, account, f"{address} linked to customer "
                                          f"number {account['customer_number']} by {actor}",
                                          actor, now)
    return account, [t["number"] for t in tickets]


# -- reading a TOML list ---------------------------------------------------------------------

def _toml_listing(path: Path) -> Listing:
    """A TOML customer list, every table and key checked against :data:`TOML_KEYS`."""
    text = path.read_text(encoding="utf-8")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:  # its message names line and column
        raise DirectoryImportError(f"{path}: not valid TOML: {exc}") from exc
    lines = TomlLines(text)
    listing = Listing()
    for kind, rows in data.items():
        top = Place(str(path), kind, lines.top.get(kind))
        if kind not in TOML_KEYS:
            raise top.error(None, f"unknown table (known: {', '.join(KINDS)})")
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise top.error(None, f"must be an array of tables ([[{kind}]])")
        for index, row in enumerate(rows):
            place = Place(str(path), f"{kind}[{index}]", *lines.entry(kind, index))
            getattr(listing, kind).append((_toml_record(kind, row, place), place))
    return listing


def _toml_record(kind: str, row: dict, place: Place) -> dict:
    """One row of a TOML table as a record to write, its keys and values checked."""
    known = TOML_KEYS[kind]
    for key, value in row.items():
        if key not in known:
            raise place.error(key, f"unknown key (known: {', '.join(known)})")
        if not isinstance(value, known[key]) or isinstance(value, bool):
            raise place.error(key, f"expected {' or '.join(t.__name__ for t in known[key])}, "
                                   f"got {type(value).__name__}")
    if not str(row.get(REQUIRED[kind], "")).strip():
        raise place.error(REQUIRED[kind], "is required")
    if kind == "accounts" and not all(isinstance(d, str) for d in row.get("domains", [])):
        raise place.error("domains", "expected a list of domain names")
    if kind == "contacts":
        return _contact_record(row, place)
    return _contract_record(row) if kind == "contracts" else _account_record(row)


class TomlLines:
    """The lines of a TOML file's tables and keys (tomllib reports no positions): the
    header of each ``[[table]]`` entry and the keys in it, and each top-level name."""

    def __init__(self, text: str) -> None:
        self.top: dict[str, int] = {}
        self.entries: dict[str, list[int]] = {}
        self.keys: dict[tuple[str, int], dict[str, int]] = {}
        current: tuple[str, int] | None = None
        for number, line in enumerate(text.splitlines(), start=1):
            header = _HEADER.match(line)
            if header:
                current = self._header(header.group(2), bool(header.group(1)), number, current)
            elif key := _KEY.match(line):
                name = key.group(1).strip("\"'")
                found = self.keys.setdefault(current, {}) if current else self.top
                found.setdefault(name, number)

    def _header(self, name: str, array: bool, number: int,
                current: tuple[str, int] | None) -> tuple[str, int] | None:
        """Note a table header; the entry the following keys belong to."""
        parts = [p.strip().strip("\"'") for p in name.split(".")]
        self.top.setdefault(parts[0], number)
        if array and len(parts) == 1:
            self.entries.setdefault(parts[0], []).append(number)
            return parts[0], len(self.entries[parts[0]]) - 1
        if current and current[0] == parts[0] and len(parts) > 1:  # [contracts.targets.x]
            self.keys.setdefault(current, {}).setdefault(parts[1], number)
            return current
        return None

    def entry(self, kind: str, index: int) -> tuple[int | None, dict[str, int]]:
        """The header line of entry ``index`` of ``[[kind]]`` and the lines of its keys."""
        headers = self.entries.get(kind, [])
        if index < len(headers):
            return headers[index], self.keys.get((kind, index), {})
        return self.top.get(kind), {}  # written inline: kind = [{...}]


# -- reading a CSV list ----------------------------------------------------------------------

def _csv_listing(path: Path) -> Listing:
    """A CSV customer list: one row per contact; the account columns repeat per row."""
    listing = Listing(replace_contracts=False)
    accounts: dict[str, tuple[dict, Place]] = {}
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        _check_columns(reader.fieldnames or [], Place(str(path), "header", 1, csv=True))
        for row in reader:
            place = Place(str(path), "row", reader.line_num, csv=True)
            if None in row:
                raise place.error(None, f"more fields than the {len(row) - 1} columns")
            _csv_row({k: (v or "").strip() for k, v in row.items()}, place, listing, accounts)
    return listing


def _check_columns(columns: list[str], place: Place) -> None:
    seen = set()
    for column in columns:
        if column not in CSV_COLUMNS:
            raise place.error(column, f"unknown column (known: {', '.join(CSV_COLUMNS)})")
        if column in seen:
            raise place.error(column, "duplicate column")
        seen.add(column)
    if "account" not in seen and "contact" not in seen:
        raise place.error(None, "needs an account or a contact column")


def _csv_row(row: dict, place: Place, listing: Listing,
             accounts: dict[str, tuple[dict, Place]]) -> None:
    """Add one CSV row's account (its first row defines it), contract and contact."""
    name = row.get("account", "")
    if name and name not in accounts:
        accounts[name] = (_account_record({
            "name": name, "customer_number": row.get("customer_number", ""),
            "domains": [d for d in _SPLIT.split(row.get("domains", "")) if d],
            "contract": row.get("contract", ""), "language": row.get("language", "")}), place)
        listing.accounts.append(accounts[name])
        _csv_contract(row, place, listing)
    elif name:
        _same_account(row, *accounts[name], place)
    if row.get("contact"):
        listing.contacts.append((_contact_record({
            "address": row["contact"], "name": row.get("name", ""), "account": name,
            "phone": row.get("phone", ""), "language": row.get("language", "")}, place),
            place))
    elif not name:
        raise place.error(None, "a row needs an account or a contact")


def _csv_contract(row: dict, place: Place, listing: Listing) -> None:
    """A contract a CSV row creates with ``contract_tier`` (when the database lacks it)."""
    name, tier = row.get("contract", ""), row.get("contract_tier", "")
    if not (name and tier):
        return
    for record, first in listing.contracts:
        if record["name"] == name:
            if record["tier"] != tier:
                raise place.error("contract_tier", f"contract {name!r} has tier "
                                                   f"{record['tier']!r} on line {first.line}")
            return
    listing.contracts.append((_contract_record({"name": name, "tier": tier}), place))


def _same_account(row: dict, record: dict, first: Place, place: Place) -> None:
    """A further row of an account must not give it other account values."""
    given = {"customer_number": record["customer_number"] or "",
             "domains": " ".join(record["domains"]), "contract": record["contract"] or ""}
    for column in _CSV_ACCOUNT_COLUMNS:
        value = row.get(column, "")
        if column == "domains":
            value = " ".join(normalise_domain(d) for d in _SPLIT.split(value) if d)
        if value and value != given[column]:
            raise place.error(column, f"account {record['name']!r} has {given[column]!r} on "
                                      f"line {first.line}")


# -- records ---------------------------------------------------------------------------------

def _contract_record(row: dict) -> dict:
    return {"name": row["name"].strip(), "tier": row.get("tier", "none"),
            "raise_levels": row.get("raise_levels"), "calendar": row.get("calendar", ""),
            "description": row.get("description", ""), "targets": row.get("targets", {})}


def _account_record(row: dict) -> dict:
    return {"name": row["name"].strip(),
            "customer_number": str(row.get("customer_number") or "").strip() or None,
            "domains": [normalise_domain(d) for d in row.get("domains", [])],
            "contract": row.get("contract", "").strip() or None,
            "language": row.get("language", "")}


def _contact_record(row: dict, place: Place) -> dict:
    address = normalise_address(row["address"])
    problem = guards.undeliverable(address)
    if problem:
        raise place.error("contact" if place.csv else "address", problem)
    return {"address": address, "name": row.get("name", ""),
            "account": str(row.get("account") or "").strip(), "phone": row.get("phone", ""),
            "language": row.get("language", "")}


# -- checks ----------------------------------------------------------------------------------

def _check_duplicates(listing: Listing) -> None:
    """No contract, account (number, name, domain) or contact is defined twice in a file."""
    checks = (("contracts", "name", "name"), ("accounts", "name", "name"),
              ("accounts", "customer_number", "customer_number"),
              ("accounts", "domains", "domains"), ("contacts", "address", "address"))
    for kind, key, column in checks:
        seen: dict[str, Place] = {}
        for record, place in getattr(listing, kind):
            values = record[key] if key == "domains" else [record[key]]
            for value in filter(None, values):
                if value in seen:
                    raise place.error(_column(place, kind, column), f"{value!r} is defined "
                                      f"twice (also {seen[value].label} on line "
                                      f"{seen[value].line})")
                seen[value] = place


def _column(place: Place, kind: str, key: str) -> str:
    """The CSV column of a record key (a CSV names accounts and contacts differently)."""
    if not place.csv:
        return key
    return {("accounts", "name"): "account", ("contacts", "address"): "contact",
            ("contracts", "name"): "contract"}.get((kind, key), key)


def _check_references(store: Store, listing: Listing) -> None:
    """Every contract an account names and every account a contact names exists, in the
    file or in the database."""
    contracts = {record["name"] for record, _ in listing.contracts}
    for record, place in listing.accounts:
        name = record["contract"]
        if name and name not in contracts and q.contract(store, name) is None:
            hint = " (give contract_tier to create it)" if place.csv else ""
            raise place.error("contract", f"contract {name!r} is not defined in this file or "
                                          f"the database{hint}")
    accounts = {k for record, _ in listing.accounts
                for k in (record["name"], record["customer_number"]) if k}
    for record, place in listing.contacts:
        name = record["account"]
        if name and name not in accounts and q.account_by_customer_number(store, name) is None:
            raise place.error(_column(place, "contacts", "account"),
                              f"account {name!r} is not defined in this file, and no account "
                              "in the database has this customer number")


def _check_contract(record: dict, policy: Policy, place: Place) -> None:
    try:
        targets = convert(dict[str, Targets], record["targets"], "targets")
        contract = ContractPolicy(name=record["name"], tier=record["tier"],
                                  raise_levels=-1 if record["raise_levels"] is None
                                  else record["raise_levels"],
                                  calendar=record["calendar"], targets=targets)
        validate_contract(contract, policy, place.label)
    except (ConfigError, ValueError) as exc:
        key = next((k for k in ("calendar", "raise_levels", "targets") if k in str(exc)), None)
        raise place.error(None if place.csv else key, str(exc)) from exc


# -- writing ---------------------------------------------------------------------------------

def _write(store: Store, listing: Listing) -> dict[str, dict[str, int]]:
    """Write a checked listing (inside the import's transaction); added and updated per kind."""
    counts = {kind: {"added": 0, "updated": 0} for kind in KINDS}
    for record, _ in listing.contracts:
        exists = q.contract(store, record["name"]) is not None
        if exists and not listing.replace_contracts:
            continue
        q.upsert_contract(store, record)
        counts["contracts"]["updated" if exists else "added"] += 1
    ids: dict[str, int] = {}
    for record, _ in listing.accounts:
        exists = q.account_by_key(store, record["customer_number"], record["name"])
        account_id = q.upsert_account(store, record)
        ids.update({k: account_id for k in (record["name"], record["customer_number"]) if k})
        counts["accounts"]["updated" if exists else "added"] += 1
    for record, _ in listing.contacts:
        account = record["account"]
        account_id = ids.get(account) or (
            q.account_by_customer_number(store, account)["id"] if account else None)
        exists = q.contact_by_address(store, record["address"]) is not None
        q.upsert_contact(store, {"address": record["address"], "name": record["name"],
                                 "account_id": account_id, "phone": record["phone"],
                                 "language": record["language"]})
        counts["contacts"]["updated" if exists else "added"] += 1
    return counts

