"""The house rules of the package: each folder imports only the folders below it.

The order is the README's map: app on top, then inbound and web, tickets, the Context,
outbound, oauth, settings, policy and status, and reading and store at the bottom.  A module may
import its own folder and any folder of a lower floor, never one of its own floor or above.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "mailbot"
FLOORS = {
    "store": 0, "reading": 0,
    "policy": 1, "status": 1,
    "settings": 2,
    "oauth": 3,
    "outbound": 4,
    "context": 5,
    "tickets": 6,
    "inbound": 7, "web": 7,
    "app": 8,
    "__main__": 9,
}
# Libraries that belong to one folder only.
OWNERS = {"sqlite_utils": "store", "psycopg": "store", "aiosmtpd": "inbound",
          "imapclient": "inbound", "aiohttp": "web", "authres": "reading",
          "charset_normalizer": "reading", "tnefparse": "reading",
          "aiosmtplib": "outbound", "apscheduler": "app", "multiprocessing": "inbound",
          "msal": "oauth", "google": "oauth", "requests": "oauth"}


def room(path: Path) -> str:
    """The folder (or top-level module) a source file belongs to."""
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return parts[0]


def imports(path: Path) -> set[str]:
    """Every module name a file imports (absolute names; the package uses no relative ones)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            assert node.level == 0, f"{path}: relative import"
            found.add(node.module)
    return found


SOURCES = sorted(p for p in PACKAGE.rglob("*.py") if p.name != "__init__.py")


def test_every_folder_has_a_floor() -> None:
    """A new folder must be placed in the order (and in the README's map)."""
    assert {room(p) for p in SOURCES} == set(FLOORS)


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_run_downward_only(path: Path) -> None:
    """No module imports a folder on its own floor or above (its own folder is fine)."""
    here = room(path)
    wrong = []
    for name in imports(path):
        top, _, rest = name.partition(".")
        if top == "mailbot":
            there = rest.partition(".")[0]
            if there != here and FLOORS[there] >= FLOORS[here]:
                wrong.append(name)
        elif top in OWNERS and OWNERS[top] != here:
            wrong.append(f"{name} (belongs to {OWNERS[top]}/)")
    assert not wrong, f"{path.relative_to(PACKAGE)} imports {sorted(wrong)}"
