"""The `mailbot` command: run the daemon, ingest mail, inspect tickets, outbox and quarantine.

The commands that only read (lists, details, status) open the store alone: this module
imports no more than they need, and the commands that file, send or change import their
machinery inside, so that `mailbot tickets list` answers within 0.2 s.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from mailbot.app import logs, reports
from mailbot.app import spam as held_reports
from mailbot.settings import config as config_mod
from mailbot.settings import team
from mailbot.settings.schema import ConfigError
from mailbot.store import SchemaMismatch, Store, TemporaryStoreError
from mailbot.store import directory as dq
from mailbot.store import inbound as iq
from mailbot.store import outbox as oq

if TYPE_CHECKING:
    from mailbot.context import Context
    from mailbot.tickets.outcome import Outcome

EX_DATAERR = 65
EX_TEMPFAIL = 75
EX_CONFIG = 78
EX_UNAVAILABLE = 69
EX_NOT_RUNNING = 3  # as `systemctl status` / LSB: the program is not running
# All `mailbot ingest` says about a fault of ours: an MTA copies it into its deferral notes.
TEMPFAIL_SENTENCE = "temporary failure, please try again later"
SYSLOG_SOCKET = "/dev/log"


def _load(obj: dict, compile_policy: bool = True) -> config_mod.Config:
    """The checked config (exit 78 with file, key and reason when it is not usable)."""
    try:
        config = config_mod.load(config_mod.config_path(obj["config_path"]),
                                 require_file=obj["config_path"] is not None,
                                 compile_policy=compile_policy)
        team.load_agents(config)  # a broken agents file stops the start like a bad config
        return config
    except ConfigError as exc:
        click.echo(f"config error: {exc}", err=True)
        sys.exit(EX_CONFIG)


def _load_checked(obj: dict, blockers_only: bool = False) -> config_mod.Config:
    """The config, once settings/checks.py finds no problem on this machine (only those
    that stop the daemon with ``blockers_only``); else every problem is printed like a
    config error and the command exits 78."""
    from mailbot.outbound.wording import LANGUAGES
    from mailbot.settings import checks

    config = _load(obj)
    check = checks.blockers if blockers_only else checks.problems
    found = check(config, str(config_mod.config_path(obj["config_path"])), LANGUAGES)
    for problem in found:
        click.echo(f"config error: {problem}", err=True)
    if found:
        sys.exit(EX_CONFIG)
    return config


def _setup_logging(level: str, log_format: str = "text") -> None:
    logs.setup(level, log_format)


def _context(obj: dict) -> Context:
    """The whole context (store, composer, policy, team), for commands that file or send."""
    from mailbot.context import open_context

    config = _load(obj)
    _setup_logging(config.service.log_level, config.service.log_format)
    return _opened(lambda: open_context(config))


def _desk(obj: dict) -> tuple[config_mod.Config, Store]:
    """The config and the store alone, for the commands that only read (they apply no
    policy: its calendars are not compiled)."""
    config = _load(obj, compile_policy=False)
    _setup_logging(config.service.log_level, config.service.log_format)
    return config, _opened(lambda: Store(config.database, config.service.busy_timeout_seconds,
                                         pool_size=config.store.pool_size))


def _opened(open_store):
    """What ``open_store`` opens; an old schema is refused with exit 78, as other commands
    never migrate behind a daemon (`mailbot migrate` does it)."""
    try:
        return open_store()
    except SchemaMismatch as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EX_CONFIG)


def _emit(data: object, as_json: bool, text: str) -> None:
    click.echo(json.dumps(data, ensure_ascii=False, indent=2, default=str) if as_json else text)


@click.group()
@click.version_option(package_name="mailbot", message="mailbot %(version)s")
@click.option("--config", "config_path", default=None, envvar="MAILBOT_CONFIG",
              help="Config file (default ./mailbot.toml, or $MAILBOT_CONFIG).")
@click.pass_context
def main(click_ctx: click.Context, config_path: str | None) -> None:
    """mailbot: turns a support mailbox into tickets."""
    click_ctx.obj = {"config_path": config_path}


@main.command()
@click.pass_obj
def run(obj: dict) -> None:
    """Run the daemon: listener, IMAP sources, outbox sender, scheduler, web."""
    from mailbot.app import daemon

    config = _load_checked(obj, blockers_only=True)
    _setup_logging(config.service.log_level, config.service.log_format)
    try:
        daemon.run(config)
    except daemon.StartupError as exc:
        click.echo(f"cannot start: {exc}", err=True)
        sys.exit(EX_UNAVAILABLE)
    except SchemaMismatch as exc:  # 78: restarting cannot help until someone migrates
        click.echo(f"cannot start: {exc}", err=True)
        sys.exit(EX_CONFIG)


@main.command("check-config")
@click.option("--connect", is_flag=True,
              help="Also log in to each IMAP mailbox (selecting its folder) and the relay.")
@click.pass_obj
def check_config(obj: dict, connect: bool) -> None:
    """Check the config and what it needs on this machine, and print a summary.

    Exit 78 when the config cannot work on this machine (each problem names file, key
    and reason; `mailbot run` refuses the same ones but an unwritable Maildir); with
    --connect, 69 when a mailbox or the relay cannot be reached or refuses
    the login (one line each says which and why).
    """
    config = _load_checked(obj)
    click.echo(reports.config_summary(config))
    if connect and not _connect_all(config):
        sys.exit(EX_UNAVAILABLE)


def _connect_all(config: config_mod.Config) -> bool:
    """Log in to each IMAP mailbox and the relay as the daemon does, printing one line
    each ("ok" or the cause); True when all are ok."""
    import asyncio

    from mailbot.inbound import imap
    from mailbot.outbound import transports

    results = []
    for cfg in config.imap:
        results.append(imap.probe(cfg))
        click.echo(f"imap {cfg.label} ({cfg.host}:{cfg.effective_port}, folder {cfg.folder}): "
                   f"{results[-1] or 'ok'}")
    if config.relay.host:
        relay = config.relay
        results.append(asyncio.run(transports.probe(relay)))
        click.echo(f"relay {relay.host}:{relay.port} ({relay.security}): {results[-1] or 'ok'}")
    if not results:
        click.echo("nothing to connect to: no [[imap]] mailbox, no relay host")
    return not any(results)


@main.command("init")
@click.argument("directory", default=".", type=click.Path(file_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help="Overwrite files that exist.")
def init(directory: Path, force: bool) -> None:
    """Write a commented mailbot.toml and accounts.example.toml into DIRECTORY (default: here).

    The config gets a fresh signing secret and a data directory: /var/lib/NAME for a
    config in /etc/NAME (the Debian layout), else ./data beside the config.  Files are
    0600, a new DIRECTORY 0700.  Exit 1 when one of the files exists (then nothing is
    written; --force overwrites) or DIRECTORY cannot be written.
    """
    import secrets

    files = {"mailbot.toml": config_mod.example_config(data_dir_for(directory),
                                                       secrets.token_urlsafe(48)),
             "accounts.example.toml": config_mod.example_text("accounts.example.toml")}
    taken = [str(directory / name) for name in files if (directory / name).exists()]
    if taken and not force:
        click.echo(f"not written: {', '.join(taken)} already there (--force overwrites)",
                   err=True)
        sys.exit(1)
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        for name, text in files.items():
            _write_private(directory / name, text)
            click.echo(f"wrote {directory / name}")
    except OSError as exc:
        click.echo(f"cannot write {exc.filename}: {exc.strerror}", err=True)
        sys.exit(1)
    config = directory / "mailbot.toml"
    click.echo(f"next steps:\n  1. edit {config}: [support] address, where mail comes in "
               "([listener] or [[imap]]) and goes out ([relay])\n"
               f"  2. mailbot --config {config} check-config --connect")


def data_dir_for(directory: Path) -> str:
    """The data directory `mailbot init` writes: /var/lib/NAME for /etc/NAME (where the
    unit's StateDirectory= puts it), else "data", which is ./data beside the config."""
    resolved = directory.resolve()
    return f"/var/lib/{resolved.name}" if resolved.parent == Path("/etc") else "data"


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to a file only its owner may read (it holds the signing secret)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # an overwritten file keeps no wider mode
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)


def _upkeep(action) -> None:
    """Run a data-directory command: print what it says, exit with its status."""
    from mailbot.app.upkeep import UpkeepError

    try:
        text, code = action()
    except UpkeepError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(exc.code)
    click.echo(text)
    sys.exit(code)


@main.command()
@click.option("--check", is_flag=True, help="Only say whether migrations are pending "
              "(exit 0 current, 1 pending); safe beside a running daemon.")
@click.option("--to", "target", metavar="URL", default=None,
              help="Move this SQLite installation (database, raw mails, attachments) into "
              "the new or empty PostgreSQL database at URL (postgresql://user@host:5432/db), "
              "verified; nothing here is changed.")
@click.option("--password-file", type=click.Path(dir_okay=False, path_type=Path),
              help="With --to: the database password, when the URL carries none (else "
              "libpq's PGPASSWORD or ~/.pgpass).")
@click.pass_obj
def migrate(obj: dict, check: bool, target: str | None, password_file: Path | None) -> None:
    """Bring the database to this mailbot's schema, or move it into PostgreSQL with --to
    (refused while the daemon runs)."""
    from mailbot.app import upkeep

    if (password_file is not None and target is None) or (check and target is not None):
        raise click.UsageError("--password-file goes with --to, and --check without it")
    config = _load(obj)
    if target is not None:
        _upkeep(lambda: upkeep.migrate_to(config, target, password_file))
    else:
        _upkeep(lambda: upkeep.migrate(config, check))


@main.command()
@click.argument("dest", type=click.Path(path_type=Path))
@click.pass_obj
def backup(obj: dict, dest: Path) -> None:
    """Back up database, spool, attachments and signing key into DEST (new or empty),
    consistent while the daemon runs, and verified."""
    from mailbot.app import upkeep

    config = _load(obj)
    _upkeep(lambda: upkeep.make_backup(config, dest))


@main.command()
@click.argument("src", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help="Restore into a data directory that is not "
              "empty: its contents are moved aside into replaced-* inside it.")
@click.pass_obj
def restore(obj: dict, src: Path, force: bool) -> None:
    """Verify a backup made by `mailbot backup` and restore it into the data directory."""
    from mailbot.app import upkeep

    config = _load(obj)
    _upkeep(lambda: upkeep.restore(config, src, force))


@main.command()
@click.argument("files", nargs=-1, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--sender", default=None, help="The envelope sender, as the MTA's pipe gives "
              "it (Postfix: ${sender}); empty or MAILER-DAEMON for the null sender.")
@click.option("--recipient", "recipients", multiple=True,
              help="An envelope recipient (Postfix: ${recipient}); may repeat.")
@click.option("--verbose", is_flag=True, help="Log to stderr (else to syslog): never under "
              "an MTA, which copies stderr into its bounces.")
@click.pass_obj
def ingest(obj: dict, files: tuple[Path, ...], sender: str | None,
           recipients: tuple[str, ...], verbose: bool) -> None:
    """File one mail from stdin, or the given files (for an MTA pipe).

    Exit 0 when filed or quarantined (kept: the MTA must not bounce it), 75 on a temporary
    failure (the MTA retries), 65 only for a mail refused by ``[limits] oversize = "reject"``.
    What an MTA may copy into a bounce is one short sentence; details go to the log.
    """
    import asyncio
    import sqlite3

    from mailbot.context import open_context
    from mailbot.inbound import pipeline
    from mailbot.inbound.files import FileSource, MailRefused
    from mailbot.inbound.source import Envelope, TemporaryFailure

    try:
        config = _load(obj)
    except SystemExit:  # a broken config is ours to fix: the MTA keeps the mail meanwhile
        sys.exit(EX_TEMPFAIL)
    _setup_ingest_logging(config.service.log_level, verbose)
    try:  # the reader forked before a store's pool starts threads (then a fork server)
        pipeline.READERS.warm(max(1, min(len(files), config.service.reading_processes)),
                              config.limits.max_seconds_per_mail)
        ctx = open_context(config)
    except (sqlite3.Error, OSError, TemporaryStoreError, TemporaryFailure):  # a full disk
        logging.getLogger(__name__).warning("ingest: cannot open the store", exc_info=True)
        click.echo(TEMPFAIL_SENTENCE, err=True)
        sys.exit(EX_TEMPFAIL)
    except SchemaMismatch as exc:  # the MTA keeps the mail until someone migrates
        logging.getLogger(__name__).warning("ingest deferred: %s", exc)
        click.echo(TEMPFAIL_SENTENCE, err=True)
        sys.exit(EX_TEMPFAIL)
    inputs = [(str(f), f.read_bytes) for f in files] or [("stdin", sys.stdin.buffer.read)]

    def report(name: str, outcome: Outcome) -> None:
        detail = "" if outcome.status == "quarantined" else outcome.detail  # names internals
        click.echo(f"{name}: {outcome.status} {outcome.ticket_number} {detail}".rstrip())

    limits = config.limits
    source = FileSource(inputs, report, "cli" if files else "pipe",
                        Envelope(sender, recipients) if sender is not None else None,
                        limits.max_message_bytes if limits.oversize == "reject" else None)
    try:
        asyncio.run(source.serve(pipeline.feed(ctx), asyncio.Event()))
    except MailRefused as exc:
        logging.getLogger(__name__).warning("ingest refused %s: %s", source.current, exc)
        click.echo("The message is too large for the support mailbox.", err=True)
        sys.exit(EX_DATAERR)
    except Exception:  # any failure of ours must make the MTA retry, not bounce
        logging.getLogger(__name__).warning("ingest of %s deferred", source.current,
                                            exc_info=True)
        click.echo(TEMPFAIL_SENTENCE, err=True)
        sys.exit(EX_TEMPFAIL)
    sys.exit(0)


def _setup_ingest_logging(level: str, verbose: bool) -> None:
    """Logs of `ingest`: to stderr with --verbose; else to syslog (nowhere without one), as
    an MTA copies a program's output into deferral notes and bounces."""
    import logging.handlers

    if verbose:
        _setup_logging(level)
        return
    handler: logging.Handler = logging.NullHandler()
    if Path(SYSLOG_SOCKET).exists():
        handler = logging.handlers.SysLogHandler(address=SYSLOG_SOCKET)
        handler.setFormatter(logging.Formatter("mailbot[%(process)d]: %(levelname)s %(message)s"))
    logging.basicConfig(level=level, handlers=[handler])


@main.command()
@click.pass_obj
def fetch(obj: dict) -> None:
    """Read every configured IMAP mailbox once, then exit (for a timer, or to try a config).

    Exit 0 when every mailbox was read or is worked by a running node (which holds its
    lease), 75 when one could not be read (its mail stays there).
    """
    from mailbot.inbound import pipeline
    from mailbot.inbound.imap import (
        CONNECTION_ERRORS,
        ImapSource,
        LeaseLost,
        mailbox_lease,
        uidvalidity_keeper,
    )

    ctx = _context(obj)
    keeper = uidvalidity_keeper(ctx.store)
    failed = False
    for cfg in ctx.config.imap:
        lease = mailbox_lease(ctx.store, cfg)
        source = ImapSource(cfg, keeper, ctx.health, lease=lease)
        if not lease.acquire():
            click.echo(f"{source.name}: worked by a running mailbot (it holds the mailbox's "
                       "lease): not read here")
            continue
        try:
            filed = source.run_once(pipeline.feed(ctx))
        except (*CONNECTION_ERRORS, LeaseLost) as exc:
            click.echo(f"{source.name}: cannot read the mailbox: {type(exc).__name__}: {exc}",
                       err=True)
            failed = True
            continue
        finally:
            lease.release()
        click.echo(f"{source.name}: filed {filed}")
    if not ctx.config.imap:
        click.echo("no [[imap]] mailbox is configured")
    sys.exit(EX_TEMPFAIL if failed else 0)


@main.command()
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def status(obj: dict, as_json: bool) -> None:
    """The running daemon's sources and loops: state, successes, failures, mails handled.

    Exit 0 when all is well, 1 when something is wrong (as /healthz's 503), 3 when no
    daemon runs for this data directory.
    """
    from mailbot.app.watchdog import read_status

    config = _load(obj)
    document = read_status(config.data_dir)
    _emit(document, as_json, reports.status_text(document, config.timezone))
    sys.exit({"ok": 0, "not running": EX_NOT_RUNNING}.get(document["status"], 1))


@main.group("oauth")
def oauth_group() -> None:
    """OAuth2 sign-ins of the mailboxes and the relay (auth = "oauth2")."""


@oauth_group.command("login")
@click.argument("name")
@click.pass_obj
def oauth_login(obj: dict, name: str) -> None:
    """Sign NAME (an [[imap]] name, or "relay") in by the device-code flow.

    Prints a URL and a code to enter there, waits for the sign-in and stores the refresh
    token under the data directory (0600).  Exit 0 when signed in, 1 when the sign-in
    failed or was declined, 78 when NAME has no OAuth2 login.
    """
    from mailbot.oauth import device  # msal and google-auth: loaded only where needed
    from mailbot.oauth.causes import TokenError

    config = _load(obj)
    tables = {c.label: c for c in config.imap if c.auth == "oauth2"}
    if config.relay.auth == "oauth2":
        tables["relay"] = config.relay
    if name not in tables:
        known = ", ".join(tables) or 'none (set auth = "oauth2")'
        click.echo(f"no OAuth2 login named {name!r}; OAuth2 logins: {known}", err=True)
        sys.exit(EX_CONFIG)
    table = tables[name]
    try:
        stored = device.sign_in(table.oauth2, table.username, table.timeout_seconds, click.echo)
    except TokenError as exc:
        click.echo(f"sign-in failed: {exc}", err=True)
        sys.exit(1)
    click.echo(f"signed in as {table.username}; the refresh token is kept in {stored}")


@main.group()
def tickets() -> None:
    """Inspect tickets."""


@tickets.command("list")
@click.option("--all", "show_all", is_flag=True, help="Include resolved and closed tickets.")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(min=1),
              help="Tickets on one page.")
@click.option("--offset", default=0, type=click.IntRange(min=0), help="Tickets to skip.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def tickets_list(obj: dict, show_all: bool, limit: int, offset: int, as_json: bool) -> None:
    """Tickets in the order agents should work them, a page at a time."""
    config, store = _desk(obj)
    rows = reports.ticket_list(store, show_all, limit, offset)
    _emit(rows, as_json, reports.ticket_list_text(rows, config.timezone))


@tickets.command("search")
@click.argument("text")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(min=1))
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def tickets_search(obj: dict, text: str, limit: int, as_json: bool) -> None:
    """Tickets whose subject, messages or senders contain TEXT, newest first."""
    config, store = _desk(obj)
    rows = reports.ticket_search(store, text, limit)
    _emit(rows, as_json, reports.ticket_list_text(rows, config.timezone))


@tickets.command("show")
@click.argument("number")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def tickets_show(obj: dict, number: str, as_json: bool) -> None:
    """One ticket with its messages and events."""
    config, store = _desk(obj)
    data = reports.ticket_detail(store, number, config.directory.claims)
    if data is None:
        click.echo(f"no ticket {number}", err=True)
        sys.exit(1)
    _emit(data, as_json, reports.ticket_detail_text(data, config.timezone))


def _operate(action) -> str:
    """Run an operator action, turning a refusal into a message and exit status 65."""
    from mailbot.tickets.actions import OperatorError

    try:
        return action()
    except OperatorError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EX_DATAERR)


@tickets.command("set-status")
@click.argument("number")
@click.argument("status")
@click.pass_obj
def tickets_set_status(obj: dict, number: str, status: str) -> None:
    """Change a ticket's status (the customer is told like after a mail command)."""
    from mailbot.tickets import actions

    ctx = _context(obj)
    changed = _operate(lambda: actions.set_status(ctx, number, status))
    click.echo(f"{number}: {'status ' + status.lower() if changed else 'unchanged'}")


@tickets.command("assign")
@click.argument("number")
@click.argument("agent_address")
@click.pass_obj
def tickets_assign(obj: dict, number: str, agent_address: str) -> None:
    """Make a configured agent the owner of a ticket."""
    from mailbot.tickets import actions

    ctx = _context(obj)
    changed = _operate(lambda: actions.assign(ctx, number, agent_address))
    click.echo(f"{number}: {'assigned to ' + agent_address.lower() if changed else 'unchanged'}")


@tickets.command("reply")
@click.argument("number")
@click.option("--file", "text_file", type=click.File("r", encoding="utf-8"),
              help="Read the text from this file (default: stdin).")
@click.option("--agent", "agent_address", default="", help="Sign as this configured agent.")
@click.option("--note", is_flag=True, help="An internal note the customer never sees.")
@click.pass_obj
def tickets_reply(obj: dict, number: str, text_file, agent_address: str, note: bool) -> None:
    """Answer the customer of a ticket (queued in the outbox), or add an internal note."""
    from mailbot.tickets import actions

    ctx = _context(obj)
    text = text_file.read() if text_file else sys.stdin.read()
    done = _operate(lambda: actions.reply(ctx, number, text, agent_address, note))
    click.echo(f"{number}: {done} recorded" + ("" if note else ", queued in the outbox"))


@main.group()
def accounts() -> None:
    """Manage accounts, contacts and contracts."""


@accounts.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.pass_obj
def accounts_import(obj: dict, file: Path) -> None:
    """Import contracts, accounts and contacts from a TOML or CSV file, all or nothing.

    An unknown table, key or column, a value of the wrong type, a key given twice or a
    contract or account that is not defined is refused with file, line and key: exit 65,
    nothing written.  Prints how many of each were added and updated.
    """
    from mailbot.tickets import accounts as customer_list

    try:
        ctx = _context(obj)
        counts = customer_list.import_file(ctx.store, file, ctx.policy)
    except (customer_list.DirectoryImportError, ValueError) as exc:
        click.echo(f"import failed, nothing written: {exc}", err=True)
        sys.exit(EX_DATAERR)
    click.echo(reports.import_text(counts))


@accounts.command("link")
@click.argument("address")
@click.argument("number")
@click.pass_obj
def accounts_link(obj: dict, address: str, number: str) -> None:
    """Link a sender's ADDRESS to the account with customer NUMBER (confirms its claim).

    Its later mails get the account's contract, and its tickets that are not closed get
    the contract treatment now.  Exit 65 for an unknown customer number.
    """
    from mailbot.tickets import accounts as customer_list

    ctx = _context(obj)
    try:
        account, numbers = customer_list.link(ctx, address, number)
    except customer_list.DirectoryImportError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EX_DATAERR)
    click.echo(f"{address.strip().lower()} linked to {account['name']} "
               f"({account['customer_number']}, contract {account['contract'] or '-'})"
               + (f"; contract treatment for ticket(s) {', '.join(numbers)}" if numbers else ""))


@accounts.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def accounts_list(obj: dict, as_json: bool) -> None:
    """Accounts with customer number, contract, domains, contacts and open tickets."""
    rows = dq.accounts(_desk(obj)[1])
    _emit(rows, as_json, reports.accounts_text(rows))


@accounts.command("show")
@click.argument("key", metavar="NUMBER_OR_NAME")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def accounts_show(obj: dict, key: str, as_json: bool) -> None:
    """One account (by customer number, else name): contract, contacts, open tickets.

    Exit 1 when no account, or several accounts of that name, match.
    """
    config, store = _desk(obj)
    found = reports.account_detail(store, key.strip())
    if len(found) != 1:
        numbers = ", ".join(a["customer_number"] or "-" for a in found)
        click.echo(f"{len(found)} accounts are named {key!r} (customer numbers {numbers}): "
                   "name one by its number" if found else f"no account {key!r}", err=True)
        sys.exit(1)
    _emit(found[0], as_json, reports.account_detail_text(found[0], config.timezone))


@main.group()
def contacts() -> None:
    """The people who wrote or were imported: list, show, export or erase their data."""


@contacts.command("list")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(min=1))
@click.option("--offset", default=0, type=click.IntRange(min=0))
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def contacts_list(obj: dict, limit: int, offset: int, as_json: bool) -> None:
    """A page of the contacts (who wrote, or was imported) by address, with their account."""
    rows = dq.contacts(_desk(obj)[1], limit, offset)
    _emit(rows, as_json, reports.contacts_text(rows))


@contacts.command("show")
@click.argument("address")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def contacts_show(obj: dict, address: str, as_json: bool) -> None:
    """One contact with account and tickets; exit 1 for an unknown address."""
    config, store = _desk(obj)
    data = reports.contact_detail(store, address)
    if data is None:
        click.echo(f"no contact {address}", err=True)
        sys.exit(1)
    _emit(data, as_json, reports.contact_detail_text(data, config.timezone))


@contacts.command("export")
@click.argument("address")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the JSON here (created 0600) instead of to stdout.")
@click.option("--with-files", "files_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Also copy the raw mails and attachments into this directory.")
@click.pass_obj
def contacts_export(obj: dict, address: str, out: Path | None,
                    files_dir: Path | None) -> None:
    """Everything stored about ADDRESS as JSON (GDPR Art. 15): what `erase` would remove."""
    from mailbot.tickets import privacy

    ctx = _context(obj)
    document = privacy.export(ctx, address, files_dir)
    text = json.dumps(document, ensure_ascii=False, indent=2, default=str)
    if out is None:
        click.echo(text)
        return
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text + "\n")
    click.echo(f"{document['address']}: {len(document['tickets'])} ticket(s), "
               f"{len(document['outbox'])} outbox mail(s) written to {out}")


@contacts.command("erase")
@click.argument("address")
@click.option("--yes", is_flag=True, help="Erase for real (it cannot be undone).")
@click.option("--dry-run", is_flag=True, help="Only count what would be erased.")
@click.pass_obj
def contacts_erase(obj: dict, address: str, yes: bool, dry_run: bool) -> None:
    """Remove the personal data of ADDRESS from database and spool (GDPR Art. 17).

    Tickets only theirs are deleted; tickets others wrote in keep the others' parts.
    Exit 75 on a temporary failure (nothing erased).
    """
    if not (yes or dry_run):
        raise click.UsageError("erasing cannot be undone: add --yes, or --dry-run to see "
                               "what would be erased")
    from mailbot.tickets import privacy

    ctx = _context(obj)
    try:
        counts = privacy.erase(ctx, address, dry_run=dry_run)
    except TemporaryStoreError as exc:
        click.echo(f"temporary failure, nothing erased, run it again later: {exc}", err=True)
        sys.exit(EX_TEMPFAIL)
    head = "would erase" if dry_run else "erased"
    click.echo(reports.counts_text(f"{address.strip().lower()}: {head}", counts))


@main.group("retention")
def retention_group() -> None:
    """Delete what [retention] says is old enough (the daemon does it once a day)."""


@retention_group.command("run")
@click.option("--dry-run", is_flag=True, help="Only count what would be deleted.")
@click.pass_obj
def retention_run(obj: dict, dry_run: bool) -> None:
    """Delete closed tickets, raw mails and quarantine entries past [retention]; counts.

    Exit 75 on a temporary failure (what was done so far stays done).
    """
    from mailbot.tickets import retention

    ctx = _context(obj)
    config = ctx.config.retention
    days = (f"raw_days {config.raw_days:g}, tickets_days {config.tickets_days:g}, "
            f"quarantine_days {config.quarantine_days:g}")
    if not (config.raw_days or config.tickets_days or config.quarantine_days):
        click.echo(f"retention is off: [retention] keeps everything ({days}; 0 is forever)")
        return
    try:
        counts = retention.run(ctx, ctx.clock(), dry_run=dry_run)
    except TemporaryStoreError as exc:
        click.echo(f"temporary failure, run it again later: {exc}", err=True)
        sys.exit(EX_TEMPFAIL)
    click.echo(reports.counts_text(f"retention ({days}): "
                                   f"{'would delete' if dry_run else 'deleted'}", counts))


@main.group()
def outbox() -> None:
    """Inspect, flush and retry the outbox."""


@outbox.command("list")
@click.option("--status", type=click.Choice(["pending", "sent", "failed", "bounced", "held"]))
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def outbox_list(obj: dict, status: str | None, as_json: bool) -> None:
    """Outbound mails and their delivery state."""
    rows = oq.outbox_rows(_desk(obj)[1], status)
    _emit(rows, as_json, reports.outbox_text(rows))


@outbox.command("flush")
@click.option("--failed", is_flag=True, help="Also queue mails that were given up on again.")
@click.pass_obj
def outbox_flush(obj: dict, failed: bool) -> None:
    """Deliver every pending mail now; safe beside the running daemon (none goes out twice)."""
    import asyncio
    from functools import partial

    from mailbot.outbound.outbox import retry_failed
    from mailbot.outbound.sender import flush as flush_outbox
    from mailbot.outbound.transports import transport_for
    from mailbot.tickets import notify

    ctx = _context(obj)
    try:
        with ctx.store.transaction():
            if failed:
                retry_failed(ctx.store, (), ctx.clock())
            oq.retry_now(ctx.store, ctx.clock())
    except TemporaryStoreError as exc:
        click.echo(f"temporary failure: {exc}", err=True)
        sys.exit(EX_TEMPFAIL)
    sent = asyncio.run(flush_outbox(ctx, transport_for(ctx.config),
                                    on_failed=partial(notify.delivery_failed, ctx)))
    counts = oq.outbox_counts(ctx.store)
    left = counts.get("pending", 0)
    click.echo(f"delivered {sent}, still pending {left}, failed {counts.get('failed', 0)}")
    sys.exit(0 if left == 0 else EX_TEMPFAIL)


@outbox.command("retry")
@click.argument("ids", nargs=-1, type=int)
@click.option("--failed", "every_failed", is_flag=True, help="Every mail that failed.")
@click.pass_obj
def outbox_retry(obj: dict, ids: tuple[int, ...], every_failed: bool) -> None:
    """Queue failed mails again (IDS, or all with --failed): due now, with a new lifetime."""
    if bool(ids) == every_failed:
        raise click.UsageError("name the IDs of failed mails, or --failed for all of them")
    from mailbot.outbound.outbox import RetryError, retry_failed

    ctx = _context(obj)
    try:
        with ctx.store.transaction():
            rows = retry_failed(ctx.store, ids, ctx.clock())
    except RetryError as exc:
        click.echo(f"nothing queued: {exc}", err=True)
        sys.exit(EX_DATAERR)
    except TemporaryStoreError as exc:
        click.echo(f"temporary failure: {exc}", err=True)
        sys.exit(EX_TEMPFAIL)
    for row in rows:
        to = ", ".join(a if a.isprintable() else repr(a) for a in row["recipients"])
        click.echo(f"{row['id']}: {row['kind']} to {to} queued again "
                   f"(failed: {row['last_error']})")
    click.echo(f"queued {len(rows)} failed mail(s) again")


@main.group()
def quarantine() -> None:
    """Inspect and retry quarantined mails."""


@quarantine.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def quarantine_list(obj: dict, as_json: bool) -> None:
    """Mails that could not be processed, with their errors."""
    rows = iq.quarantined(_desk(obj)[1])
    _emit(rows, as_json, reports.quarantine_text(rows))


@quarantine.command("retry")
@click.argument("ids", nargs=-1, type=int)
@click.pass_obj
def quarantine_retry(obj: dict, ids: tuple[int, ...]) -> None:
    """Run quarantined mails through the pipeline again (all held ones without IDS)."""
    from mailbot.inbound import pipeline
    from mailbot.inbound.source import TemporaryFailure

    ctx = _context(obj)
    try:
        results = pipeline.retry_quarantined(ctx, ids)
    except TemporaryFailure as exc:  # the disk or the database, not the mails: try later
        click.echo(f"temporary failure, run it again later: {exc}", err=True)
        sys.exit(EX_TEMPFAIL)
    for entry_id, outcome in results:
        click.echo(f"{entry_id}: {outcome.status} {outcome.ticket_number} {outcome.detail}")
    sys.exit(EX_DATAERR if any(o.status == "quarantined" for _, o in results) else 0)


@main.group("spam")
def spam_group() -> None:
    """Mails held as spam: list, show, release (file and answer) or delete them."""


@spam_group.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def spam_list(obj: dict, as_json: bool) -> None:
    """Mails held as spam, oldest first, with the filter's verdict."""
    from mailbot.store import spam as sq  # its blob reader: for this command only

    config, store = _desk(obj)
    rows = sq.held(store)
    _emit(rows, as_json, held_reports.held_text(rows, config.timezone))


@spam_group.command("show")
@click.argument("entry_id", metavar="ID", type=int)
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def spam_show(obj: dict, entry_id: int, as_json: bool) -> None:
    """One held mail with its headers and text; exit 65 when none is held under ID."""
    from mailbot.tickets import spam as held_spam

    ctx = _context(obj)
    data = _operate(lambda: held_spam.detail(ctx, entry_id))
    _emit(data, as_json, held_reports.held_detail_text(data, ctx.config.timezone))


@spam_group.command("release")
@click.argument("entry_id", metavar="ID", type=int)
@click.pass_obj
def spam_release(obj: dict, entry_id: int) -> None:
    """File a held mail as a normal mail, with its acknowledgement (the filter was wrong).

    Exit 65 when none is held under ID or the mail is quarantined, 75 on a temporary failure.
    """
    from mailbot.inbound import pipeline
    from mailbot.inbound.source import TemporaryFailure

    ctx = _context(obj)
    try:
        outcome = _operate(lambda: pipeline.release_spam(ctx, entry_id))
    except (TemporaryFailure, TemporaryStoreError) as exc:
        click.echo(f"temporary failure, run it again later: {exc}", err=True)
        sys.exit(EX_TEMPFAIL)
    click.echo(f"{entry_id}: {outcome.status} {outcome.ticket_number} {outcome.detail}".rstrip())
    sys.exit(EX_DATAERR if outcome.status == "quarantined" else 0)


@spam_group.command("delete")
@click.argument("entry_id", metavar="ID", type=int)
@click.pass_obj
def spam_delete(obj: dict, entry_id: int) -> None:
    """Forget a held mail and its raw bytes; exit 65 when none is held under ID."""
    from mailbot.tickets import spam as held_spam

    ctx = _context(obj)
    try:
        _operate(lambda: held_spam.delete(ctx, entry_id))
    except TemporaryStoreError as exc:
        click.echo(f"temporary failure, run it again later: {exc}", err=True)
        sys.exit(EX_TEMPFAIL)
    click.echo(f"{entry_id}: deleted")
