"""IMAP source (imapclient, blocking, one worker thread per mailbox).

Asks for the sizes of a batch first: a mail over the size limit is not fetched but moved
to the quarantine folder (and listed).  The rest is fetched with BODY.PEEK[] a byte budget
at a time (``fetch_budget_bytes``, a bigger mail alone), so memory holds one such group,
never the whole batch.  Files each mail (one transaction each), makes the batch durable
with one flush, and only then moves it to the done folder (or flags it \\Seen);
quarantined mails go to the quarantine folder.  Waits
with IDLE when the server offers it, else polls.  A failure closes the connection,
waits with exponential backoff and reconnects, without touching other sources.

Of several nodes with the same mailbox, one works it: the daemon hands each source the
mailbox's lease (:mod:`mailbot.store.leases`).  A source that does not get it is on
standby (a state of health, not a failure) and tries again every ``lease_retry_seconds``;
the holder checks its lease before each batch it files and before it moves mail, and one
that finds it lost ends its session and goes back to waiting, never working on without it.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import ssl
import threading
import time
from collections.abc import Callable, Iterator

from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientAbortError, IMAPClientError, LoginError

from mailbot.inbound.source import Feed, TemporaryFailure
from mailbot.oauth.causes import TokenError, login_refused
from mailbot.oauth.sasl import mechanism
from mailbot.oauth.tokens import tokens_for
from mailbot.settings.checks import network_cause
from mailbot.settings.config import ImapConfig
from mailbot.status.health import REFUSED, STANDBY, Health
from mailbot.store import Store, TemporaryStoreError, leases
from mailbot.store import inbound as iq
from mailbot.store.blobs import give_back_memory
from mailbot.store.leases import Lease

log = logging.getLogger(__name__)

# IDLE is renewed this often at most: well before Exchange Online's 30-minute cut (and
# RFC 9051's 29 minutes).
IDLE_RENEW_SECONDS = 540
STUCK_SECONDS = 120.0
MAX_BACKOFF_SECONDS = 300.0
# The least pause after a server said it throttles us (Exchange Online: NO [THROTTLED]),
# unless it suggests a longer one ("Suggested Backoff Time: 179817 milliseconds").
THROTTLED_SECONDS = 60.0
SUGGESTED_BACKOFF = re.compile(r"Backoff Time: (\d+) milliseconds", re.IGNORECASE)
# Exchange Online: the login worked, the mailbox does not open (no FullAccess for the app).
NOT_CONNECTED = "User is authenticated but not connected"


class Reconnect(Exception):
    """The server closed the session; connect again."""


class LeaseLost(Exception):
    """This node no longer holds the mailbox's lease: another may work it now."""


# What a mailbox that cannot be read raises (TLS failures and timeouts are OSErrors; no
# OAuth2 token is a TokenError).
CONNECTION_ERRORS = (IMAPClientError, OSError, Reconnect, TokenError)


def connect(cfg: ImapConfig) -> IMAPClient:
    """A logged-in client for one mailbox: TLS, STARTTLS or plain (for loopback)."""
    context = ssl.create_default_context(cafile=cfg.ca_file or None)
    client = IMAPClient(cfg.host, port=cfg.effective_port, ssl=cfg.security == "tls",
                        ssl_context=context, timeout=cfg.timeout_seconds)
    try:
        if cfg.security == "starttls":
            client.starttls(context)
        login(client, cfg)
    except BaseException:
        _close(client)
        raise
    return client


def login(client: IMAPClient, cfg: ImapConfig) -> None:
    """Log in with the password, or with an OAuth2 access token (SASL OAUTHBEARER when the
    server offers it, else XOAUTH2); a token the server refuses is replaced once by a new
    one, and a new one refused too raises :class:`TokenError` naming the likely cause."""
    if cfg.auth == "password":
        client.login(cfg.username, cfg.password)
        return
    tokens = tokens_for(cfg.oauth2, cfg.username, cfg.timeout_seconds)
    offered = {c.decode().upper().removeprefix("AUTH=") for c in client.capabilities()
               if c.upper().startswith(b"AUTH=")}
    authenticate = client.oauthbearer_login if mechanism(offered) == "OAUTHBEARER" \
        else client.oauth2_login
    try:
        authenticate(cfg.username, tokens.token())
    except LoginError as exc:
        log.info("IMAP %s: the server refused the access token (%s); trying a new one",
                 cfg.label, exc)
        try:
            authenticate(cfg.username, tokens.renew())
        except LoginError as again:
            if "THROTTLED" in str(again).upper():
                raise
            raise login_refused("IMAP", cfg.host, cfg.username, str(again)) from again


def token_deadline(cfg: ImapConfig) -> float:
    """When (monotonic) a session logged in now must log in again with a new token: the
    token's renewal time for OAuth2, never for a password."""
    if cfg.auth != "oauth2":
        return math.inf
    return tokens_for(cfg.oauth2, cfg.username, cfg.timeout_seconds).refresh_at


def trouble(exc: BaseException) -> tuple[str, str, float]:
    """How a failed session shows: the health state ("refused" when only an operator can
    help), the cause in words, and the least pause before the next try."""
    text = str(exc)
    if isinstance(exc, TokenError):
        return (REFUSED if exc.refused else "retrying"), text, 0.0
    if "THROTTLED" in text.upper() or SUGGESTED_BACKOFF.search(text):
        suggested = SUGGESTED_BACKOFF.search(text)
        pause = max(THROTTLED_SECONDS, int(suggested.group(1)) / 1000 if suggested else 0)
        return "retrying", f"the server throttles us (Exchange Online?): {text}", pause
    if NOT_CONNECTED.lower() in text.lower():
        return REFUSED, (f"mailbox permission missing: logged in, but the mailbox does not "
                         f"open (Exchange Online: Add-MailboxPermission for the app): {text}"), 0.0
    return "retrying", f"{type(exc).__name__}: {text}", 0.0


def probe(cfg: ImapConfig) -> str:
    """Log in as the source does and select the folder read-only, for `mailbot check-config
    --connect`: "" when that works, else the cause in words."""
    try:
        client = connect(cfg)
    except LoginError:
        return "authentication failed"
    except Exception as exc:  # whatever stops the login is reported, not raised
        return network_cause(exc)
    try:
        client.select_folder(cfg.folder, readonly=True)
    except IMAPClientAbortError as exc:
        return network_cause(exc)
    except IMAPClientError as exc:
        return f"folder missing: {cfg.folder} ({exc})"
    finally:
        _close(client)
    return ""


def mailbox_lease(store: Store, cfg: ImapConfig) -> Lease:
    """The lease of an IMAP mailbox on the store: of several nodes (or daemons on one
    SQLite file, or a `mailbot fetch` beside them) configured with the same mailbox, the
    one holding it works it."""
    return store.lease(leases.mailbox_key(cfg.host, cfg.username, cfg.folder),
                       f"imap:{cfg.label}")


def uidvalidity_keeper(store: Store) -> Callable[[str, int], bool]:
    """Remembers each mailbox's UIDVALIDITY in the store; False when it changed."""
    def check(mailbox: str, value: int) -> bool:
        with store.transaction():
            known = iq.uidvalidity(store, mailbox)
            iq.set_uidvalidity(store, mailbox, value)
        return known is None or known == value

    return check


class ImapSource:
    """Reads one IMAP mailbox until stopped, in a thread of its own (imapclient blocks)."""

    def __init__(self, cfg: ImapConfig, uidvalidity: Callable[[str, int], bool],
                 health: Health,
                 factory: Callable[[ImapConfig], IMAPClient] = connect,
                 lease: Lease | None = None) -> None:
        self.cfg = cfg
        self.name = f"imap:{cfg.label}"
        self.uidvalidity = uidvalidity
        self.health = health
        self.factory = factory
        self.lease = lease  # None: this process alone reads the mailbox
        self.feed: Feed | None = None
        self.stop = threading.Event()
        self.poll_requested = threading.Event()
        self.failures = 0  # connection failures in a row; the backoff grows with it
        self.session_ends = math.inf  # monotonic time the session's OAuth2 token is due

    async def serve(self, feed: Feed, stop: asyncio.Event) -> None:
        """Read the mailbox in its own thread until ``stop`` is set; its errors are raised here."""
        loop = asyncio.get_running_loop()
        finished = loop.create_future()
        self.stop.clear()
        self.health.watch(self.name, self.stuck_after)

        def main() -> None:
            try:
                self.run(feed)
            except BaseException as exc:  # handed to the awaiting task, which reports it
                loop.call_soon_threadsafe(_settle, finished, exc)
            else:
                loop.call_soon_threadsafe(_settle, finished, None)

        threading.Thread(target=main, name=self.name, daemon=True).start()
        stopping = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({finished, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self.halt()
            stopping.cancel()
        await finished

    @property
    def stuck_after(self) -> float:
        """Seconds without progress after which this mailbox counts as stuck.

        IDLE answers every second and a poll comes every ``poll_seconds``; a mail or a
        network call takes at most ``timeout_seconds``.
        """
        return max(STUCK_SECONDS, 3 * self.cfg.poll_seconds, 3 * self.cfg.timeout_seconds)

    def halt(self) -> None:
        """Ask the thread to stop after the mail in hand (and to leave IDLE or a poll wait)."""
        self.stop.set()
        self.poll_requested.set()

    def run(self, feed: Feed) -> None:
        """Serve the mailbox until :attr:`stop` is set, reconnecting with backoff.

        With a lease, only while holding it: a failed session gives it back for the
        backoff (another node may do better), a lost one ends the session at once.
        """
        self.feed = feed
        try:
            while not self.stop.is_set():
                try:
                    if self._take_lease():
                        self._session()
                except LeaseLost:  # the mail in hand stays unmoved
                    log.warning("IMAP %s: the mailbox's lease is lost; stopped working it",
                                self.cfg.label)
                except (*CONNECTION_ERRORS, TemporaryFailure, TemporaryStoreError) as exc:
                    self._give_lease_back()
                    self._back_off(exc)
        finally:
            self._give_lease_back()
        self.health.set(self.name, "stopped")

    def _back_off(self, exc: BaseException) -> None:
        """Show a failed session on the board and wait before the next one, longer after
        each failure in a row (the mail stays unmoved)."""
        self.failures += 1
        state, cause, least = trouble(exc)
        wait = max(least, min(MAX_BACKOFF_SECONDS, 2.0 ** (self.failures - 1)))
        self.health.set(self.name, state, cause)
        log.warning("IMAP %s: %s; reconnecting in %.0fs", self.cfg.label, cause, wait)
        self.stop.wait(wait)

    def _take_lease(self) -> bool:
        """Wait until this node holds the mailbox's lease, on standby while another node
        works the mailbox; False when stopped first.  True at once without a lease."""
        waited = False
        while self.lease is not None and not self.lease.acquire():
            if not waited:
                log.info("IMAP %s: another node works the mailbox; standing by, trying to "
                         "take over every %gs", self.cfg.label, self.cfg.lease_retry_seconds)
                waited = True
            self.health.set(self.name, STANDBY, "another node works this mailbox")
            if self.stop.wait(self.cfg.lease_retry_seconds):
                return False
        if waited:
            log.info("IMAP %s: took over the mailbox (its lease was free)", self.cfg.label)
        return not self.stop.is_set()

    def _hold_lease(self) -> None:
        """Raise :class:`LeaseLost` unless this node still holds the mailbox's lease."""
        if self.lease is not None and not self.lease.held():
            raise LeaseLost(self.lease.name)

    def _give_lease_back(self) -> None:
        """Free the mailbox's lease, if held, for another node to take."""
        if self.lease is not None:
            self.lease.release()

    def run_once(self, feed: Feed) -> int:
        """Connect, file everything waiting in the folder, disconnect; the number filed."""
        self.feed = feed
        self.session_ends = math.inf  # one pass: it files everything, however long
        client = self.factory(self.cfg)
        try:
            self._prepare(client)
            return self._drain(client)
        finally:
            _close(client)

    def _session(self) -> None:
        """One session: connect, then file, wait and file again until stopped, or until
        its OAuth2 token is due (it ends then, and :meth:`run` logs in again at once)."""
        client = self.factory(self.cfg)
        try:
            self.session_ends = token_deadline(self.cfg)
            self._prepare(client)
            self.failures = 0
            self.health.set(self.name, "connected")
            log.info("IMAP %s: connected, folder %s", self.cfg.label, self.cfg.folder)
            can_idle = self.cfg.idle and b"IDLE" in client.capabilities()
            while not self.stop.is_set() and not self._token_due():
                self._drain(client)
                if self._token_due():
                    break
                if can_idle:
                    self._idle(client)
                else:
                    self._wait_for_poll()
                    client.noop()
            if self._token_due():
                log.info("IMAP %s: the access token is due; logging in again with a new one",
                         self.cfg.label)
        finally:
            _close(client)

    def _token_due(self) -> bool:
        """Whether the session's OAuth2 token is due for renewal (never for a password)."""
        return time.monotonic() >= self.session_ends

    def poll(self) -> None:
        """Ask a source without IDLE to look for new mail now (the scheduler's polling job)."""
        self.poll_requested.set()

    def _wait_for_poll(self) -> None:
        """Sleep until the scheduler asks for a poll, the source stops or the token is due.

        A poll is also made after twice the interval on its own, should the scheduler stall.
        """
        self.health.beat(self.name)
        left = self.session_ends - time.monotonic()
        self.poll_requested.wait(max(0.0, min(2 * self.cfg.poll_seconds, left)))
        self.poll_requested.clear()

    def _prepare(self, client: IMAPClient) -> None:
        for folder in (self.cfg.done_folder, self.cfg.quarantine_folder):
            if folder and not client.folder_exists(folder):
                client.create_folder(folder)
        selected = client.select_folder(self.cfg.folder)
        value = int(selected[b"UIDVALIDITY"])
        if not self.uidvalidity(f"{self.cfg.label}/{self.cfg.folder}", value):
            log.warning("IMAP %s: UIDVALIDITY changed to %d; rescanning the folder "
                        "(re-delivered mails are recognised and skipped)", self.cfg.label, value)

    def _drain(self, client: IMAPClient) -> int:
        filed = 0
        while not self.stop.is_set() and not self._token_due():
            self._hold_lease()
            criteria = ["NOT", "DELETED"] if self.cfg.done_folder else ["UNSEEN", "NOT", "DELETED"]
            uids = sorted(client.search(criteria))[: self.cfg.batch_size]
            if not uids:
                return filed
            done, held, deferred = self._file_batch(client, uids)
            self.feed.flush()
            self._finish(client, done, held)
            _forget_untagged(client)
            give_back_memory()
            filed += len(done)
            if deferred:
                return filed
        return filed

    def _file_batch(self, client: IMAPClient, uids: list[int]) -> tuple[list, list, bool]:
        """File one batch: the sizes first, then a byte budget of mails at a time.

        A mail the feed refuses for its size is not fetched at all.  Returns the UIDs filed,
        the UIDs for the quarantine folder, and whether to stop after this batch.
        """
        done: list[int] = []
        held: list[int] = []
        _no_debug_copies(client)
        sizes = _sizes(client, uids)
        wanted = self._screen([uid for uid in uids if uid in sizes], sizes, held)
        if wanted is None:
            return done, held, True
        for group in fetch_groups(wanted, sizes, self.cfg.fetch_budget_bytes):
            if self._file_group(client, group, done, held):
                return done, held, True
        return done, held, False

    def _screen(self, uids: list[int], sizes: dict[int, int],
                held: list[int]) -> list[int] | None:
        """The UIDs to fetch; the ones refused by size go to ``held``.  None: stop here."""
        wanted = []
        for uid in uids:
            try:
                refused = self.feed.screen(sizes[uid], self.name, self._where(uid))
            except TemporaryFailure as exc:
                log.warning("IMAP %s: uid %d deferred: %s", self.cfg.label, uid, exc)
                return None
            (held if refused else wanted).append(uid)
        return wanted

    def _where(self, uid: int) -> str:
        """Where a mail refused unread stays, and which it was, for the quarantine list."""
        return (f"left in IMAP folder {self.cfg.quarantine_folder} of {self.cfg.label} "
                f"(was {self.cfg.folder} UID {uid}); move it back to {self.cfg.folder} "
                "to file it once the limit allows")

    def _file_group(self, client: IMAPClient, group: list[int], done: list[int],
                    held: list[int]) -> bool:
        """Fetch and file the mails of one group; True when the batch must stop here."""
        fetched = client.fetch(group, ["BODY.PEEK[]"])
        taken: list[int] = []  # the UIDs handed to the feed, in order

        def arrivals() -> Iterator[tuple[bytes, None]]:
            for uid in group:
                raw = fetched.pop(uid, {}).get(b"BODY[]")  # let go of each mail once taken
                if raw is not None:
                    taken.append(uid)
                    yield bytes(raw), None

        filed = 0
        try:
            for outcome in self.feed.file_all(arrivals(), self.name, self.stop.is_set):
                (held if outcome.status == "quarantined" else done).append(taken[filed])
                filed += 1
        except TemporaryFailure as exc:
            log.warning("IMAP %s: uid %d deferred: %s", self.cfg.label, taken[filed], exc)
            return True
        return self.stop.is_set()

    def _finish(self, client: IMAPClient, done: list[int], held: list[int]) -> None:
        """Move the filed and the held mails out of the folder (or flag them \\Seen), while
        this node still holds the lease; a lost one leaves them for the new holder, which
        recognises them as filed already."""
        if done or held:
            self._hold_lease()
        if held:
            _move(client, held, self.cfg.quarantine_folder)
        if done and self.cfg.done_folder:
            _move(client, done, self.cfg.done_folder)
        elif done:
            client.add_flags(done, [b"\\Seen"])

    def _idle(self, client: IMAPClient) -> None:
        client.idle()
        started = time.monotonic()
        # A mail that arrived between the last SEARCH and IDLE is only reported when IDLE
        # ends (seen with Dovecot): renew at least every poll_seconds so it waits no longer.
        # It also ends when the OAuth2 token is due: Dovecot does not end a session whose
        # token expired, Exchange does; either way the session logs in again with a new one.
        renew = min(IDLE_RENEW_SECONDS, self.cfg.poll_seconds, self.session_ends - started)
        try:
            while not self.stop.is_set() and time.monotonic() - started < renew:
                asked = time.monotonic()
                responses = client.idle_check(timeout=1)
                self.health.beat(self.name)
                if not responses and time.monotonic() - asked < 0.5:
                    # Woken without a response: the server closed the connection (imapclient
                    # swallows the EOF). idle_done() below raises then, and we reconnect.
                    break
                if any((r and r[0] == b"BYE") or (len(r) > 1 and r[1] == b"BYE")
                       for r in responses if isinstance(r, tuple)):
                    raise Reconnect("server said BYE during IDLE")
                if any(isinstance(r, tuple) and len(r) > 1 and r[1] in (b"EXISTS", b"RECENT")
                       for r in responses):
                    break
        finally:
            client.idle_done()


def _no_debug_copies(client: IMAPClient) -> None:
    """Stop imaplib from writing a debug copy of every response.

    imapclient sets imaplib's debug level to 5 (to route its messages to logging), and at
    that level imaplib formats the repr() of each untagged response, every fetched mail
    included, before the logger drops it: a 68 MB mail cost 166 MB more at its peak, and
    every mail the CPU time of its repr().  imapclient logs the commands itself.
    """
    imap = getattr(client, "_imap", None)
    if imap is not None:
        imap.debug = 0


def _forget_untagged(client: IMAPClient) -> None:
    """Drop the server's untagged responses that no command of ours asked for.

    imaplib keeps every untagged response a command did not take (the EXPUNGE of each mail
    MOVE moved, COPYUID, EXISTS) for the whole session, which lasts as long as the
    connection: a few dozen bytes a mail, for days (`bench/soak.py` found 2,445 of them
    after 3,600 mails).  Every command we send takes its own answer when it ends, and the
    next SEARCH finds any mail that arrived meanwhile, so what is left after a batch is
    read by nobody.
    """
    imap = getattr(client, "_imap", None)
    if imap is not None:
        imap.untagged_responses.clear()


def _sizes(client: IMAPClient, uids: list[int]) -> dict[int, int]:
    """Each mail's size in bytes as the server counts it, by UID (a vanished one is missing)."""
    fetched = client.fetch(uids, ["RFC822.SIZE"])
    return {uid: int(data[b"RFC822.SIZE"]) for uid, data in fetched.items()
            if b"RFC822.SIZE" in data}


def fetch_groups(uids: list[int], sizes: dict[int, int], budget: int) -> Iterator[list[int]]:
    """The UIDs in order, in groups whose mails fit ``budget`` bytes together.

    A mail bigger than the budget is a group of its own: memory holds one group at a time.
    """
    group: list[int] = []
    total = 0
    for uid in uids:
        if group and total + sizes[uid] > budget:
            yield group
            group, total = [], 0
        group.append(uid)
        total += sizes[uid]
    if group:
        yield group


def _move(client: IMAPClient, uids: list[int], folder: str) -> None:
    if client.has_capability("MOVE"):
        client.move(uids, folder)
    else:
        client.copy(uids, folder)
        client.delete_messages(uids)
        client.expunge(uids)


def _close(client: IMAPClient) -> None:
    try:
        client.logout()
    except Exception:
        try:
            client.shutdown()
        except Exception:
            log.debug("IMAP shutdown after failed logout also failed")


def _settle(future: asyncio.Future, error: BaseException | None) -> None:
    """Finish the future of a source thread (unless its task was cancelled meanwhile)."""
    if future.done():
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)
