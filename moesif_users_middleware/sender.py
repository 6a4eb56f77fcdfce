"""The shared background sender: one per process and (application id, base url).

``get_sender(...)`` returns it; ``queue_user`` / ``queue_users`` validate and return at
once (``True`` if accepted, ``False`` if dropped because the buffer is full). A daemon
thread, started on first use, coalesces pending updates per user, skips updates
identical to the last one delivered, and POSTs batches to ``/v1/users/batch`` with
retries. See :mod:`moesif_users_middleware.sender_options` for the options and
:mod:`moesif_users_middleware.retry` for the retry timing.

Delivery rules:

- A batch answered 408, 429, 5xx or not at all is retried with backoff (``Retry-After``
  honoured, capped) until its deadline; then its records go back to the buffer *under*
  any newer update for the same users, and the next cycle tries again.
- 413 splits the batch in halves (a single record answered 413 is dropped); any other
  4xx drops the batch, counted as ``failed``, with one log line.
- At interpreter exit every sender gets ``shutdown_timeout`` seconds to deliver; a
  dead API never holds the process longer. A forked child starts empty (the parent
  sends what it had pending) with its own lock, thread and connection pool.

Adapters hand over captures with ``defer`` (a deque append on the request path); the
worker turns them into updates in order, and so does any ``flush``, ``stats`` or
``queue_user`` call first, so what a request captured is never overtaken by a later call.

Calling ``get_sender`` again for an existing (application id, base url) returns the
first sender and keeps its options (a debug log line says so).
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import math
import os
import random
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import httpx

from ._time import seconds_of
from .config import redact, resolve_application_id, resolve_base_url
from .models import normalize_user
from .ratelimit import RateLimitedLog
from .retry import DEFAULT_RETRY, RetryPolicy, is_retryable_status
from .sender_batches import Batch, Item, pack, serialize
from .sender_buffer import DeliveredLog, Entry, PendingBuffer
from .sender_options import SENDER_OPTIONS, SenderOptions, validate_sender_options
from .sigterm import install_sigterm_flush
from .transport import BATCH_PATH, TransportError, UsersClient, compress, normalize_users

__all__ = [
    "SENDER_OPTIONS",
    "Sender",
    "SenderOptions",
    "flush_all",
    "get_sender",
    "shutdown_all",
]

_logger = logging.getLogger("moesif_users_middleware.sender")
_getpid = os.getpid
_monotonic = time.monotonic
_now = time.time
_INF = math.inf
_MIN_DELIVERED_LOG = 10_000
_POLL_MAX = 0.05
# Deferred captures (see ``Sender.defer``): the worker is woken to turn them into updates
# once this many wait; at the hard bound the request thread that adds one finishes the
# oldest _INBOX_WAKE of them itself.
_INBOX_WAKE = 256
_INBOX_MAX = 4096
_MIN_RECENT = 10_000

_SENT = "sent"
_TOO_LARGE = "too large"
_REJECTED = "rejected"
_GIVE_UP = "give up"


@dataclass
class _Cycle:
    """Book-keeping for one drain of the buffer."""

    remaining: dict[str, int]  # records not yet settled, per user
    gave_up: bool = False
    lost: bool = False
    requeued: int = 0
    released: list[str] = field(default_factory=list)


class Sender:
    """Coalescing, batching, retrying background sender (create it with :func:`get_sender`)."""

    def __init__(
        self,
        application_id: str,
        base_url: str,
        options: SenderOptions | None = None,
        *,
        retry: RetryPolicy = DEFAULT_RETRY,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._application_id = application_id
        self.base_url = base_url
        self.options = options or SenderOptions()
        self._retry = retry
        self._transport = transport
        self._warnings = RateLimitedLog(_logger)
        self._init_state()
        _every_sender.add(self)  # reset in a forked child by _after_fork_in_child

    def _init_state(self) -> None:
        options = self.options
        self._pid = _getpid()
        self._rng = random.Random()  # reseeded per process so forked workers do not align
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._serve_lock = threading.Lock()
        self._buffer = PendingBuffer(options.max_queue_size, options.max_queue_bytes)
        self._delivered = DeliveredLog(
            max(_MIN_DELIVERED_LOG, options.max_queue_size), options.min_update_interval
        )
        self._client: UsersClient | None = None
        self._thread: threading.Thread | None = None
        self._running = False
        self._stopping = False
        self._stop_deadline = _INF
        self._serve_deadline = _INF  # set while shutdown delivers in the calling thread
        self._urgent = False
        self._flush_waiters = 0
        self._cycle_active = False
        self._cycles_started = 0
        self._cycles_done = 0
        self._clean_cycle = 0
        self._loss_cycle = 0
        self._failed_cycles = 0
        self._next_cycle_at = _monotonic() + self._interval()
        self._backoff_until = 0.0
        self._not_before = 0.0
        self._inbox: deque[tuple[Any, ...]] = deque()
        self._inbox_lock = threading.Lock()  # one drainer at a time keeps the order
        self._inbox_signalled = False
        # user id -> (the last deferred capture accepted for the user, until when it counts)
        self._recent: dict[str, tuple[tuple[Any, ...], float]] = {}
        self._recent_size = max(_MIN_RECENT, options.max_queue_size)
        self._skipped = 0
        self._sent = 0
        self._batches = 0
        self._retries = 0
        self._failed = 0
        self._dropped = 0

    # ----------------------------------------------------------------- public API

    def queue_user(self, user: Any) -> bool:
        """Validate one user (``User`` or dict) and queue it; ``False`` if dropped.

        Raises ``ValidationError`` naming the field for bad input; never raises or
        blocks for network trouble. Do not mutate the dict after queueing it.
        """
        if self._pid != _getpid():
            self._after_fork()
        record = normalize_user(user)
        stamp, stamp_text = _stamp_of(record)
        # Under the drainer's lock: captures made before this call are merged in first,
        # and no capture of this user can be remembered as its last between the two steps
        # below (a repeat of it would then be skipped although this update came after).
        with self._inbox_lock:
            self._drain_locked()
            self._recent.pop(record["user_id"], None)
            return self.queue_validated(record, stamp, stamp_text)

    def queue_users(self, users: Iterable[Any]) -> bool:
        """Validate every user first (``users[3].user_id`` in errors), then queue them.

        Returns ``True`` if all were accepted.
        """
        if self._pid != _getpid():
            self._after_fork()
        accepted = True
        records = normalize_users(users)
        with self._inbox_lock:  # as in queue_user
            self._drain_locked()
            recent = self._recent
            for record in records:
                recent.pop(record["user_id"], None)
                if not self.queue_validated(record, *_stamp_of(record)):
                    accepted = False
        return accepted

    def queue_validated(
        self, record: dict[str, Any], stamp: float, stamp_text: str | None = None
    ) -> bool:
        """Queue a wire-form record that is already validated (the hot path; never raises).

        ``stamp`` is the update's moment (``time.time()``), sent as its ``modified_time``
        unless the record's own (``stamp_text``, its moment in ``stamp``) is given.
        The record is not copied and never mutated; the caller must not mutate it either.
        (No fork check here: a forked child resets every sender before it runs.)
        """
        try:
            user_id = record["user_id"]
            lock = self._lock
            lock.acquire()  # (cheaper than `with`; released in the finally below)
            try:
                buffer = self._buffer
                entry = buffer.pending.get(user_id)
                if entry is not None:  # PendingBuffer.add's coalescing, one call less
                    buffer.queued += 1
                    buffer.coalesced += 1
                    buffer.coalesce(entry, record, stamp, stamp_text)
                    accepted = True
                else:
                    accepted = buffer.add(user_id, record, stamp, stamp_text)
                if not self._running:
                    self._start_worker()
                if buffer.slots >= buffer.wake_slots and not self._urgent:
                    self._urgent = True
                    self._cond.notify_all()
            finally:
                lock.release()
        except Exception:
            _logger.debug("queue_validated: unusable record dropped", exc_info=True)
            return False
        if not accepted:
            self._warnings.warning(
                "queue-full",
                "Moesif users sender: %d users pending (max_queue_size or the byte bound "
                "reached); updates for new users are being dropped",
                buffer.slots,
            )
        return accepted

    def defer(self, item: tuple[Any, ...]) -> None:
        """Queue a capture to be finished off the request path (never raises or blocks).

        ``item[0].finish(item)`` runs later, in order, in the worker thread (or in a flush,
        ``stats()`` or a ``queue_user`` call, which finish what is deferred first); it
        returns whether it queued an update that may be skipped when repeated: then an
        item equal to it for the same user (``item[1]``) within ``min_update_interval``
        is counted as queued and coalesced but not finished again. The last element,
        ``item[-1]``, is the capture's moment (``time.time()``): it is not compared, and a
        skipped repeat still makes the user's update that new (see ``_touch``).
        """
        inbox = self._inbox
        inbox.append(item)
        if len(inbox) >= _INBOX_WAKE:
            self._inbox_backlog(len(inbox))
        elif not self._running:
            with self._lock:
                if not self._running:
                    self._start_worker()

    def _inbox_backlog(self, size: int) -> None:
        if self._pid != _getpid():  # forked without the at-fork hook (it resets us first)
            self._after_fork()
            return
        if size >= _INBOX_MAX:
            # The worker is busy (a slow API): finish the oldest here rather than grow; a
            # batch at a time, so no one request pauses for the whole backlog.
            if self._inbox_lock.acquire(blocking=False):
                try:
                    self._drain_locked(_INBOX_WAKE)
                finally:
                    self._inbox_lock.release()
            return
        if not self._inbox_signalled:
            self._inbox_signalled = True
            with self._lock:
                if not self._running:
                    self._start_worker()
                self._cond.notify_all()

    def _drain_inbox(self) -> None:
        """Finish every deferred capture now, in this thread."""
        if self._inbox:
            with self._inbox_lock:
                self._drain_locked()

    def _drain_locked(self, limit: int = -1) -> None:
        """Finish the oldest ``limit`` deferred captures (all: -1); the drainer's lock is held."""
        inbox = self._inbox
        self._inbox_signalled = False
        window = self.options.min_update_interval
        recent = self._recent
        now = _monotonic()
        repeats: dict[Any, int] = {}
        moments: dict[str, float] = {}  # user id -> the newest repeat's moment
        while inbox and limit:
            limit -= 1
            item = inbox.popleft()
            try:
                user_id = item[1]
                if window > 0:
                    last = recent.get(user_id)
                    if last is not None and now < last[1] and last[0][1:-1] == item[1:-1]:
                        owner = item[0]
                        repeats[owner] = repeats.get(owner, 0) + 1
                        moments[user_id] = item[-1]
                        continue
                if item[0].finish(item) and window > 0:
                    if len(recent) >= self._recent_size:
                        recent.clear()
                    recent[user_id] = (item, now + window)
                else:
                    recent.pop(user_id, None)
            except Exception:
                _logger.debug("a deferred capture failed", exc_info=True)
                recent.pop(item[1], None)
        if repeats:
            total = sum(repeats.values())
            with self._lock:
                self._buffer.queued += total
                self._buffer.coalesced += total
                self._touch(moments)
            for owner, count in repeats.items():
                owner.repeated(count)

    def _touch(self, moments: dict[str, float]) -> None:
        """Skipped repeats keep their moment: the pending update, or the delivered one
        (re-asserted later, see ``DeliveredLog``), becomes that new. The lock is held."""
        pending = self._buffer.pending
        delivered = self._delivered
        for user_id, stamp in moments.items():
            entry = pending.get(user_id)
            if entry is not None:
                entry.touch(stamp, None)
            else:
                delivered.touch(user_id, stamp, None)

    def flush(self, timeout: float | None = None) -> bool:
        """Send everything pending now; ``True`` once it was all delivered.

        With a ``timeout`` (seconds) keep trying until then; with ``None`` wait for one
        send attempt of everything pending (retries included) and report its outcome.
        Records rejected by the API (4xx) or too large to send make the result ``False``.
        """
        end = _flush_end(timeout)
        return self._flush_wait(self._flush_start(), end)

    def _flush_start(self) -> tuple[int, int] | None:
        """Finish deferred captures, then ask for a send; ``None``: nothing to wait for."""
        if self._pid != _getpid():
            self._after_fork()
        self._drain_inbox()
        with self._lock:
            return self._flush_begin()

    def _flush_wait(self, ticket: tuple[int, int] | None, end: float | None) -> bool:
        """Wait for the send asked for by ``_flush_start`` until ``end`` (``None``: its outcome)."""
        if ticket is None:
            return True
        with self._lock:
            try:
                while True:
                    verdict = self._flush_verdict(ticket, until_done=end is None)
                    if verdict is not None:
                        return verdict
                    if end is None:
                        self._cond.wait()
                        continue
                    remaining = end - _monotonic()
                    if remaining <= 0:
                        return False
                    self._cond.wait(remaining)
            finally:
                self._flush_waiters -= 1

    async def aflush(self, timeout: float | None = None) -> bool:
        """``flush`` for coroutines: polls without blocking the event loop."""
        end = _flush_end(timeout)
        ticket = self._flush_start()
        if ticket is None:
            return True
        delay = 0.001
        try:
            while True:
                with self._lock:
                    verdict = self._flush_verdict(ticket, until_done=end is None)
                if verdict is not None:
                    return verdict
                if end is not None and _monotonic() >= end:
                    return False
                await asyncio.sleep(delay)
                delay = min(delay * 2, _POLL_MAX)
        finally:
            with self._lock:
                self._flush_waiters -= 1

    def shutdown(self, timeout: float | None = None) -> None:
        """Deliver what is pending within ``timeout`` (default ``shutdown_timeout``), then stop.

        A later ``queue_user`` starts the sender again.
        """
        if self._pid != _getpid():
            self._after_fork()
        seconds = self.options.shutdown_timeout if timeout is None else max(0.0, timeout)
        self._begin_stop(_within_exit_budget(_monotonic() + seconds) or 0.0)
        self._finish_stop()

    def stats(self) -> dict[str, int]:
        """Counters since the sender started (in this process)."""
        if self._pid != _getpid():
            self._after_fork()
        self._drain_inbox()
        with self._lock:
            buffer = self._buffer
            return {
                "queued": buffer.queued,
                "coalesced": buffer.coalesced,
                "skipped_unchanged": self._skipped,
                "sent": self._sent,
                "batches": self._batches,
                "retries": self._retries,
                "failed": self._failed,
                "dropped": buffer.dropped + self._dropped,
            }

    @property
    def pending(self) -> int:
        """Users waiting to be sent or being sent (and captures not yet turned into updates)."""
        return self._buffer.slots + len(self._inbox)

    def __repr__(self) -> str:
        return (
            f"Sender(base_url={self.base_url!r}, pending={self.pending}, "
            f"application_id={redact(self._application_id)})"
        )

    # ------------------------------------------------------------- flush tickets

    def _flush_begin(self) -> tuple[int, int] | None:
        """Register a flush waiter (lock held); ``None`` when there is nothing to wait for."""
        pending = bool(self._buffer.pending)
        if not pending and not self._cycle_active:
            return None
        if not self._running:
            self._start_worker()
        if self._cycle_active:
            first = self._cycles_started
            target = first + 1 if pending else first
        else:
            first = target = self._cycles_started + 1
        self._flush_waiters += 1
        self._cond.notify_all()
        return target, first

    def _flush_verdict(self, ticket: tuple[int, int], *, until_done: bool) -> bool | None:
        target, first = ticket
        if self._clean_cycle >= target:
            return self._loss_cycle < first
        if until_done and self._cycles_done >= target:
            return False
        if not self._running:
            return False
        return None

    # ----------------------------------------------------------- worker control

    def _start_worker(self) -> None:
        """Start (or resume) the worker thread; the lock is held."""
        thread = self._thread
        if thread is not None and thread.is_alive():  # resume a worker told to stop
            self._stopping = False
            self._stop_deadline = _INF
            self._running = True
            return
        thread = threading.Thread(target=self._run, name="moesif-users-sender", daemon=True)
        try:
            thread.start()
        except RuntimeError:  # interpreter shutting down: shutdown() delivers inline
            _logger.debug("sender thread could not start", exc_info=True)
            return
        self._thread = thread
        self._running = True
        _warn_if_uwsgi_without_threads()
        install_sigterm_flush(_flush_on_sigterm, _sigterm_timeout)

    def _begin_stop(self, deadline: float) -> None:
        self._drain_inbox()
        with self._lock:
            # Repeats not sent yet are re-asserted now: this process may not come back.
            self._buffer.reassert(self._delivered.due(_monotonic(), everything=True))
            self._stopping = True
            self._stop_deadline = min(self._stop_deadline, deadline)
            self._cond.notify_all()

    def _finish_stop(self) -> None:
        deadline = self._stop_deadline
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(max(0.0, deadline - _monotonic()))
        alive = thread is not None and thread.is_alive()
        if not alive and self._buffer.pending and _monotonic() < deadline:
            self._serve_inline(deadline)
        with self._lock:
            left = self._buffer.slots
            self._running = False
            if not alive:
                self._thread = None
                self._stopping = False
                self._stop_deadline = _INF
            # else: still inside a request; it stops as soon as that returns (its deadline
            # has passed) unless a new queue_user resumes it.
            self._cond.notify_all()
        if left:
            _logger.warning(
                "Moesif users sender stopped with %d user updates not delivered "
                "(shutdown_timeout reached or API unavailable)",
                left,
            )

    def _serve_inline(self, deadline: float) -> None:
        """Deliver in the calling thread (no worker thread could run)."""
        if not self._serve_lock.acquire(timeout=max(0.0, deadline - _monotonic())):
            return
        self._serve_deadline = deadline
        try:
            self._serve()
        finally:
            self._serve_deadline = _INF
            self._close_client()
            self._serve_lock.release()

    def _after_fork(self) -> None:
        """In a forked child: start empty, with a fresh lock, thread and connection pool."""
        if self._pid == _getpid():
            return
        self._init_state()  # the parent's client is abandoned, never closed, here
        self._warnings.reset()

    def _deadline_cap(self) -> float:
        """The shutdown deadline in force (``inf`` when not stopping)."""
        return min(self._stop_deadline, self._serve_deadline)

    def _interval(self) -> float:
        return self.options.flush_interval * self._rng.uniform(0.8, 1.2)

    # ------------------------------------------------------------------ worker

    def _run(self) -> None:
        with self._serve_lock:
            try:
                self._serve()
            except BaseException:
                _logger.exception("Moesif users sender stopped after an unexpected error")
            finally:
                self._close_client()
                with self._lock:
                    if self._thread is threading.current_thread():
                        self._thread = None
                        self._running = False
                        if not self._stopping and self._buffer.pending:
                            self._start_worker()  # resumed while it was exiting
                    self._cond.notify_all()

    def _serve(self) -> None:
        while self._wait_for_work():
            try:
                self._drain_inbox()
                self._cycle()
            except Exception:  # a bug, not the network: keep the updates and carry on
                self._warnings.log(
                    logging.ERROR,
                    "cycle-error",
                    "Moesif users sender: unexpected error while sending; will retry",
                    exc_info=True,
                )

    def _wait_for_work(self) -> bool:
        """Block until a cycle is due (``True``) or the sender stops (``False``)."""
        with self._lock:
            while True:
                if self._inbox_signalled:  # a backlog of deferred captures: finish them
                    self._inbox_signalled = False
                    self._lock.release()
                    try:
                        self._drain_inbox()
                    finally:
                        self._lock.acquire()
                    continue
                now = _monotonic()
                final = self._deadline_cap()
                pending = self._buffer.pending or self._inbox
                if self._stopping or final < _INF:
                    if not pending or now >= final:
                        return False
                    due = max(self._not_before, self._backoff_until)
                    if due > final:
                        return False
                elif not pending:
                    if now >= self._next_cycle_at:
                        if self._delivered.any_due(now):
                            return True
                        self._next_cycle_at = now + self._interval()
                    self._cond.wait(self._next_cycle_at - now)
                    continue
                else:
                    due = self._not_before
                    if not self._flush_waiters:
                        due = max(due, self._backoff_until)
                        if not self._urgent:
                            due = max(due, self._next_cycle_at)
                if now >= due:
                    return True
                self._cond.wait(due - now)

    def _cycle(self) -> None:
        with self._lock:
            due = self._delivered.due(_monotonic())
            if due:
                self._buffer.reassert(due)
            drained = self._buffer.drain()
            self._cycles_started += 1
            number = self._cycles_started
            self._cycle_active = True
            self._urgent = False
        state = _Cycle({user_id: 1 + len(entry.tokens or ()) for user_id, entry in drained.items()})
        try:
            self._send(drained, state)
        finally:
            now = _monotonic()
            with self._lock:
                leftover = [user_id for user_id, count in state.remaining.items() if count > 0]
                if leftover:  # only after an unexpected error: keep those updates
                    records = [rec for uid in leftover for rec in drained[uid].timed_records()]
                    self._buffer.merge_back(records)
                    self._buffer.release(leftover)
                    state.requeued += len(records)
                self._cycles_done = number
                self._cycle_active = False
                if state.requeued:
                    self._failed_cycles += 1
                    self._backoff_until = now + self._retry.cycle_backoff(
                        self._failed_cycles, self._rng
                    )
                else:
                    self._failed_cycles = 0
                    self._clean_cycle = number
                if state.lost:
                    self._loss_cycle = number
                self._next_cycle_at = now + self._interval()
                self._cond.notify_all()

    def _send(self, drained: dict[str, Entry], state: _Cycle) -> None:
        if not drained:
            return
        items, errors = serialize(drained.items())
        now = _monotonic()
        delivered = self._delivered
        to_send: list[Item] = []
        skipped: list[Item] = []
        for item in items:
            if item.main and delivered.unchanged(item.user_id, item.fingerprint, now):
                skipped.append(item)
            else:
                to_send.append(item)
        options = self.options
        batches, too_large = pack(to_send, options.batch_size, options.max_batch_bytes)
        with self._lock:
            self._buffer.observe(sum(len(item.text) for item in items), len(drained))
            self._skipped += len(skipped)
            for item in skipped:
                delivered.touch(item.user_id, item.stamp, item.stamp_text)
            self._failed += len(errors)
            self._dropped += len(too_large)
            self._settle_locked(state, skipped)
            self._settle_locked(state, too_large)
            self._settle_locked(state, [Item(uid, rec, "", False) for uid, rec, _ in errors])
        if errors:
            state.lost = True
            self._recent.clear()  # what was lost may be captured again
            self._warnings.warning(
                "unserializable",
                "Moesif users sender: %d user updates could not be serialized and were dropped "
                "(was a queued dict changed after queue_user?): %s",
                len(errors),
                errors[0][2],
            )
        if too_large:
            state.lost = True
            self._recent.clear()  # what was lost may be captured again
            self._warnings.warning(
                "too-large",
                "Moesif users sender: %d user updates larger than max_batch_bytes (%d) dropped",
                len(too_large),
                options.max_batch_bytes,
            )
        for batch in batches:
            self._deliver(batch, state)

    def _settle_locked(self, state: _Cycle, items: list[Item]) -> None:
        remaining = state.remaining
        done: list[str] = []
        for item in items:
            count = remaining[item.user_id] - 1
            remaining[item.user_id] = count
            if count == 0:
                done.append(item.user_id)
        if done:
            self._buffer.release(done)

    def _settle(self, state: _Cycle, items: list[Item], outcome: str) -> None:
        now = _monotonic()
        with self._lock:
            if outcome == _SENT:
                self._sent += len(items)
                self._batches += 1
                delivered = self._delivered
                for item in items:
                    if item.main:
                        delivered.delivered(item.user_id, item.fingerprint, now, item.timed)
            elif outcome == _GIVE_UP:
                self._buffer.merge_back([item.timed for item in items])
                state.requeued += len(items)
            else:
                self._failed += len(items)
                state.lost = True
                self._recent.clear()  # what was lost may be captured again
            self._settle_locked(state, items)

    def _deliver(self, batch: Batch, state: _Cycle) -> None:
        """Send one batch, halving it on 413; settle every record."""
        queue = [batch]
        while queue:
            current = queue.pop(0)
            if state.gave_up:
                self._settle(state, current.items, _GIVE_UP)
                continue
            outcome, status, text = self._post(current)
            if outcome == _TOO_LARGE and len(current.items) > 1:
                queue[:0] = current.halves()
                continue
            if outcome == _GIVE_UP:
                state.gave_up = True
            elif outcome != _SENT:
                self._log_rejected(status, text, len(current.items))
            self._settle(state, current.items, outcome)

    def _post(self, batch: Batch) -> tuple[str, int | None, str]:
        """POST with retries inside the batch deadline; returns ``(outcome, status, text)``."""
        body = batch.body()
        encoding: str | None = None
        if self.options.gzip:
            body, encoding = compress(body)
        retry = self._retry
        batch_deadline = _monotonic() + retry.batch_deadline
        client = self._get_client()
        attempt = 0
        while True:
            cap = self._deadline_cap()
            deadline = min(batch_deadline, cap)
            now = _monotonic()
            if now >= deadline:
                return _GIVE_UP, None, ""
            retry_after: float | None = None
            try:
                # The batch deadline decides whether an attempt starts, not how long it may
                # take: a late attempt cut short could time out after the API stored the
                # batch, and the batch would be sent twice. Only shutdown cuts it short.
                response = client.post_body(
                    BATCH_PATH, body, encoding, timeout=min(self.options.timeout, cap - now)
                )
            except TransportError as exc:
                problem = str(exc)
            else:
                status = response.status_code
                if 200 <= status < 300:
                    return _SENT, status, ""
                if status == 413:
                    return _TOO_LARGE, status, response.text
                if not is_retryable_status(status):
                    return _REJECTED, status, response.text
                retry_after = response.retry_after
                problem = f"HTTP {status}"
            if attempt == 0:  # at once, not only when the retries run out (~36 s later)
                self._warnings.warning(
                    "post-failed",
                    "Moesif users sender: sending %d user updates to %s failed (%s); "
                    "retrying with backoff, the updates are kept. Check base_url and the "
                    "network if this goes on.",
                    len(batch.items),
                    self.base_url,
                    problem,
                )
            if retry_after is not None:
                delay = retry.retry_after(retry_after)
                self._not_before = _monotonic() + delay
            else:
                delay = retry.backoff(attempt, self._rng)
            resume = _monotonic() + delay
            if resume > min(batch_deadline, self._deadline_cap()) or not self._sleep_until(
                resume, batch_deadline
            ):
                self._warnings.warning(
                    "unavailable",
                    "Moesif users sender: Users API unavailable (%s); %d user updates kept "
                    "for a later attempt",
                    problem,
                    len(batch.items),
                )
                return _GIVE_UP, None, ""
            attempt += 1
            with self._lock:
                self._retries += 1
            _logger.debug(
                "retrying a batch of %d (%s), attempt %d", len(batch.items), problem, attempt
            )

    def _sleep_until(self, moment: float, batch_deadline: float) -> bool:
        """Wait until ``moment``; ``False`` if shutdown moved the deadline before it."""
        with self._lock:
            while True:
                now = _monotonic()
                if now >= moment:
                    return True
                if moment > min(batch_deadline, self._deadline_cap()):
                    return False
                self._cond.wait(moment - now)

    def _log_rejected(self, status: int | None, text: str, count: int) -> None:
        if status == 401:
            _logger.error(
                "Moesif rejected the application id (HTTP 401); %d user updates dropped. "
                "Check application_id / MOESIF_APPLICATION_ID.",
                count,
            )
            return
        if status == 413:
            message = "a single user update was rejected as too large (HTTP 413); dropped"
            self._warnings.warning("413", "Moesif users sender: %s", message)
            return
        self._warnings.warning(
            f"http-{status}",
            "Moesif users sender: Users API rejected %d user updates with HTTP %s; dropped, "
            "not retried: %s",
            count,
            status,
            text[:300],
        )

    def _get_client(self) -> UsersClient:
        client = self._client
        if client is None:
            client = self._client = UsersClient(
                self._application_id,
                self.base_url,
                timeout=self.options.timeout,
                gzip=self.options.gzip,
                transport=self._transport,
            )
        return client

    def _close_client(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                client.close()
            except Exception:
                _logger.debug("closing the HTTP client failed", exc_info=True)


def _stamp_of(record: dict[str, Any]) -> tuple[float, str | None]:
    """A queued record's moment: the caller's ``modified_time`` if given, else now."""
    text = record.get("modified_time")
    if text is None:
        return _now(), None
    return seconds_of(text), text


# ---------------------------------------------------------------------- registry

_registry: dict[tuple[str, str], Sender] = {}
_every_sender: weakref.WeakSet[Sender] = weakref.WeakSet()
_registry_lock = threading.Lock()
_PRIVATE_OPTIONS = ("_retry", "_transport")


def get_sender(
    application_id: str | None = None, base_url: str | None = None, **options: Any
) -> Sender:
    """The process's one sender for (application id, base url), created on first call.

    ``application_id`` falls back to ``MOESIF_APPLICATION_ID``, ``base_url`` to
    ``MOESIF_BASE_URL`` then ``https://api.moesif.net``. ``options`` are the names in
    ``SENDER_OPTIONS``; an unknown name or a bad value raises ``ConfigurationError``.
    For an existing sender the options of its first creation are kept.
    """
    private = {name: options.pop(name) for name in _PRIVATE_OPTIONS if name in options}
    validated = validate_sender_options(options)
    app_id = resolve_application_id(application_id)
    url = resolve_base_url(base_url)
    key = (app_id, url)
    with _registry_lock:
        sender = _registry.get(key)
        if sender is None:
            sender = Sender(
                app_id,
                url,
                validated,
                retry=private.get("_retry", DEFAULT_RETRY),
                transport=private.get("_transport"),
            )
            _registry[key] = sender
        elif options and validated != sender.options:
            _logger.debug(
                "get_sender: a sender for %s at %s already exists; keeping its first options",
                redact(app_id),
                url,
            )
    return sender


def flush_all(timeout: float | None = None) -> bool:
    """Flush every sender of this process at once; ``True`` if all delivered everything.

    Every sender's worker is woken before any is waited for, so they deliver side by
    side: one whose API is dead cannot use up the others' share of ``timeout``.
    """
    end = _flush_end(timeout)
    flushes = [(sender, sender._flush_start()) for sender in list(_registry.values())]
    delivered = True
    for sender, ticket in flushes:
        delivered = sender._flush_wait(ticket, end) and delivered
    return delivered


def drain_all() -> None:
    """Finish every sender's deferred captures now (see :meth:`Sender.defer`)."""
    for sender in list(_registry.values()):
        sender._drain_inbox()


def shutdown_all(timeout: float | None = None) -> None:
    """Stop every sender at once, each within ``timeout`` (default: its ``shutdown_timeout``)."""
    senders = list(_registry.values())
    now = _monotonic()
    for sender in senders:
        seconds = sender.options.shutdown_timeout if timeout is None else timeout
        sender._begin_stop(_within_exit_budget(now + seconds) or 0.0)
    for sender in senders:
        sender._finish_stop()


def _sigterm_timeout() -> float:
    return max(
        (sender.options.shutdown_timeout for sender in list(_registry.values())), default=0.0
    )


# Set on SIGTERM: every later flush or shutdown of this exit (lifespan, atexit) shares the
# one shutdown_timeout that started then, so a dead API delays the exit only once.
_exit_budget_end: float | None = None


def _flush_end(timeout: float | None) -> float | None:
    """When a flush of ``timeout`` seconds ends (``None``: no limit), within the exit budget."""
    return _within_exit_budget(None if timeout is None else _monotonic() + max(0.0, timeout))


def _within_exit_budget(end: float | None) -> float | None:
    budget = _exit_budget_end
    if budget is None:
        return end
    return budget if end is None or end > budget else end


def _flush_on_sigterm() -> None:
    global _exit_budget_end
    timeout = _sigterm_timeout()
    _exit_budget_end = _monotonic() + timeout
    flush_all(timeout)


def _reset_senders_for_tests() -> None:
    """Shut every sender down and forget them (test isolation)."""
    with _registry_lock:
        senders = list(_registry.values())
        _registry.clear()
    now = _monotonic()
    for sender in senders:
        sender._begin_stop(now + sender.options.shutdown_timeout)
    for sender in senders:
        sender._finish_stop()


def _after_fork_in_child() -> None:
    global _registry_lock, _exit_budget_end
    _registry_lock = threading.Lock()
    _exit_budget_end = None
    for sender in list(_every_sender):
        sender._after_fork()


def _at_exit() -> None:
    if _registry:
        shutdown_all()


_uwsgi_warned = False


def _warn_if_uwsgi_without_threads() -> None:
    global _uwsgi_warned
    uwsgi = sys.modules.get("uwsgi")
    if uwsgi is None or _uwsgi_warned:
        return
    _uwsgi_warned = True
    opt = getattr(uwsgi, "opt", {}) or {}
    if not (opt.get("enable-threads") or opt.get("threads")):
        _logger.warning(
            "uWSGI runs without --enable-threads: the Moesif users sender thread cannot run, "
            "so queued user updates are only sent at exit. Start uWSGI with --enable-threads."
        )


atexit.register(_at_exit)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
