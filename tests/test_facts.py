"""Facts found in support mails and what to ask for (mailbot.facts), as tables."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailbot.reading.facts import (
    ASKABLE_FACTS,
    FACT_KEYS,
    FactsConfig,
    compile_facts,
    extract_facts,
    missing_facts,
)

PATTERNS = compile_facts(FactsConfig())


@pytest.mark.parametrize(
    ("text", "key", "values"),
    [
        ("Kundennummer: 12345", "customer_number", ("12345",)),
        ("Meine Kd.-Nr. 12345.", "customer_number", ("12345",)),
        ("KNr 778899", "customer_number", ("778899",)),
        ("Kunden-Nr.: K-4711", "customer_number", ("K-4711",)),
        ("unsere Kundennummer lautet 55501", "customer_number", ("55501",)),
        ("customer no. 12345", "customer_number", ("12345",)),
        ("Customer number 98765, thanks", "customer_number", ("98765",)),
        ("Auftragsnummer: A-2026-17", "order_number", ("A-2026-17",)),
        ("Bestellnummer 100234", "order_number", ("100234",)),
        ("my order number is 4455", "order_number", ("4455",)),
        ("Rechnungsnummer RE-2026-0042", "invoice_number", ("RE-2026-0042",)),
        ("Rechnung Nr. 881", "invoice_number", ("881",)),
        ("invoice #2026-118", "invoice_number", ("2026-118",)),
        ("Ticket-Nr. 5123", "ticket_number", ("5123",)),
        ("see ticket #77812", "ticket_number", ("77812",)),
        ("Vorgangsnummer: V-1001", "ticket_number", ("V-1001",)),
        ("Wir nutzen Version 4.2.1", "version", ("4.2.1",)),
        ("Softwareversion: 12.0", "version", ("12.0",)),
        ("App-Version 3.1b", "version", ("3.1b",)),
        ("since v4.2 it fails", "version", ("v4.2",)),
        ("Build 1234", "version", ("Build 1234",)),
        ("PC mit Windows 11", "device", ("Windows 11",)),
        ("unter macOS 14.2", "device", ("macOS 14.2",)),
        ("iPhone 15 Pro mit iOS 17.1", "device", ("iPhone 15 Pro", "iOS 17.1")),
        ("Android 14 on a Samsung Galaxy S23", "device", ("Android 14", "Samsung Galaxy S23")),
        ("Server: Ubuntu 22.04", "device", ("Ubuntu 22.04",)),
        ("Fehlermeldung: Datenbank nicht gefunden", "error_message", ("Datenbank nicht gefunden",)),
        ("Error: connection refused\n", "error_message", ("connection refused",)),
        ("Es kommt Fehlercode 0x80070005", "error_message", ("Fehlercode 0x80070005",)),
        ("The page shows Error 500", "error_message", ("Error 500",)),
        ("NullPointerException in Export", "error_message", ("NullPointerException",)),
        ("Es erscheint „Zugriff verweigert“.", "error_message", ("Zugriff verweigert",)),
        ('It says "License expired" on start', "error_message", ("License expired",)),
    ],
)
def test_facts_found_in_german_and_english(text, key, values):
    """Numbers, version, device and error text are recognised in both languages."""
    assert extract_facts("", text, PATTERNS).get(key) == values


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("Meine Kundennummer habe ich nicht zur Hand", "customer_number"),
        ("Bitte nehmen Sie die neueste Version", "version"),
        ("Fehler beim Speichern", "error_message"),
        ("Die Rechnung vom Montag", "invoice_number"),
        ("> Kundennummer: 12345", "customer_number"),
        ("The terror of it all", "error_message"),
    ],
)
def test_no_fact_where_there_is_none(text, key):
    """Words without a value, and quoted history, are not mistaken for facts."""
    assert key not in extract_facts("", text, PATTERNS)


def test_subject_counts_and_duplicates_collapse():
    """A fact in the subject counts; the same value twice is kept once."""
    facts = extract_facts("Fehler in Version 4.2", "Version 4.2 unter Windows 11", PATTERNS)
    assert facts == {"version": ("4.2",), "device": ("Windows 11",)}


def test_only_the_first_part_of_the_body_is_read():
    """A customer number far down a huge mail is not looked for (bounded work per mail)."""
    assert extract_facts("", "x\n" * 10_000 + "Kundennummer: 12345", PATTERNS) == {}


@pytest.mark.parametrize(
    "body",
    ["a" * 100_000, "Version " * 20_000, "Kundennummer " * 10_000, "1." * 50_000, "ä-" * 50_000],
)
def test_pathological_text_gives_no_facts(body):
    """Odd input yields no made-up facts and does not hide a real one next to it.

    How long such input takes is measured by `python bench/hostile.py --only a`, not here.
    """
    assert extract_facts(body[:1000], body, PATTERNS) == {}
    assert extract_facts("Kundennummer 12345", body, PATTERNS) == {"customer_number": ("12345",)}


@pytest.mark.parametrize(
    ("found", "sender_known", "problem", "missing"),
    [
        ({}, False, False, ("customer_number",)),
        ({}, True, False, ()),
        ({"customer_number": ("1",)}, False, False, ()),
        ({}, False, True, ("customer_number", "version", "device", "error_message")),
        ({}, True, True, ("version", "device", "error_message")),
        ({"version": ("4.2",)}, True, True, ("device", "error_message")),
        ({"device": ("iOS 17",), "error_message": ("x",)}, True, True, ("version",)),
        ({"version": ("1",), "device": ("d",), "error_message": ("e",)}, True, True, ()),
        ({"order_number": ("7",)}, False, False, ("customer_number",)),
    ],
)
def test_missing_facts(found, sender_known, problem, missing):
    """The acknowledgement asks for exactly what is missing, in a stable order."""
    assert missing_facts(found, sender_known, problem) == missing


def test_patterns_are_configurable():
    """Operators can add their own patterns, e.g. a product's serial number as version."""
    patterns = compile_facts(FactsConfig(version=(r"serial\s(?P<value>SN\d+)",)))
    assert extract_facts("", "serial SN123, Version 2.0", patterns) == {"version": ("SN123",)}


@pytest.mark.parametrize(
    ("config", "key"),
    [
        (FactsConfig(device=("windows", "(")), "facts.device[1]"),
        (FactsConfig(version=("",)), "facts.version[0]"),
        (FactsConfig(scan_chars=0), "facts.scan_chars"),
    ],
)
def test_bad_pattern_names_the_key(config, key):
    """A broken regex in mailbot.toml is reported with its key."""
    with pytest.raises(ValueError, match="^" + re.escape(key)):
        compile_facts(config)


def test_askable_facts_are_known_keys():
    """Everything missing_facts can ask for is a fact extract_facts looks for."""
    assert set(ASKABLE_FACTS) <= set(FACT_KEYS)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300), st.text(max_size=3000))
def test_any_text_gives_well_formed_facts(subject, body):
    """Whatever a mail contains, facts are known keys with non-empty values."""
    facts = extract_facts(subject, body, PATTERNS)
    assert set(facts) <= set(FACT_KEYS)
    assert all(values and all(values) for values in facts.values())
