"""The path of one inbound mail, declared in one place: :data:`PREPARE`, then :data:`COMMIT`.

Every source hands raw bytes to :func:`ingest`.  The mail travels as a :class:`Mail`
record through the steps below, in the order of the two tuples; each step is a function
``(ctx, mail) -> mail`` that returns the record with what it found.  The step that
decides what becomes of the mail sets ``outcome``, and the steps after it are skipped.

PREPARE runs before the database transaction: the mail is read, classified, its facts
found and its text rated by the priority rules (pure:
:data:`READ`, in a reader process that is ended when it takes longer than ``[limits]
max_seconds_per_mail``, see :mod:`mailbot.inbound.readers`), and its raw bytes and
attachments are written.  Where they are files on this host, the reader writes them as it
reads (the raw bytes before it parses: a mail that ends its reader is kept), on the other
core; otherwise, and when the reader could not, this process does.  A mail is never
quarantined or filed before its raw bytes are kept.  COMMIT runs in one
transaction that also writes the ingest record, so a crash leaves everything a mail
caused (ticket, messages, events, outbox rows) or nothing, and a re-delivery is a no-op.

A fault of ours (a full or unwritable disk, a busy or failing database) raises
:class:`~mailbot.inbound.source.TemporaryFailure`: the source keeps the mail and retries.
Anything else that goes wrong with a mail quarantines it with the error; it is never lost.
The outbox sender is woken only once a mail's commit is durable, so no acknowledgement
leaves for a ticket a power loss could still take back.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace

from mailbot.context import Context
from mailbot.inbound import readers
from mailbot.inbound.source import Envelope, Feed, TemporaryFailure, taken
from mailbot.policy import rules
from mailbot.reading import classify as classify_mod
from mailbot.reading import message
from mailbot.reading.facts import FactPatterns, extract_facts
from mailbot.reading.headers import sender_in_head
from mailbot.reading.limits import Limits
from mailbot.reading.message import Message
from mailbot.reading.spam import SpamContext, spam_reason
from mailbot.store import TemporaryStoreError
from mailbot.store import inbound as iq
from mailbot.store import tickets as tq
from mailbot.store.blobs import Blobs, FileBlobs
from mailbot.tickets import agents, bounces, filing, spam, threads
from mailbot.tickets import identify as identify_mod
from mailbot.tickets.identify import Identity
from mailbot.tickets.outcome import Outcome

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Mail:
    """One inbound mail on its way through the steps; each fills in what it found."""

    raw: bytes
    # Where it came from: "smtp", "lmtp", "imap:<label>", "pipe", "cli".
    source: str
    # The SMTP envelope its MTA gave (sender None: unknown, e.g. read from IMAP).
    envelope: Envelope = field(default_factory=Envelope)
    # Sync each mail to disk; False for a batch that the source flushes at once.
    durable: bool = True
    # An operator releases it from the spam hold: filed although its bytes were seen.
    release: bool = False
    sha: str = ""  # fingerprint
    spooled: bool = False  # keep_raw, spool: its raw bytes are kept
    kept: bool = False  # keep_attachments, save_attachments: its attachments are kept
    msg: Message | None = None  # parse
    verdict: classify_mod.Verdict | None = None  # classify
    spam: str = ""  # read_spam: why the filter in front called it spam
    match: threads.ThreadMatch = field(default_factory=threads.ThreadMatch)  # thread
    ticket: dict | None = None  # thread: the ticket it follows up on
    facts: dict = field(default_factory=dict)  # find_facts
    rated: rules.RuleMatch | None = None  # rate: the priority rule its text matches
    identity: Identity = field(default_factory=Identity)  # identify
    outcome: Outcome | None = None  # set by the step that decides
    started: float = field(default_factory=time.monotonic)  # when the source handed it over


Step = Callable[[Context, Mail], Mail]


@dataclass(frozen=True)
class Reading:
    """What the READ steps know of this instance: they run in a reader process, which has
    no Context, so this small record crosses with each mail."""

    limits: Limits
    classify: classify_mod.ClassifyContext
    facts: FactPatterns
    rating: rules.Rating
    # How the spam filter's verdict headers are read; None: spam is not held.
    spam: SpamContext | None = None
    # Where the reader keeps the raw mail and the attachments itself (files on this host);
    # None: they are rows of the store, which this process writes.
    spool: Blobs | None = None
    files: Blobs | None = None


ReadStep = Callable[[Reading, Mail], Mail]


def fingerprint(ctx: Context, mail: Mail) -> Mail:
    """The raw bytes' hash, their name in the spool and in the ingest records."""
    return replace(mail, sha=hashlib.sha256(mail.raw).hexdigest())


def spool(ctx: Context, mail: Mail) -> Mail:
    """The raw bytes kept under their hash (on disk, or in a PostgreSQL store), unless the
    reader kept them: from here on nothing can be lost.  A mail filed before is not written
    again (its bytes may be gone on purpose: retention, or a person's data erased)."""
    if mail.spooled:
        return mail
    try:
        ctx.spool.put(mail.raw, mail.sha, sync=mail.durable)
    except (OSError, TemporaryStoreError) as exc:
        raise TemporaryFailure(f"cannot write the spool: {exc}") from exc
    return replace(mail, spooled=True)


def skip_same_bytes(ctx: Context, mail: Mail) -> Mail:
    """The same bytes filed before (and not quarantined): a duplicate, nothing to do."""
    known = iq.ingest_by_sha(ctx.store, mail.sha)
    if known is None or known["outcome"] == "quarantined" or _held_self(mail, known):
        return mail
    return replace(mail, outcome=Outcome("duplicate", _number(ctx, known["ticket_id"]),
                                         "same bytes"))


def read(ctx: Context, mail: Mail) -> Mail:
    """The READ steps in a reader process: one that takes longer than
    ``[limits] max_seconds_per_mail`` is ended, and the mail quarantined with that reason."""
    return READERS.run(READ, reading_context(ctx), mail, ctx.config.limits.max_seconds_per_mail,
                       ctx.config.service.reading_processes)


def keep_raw(reading: Reading, mail: Mail) -> Mail:
    """The raw bytes kept by the reader, before it parses them (files on this host only).
    A file that cannot be written is left to :func:`spool`, whose error is ours."""
    if reading.spool is None:
        return mail
    try:
        reading.spool.put(mail.raw, mail.sha, sync=mail.durable)
    except OSError:
        return mail
    return replace(mail, spooled=True)


def parse(reading: Reading, mail: Mail) -> Mail:
    """One normalised message record; a mail beyond the limits is quarantined here."""
    return replace(mail, msg=message.parse(mail.raw, reading.limits))


def classify(reading: Reading, mail: Mail) -> Mail:
    """Customer, agent, auto-reply, bounce, robot or our own loop, and why (the envelope's
    null sender counts as much as the headers)."""
    return replace(mail, verdict=classify_mod.classify(mail.msg, reading.classify,
                                                       mail.envelope.null_sender))


def read_spam(reading: Reading, mail: Mail) -> Mail:
    """The verdict of the spam filter in front (not for a mail an operator releases)."""
    if mail.release or reading.spam is None:
        return mail
    return replace(mail, spam=spam_reason(mail.msg, reading.spam))


def keep_attachments(reading: Reading, mail: Mail) -> Mail:
    """The attachments kept by the reader, which decoded them to hash them (files on this
    host only); a file that cannot be written is left to :func:`save_attachments`."""
    if reading.files is None or mail.spam:
        return mail
    try:
        _put_attachments(reading.files, mail)
    except OSError:
        return mail
    return replace(mail, kept=True)


def find_facts(reading: Reading, mail: Mail) -> Mail:
    """Facts the customer named in this mail (customer number, version, device, error), for
    a mail that may open or follow up on a ticket; the others never use them."""
    if not _may_be_filed(mail):
        return mail
    return replace(mail, facts=extract_facts(mail.msg.subject, mail.msg.text, reading.facts))


def rate(reading: Reading, mail: Mail) -> Mail:
    """The priority rule the text of a mail that may open a ticket matches first (the new
    ticket's initial priority, before the customer's contract raises it)."""
    if not _may_be_filed(mail):
        return mail
    return replace(mail, rated=rules.classify(mail.msg.subject, mail.msg.text, reading.rating))


def _may_be_filed(mail: Mail) -> bool:
    """Whether the mail may open or follow up on a ticket: a customer's or a robot's, not
    held as spam (the steps of COMMIT before :func:`file_customer_mail` take the rest)."""
    return not mail.spam and mail.verdict.kind in (classify_mod.CUSTOMER, classify_mod.ROBOT)


def save_attachments(ctx: Context, mail: Mail) -> Mail:
    """Attachment payloads by content hash, before the transaction refers to them, unless
    the reader kept them.

    A file that cannot be written (full disk, unwritable directory) is our fault, not the
    mail's: the mail waits at its source.  Spam keeps only its raw bytes until released.
    """
    if mail.spam or mail.kept:
        return mail
    try:
        _put_attachments(ctx.files, mail)
    except (OSError, TemporaryStoreError) as exc:
        raise TemporaryFailure(f"cannot write an attachment: {exc}") from exc
    return replace(mail, kept=True)


def _put_attachments(files: Blobs, mail: Mail) -> None:
    for attachment in mail.msg.attachments:  # decoded as written: never whole in memory
        files.put(attachment.chunks(), attachment.sha256, sync=mail.durable)


def skip_same_message(ctx: Context, mail: Mail) -> Mail:
    """The same Message-ID (or content fingerprint) filed before: a duplicate."""
    earlier = iq.ingest_by_message_id(ctx.store, identity_key(mail.msg))
    if earlier is None or _held_self(mail, earlier):
        return mail
    return replace(mail, outcome=Outcome("duplicate", _number(ctx, earlier["ticket_id"]),
                                         "same Message-ID"))


def drop_loop(ctx: Context, mail: Mail) -> Mail:
    """Our own mail coming back never becomes a ticket."""
    if mail.verdict.kind != classify_mod.LOOP:
        return mail
    return replace(mail, outcome=Outcome("ignored", "", mail.verdict.reason))


def hold_spam(ctx: Context, mail: Mail) -> Mail:
    """Mail the filter in front called spam is held: no ticket, no answer, nobody told.

    A mail an operator releases is filed instead, and its held entry goes in this same
    transaction (a forged bounce or agent mail is held too: it acts on nothing).
    """
    if mail.release:
        spam.released(ctx, mail.sha)
        return mail
    if not mail.spam:
        return mail
    return replace(mail, outcome=spam.hold(ctx, mail.sha, mail.msg, mail.source, mail.spam))


def file_bounce(ctx: Context, mail: Mail) -> Mail:
    """A delivery report acts on the outbox row and the ticket of a mail we sent, and only
    on the addresses it went to; any other report is recorded and changes nothing."""
    if mail.verdict.kind != classify_mod.BOUNCE:
        return mail
    return replace(mail, outcome=bounces.handle(ctx, mail.msg, mail.verdict, sha=mail.sha,
                                                source=mail.source))


def thread(ctx: Context, mail: Mail) -> Mail:
    """Which ticket the mail follows up on, and by what evidence (None: a new one)."""
    config = ctx.config
    match = threads.find(mail.msg, signer=ctx.signer,
                         support_addresses=config.support.addresses,
                         tag=threads.tag_pattern(config.tickets.tag_prefix),
                         lookup=lambda mid: tq.ticket_for_message_id(ctx.store, mid))
    if match.ticket_id is not None:
        ticket = tq.by_id(ctx.store, match.ticket_id)
    else:
        ticket = tq.by_number(ctx.store, match.ticket_number) if match.ticket_number else None
    return replace(mail, match=match, ticket=ticket)


def file_agent_mail(ctx: Context, mail: Mail) -> Mail:
    """An agent acts only through a reply address signed for that agent; an agent's mail
    without one is suspicious, and a person's mail through one that is not theirs (or
    too old) is refused with an explanation."""
    person = mail.verdict.kind in (classify_mod.AGENT, classify_mod.CUSTOMER)
    if person and mail.match.reply_tag is not None and mail.ticket is not None:
        return replace(mail, outcome=agents.handle_reply(ctx, mail.msg, mail.ticket,
                                                         mail.match.reply_tag))
    if mail.verdict.kind != classify_mod.AGENT:
        return mail
    return replace(mail, outcome=agents.suspicious(
        ctx, mail.msg, mail.ticket, "agent address without a valid reply address"))


def note_auto_reply(ctx: Context, mail: Mail) -> Mail:
    """An out-of-office reply is a note on its ticket, never a ticket of its own."""
    if mail.verdict.kind != classify_mod.AUTO_REPLY:
        return mail
    if mail.ticket is None:
        return replace(mail, outcome=Outcome("ignored", "", mail.verdict.reason))
    return replace(mail, outcome=filing.note_auto_reply(ctx, mail.msg, mail.ticket,
                                                        mail.verdict.reason))


def identify(ctx: Context, mail: Mail) -> Mail:
    """Who wrote: contact, account and contract, by address or domain; a customer number
    in the mail is a claim unless ``[directory] claims`` trusts it."""
    numbers = mail.facts.get("customer_number", ())
    return replace(mail, identity=identify_mod.identify(
        ctx.store, mail.msg.from_addr, numbers, ctx.config.directory.claims,
        f"{mail.msg.subject}\n{mail.msg.text}"))


def file_customer_mail(ctx: Context, mail: Mail) -> Mail:
    """A follow-up, a linked new ticket, or a new ticket with policy and acknowledgement."""
    return replace(mail, outcome=filing.file_customer_mail(
        ctx, mail.msg, mail.verdict, (mail.match, mail.ticket),
        (mail.identity, mail.facts), mail.rated))


# The whole story of a mail, in order; READ runs in a reader process (step `read`).  The
# same bytes are looked for twice: before they are read and kept (a mail filed before is
# not written again), and in the transaction, which alone knows of a copy filed beside it
# meanwhile (read at the same time in a batch, or by another process).
READ: tuple[ReadStep, ...] = (keep_raw, parse, classify, read_spam, keep_attachments,
                              find_facts, rate)
PREPARE: tuple[Step, ...] = (fingerprint, skip_same_bytes, read, spool, save_attachments)
COMMIT: tuple[Step, ...] = (skip_same_bytes, skip_same_message, drop_loop, hold_spam,
                            file_bounce, thread, file_agent_mail, note_auto_reply, identify,
                            file_customer_mail)
# Where `read` cuts PREPARE: a batch hands its mails to the readers in between (ingest_all).
_BEFORE_READ = PREPARE[:PREPARE.index(read)]
_AFTER_READ = PREPARE[PREPARE.index(read) + 1:]
# A batch is filed in groups, one transaction each: at most this many mails, and this many
# bytes of raw mail (a bigger mail is a group of its own).
GROUP_MAILS = 32
GROUP_BYTES = 8 << 20


def ingest(ctx: Context, raw: bytes, source: str, durable: bool = True,
           release: bool = False, envelope: Envelope | None = None) -> Outcome:
    """File one raw mail through every step; the returned outcome is final once this returns.

    With ``durable=False`` (a batch of mails) nothing is fsynced: the caller must call
    :func:`flush` before it acknowledges the batch to the mail's source, and only that
    flush wakes the outbox sender.  A fault of ours, also while quarantining, raises
    :class:`TemporaryFailure` and leaves nothing quarantined.  ``release`` files a mail
    held as spam (see :func:`release_spam`).
    """
    mail = Mail(raw=raw, source=source, durable=durable, release=release,
                envelope=envelope or Envelope())
    try:
        mail, error = _prepared(ctx, mail)
        if error is None and mail.outcome is not None:
            return mail.outcome
        with ctx.store.transaction(durable=durable):
            mail, outcome = _filed(ctx, mail, error)
    except TemporaryStoreError as exc:  # also while quarantining: the mail must not be lost
        raise TemporaryFailure(f"database unavailable: {exc}") from exc
    return _told(ctx, mail, outcome)


def ingest_all(ctx: Context, arrivals: Iterable[tuple[bytes, Envelope | None]], source: str,
               stop: Callable[[], bool] = lambda: False) -> Iterator[Outcome]:
    """File the mails of one batch in order; each outcome is final once yielded.

    The mails of a group are read in the reader processes while the group before them is
    filed: in one transaction, each mail in a savepoint of its own (a mail that fails alone
    is quarantined, the others stay filed).  Nothing is fsynced: the caller must call
    :func:`flush` before it acknowledges the mails to their source.  A TemporaryFailure is
    raised after the outcomes of the mails before the one that met it, and so is an error
    of ``arrivals`` (a file that cannot be read, refused).  Nothing more is taken from
    ``arrivals`` once ``stop()`` is true; what was taken is filed.
    """
    groups: list[_Ahead] = []  # the group being filed, and the one read meanwhile
    try:
        for group in _groups(arrivals, source, stop):
            groups.append(_Ahead(ctx, group))
            if len(groups) == 2:
                yield from _file_group(ctx, groups[0], between=groups[1].pump)
                groups.pop(0)
        if groups:
            yield from _file_group(ctx, groups[0])
    finally:  # a mail with a reader is read to its end (within its budget), the rest dropped
        for group in groups:
            group.settle()


class _Ahead:
    """A group's mails on their way through PREPARE, without a thread of their own: each is
    handed to a reader process as one comes free and taken back when it answered, in the
    pauses the filing of the group before them leaves (:meth:`pump`, between its mails, so
    that the two groups never have more mails with readers than there are readers);
    :meth:`prepared` finishes the rest.  The steps before `read` and after it run in this
    thread, within the budget of none (they are ours); with a budget of 0 the whole of
    PREPARE runs here, one mail at a time."""

    def __init__(self, ctx: Context, group: _Group) -> None:
        self.ctx = ctx
        self.error = group.error
        self.waiting = list(reversed(group.mails))  # popped from the end: in order
        self.slots: list[_Slot] = []  # the mails handed on so far, in order
        self.failure: TemporaryFailure | None = None
        self.budget = ctx.config.limits.max_seconds_per_mail
        self.keep = ctx.config.service.reading_processes
        self.reading = reading_context(ctx)  # the config as the group starts: one for all

    def pump(self) -> None:
        """Take back what the readers answered, and hand on more mails while readers are
        free.  Never raises for a mail: a fault of ours is kept for :meth:`prepared`."""
        for slot in self.slots:
            if slot.handed is not None and slot.handed.answered():
                self._take(slot)
        while self.waiting and self.failure is None and self._with_readers() < max(1, self.keep):
            self._hand(self.waiting.pop())

    def prepared(self) -> tuple[list[tuple[Mail, Exception | None]], TemporaryFailure | None]:
        """Every mail after PREPARE, in order, up to the first fault of ours, and that
        fault (or None)."""
        while self.waiting and self.failure is None:
            self.pump()
            if self.waiting and self.failure is None:  # every reader is busy: wait for one
                self._take(next(slot for slot in self.slots if slot.handed is not None))
        ready = []
        for slot in self.slots:
            if slot.handed is not None:
                self._take(slot)
            if isinstance(slot.error, TemporaryFailure):
                return ready, slot.error
            ready.append((slot.mail, slot.error))
        return ready, self.failure

    def settle(self) -> None:
        """Take back every mail still with a reader (its reader is then free again)."""
        for slot in self.slots:
            if slot.handed is not None:
                self._take(slot)

    def _with_readers(self) -> int:
        return sum(slot.handed is not None for slot in self.slots)

    def _hand(self, mail: Mail) -> None:
        slot = _Slot(mail)
        self.slots.append(slot)
        if not self.budget:  # read in this process
            self._run(slot, PREPARE)
            return
        self._run(slot, _BEFORE_READ)
        if slot.mail.outcome is not None or slot.error is not None:
            return
        try:
            slot.handed = READERS.hand(READ, self.reading, slot.mail, self.budget, self.keep)
        except TemporaryFailure as exc:
            self._fault(slot, exc)
        except Exception as exc:  # as the read step would have: the mail's, or mailbot's
            self._kept(slot, exc)

    def _take(self, slot: _Slot) -> None:
        handed, slot.handed = slot.handed, None
        try:
            slot.mail = READERS.take(handed)
        except TemporaryFailure as exc:
            self._fault(slot, exc)
        except Exception as exc:
            self._kept(slot, exc)
        else:
            self._run(slot, _AFTER_READ)

    def _run(self, slot: _Slot, steps: tuple[Step, ...]) -> None:
        """``steps`` on the slot's mail, in this thread."""
        try:
            slot.mail, slot.error = _prepared(self.ctx, slot.mail, steps)
        except (TemporaryFailure, TemporaryStoreError) as exc:
            self._fault(slot, _ours(exc))

    def _kept(self, slot: _Slot, exc: Exception) -> None:
        """A mail its reader refused, its raw bytes kept for the quarantine."""
        try:
            slot.mail, slot.error = spool(self.ctx, slot.mail), exc
        except TemporaryFailure as failure:
            self._fault(slot, failure)

    def _fault(self, slot: _Slot, failure: TemporaryFailure) -> None:
        """A fault of ours met this mail: no more mails are handed on after it."""
        slot.error = failure
        self.failure = self.failure or failure


@dataclass
class _Slot:
    """One mail of an :class:`_Ahead`: the record so far, its reader while it has one, and
    the error that stopped it (the mail's, or a TemporaryFailure)."""

    mail: Mail
    handed: readers.Handed | None = None
    error: Exception | None = None


def _ours(exc: Exception) -> TemporaryFailure:
    """A fault of ours as the source sees it."""
    return exc if isinstance(exc, TemporaryFailure) else \
        TemporaryFailure(f"database unavailable: {exc}")


@dataclass(frozen=True)
class _Group:
    """Mails of a batch filed in one transaction; ``error`` ended the batch after them."""

    mails: list[Mail]
    error: BaseException | None = None


def _groups(arrivals: Iterable[tuple[bytes, Envelope | None]], source: str,
            stop: Callable[[], bool]) -> Iterator[_Group]:
    """The batch in groups of :data:`GROUP_MAILS` and :data:`GROUP_BYTES` at most."""
    mails: list[Mail] = []
    size = 0
    arriving = taken(arrivals, stop)
    while True:
        try:
            raw, envelope = next(arriving)
        except StopIteration:
            break
        except Exception as exc:  # the source's to raise once the mails before it are filed
            yield _Group(mails, exc)
            return
        if mails and (len(mails) == GROUP_MAILS or size + len(raw) > GROUP_BYTES):
            yield _Group(mails)
            mails, size = [], 0
        mails.append(Mail(raw=raw, source=source, durable=False,
                          envelope=envelope or Envelope()))
        size += len(raw)
    if mails:
        yield _Group(mails)


def _file_group(ctx: Context, group: _Ahead,
                between: Callable[[], None] = lambda: None) -> Iterator[Outcome]:
    """Wait for a group's mails to be read, file them in one transaction (``between`` runs
    after each mail), then yield their outcomes (and raise the error of the arrivals, or
    the TemporaryFailure that cut the group short)."""
    ready, failure = group.prepared()
    try:
        with ctx.store.transaction(durable=False):
            filed = []
            for mail, read_error in ready:
                filed.append(_filed(ctx, mail, read_error))
                between()
    except TemporaryStoreError as exc:
        raise TemporaryFailure(f"database unavailable: {exc}") from exc
    for mail, outcome in filed:
        yield _told(ctx, mail, outcome)
    if failure is not None:
        raise failure
    if group.error is not None:
        raise group.error


def _filed(ctx: Context, mail: Mail, error: Exception | None) -> tuple[Mail, Outcome | None]:
    """One mail inside the caller's transaction (a mail alone, or one of a group), in a
    savepoint of its own: the record filed (outcome None: announce it), or the outcome it
    had before (same bytes), or its quarantine's when ``error`` or the COMMIT steps say so
    (then nothing it wrote stays)."""
    if error is None and mail.outcome is not None:
        return mail, mail.outcome
    if error is None:
        try:
            with ctx.store.savepoint():
                return _committed(ctx, mail), None
        except (TemporaryFailure, TemporaryStoreError):
            raise
        except Exception as exc:
            error = exc
    return mail, _held(ctx, mail.sha, mail.source, _refused(mail, error), _about(mail))


def _prepared(ctx: Context, mail: Mail, steps: tuple[Step, ...] = PREPARE
              ) -> tuple[Mail, Exception | None]:
    """The mail after the PREPARE steps (or some of them, in order; up to an outcome), and
    the error that stopped them with the record as it was then (its hash), its raw bytes
    kept for the quarantine, or None.  Faults of ours raise."""
    try:
        for step in steps:
            mail = step(ctx, mail)
            if mail.outcome is not None:
                break
    except (TemporaryFailure, TemporaryStoreError):
        raise
    except Exception as exc:  # the reader may have kept the bytes: then they are found
        return spool(ctx, mail), exc
    return mail, None


def _told(ctx: Context, mail: Mail, outcome: Outcome | None) -> Outcome:
    """After the commit: a filed mail announced, a quarantine logged and counted; the
    mail's outcome (see :func:`_filed`)."""
    if outcome is None:
        _announce(ctx, mail)
        return mail.outcome
    if outcome.status == "quarantined":
        _counted_quarantine(ctx, mail.sha, mail.source, outcome.detail)
    return outcome


def _committed(ctx: Context, mail: Mail) -> Mail:
    """The COMMIT steps and the ingest record, inside the caller's transaction."""
    for step in COMMIT:
        mail = step(ctx, mail)
        if mail.outcome is not None:
            break
    _record(ctx, mail)
    return mail


def _refused(mail: Mail, exc: Exception) -> str:
    """Why the mail is quarantined (the traceback goes to the debug log)."""
    log.debug("mail %s from %s cannot be filed", mail.sha[:12], mail.source,
              exc_info=(type(exc), exc, exc.__traceback__))
    return refusal(exc)


def _about(mail: Mail) -> tuple[int, str]:
    """A quarantined mail's size and sender, as far as it was read."""
    return len(mail.raw), mail.msg.from_addr if mail.msg is not None else sender_in_head(mail.raw)


def refusal(exc: Exception) -> str:
    """Why a mail is quarantined, in a sentence for people: the reader's reason, or that
    mailbot itself failed (never an exception's class or text: the traceback is logged)."""
    if isinstance(exc, message.ParseError):
        return str(exc)
    return "mailbot failed while processing this mail (an error of mailbot's; see the log)"


def _record(ctx: Context, mail: Mail) -> None:
    """The ingest record, in the mail's transaction: a re-delivery of it is a no-op."""
    iq.record_ingest(ctx.store, mail.sha, identity_key(mail.msg), mail.outcome.status,
                     mail.outcome.ticket_number, mail.source, ctx.clock())


def _announce(ctx: Context, mail: Mail) -> None:
    """After the commit: wake the outbox sender (if durable), count the outcome, log a line."""
    if mail.durable:  # else the batch's flush wakes it
        ctx.on_outbox()
    ctx.metrics.ingested(mail.outcome, mail.source, mail.started)
    outcome = mail.outcome
    log.info("mail %s from %s via %s: %s %s %s", mail.msg.message_id or mail.sha[:12],
             mail.msg.from_addr, mail.source, outcome.status, outcome.ticket_number,
             outcome.detail, extra={"ticket": outcome.ticket_number, "source": mail.source,
                                    "message_id": mail.msg.message_id,
                                    "outcome": outcome.status})


def feed(ctx: Context) -> Feed:
    """The pipeline as the daemon's sources see it: batched, made durable by ``flush``."""
    return Feed(file=lambda raw, source, envelope=None: ingest(ctx, raw, source, durable=False,
                                                               envelope=envelope),
                file_all=lambda arrivals, source, stop=lambda: False: ingest_all(
                    ctx, arrivals, source, stop),
                flush=lambda: flush(ctx),
                screen=lambda size, source, where: screen(ctx, size, source, where))


def flush(ctx: Context) -> None:
    """Make everything filed so far durable (raw mails, attachments, database) in one go.

    Only then is the outbox sender woken for the acknowledgements of the batch.  A sync
    that fails is a :class:`TemporaryFailure`: the batch must not be acknowledged.
    """
    try:
        ctx.spool.sync()
        ctx.files.sync()
        ctx.store.sync()
    except (OSError, TemporaryStoreError) as exc:
        raise TemporaryFailure(f"cannot make the mail durable: {exc}") from exc
    ctx.on_outbox()


def _held(ctx: Context, sha: str, source: str, error: str, about: tuple[int, str]) -> Outcome:
    """Hold a mail that could not be processed, inside the caller's transaction; its raw
    bytes stay in the spool.  ``about`` is the mail's size and sender (when it could be
    read), for the operator."""
    now = ctx.clock()
    iq.add_quarantine(ctx.store, sha, source, error[:2000], now, *about)
    iq.record_ingest(ctx.store, sha, "", "quarantined", "", source, now)
    return Outcome("quarantined", "", error)


def _counted_quarantine(ctx: Context, sha: str, source: str, error: str) -> None:
    """A quarantine, once committed: logged and counted."""
    log.warning("quarantined mail %s from %s: %s", sha[:12], source, error)
    ctx.metrics.ingested(Outcome("quarantined"), source)


def screen(ctx: Context, size: int, source: str, where: str) -> Outcome | None:
    """Refuse a mail over the size limit before it is read (None: read it).

    It is listed in the quarantine without bytes; ``where`` says where it stays.
    """
    limit = ctx.config.limits.max_message_bytes
    if size <= limit:
        return None
    error = (f"message is {size} bytes, over the limit of {limit} (limits.max_message_bytes): "
             f"not downloaded; {where}")
    log.warning("refused a mail from %s unread: %s", source, error)
    try:
        with ctx.store.transaction():
            iq.add_quarantine(ctx.store, "", source, error, ctx.clock())
    except TemporaryStoreError as exc:
        raise TemporaryFailure(f"database unavailable: {exc}") from exc
    ctx.metrics.ingested(Outcome("quarantined"), source)
    return Outcome("quarantined", "", error)


def retry_quarantined(ctx: Context, ids: tuple[int, ...] = ()) -> list[tuple[int, Outcome]]:
    """Run held mails through the pipeline again, e.g. after a fix; results per entry.

    A mail refused unread has no bytes here: it waits where its entry says.  A mail that is
    refused again stays held in the same entry, with the new reason (and one more copy).
    """
    results = []
    for entry in iq.quarantined(ctx.store):
        if (ids and entry["id"] not in ids) or not entry["sha256"]:
            continue
        try:
            raw = ctx.spool.get(entry["sha256"])
        except TemporaryStoreError as exc:
            raise TemporaryFailure(f"database unavailable: {exc}") from exc
        outcome = ingest(ctx, raw, entry["source"])
        if outcome.status != "quarantined":
            with ctx.store.transaction():
                iq.set_quarantine_status(ctx.store, entry["id"], "released", ctx.clock())
        results.append((entry["id"], outcome))
    return results


def release_spam(ctx: Context, entry_id: int) -> Outcome:
    """File a mail held as spam as a normal mail (ticket, acknowledgement): an operator's call.

    Its bytes were seen (their ingest record says ``spam``), so the duplicate checks let
    this one mail through, and the filing rewrites its ingest record.  An unknown entry is
    an :class:`~mailbot.tickets.actions.OperatorError`.
    """
    held = spam.entry(ctx, entry_id)
    return ingest(ctx, spam.raw_of(ctx, held), held["source"], release=True)


def _held_self(mail: Mail, record: dict) -> bool:
    """Whether ``record`` is the spam hold's record of the very mail being released."""
    return mail.release and record["outcome"] == "spam" and record["sha256"] == mail.sha


def identity_key(msg: Message) -> str:
    """What makes two deliveries the same mail: its Message-ID, else a content fingerprint.

    The fingerprint covers the whole mail (attachments too) except the trace headers
    (Received, Delivered-To, ...) that differ between two copies of a mail without
    Message-ID sent to two support addresses: see :attr:`Message.fingerprint`.
    """
    return msg.message_id or "fingerprint:" + msg.fingerprint


def reading_context(ctx: Context) -> Reading:
    """What the READ steps need to know about this instance, as of now."""
    config = ctx.config
    held = SpamContext(scl_threshold=config.spam.scl_threshold,
                       authserv_id=config.trust.authserv_id) if config.spam.enabled else None
    on_disk = isinstance(ctx.spool, FileBlobs) and isinstance(ctx.files, FileBlobs)
    return Reading(limits=config.limits, classify=classify_context(ctx), facts=ctx.facts,
                   rating=ctx.policy.rating, spam=held,
                   spool=ctx.spool if on_disk else None, files=ctx.files if on_disk else None)


def classify_context(ctx: Context) -> classify_mod.ClassifyContext:
    """What classification needs to know about this instance (agents as of now)."""
    return classify_mod.ClassifyContext(own_addresses=ctx.config.support.addresses,
                                        loop_id=ctx.config.service.instance_id,
                                        agent_addresses=ctx.team.addresses())


# The reader processes of this process, started when the first mail comes; the fork server
# (a process with threads starts them through it) imports this module once for all.
READERS = readers.Readers(preload=(__name__,))


def _number(ctx: Context, ticket_id: int | None) -> str:
    ticket = tq.by_id(ctx.store, ticket_id) if ticket_id is not None else None
    return ticket["number"] if ticket else ""
