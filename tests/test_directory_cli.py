"""The customer directory from the command line: strict imports (a refusal names file, line
and key, and writes nothing), what an import reports, `contacts list|show` and
`accounts show`."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from daemon_util import REPO, Instance
from mails import build_mail

EXAMPLES = REPO / "mailbot" / "examples"
NOW = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)  # Tuesday 10:00 in Berlin

GOOD = '''\
[[contracts]]
name = "wartung"
tier = "maintenance"

[[accounts]]
name = "Muster GmbH"
customer_number = "10001"
domains = ["muster.example"]
contract = "wartung"

[[contacts]]
address = "anna@muster.example"
name = "Anna Meier"
account = "10001"
'''


@pytest.fixture
def bot(tmp_path) -> Instance:
    """A mailbot installation without a daemon (the CLI is enough)."""
    instance = Instance(tmp_path)
    instance.settings["listener"]["enabled"] = False
    instance.write()
    return instance


def nothing_written(bot: Instance) -> bool:
    """Whether the directory is still empty: no contract, account or contact."""
    return sum(bot.count(t) for t in ("contracts", "accounts", "contacts")) == 0


def test_import_reports_what_it_added_and_then_updated(bot):
    """A first import adds every contract, account and contact; the same file again updates
    them; the CSV example creates its contracts from contract_tier and says so."""
    toml = str(EXAMPLES / "accounts.example.toml")
    first = bot.cli("accounts", "import", toml)
    assert first.exit_code == 0, first.output
    assert first.stdout.strip() == ("contracts: 3 added, 0 updated; accounts: 3 added, "
                                    "0 updated; contacts: 2 added, 0 updated")
    again = bot.cli("accounts", "import", toml)
    assert again.stdout.strip() == ("contracts: 0 added, 3 updated; accounts: 0 added, "
                                    "3 updated; contacts: 0 added, 2 updated")


def test_a_csv_import_creates_its_contracts(tmp_path):
    """The CSV example on an empty database adds three contracts (it said "0 contracts")."""
    bot = Instance(tmp_path)
    result = bot.cli("accounts", "import", str(EXAMPLES / "accounts.example.csv"))
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == ("contracts: 3 added, 0 updated; accounts: 3 added, "
                                     "0 updated; contacts: 2 added, 0 updated")
    assert {c["account"] for c in bot.cli_json("contacts", "list")} == {
        "Muster Maschinenbau GmbH", "Example Ltd"}


# Each case: the file's text, then what the error must name: line, the key, the reason.
TOML_REFUSALS = {
    "unknown table": (GOOD + '\n[[contacs]]\naddress = "b@muster.example"\n',
                      16, "contacs", "unknown table"),
    "unknown key": (GOOD.replace('contract = "wartung"', 'contrakt = "wartung"'),
                    9, "accounts[0].contrakt", "unknown key"),
    "unknown contract": (GOOD.replace('contract = "wartung"', 'contract = "gold"'),
                         9, "accounts[0].contract", "contract 'gold' is not defined"),
    "duplicate contract": (GOOD + '\n[[contracts]]\nname = "wartung"\n',
                           17, "contracts[1].name", "'wartung' is defined twice"),
    "duplicate contact": (GOOD + '\n[[contacts]]\naddress = "Anna@Muster.example"\n',
                          17, "contacts[1].address", "'anna@muster.example' is defined twice"),
    "duplicate domain": (GOOD + '\n[[accounts]]\nname = "Other"\ndomains = ["muster.example"]\n',
                         18, "accounts[1].domains", "is defined twice"),
    "unknown account": (GOOD.replace('account = "10001"', 'account = "99999"'),
                        14, "contacts[0].account", "account '99999' is not defined"),
    "wrong type": (GOOD.replace('domains = ["muster.example"]', 'domains = "muster.example"'),
                   8, "accounts[0].domains", "expected list"),
    "missing name": (GOOD.replace('name = "Muster GmbH"\n', ''),
                     5, "accounts[0].name", "is required"),
    "key twice in a table": (GOOD.replace('tier = "maintenance"',
                                          'tier = "maintenance"\ntier = "none"'),
                             4, "not valid TOML", "line 4"),
}


@pytest.mark.parametrize("case", TOML_REFUSALS, ids=list(TOML_REFUSALS))
def test_a_bad_toml_list_is_refused_naming_line_and_key_and_nothing_is_written(bot, tmp_path,
                                                                               case):
    """Every refusal names file:line and the key; the good rows before it are not kept."""
    text, line, key, reason = TOML_REFUSALS[case]
    listing = tmp_path / "kunden.toml"
    listing.write_text(text, encoding="utf-8")
    result = bot.cli("accounts", "import", str(listing))
    assert result.exit_code == 65, result.output
    assert f"{listing}:{line}: {key}" in result.stderr or (
        f"{listing}: {key}" in result.stderr and f"line {line}" in reason), result.stderr
    assert reason in result.stderr, result.stderr
    assert nothing_written(bot)


CSV_HEADER = "account,customer_number,domains,contract,contract_tier,language,contact,name,phone\n"
CSV_GOOD_ROW = "Muster GmbH,10001,muster.example,wartung,maintenance,de,anna@muster.example,Anna,\n"
CSV_REFUSALS = {
    "unknown column": (CSV_HEADER.replace("phone", "fax") + CSV_GOOD_ROW,
                       1, "column fax", "unknown column"),
    "contract without a tier": (CSV_HEADER + CSV_GOOD_ROW
                                + "Other,10002,other.example,gold,,de,,,\n",
                                3, "column contract", "give contract_tier to create it"),
    "duplicate contact": (CSV_HEADER + CSV_GOOD_ROW + CSV_GOOD_ROW,
                          3, "column contact", "defined twice"),
    "account changes its number": (CSV_HEADER + CSV_GOOD_ROW
                                   + "Muster GmbH,10009,,,,de,ben@muster.example,Ben,\n",
                                   3, "column customer_number", "has '10001' on line 2"),
    "empty row": (CSV_HEADER + CSV_GOOD_ROW + ",,,,,,,,\n",
                  3, "row", "a row needs an account or a contact"),
    "too many fields": (CSV_HEADER + CSV_GOOD_ROW.rstrip() + ",extra\n",
                        2, "row", "more fields than the 9 columns"),
}


@pytest.mark.parametrize("case", CSV_REFUSALS, ids=list(CSV_REFUSALS))
def test_a_bad_csv_list_is_refused_naming_row_and_column(bot, tmp_path, case):
    """A CSV refusal names file:row and the column; nothing of the file is written."""
    text, line, column, reason = CSV_REFUSALS[case]
    listing = tmp_path / "kunden.csv"
    listing.write_text(text, encoding="utf-8")
    result = bot.cli("accounts", "import", str(listing))
    assert result.exit_code == 65, result.output
    assert f"{listing}:{line}: {column}: " in result.stderr, result.stderr
    assert reason in result.stderr, result.stderr
    assert nothing_written(bot)


def test_a_contract_with_an_unknown_calendar_is_refused_at_its_key(bot, tmp_path):
    """The policy check of a contract names the line of its calendar key."""
    listing = tmp_path / "kunden.toml"
    listing.write_text(GOOD.replace('tier = "maintenance"',
                                    'tier = "maintenance"\ncalendar = "mars"'), encoding="utf-8")
    result = bot.cli("accounts", "import", str(listing))
    assert result.exit_code == 65
    assert f"{listing}:4: contracts[0].calendar: " in result.stderr, result.stderr
    assert "unknown calendar 'mars'" in result.stderr
    assert nothing_written(bot)


def test_a_contract_of_the_database_may_be_named(bot, tmp_path):
    """An account may name a contract imported before, not only one of its own file."""
    first = tmp_path / "vertraege.toml"
    first.write_text('[[contracts]]\nname = "gold"\ntier = "maintenance"\n', encoding="utf-8")
    assert bot.cli("accounts", "import", str(first)).exit_code == 0
    second = tmp_path / "kunden.toml"
    second.write_text('[[accounts]]\nname = "Neu AG"\ncontract = "gold"\n', encoding="utf-8")
    result = bot.cli("accounts", "import", str(second))
    assert result.exit_code == 0, result.output
    assert "accounts: 1 added" in result.stdout


def test_accounts_show_has_contract_contacts_and_open_tickets(make_desk):
    """`accounts show` by number or by name: the contract's terms, the contacts and the
    open tickets (created in local time); an unknown account exits 1."""
    desk = make_desk(NOW)
    bot = desk.instance
    assert bot.cli("accounts", "import", str(EXAMPLES / "accounts.example.toml")).exit_code == 0
    number = desk.receive(build_mail(sender=("Anna Meier", "anna.meier@muster-maschinenbau.de"),
                                     subject="Presse steht")).ticket_number
    shown = bot.cli_json("accounts", "show", "10001")
    assert shown["contract"]["name"] == "wartung" and shown["contract"]["tier"] == "maintenance"
    assert [c["address"] for c in shown["contacts"]] == ["anna.meier@muster-maschinenbau.de"]
    assert [t["number"] for t in shown["open_tickets"]] == [number]
    assert bot.cli_json("accounts", "show", "Muster Maschinenbau GmbH") == shown
    text = bot.cli("accounts", "show", "10001").stdout
    assert "contract wartung (tier maintenance" in text
    assert "ADDRESS" in text and "NUMBER" in text
    assert f"{number}  " in text and "2026-11-24 10:00" in text  # Berlin, not UTC
    missing = bot.cli("accounts", "show", "99999")
    assert missing.exit_code == 1 and "no account '99999'" in missing.stderr


def test_accounts_show_refuses_a_name_two_accounts_share(bot, tmp_path):
    """Two accounts of one name: `accounts show NAME` says to use the number."""
    listing = tmp_path / "kunden.toml"
    listing.write_text('[[accounts]]\nname = "Bau"\ncustomer_number = "1"\n\n'
                       '[[accounts]]\nname = "Bau AG"\ncustomer_number = "2"\n', encoding="utf-8")
    assert bot.cli("accounts", "import", str(listing)).exit_code == 0
    listing.write_text('[[accounts]]\nname = "Bau"\ncustomer_number = "2"\n', encoding="utf-8")
    assert bot.cli("accounts", "import", str(listing)).exit_code == 0
    result = bot.cli("accounts", "show", "Bau")
    assert result.exit_code == 1
    assert "2 accounts are named 'Bau' (customer numbers 1, 2)" in result.stderr


def test_contacts_list_pages_and_contacts_show(make_desk):
    """`contacts list` pages by address; `contacts show` has the account and the tickets."""
    desk = make_desk(NOW)
    bot = desk.instance
    assert bot.cli("accounts", "import", str(EXAMPLES / "accounts.example.toml")).exit_code == 0
    number = desk.receive(build_mail(sender=("John Smith", "j.smith@gmail.com"),
                                     subject="Printer jammed")).ticket_number
    page = bot.cli_json("contacts", "list", "--limit", "1", "--offset", "1")
    assert [c["address"] for c in page] == ["j.smith@gmail.com"]
    assert bot.cli_json("contacts", "list", "--offset", "2") == []
    shown = bot.cli_json("contacts", "show", "John Smith <J.Smith@gmail.com>")
    assert (shown["name"], shown["account"], shown["customer_number"]) == (
        "John Smith", "Example Ltd", "20001")
    assert [t["number"] for t in shown["tickets"]] == [number]
    text = bot.cli("contacts", "show", "j.smith@gmail.com").stdout
    assert "account Example Ltd (20001, contract ohne)" in text
    assert "Printer jammed" in text and "2026-11-24 10:00" in text
    missing = bot.cli("contacts", "show", "nobody@example.org")
    assert missing.exit_code == 1 and "no contact nobody@example.org" in missing.stderr
