"""Public holidays of a country in one year, from the ``holidays`` package, kept between
processes.

Asked for one country, the ``holidays`` package imports every country it knows: over a
tenth of a second, most of the start of a `mailbot ingest` that an MTA runs for each mail.
A year's holidays never change for one installed version of the package, so the dates are
kept as a small file in the data directory's ``cache`` folder, named by a hash of the
question and of the installed package (its path, size and modification time: an upgrade
asks anew).  Only a process that files mail writes the file (:func:`kept_in`), inside a
data directory that exists; checking a config only reads it (:func:`read_from`), so
`mailbot check-config`, a backup or a move to another store change nothing there.  A file
that cannot be read or written, or holds anything but that year's dates, is ignored and
the dates computed again: the cache never stops a start.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.util
import json
import os
from datetime import date
from pathlib import Path

from mailbot.policy.bizhours import Holidays, country_holidays
from mailbot.store.blobs import replace_private

CACHE_FOLDER = "cache"  # below the data directory


def kept_in(data_dir: Path) -> Holidays:
    """A calendar's public holidays (:data:`~mailbot.policy.bizhours.Holidays`), read from
    ``data_dir`` and written there when they were not."""
    return functools.partial(public_holidays, data_dir=str(data_dir), write=True)


def read_from(data_dir: Path) -> Holidays:
    """A calendar's public holidays, read from ``data_dir`` when they are there, never
    written (a config check)."""
    return functools.partial(public_holidays, data_dir=str(data_dir), write=False)


@functools.lru_cache(maxsize=64)
def public_holidays(country: str, subdiv: str, categories: tuple[str, ...], year: int,
                    data_dir: str, write: bool) -> frozenset[date]:
    """:func:`~mailbot.policy.bizhours.country_holidays`, computed once per process, and
    read from ``data_dir`` (and kept there if ``write``) when it is an absolute path (a
    config read from its file; any other keeps nothing)."""
    kept = _kept_at(Path(data_dir), (country, subdiv, categories, year)) \
        if os.path.isabs(data_dir) else None
    if kept is not None:
        found = _read(kept, year)
        if found is not None:
            return found
    found = country_holidays(country, subdiv, categories, year)
    if kept is not None and write:
        _write(kept, found)
    return found


def _kept_at(data_dir: Path, question: tuple) -> Path | None:
    """The cache file of one question, or None when the package cannot be found."""
    spec = importlib.util.find_spec("holidays")
    if spec is None or not spec.origin:
        return None
    try:
        package = os.stat(spec.origin)
    except OSError:
        return None
    key = json.dumps([spec.origin, package.st_size, package.st_mtime_ns, *question[:2],
                      list(question[2]), question[3]])
    name = f"holidays-{hashlib.sha256(key.encode()).hexdigest()[:32]}.json"
    return data_dir / CACHE_FOLDER / name


def _read(path: Path, year: int) -> frozenset[date] | None:
    """The dates kept in ``path`` if it holds a list of dates of ``year``, else None."""
    try:
        found = frozenset(date.fromisoformat(day) for day in json.loads(path.read_bytes()))
    except (OSError, ValueError, TypeError):
        return None
    return found if all(day.year == year for day in found) else None


def _write(path: Path, found: frozenset[date]) -> None:
    """Keep the dates (0600 in a 0700 folder, written whole or not at all); nothing when
    the data directory does not exist yet or cannot be written."""
    if not path.parent.parent.is_dir():
        return
    with contextlib.suppress(OSError):
        path.parent.mkdir(mode=0o700, exist_ok=True)
        replace_private(path, json.dumps(sorted(day.isoformat() for day in found)))
