"""The delivery engine: one per sender, owning its pending records and its worker thread.

What it holds, and who may touch it:

- the inbox of deferred captures: appended to on the request path (no lock; a deque
  append is atomic), finished in order under ``inbox_lock`` by whichever thread drains it;
- the pending buffer, the "unchanged" memories and the counters: under ``lock``;
- the worker thread, flush tickets and shutdown: :class:`.worker.Worker`, under the same
  ``lock``; it runs send cycles (:mod:`.cycle`).

A deferred capture is a tuple whose first element is the function that finishes it, the
second its :class:`RecordKind`, the third its id, the last its moment (``time.time()``);
what lies between is the capture's own business, compared only to spot repeats.
Finishing returns :class:`Finished` (the records to queue) or ``None``; the engine never
looks inside the capture, and the capture never reaches into the engine.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from .._ratelimit import RateLimitedLog
from .._time import seconds_of
from .buffer import PendingBuffer
from .kinds import Key, RecordKind
from .options import SenderOptions
from .retry import RetryPolicy
from .spool import Spool
from .spool_dir import app_tag
from .tally import COUNTERS, total
from .unchanged import Unchanged
from .worker import Connect, Worker

__all__ = ["INBOX_MAX", "INBOX_WAKE", "Engine", "Finished"]

logger = logging.getLogger("moesif_users_middleware.sender")
_monotonic = time.monotonic
_now = time.time
# The worker is woken to finish deferred captures once this many wait; at the hard bound
# the request thread that adds one finishes the oldest INBOX_WAKE of them itself.
INBOX_WAKE = 256
INBOX_MAX = 4096
_MIN_MEMORY = 10_000  # keys remembered as delivered (or captured) at least


class Finished(NamedTuple):
    """What finishing a deferred capture gives: the records to queue (with their kind),
    and whether an equal capture later may be skipped as a repeat (plain data only)."""

    records: Sequence[tuple[RecordKind, dict[str, Any]]]
    repeatable: bool


class Engine:
    """State and the thread-safe operations on it; the facade is ``sender.Sender``."""

    def __init__(
        self,
        options: SenderOptions,
        retry: RetryPolicy,
        connect: Connect,
        warnings: RateLimitedLog,
        on_start: Callable[[], None],
        application_id: str = "",
    ) -> None:
        self.options = options
        self.retry = retry
        self.connect = connect  # a new HTTP client (the worker's)
        self.warnings = warnings
        self.on_start = on_start  # called when the worker thread starts
        self.spool_tag = app_tag(application_id)  # names its spool files (never the id)
        self.spool: Spool | None = None
        self.reset()

    def reset(self) -> None:
        """A fresh state: at creation, and in a forked child (the parent's stays there)."""
        options = self.options
        self.pid = os.getpid()
        self.rng = random.Random()  # reseeded per process so forked workers do not align
        self.lock = threading.Lock()
        self.cond = threading.Condition(self.lock)
        self.inbox: deque[tuple[Any, ...]] = deque()
        self.inbox_lock = threading.Lock()  # one drainer at a time keeps the order
        self.inbox_signalled = False
        self.buffer = PendingBuffer(options.max_queue_size, options.max_queue_bytes)
        memory = max(_MIN_MEMORY, options.max_queue_size)
        self.unchanged = Unchanged(memory, options.min_update_interval)
        self.tallies = self.buffer.tallies  # per kind; see .tally
        if self.spool is not None:
            self.spool.abandon()  # a forked child: the parent's file stays the parent's
        spool_dir = options.spool_dir
        self.spool = None if spool_dir is None else Spool(self, spool_dir, self.spool_tag)
        self.worker = Worker(self)

    # -- queueing ------------------------------------------------------------------------

    def queue(
        self, kind: RecordKind, record: dict[str, Any], stamp: float, stamp_text: str | None
    ) -> bool:
        """Queue one validated record; ``False`` if dropped (the buffer is full). Never raises."""
        try:
            with self.lock:
                accepted = self._add_locked(kind, kind.key(record), record, stamp, stamp_text)
        except Exception:
            logger.debug("an unusable record was dropped", exc_info=True)
            return False
        if not accepted:
            self._warn_full()
        return accepted

    def queue_direct(self, kind: RecordKind, records: Sequence[dict[str, Any]]) -> bool:
        """Queue validated records given directly (``queue_user``); ``True`` if all accepted.

        Under the drainer's lock: captures made before are finished first, and no capture
        of these keys can be remembered as their last in between (a repeat of it would
        then be skipped although this update came after it).
        """
        accepted = True
        forget = self.unchanged.forget
        with self.inbox_lock:
            if self.inbox:
                self.drain_locked()
            with self.lock:  # one acquisition for the whole call: this is queue_user's path
                for record in records:
                    try:
                        key = kind.key(record)
                        forget(key)
                        text = record.get("modified_time")
                        stamp = _now() if text is None else seconds_of(text)
                        if not self._add_locked(kind, key, record, stamp, text):
                            accepted = False
                    except Exception:  # validated records cannot get here; never raise
                        logger.debug("an unusable record was dropped", exc_info=True)
                        accepted = False
        if not accepted:
            self._warn_full()
        return accepted

    def _add_locked(
        self,
        kind: RecordKind,
        key: Key,
        record: dict[str, Any],
        stamp: float,
        stamp_text: str | None,
    ) -> bool:
        """Add one record to the buffer and wake the worker if due; ``lock`` is held."""
        buffer = self.buffer
        accepted = buffer.add(key, record, kind.id_field, stamp, stamp_text)
        worker = self.worker
        if not worker.running:
            worker.start()
        if buffer.slots >= buffer.wake_slots and not worker.urgent:
            worker.urgent = True
            self.cond.notify_all()
        return accepted

    def _warn_full(self) -> None:
        buffer = self.buffer
        self.warnings.warning(
            "queue-full",
            "Moesif users sender: %d records pending (%s reached); updates for new "
            "users and companies are being dropped",
            buffer.slots,
            buffer.bound,
        )

    # -- the inbox -----------------------------------------------------------------------

    def defer(self, item: tuple[Any, ...]) -> None:
        """Hand over a capture to be finished off the request path (never raises or blocks)."""
        inbox = self.inbox
        inbox.append(item)
        if len(inbox) >= INBOX_WAKE:
            self._inbox_backlog(len(inbox))
        elif not self.worker.running:
            with self.lock:
                if not self.worker.running:
                    self.worker.start()

    def _inbox_backlog(self, size: int) -> None:
        if self.pid != os.getpid():  # forked without the at-fork hook (it resets us first)
            self.reset()
            return
        if size >= INBOX_MAX:
            # The worker is busy (a slow API): finish the oldest here rather than grow; a
            # batch at a time, so no one request pauses for the whole backlog.
            if self.inbox_lock.acquire(blocking=False):
                try:
                    self.drain_locked(INBOX_WAKE)
                finally:
                    self.inbox_lock.release()
            return
        if not self.inbox_signalled:
            self.inbox_signalled = True
            with self.lock:
                if not self.worker.running:
                    self.worker.start()
                self.cond.notify_all()

    def drain(self) -> None:
        """Finish every deferred capture now, in this thread."""
        if self.inbox:
            with self.inbox_lock:
                self.drain_locked()

    def drain_locked(self, limit: int = -1) -> None:
        """Finish the oldest ``limit`` deferred captures (all: -1); ``inbox_lock`` is held."""
        inbox = self.inbox
        self.inbox_signalled = False
        unchanged = self.unchanged
        now = _monotonic()
        repeats: dict[Key, float] = {}  # record key -> the newest repeat's moment
        repeated: dict[Key, int] = {}  # record key -> repeats of it
        while inbox and limit:
            limit -= 1
            item = inbox.popleft()
            key: Key | None = None
            try:
                key = (item[1].name, item[2])
                signature = item[:-1]
                keys = unchanged.repeat(key, signature, now)
                if keys is not None:
                    for record_key in keys:
                        repeats[record_key] = item[-1]
                        repeated[record_key] = repeated.get(record_key, 0) + 1
                    continue
                finished = item[0](item)
                if finished is None:
                    unchanged.forget(key)
                    continue
                queued = self._queue_finished(finished.records, item[-1])
                if queued is not None and finished.repeatable:
                    unchanged.remember(key, signature, now, queued)
                else:
                    unchanged.forget(key)
            except Exception:  # never into a request that finishes a backlog
                logger.debug("a deferred capture failed", exc_info=True)
                if key is not None:
                    unchanged.forget(key)
        if repeats:
            self._count_repeats(repeats, repeated)

    def _queue_finished(
        self, records: Sequence[tuple[RecordKind, dict[str, Any]]], stamp: float
    ) -> tuple[Key, ...] | None:
        """Queue a finished capture's records (one lock for all); their keys if all were
        accepted, else ``None``."""
        keys: list[Key] = []
        accepted = True
        with self.lock:
            for kind, record in records:
                key = kind.key(record)
                keys.append(key)
                accepted = self._add_locked(kind, key, record, stamp, None) and accepted
        if not accepted:
            self._warn_full()
            return None
        return tuple(keys)

    def _count_repeats(self, repeats: dict[Key, float], repeated: dict[Key, int]) -> None:
        """Repeats count as queued and coalesced, and keep their moment: the pending record,
        or the delivered one (re-asserted later, see ``Unchanged``), becomes that new."""
        with self.lock:
            pending = self.buffer.pending
            tallies = self.tallies
            for key, stamp in repeats.items():
                tally = tallies[key[0]]
                tally.queued += repeated[key]
                tally.coalesced += repeated[key]
                entry = pending.get(key)
                if entry is not None:
                    entry.touch(stamp, None)
                else:
                    self.unchanged.touch(key, stamp, None)

    # -- reading -------------------------------------------------------------------------

    def stats(self, kind: str | None = None) -> dict[str, int]:
        """The counters of one kind, or summed over all (deferred captures finished first)."""
        self.drain()
        with self.lock:
            if kind is not None:
                stats = self.tallies[kind].as_dict()
            else:
                tallies = self.tallies.values()
                stats = {name: total(tallies, name) for name in COUNTERS}
            stats["spooled"] = 0 if self.spool is None else self.spool.spooled(kind)
            return stats

    @property
    def pending(self) -> int:
        """Keys waiting to be sent or being sent (in memory or in the spool), and captures
        not yet finished."""
        spooled = 0 if self.spool is None else self.spool.rows
        return self.buffer.slots + len(self.inbox) + spooled

    @property
    def has_work(self) -> bool:
        """Records to send: pending in memory or waiting in the spool (the lock is held)."""
        return bool(self.buffer.pending) or (self.spool is not None and self.spool.waiting)
