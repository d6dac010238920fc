"""Reading a mail in a process of its own, so that reading it can be ended.

Reading a mail (parsing, classifying) is pure work on its bytes; a hostile mail can make it
slow, and a thread cannot be stopped.  :class:`Readers` runs the pipeline's reading steps in
warm worker processes, the readers, one mail at a time each, and ends (SIGKILL) a reader whose
mail takes longer than its budget: that mail is refused with a sentence and quarantined, and a
fresh reader takes the next one.  Sources call from several threads at once: each call takes
an idle reader or starts one more, so a slow mail never holds up another source; ``keep``
readers wait warm between mails, any more end once their mail is read.  A batch hands mails
over and takes the records back later (:meth:`Readers.hand`, :meth:`Readers.take`), so that
one thread keeps several readers busy while it files.

How a reader starts: a process with one thread (`mailbot ingest`) forks itself, after its
imports, the cheapest warm start; a process with threads (the daemon) asks a fork server,
started once with the pipeline imported, since forking a process with threads may copy a
lock in a held state.

What crosses: the raw mail once, as bytes, and pickles of the small record around it.  Both
processes hold the raw mail, so it never comes back: the record's reference to it, and every
view into it (an attachment is a view, decoded only when it is written), cross as a reference
and a position (:class:`_Pickler`).  An attachment is never copied.  The steps' context (the
instance's settings: limits, addresses, compiled patterns) is pickled once and crosses to a
reader only when that reader does not have it yet; a reader keeps the last one it was sent.

Whose fault it is (the pipeline's rule: ours is a TemporaryFailure, the mail's a quarantine):

- A reader cannot be started, does not say that it is ready, or ends before it took the mail:
  ours; the mail stays at its source.
- The reading steps raise: as in the source's own process (a ParseError's sentence, else
  "mailbot failed ..."); why goes to the debug log (:func:`_why`).
- The budget runs out: the mail's, quarantined with the budget's sentence.
- A reader ends without an answer while it reads (a crash of the parser, the kernel's OOM
  killer, someone's kill): the end may have been ours, so the mail is read again in a fresh
  reader; a second end is the mail's, quarantined with a sentence naming how it ended.
- The readers are closed while one reads (the daemon stops): ours.

A reader ignores SIGTERM and SIGINT (a service manager sends them to every process of the
service; the daemon ends its readers after the mail in hand), ends when its pipe to the parent
closes, and on Linux dies with its parent (PR_SET_PDEATHSIG), also in the middle of a mail.
ps and top show it as "mailbot-reader".
"""

from __future__ import annotations

import atexit
import ctypes
import functools
import io
import logging
import multiprocessing
import multiprocessing.connection
import multiprocessing.context
import multiprocessing.pool
import os
import pickle
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from mailbot.inbound.source import TemporaryFailure
from mailbot.reading.limits import ParseError

log = logging.getLogger(__name__)

# Seconds a new reader may take to say it is ready (the first also starts the fork server).
START_SECONDS = 60.0
# How a pickle refers to the raw mail, which both processes hold.
RAW = "raw"
# Linux's prctl options: a process's name, and the signal it gets when its parent ends.
_PR_SET_NAME = 15
_PR_SET_PDEATHSIG = 1
_NAME = b"mailbot-reader"
# Process.start changes multiprocessing's list of children: one thread at a time.
_STARTING = threading.Lock()
# The first byte of a context sent to a reader (a job, a pickle, begins with its PROTO byte).
_CONTEXT = b"C"


class Record(Protocol):
    """What the readers need of a pipeline record: the raw mail, and its hash for the log."""

    raw: bytes
    sha: str


Step = Callable[[Any, Any], Any]


class ReadingFailed(Exception):
    """A reading step raised something other than a ParseError (an error of mailbot's)."""


class Readers:
    """The reader processes of this process; safe to use from several threads at once.

    ``preload`` names the modules of the steps, imported once by the fork server.
    """

    def __init__(self, preload: tuple[str, ...] = ()) -> None:
        self.preload = preload
        self._lock = threading.Lock()
        self._idle: list[_Reader] = []
        self._busy: set[_Reader] = set()
        self._closed_at_exit = False
        # The last context handed on and its pickle (made once, however many mails use it).
        self._context: tuple[Any, bytes] | None = None

    def run(self, steps: Sequence[Step], context: Any, record: Record, budget: float,
            keep: int) -> Any:
        """The record after ``steps`` ran on it (``step(context, record)`` each) in a reader.

        More than ``budget`` seconds raise ParseError with the budget's sentence; a budget
        of 0 runs the steps in this process.  ``keep`` readers stay warm afterwards.  Raises
        TemporaryFailure for a fault of ours (module docs), and what the steps raise.
        """
        if not budget:
            return _apply(steps, context, record)
        return self.take(self.hand(steps, context, record, budget, keep))

    def hand(self, steps: Sequence[Step], context: Any, record: Record, budget: float,
             keep: int) -> Handed:
        """Hand ``record`` to a reader (an idle one, else a new one) and return at once:
        :meth:`take` waits for what :meth:`run` returns.  The budget runs from now.  A
        budget of 0 is not for this (:meth:`run` reads in this process then)."""
        # Why a step failed is written out only for a debug log (see _why).
        job = pickled((steps, record, log.isEnabledFor(logging.DEBUG)), record.raw)
        handed = Handed(self._take(), job, self._pickled_context(context), record, budget,
                        keep)
        self._send(handed)
        return handed

    def _pickled_context(self, context: Any) -> bytes:
        """``context`` as it crosses: pickled again only when it differs from the last one
        (a batch hands every mail of a group the same; a config reload makes a new one)."""
        with self._lock:
            if self._context is None or self._context[0] != context:
                self._context = (context, _CONTEXT + pickle.dumps(context,
                                                                  pickle.HIGHEST_PROTOCOL))
            return self._context[1]

    def take(self, handed: Handed) -> Any:
        """The record a handed mail came back as (see :meth:`run`), waiting for it within
        its budget; a reader that ended while it read is replaced once, and the mail read
        again from the start (with a budget of its own)."""
        record, ends = handed.record, []
        while True:
            reader = handed.reader
            try:
                answer = reader.wait(handed.budget - (time.monotonic() - handed.sent))
            except TimeoutError:
                self._drop(reader)
                log.warning("mail %s: reading took longer than %g s; its reader (process %s) "
                            "was ended", record.sha[:12], handed.budget, reader.pid)
                raise ParseError(f"reading this mail took longer than {handed.budget:g} s "
                                 "(limits.max_seconds_per_mail)") from None
            if answer is not None:
                self._give_back(reader, handed.keep)
                return _outcome(unpickled(answer, record.raw))
            self._drop(reader)
            if reader.stopped:
                raise TemporaryFailure("mailbot stopped its readers while a mail was read")
            ends.append(reader.end())
            log.warning("mail %s: its reader (process %s) ended while reading it (%s)%s",
                        record.sha[:12], reader.pid, ends[-1],
                        "" if len(ends) == 2 else "; reading it again in a fresh one")
            if len(ends) == 2:
                raise ParseError(f"the process reading this mail ended twice while reading "
                                 f"it ({ends[-1]}): the mail may be built to crash mail "
                                 "readers")
            handed.reader = self._take()
            self._send(handed)

    def _send(self, handed: Handed) -> None:
        """The job to the handed mail's reader, its budget starting now."""
        handed.sent = time.monotonic()
        try:
            handed.reader.send(handed.context, handed.job, handed.record.raw)
        except OSError as exc:
            self._drop(handed.reader)
            raise TemporaryFailure(f"the process to read the mail ended before it took "
                                   f"it: {exc}") from exc

    def warm(self, count: int, budget: float) -> None:
        """Start readers until ``count`` wait or work (none for a budget of 0: mails are
        then read in this process).  A command calls it before it opens anything that
        starts threads (a PostgreSQL store's pool), so that its readers are forked from a
        process with one thread, the cheapest start, instead of asking a fork server."""
        if not budget:
            return
        with self._lock:
            missing = count - len(self._idle) - len(self._busy)
        for _ in range(missing):
            reader = self._started()
            with self._lock:
                self._busy.discard(reader)
                self._idle.append(reader)

    def close(self) -> None:
        """End every reader now (one still reading too: its caller gets a TemporaryFailure).
        New readers start when the next mail comes."""
        with self._lock:
            idle, busy, self._idle = self._idle, list(self._busy), []
        for reader in busy:  # its caller sees it end, and reaps it
            reader.stopped = True
            reader.process.kill()
        for reader in idle:
            reader.kill()

    def _take(self) -> _Reader:
        """An idle reader that still lives, else a new one."""
        with self._lock:
            while self._idle:
                reader = self._idle.pop()
                if reader.alive():
                    self._busy.add(reader)
                    return reader
                reader.kill()  # ended while idle (killed from outside): a new one replaces it
        return self._started()

    def _started(self) -> _Reader:
        """A new reader, counted busy."""
        reader = _Reader.start(self.preload)
        with self._lock:
            self._busy.add(reader)
            if not self._closed_at_exit:  # runs before multiprocessing's hook (registered
                atexit.register(self.close)  # earlier), which would wait for live readers
                self._closed_at_exit = True
        return reader

    def _give_back(self, reader: _Reader, keep: int) -> None:
        """Keep the reader warm if fewer than ``keep`` wait; else end it."""
        with self._lock:
            self._busy.discard(reader)
            if len(self._idle) < keep:
                self._idle.append(reader)
                return
        reader.kill()

    def _drop(self, reader: _Reader) -> None:
        """A reader that ended or must end: gone from the pool, its process reaped."""
        with self._lock:
            self._busy.discard(reader)
        reader.kill()


class Handed:
    """A mail handed to a reader, its answer not taken yet (:meth:`Readers.hand`)."""

    def __init__(self, reader: _Reader, job: bytes, context: bytes, record: Record,
                 budget: float, keep: int) -> None:
        self.reader = reader
        self.job = job
        self.context = context
        self.record = record
        self.budget = budget
        self.keep = keep
        self.sent = time.monotonic()

    def answered(self) -> bool:
        """Whether :meth:`Readers.take` would return (or raise) without waiting."""
        return self.reader.answered()


class _Reader:
    """One reader process and this process's end of the pipe to it."""

    def __init__(self, process: multiprocessing.process.BaseProcess,
                 conn: multiprocessing.connection.Connection) -> None:
        self.process = process
        self.conn = conn
        self.pid = process.pid
        # Ended by Readers.close while reading: the mail is not to blame.
        self.stopped = False
        # The pickled context this reader was sent last (it keeps it for the next mails).
        self.context: bytes | None = None

    @classmethod
    def start(cls, preload: tuple[str, ...]) -> _Reader:
        """A new reader that said it is ready; TemporaryFailure when none can be started."""
        try:
            context = _context(preload)
            ours, theirs = context.Pipe()
            process = context.Process(target=serve, args=(theirs,), name="mailbot-reader",
                                      daemon=True)
            with _STARTING:
                process.start()
            theirs.close()
        except (OSError, EOFError, RuntimeError) as exc:
            raise TemporaryFailure(f"cannot start a process to read mail: {exc}") from exc
        reader = cls(process, ours)
        if not reader._ready():
            reader.kill()
            raise TemporaryFailure(f"the process to read mail did not start ({reader.end()})")
        return reader

    def _ready(self) -> bool:
        """Whether the new reader says it is ready within START_SECONDS."""
        if not self.conn.poll(START_SECONDS):
            return False
        try:
            return self.conn.recv_bytes() == b"ready"
        except (EOFError, OSError):
            return False

    def send(self, context: bytes, job: bytes, raw: bytes) -> None:
        """Hand ``job`` about ``raw`` over, after ``context`` unless this reader has it;
        OSError when the reader ended before it took the mail.  The pipe alone tells: it
        ends when the reader does (a reader holds no other copy of it)."""
        if self.context is not context:
            self.conn.send_bytes(context)
            self.context = context
        self.conn.send_bytes(job)
        self.conn.send_bytes(raw)

    def answered(self) -> bool:
        """Whether the answer (or the end of the reader) is there, without waiting."""
        return self.conn.poll(0)

    def wait(self, seconds: float) -> bytes | None:
        """The reader's answer; None when it ended without one.  Raises TimeoutError (the
        reader killed) when there is none after ``seconds``."""
        if not self.conn.poll(max(0.0, seconds)):
            self.kill()
            raise TimeoutError
        try:
            return self.conn.recv_bytes()
        except (EOFError, OSError):
            return None

    def alive(self) -> bool:
        """Whether the process still runs."""
        return self.process.is_alive()

    def end(self) -> str:
        """How the (ended) process ended, in words: "killed by SIGKILL", "exit status 1"."""
        code = self.process.exitcode
        if code is not None and code < 0:
            return f"killed by {signal.Signals(-code).name}"
        return f"exit status {code}"

    def kill(self) -> None:
        """End the process at once and reap it (nothing happens to one that ended).

        An idle reader holds nothing that could be lost, so it is never asked to end.
        """
        if self.process.exitcode is None:
            self.process.kill()
            self.process.join()
        self.conn.close()


def _context(preload: tuple[str, ...]) -> multiprocessing.context.BaseContext:
    """How to start a reader: fork when this process has one thread, else the fork server."""
    if threading.active_count() == 1:
        return multiprocessing.get_context("fork")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(list(preload))
    return context


# -- in the reader ---------------------------------------------------------------------------------

def serve(conn: multiprocessing.connection.Connection) -> None:
    """A reader's life: answer each mail it is handed until its parent closes the pipe."""
    _keep_only(conn.fileno())
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, signal.SIG_IGN)
    _name_and_die_with_parent()
    context: bytes = b""
    try:
        conn.send_bytes(b"ready")
        while True:
            message = conn.recv_bytes()
            if message[:1] == _CONTEXT:  # for the mails after it
                context = message
                continue
            raw = conn.recv_bytes()
            conn.send_bytes(_answer(context, message, raw))
    except (EOFError, OSError):  # the parent closed the pipe, or ended
        return


def _keep_only(pipe: int) -> None:
    """Close every file but standard input, output and error and ``pipe``.

    A fork copies the parent's files and sockets (the database, the other readers' pipes:
    the pipe must end when the parent's end closes), and a fork server hands each child a
    copy of its life line (the fork server ends when no copy is left, and takes the busy
    readers with it: PR_SET_PDEATHSIG).  A reader needs none of them.
    """
    os.closerange(3, pipe)
    os.closerange(pipe + 1, os.sysconf("SC_OPEN_MAX"))


def _name_and_die_with_parent() -> None:
    """On Linux: "mailbot-reader" in ps and top, and SIGKILL when the parent ends (a busy
    reader reads no pipe; if the parent ended before this, the pipe is closed already)."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_NAME, ctypes.c_char_p(_NAME), 0, 0, 0)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _answer(context: bytes, job: bytes, raw: bytes) -> bytes:
    """What a reader says about one mail: the record after the steps, or why there is none."""
    try:
        steps, record, trace = unpickled(job, raw)
        context = _context_of(context)
    except Exception:  # our own job did not arrive whole: not the mail's doing
        return pickled(("broken", traceback.format_exc()), raw)
    try:
        return pickled(("read", _apply(steps, context, record)), raw)
    except Exception as exc:
        refused = isinstance(exc, ParseError)
        return pickled(("failed", refused, str(exc), _why(exc, refused) if trace else ""), raw)


@functools.lru_cache(maxsize=1)
def _context_of(pickled_context: bytes) -> Any:
    """The context a reader was sent, unpickled once for all the mails that use it."""
    if pickled_context[:1] != _CONTEXT:
        raise pickle.UnpicklingError("no context was sent before the job")
    return pickle.loads(pickled_context[1:])  # noqa: S301 - from our parent, over its pipe


def _why(exc: Exception, refused: bool) -> str:
    """What the debug log gets: an error of mailbot's with its traceback; a refusal in words
    with the causes behind it, a line each (a hostile mail's traceback, say of a recursion
    thousands of frames deep, can take a second to write)."""
    if not refused:
        return traceback.format_exc()
    causes = []
    while exc is not None:
        causes += traceback.format_exception_only(exc)
        exc = exc.__cause__
    return "".join(causes)


def _apply(steps: Sequence[Step], context: Any, record: Any) -> Any:
    for step in steps:
        record = step(context, record)
    return record


def _outcome(answer: tuple) -> Any:
    """The record a reader returned, or its failure raised here, its traceback the cause."""
    kind, *rest = answer
    if kind == "read":
        return rest[0]
    if kind == "broken":
        log.warning("a reader could not take its job:\n%s", rest[0])
        raise TemporaryFailure("a process reading mail could not take its job (see the log)")
    parse_error, text, trace = rest
    error = ParseError(text) if parse_error else ReadingFailed(text)
    raise error from multiprocessing.pool.RemoteTraceback(trace) if trace else None


# -- what crosses: records without the raw mail ------------------------------------------------

class _Buffer(ctypes.Structure):
    """CPython's Py_buffer (in the stable ABI since 3.11): where a buffer's bytes are."""

    _fields_ = [("buf", ctypes.c_void_p), ("obj", ctypes.c_void_p), ("len", ctypes.c_ssize_t),
                ("itemsize", ctypes.c_ssize_t), ("readonly", ctypes.c_int),
                ("ndim", ctypes.c_int), ("format", ctypes.c_char_p),
                ("shape", ctypes.c_void_p), ("strides", ctypes.c_void_p),
                ("suboffsets", ctypes.c_void_p), ("internal", ctypes.c_void_p)]


_get_buffer = ctypes.pythonapi.PyObject_GetBuffer
_get_buffer.argtypes = (ctypes.py_object, ctypes.POINTER(_Buffer), ctypes.c_int)
_release_buffer = ctypes.pythonapi.PyBuffer_Release
_release_buffer.argtypes = (ctypes.POINTER(_Buffer),)


def _address(data: bytes | memoryview) -> int:
    """Where the bytes of ``data`` begin in memory."""
    buffer = _Buffer()
    _get_buffer(data, ctypes.byref(buffer), 0)
    _release_buffer(ctypes.byref(buffer))
    return buffer.buf


class _Pickler(pickle.Pickler):
    """Pickles a record without the raw mail: a reference to it crosses as :data:`RAW`, a
    view into it as its position (any other view as bytes)."""

    def __init__(self, file: io.BytesIO, raw: bytes) -> None:
        super().__init__(file, pickle.HIGHEST_PROTOCOL)
        self.raw = raw
        self.start = _address(raw)

    def persistent_id(self, obj: Any) -> str | None:
        """The raw mail is not pickled: the other process has it."""
        return RAW if obj is self.raw else None

    def reducer_override(self, obj: Any) -> Any:
        """A view into the raw mail as its position in it; any other view as bytes."""
        if not isinstance(obj, memoryview):
            return NotImplemented
        if obj.obj is self.raw and obj.c_contiguous and obj.itemsize == 1:
            start = _address(obj) - self.start
            return _view, (self.raw, start, start + obj.nbytes)
        return bytes, (obj.tobytes(),)


class _Unpickler(pickle.Unpickler):
    """Unpickles a record against this process's copy of the raw mail."""

    def __init__(self, file: io.BytesIO, raw: bytes) -> None:
        super().__init__(file)
        self.raw = raw

    def persistent_load(self, pid: Any) -> bytes:
        """The raw mail, for its reference."""
        if pid != RAW:
            raise pickle.UnpicklingError(f"unknown reference {pid!r}")
        return self.raw


def _view(raw: bytes, start: int, stop: int) -> memoryview:
    """A view into the raw mail, rebuilt from its position."""
    return memoryview(raw)[start:stop]


def pickled(record: Any, raw: bytes) -> bytes:
    """``record`` as it crosses to or from a reader: without ``raw``, which both hold."""
    out = io.BytesIO()
    _Pickler(out, raw).dump(record)
    return out.getvalue()


def unpickled(data: bytes, raw: bytes) -> Any:
    """A record that crossed, bound to this process's copy of ``raw``."""
    return _Unpickler(io.BytesIO(data), raw).load()
