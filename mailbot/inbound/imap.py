"""IMAP source (imapclient, blocking, one worker thread per mailbox).

Asks for the sizes of a batch first: a mail over the size limit is not fetched but moved
to the quarantine folder (and listed).  The rest is fetched with BODY.PEEK[] a byte budget
at a time (``fetch_budget_bytes``, a bigger mail alone), so memory holds one such group,
never the whole batch.  Files each mail (one transaction each), makes the batch durable
with one flush, and only then moves it to the done folder (or flags it \\Seen);
quarantined mails go to the quarantine folder.  Waits
with IDLE when the server offers it, else polls.  A failure closes the connection,
waits with exponential backoff and reconnects, without touching other sources.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import threading
import time
from collections.abc import Callable, Iterator

from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError

from mailbot.inbound.source import Feed, TemporaryFailure
from mailbot.settings.config import ImapConfig
from mailbot.status.health import Health
from mailbot.store import Store
from mailbot.store import inbound as iq

log = logging.getLogger(__name__)

IDLE_RENEW_SECONDS = 540
STUCK_SECONDS = 120.0
MAX_BACKOFF_SECONDS = 300.0


class Reconnect(Exception):
    """The server closed the session; connect again."""


# What a mailbox that cannot be read raises (TLS failures and timeouts are OSErrors).
CONNECTION_ERRORS = (IMAPClientError, OSError, Reconnect)


def connect(cfg: ImapConfig) -> IMAPClient:
    """A logged-in client for one mailbox: TLS, STARTTLS or plain (for loopback)."""
    context = ssl.create_default_context(cafile=cfg.ca_file or None)
    client = IMAPClient(cfg.host, port=cfg.effective_port, ssl=cfg.security == "tls",
                        ssl_context=context, timeout=cfg.timeout_seconds)
    try:
        if cfg.security == "starttls":
            client.starttls(context)
        client.login(cfg.username, cfg.password)
    except BaseException:
        _close(client)
        raise
    return client


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
                 factory: Callable[[ImapConfig], IMAPClient] = connect) -> None:
        self.cfg = cfg
        self.name = f"imap:{cfg.label}"
        self.uidvalidity = uidvalidity
        self.health = health
        self.factory = factory
        self.feed: Feed | None = None
        self.stop = threading.Event()
        self.poll_requested = threading.Event()
        self.failures = 0  # connection failures in a row; the backoff grows with it

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
        """Serve the mailbox until :attr:`stop` is set, reconnecting with backoff."""
        self.feed = feed
        while not self.stop.is_set():
            try:
                self._session()
            except (*CONNECTION_ERRORS, TemporaryFailure) as exc:  # the mail stays unmoved
                self.failures += 1
                wait = min(MAX_BACKOFF_SECONDS, 2.0 ** (self.failures - 1))
                self.health.set(self.name, "retrying", f"{type(exc).__name__}: {exc}")
                log.warning("IMAP %s: %s; reconnecting in %.0fs", self.cfg.label, exc, wait)
                self.stop.wait(wait)
        self.health.set(self.name, "stopped")

    def run_once(self, feed: Feed) -> int:
        """Connect, file everything waiting in the folder, disconnect; the number filed."""
        self.feed = feed
        client = self.factory(self.cfg)
        try:
            self._prepare(client)
            return self._drain(client)
        finally:
            _close(client)

    def _session(self) -> None:
        client = self.factory(self.cfg)
        try:
            self._prepare(client)
            self.failures = 0
            self.health.set(self.name, "connected")
            log.info("IMAP %s: connected, folder %s", self.cfg.label, self.cfg.folder)
            can_idle = self.cfg.idle and b"IDLE" in client.capabilities()
            while not self.stop.is_set():
                self._drain(client)
                if can_idle:
                    self._idle(client)
                else:
                    self._wait_for_poll()
                    client.noop()
        finally:
            _close(client)

    def poll(self) -> None:
        """Ask a source without IDLE to look for new mail now (the scheduler's polling job)."""
        self.poll_requested.set()

    def _wait_for_poll(self) -> None:
        """Sleep until the scheduler asks for a poll or the source stops.

        A poll is also made after twice the interval on its own, should the scheduler stall.
        """
        self.health.beat(self.name)
        self.poll_requested.wait(2 * self.cfg.poll_seconds)
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
        while not self.stop.is_set():
            criteria = ["NOT", "DELETED"] if self.cfg.done_folder else ["UNSEEN", "NOT", "DELETED"]
            uids = sorted(client.search(criteria))[: self.cfg.batch_size]
            if not uids:
                return filed
            done, held, deferred = self._file_batch(client, uids)
            self.feed.flush()
            self._finish(client, done, held)
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
        for uid in group:
            if self.stop.is_set():
                return True
            raw = fetched.pop(uid, {}).get(b"BODY[]")  # let go of each mail once filed
            if raw is None:
                continue
            try:
                outcome = self.feed.file(bytes(raw), self.name)
            except TemporaryFailure as exc:
                log.warning("IMAP %s: uid %d deferred: %s", self.cfg.label, uid, exc)
                return True
            (held if outcome.status == "quarantined" else done).append(uid)
        return False

    def _finish(self, client: IMAPClient, done: list[int], held: list[int]) -> None:
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
        renew = min(IDLE_RENEW_SECONDS, self.cfg.poll_seconds)
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
