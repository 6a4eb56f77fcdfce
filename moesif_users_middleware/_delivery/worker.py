"""The worker thread of one engine: when to run a send cycle, flush tickets, and stopping.

The thread starts on first use and waits on the engine's condition until a cycle is
due: ``flush_interval`` (jittered) after the last one, at once when the buffer is half
full or a flush waits, never before a ``Retry-After`` or the backoff after a failed
cycle. Shutdown sets a deadline that every wait and every retry respects; if no thread
can run (interpreter exit), the caller's thread delivers until the deadline instead.

A flush takes a *ticket*: the number of the cycle that will have sent everything pending
now. It has succeeded once a cycle at least that new ended clean (nothing left to retry)
and no cycle since the flush began lost a record.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..transport import UsersClient
from .cycle import run_cycle

if TYPE_CHECKING:
    from .engine import Engine

__all__ = ["Connect", "Ticket", "Worker"]

logger = logging.getLogger("moesif_users_middleware.sender")
_monotonic = time.monotonic
_INF = math.inf

Connect = Callable[[], UsersClient]  # a new HTTP client for the worker's connections
Ticket = tuple[int, int]  # (the cycle that must end clean, the first cycle that counts)


class Worker:
    """Thread control for :class:`.engine.Engine`; every field is guarded by its lock."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.thread: threading.Thread | None = None
        self.serve_lock = threading.Lock()
        self.client: UsersClient | None = None
        self.running = False
        self.stopping = False
        self.stop_deadline = _INF
        self.serve_deadline = _INF  # set while shutdown delivers in the calling thread
        self.urgent = False
        self.next_cycle_at = _monotonic() + self.interval()
        self.backoff_until = 0.0  # after failed cycles
        self.not_before = 0.0  # a Retry-After in force
        self.flush_waiters = 0
        self.cycle_active = False
        self.cycles_started = 0
        self.cycles_done = 0
        self.clean_cycle = 0
        self.loss_cycle = 0
        self.failed_cycles = 0

    def interval(self) -> float:
        """The next wait between cycles: ``flush_interval`` jittered by +-20 %."""
        return self.engine.options.flush_interval * self.engine.rng.uniform(0.8, 1.2)

    def deadline_cap(self) -> float:
        """The shutdown deadline in force (``inf`` when not stopping)."""
        return min(self.stop_deadline, self.serve_deadline)

    def connection(self) -> UsersClient:
        """The worker's HTTP client, opened on first use."""
        client = self.client
        if client is None:
            client = self.client = self.engine.connect()
        return client

    # -- starting and stopping (the engine's lock is held where it says so) --------------

    def start(self) -> None:
        """Start (or resume) the thread; the lock is held."""
        if self.engine.spool is not None:
            self.engine.spool.start()
        thread = self.thread
        if thread is not None and thread.is_alive():  # resume a worker told to stop
            self.stopping = False
            self.stop_deadline = _INF
            self.running = True
            return
        thread = threading.Thread(target=self._run, name="moesif-users-sender", daemon=True)
        try:
            thread.start()
        except RuntimeError:  # interpreter shutting down: shutdown() delivers inline
            logger.debug("sender thread could not start", exc_info=True)
            return
        self.thread = thread
        self.running = True
        self.engine.on_start()

    def begin_stop(self, deadline: float) -> None:
        """Ask for everything to be delivered by ``deadline``, then stop."""
        engine = self.engine
        engine.drain()
        with engine.lock:
            # Repeats not sent yet are re-asserted now: this process may not come back.
            engine.buffer.reassert(engine.unchanged.due(_monotonic(), everything=True))
            self.stopping = True
            self.stop_deadline = min(self.stop_deadline, deadline)
            engine.cond.notify_all()
        if engine.spool is not None:  # on disk first: delivery may not finish in time
            engine.spool.persist(timeout=max(0.0, self.stop_deadline - _monotonic()))

    def finish_stop(self) -> int:
        """Wait for the stop asked by :meth:`begin_stop`; the keys left undelivered."""
        engine = self.engine
        deadline = self.stop_deadline
        thread = self.thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(max(0.0, deadline - _monotonic()))
        alive = thread is not None and thread.is_alive()
        if not alive and engine.has_work and _monotonic() < deadline:
            self._serve_inline(deadline)
        if engine.spool is not None:  # what is left stays on disk, not lost
            engine.spool.stop(deadline, worker_alive=alive)
        with engine.lock:
            left = engine.buffer.slots
            self.running = False
            if not alive:
                self.thread = None
                self.stopping = False
                self.stop_deadline = _INF
            # else: still inside a request; it stops as soon as that returns (its deadline
            # has passed) unless a new record resumes it.
            engine.cond.notify_all()
        return left

    def _serve_inline(self, deadline: float) -> None:
        """Deliver in the calling thread (no worker thread could run)."""
        if not self.serve_lock.acquire(timeout=max(0.0, deadline - _monotonic())):
            return
        self.serve_deadline = deadline
        try:
            self._serve()
        finally:
            self.serve_deadline = _INF
            self._close_client()
            self.serve_lock.release()

    # -- flush tickets (the lock is held) --------------------------------------------------

    def flush_begin(self) -> Ticket | None:
        """Register a flush waiter; ``None`` when there is nothing to wait for."""
        pending = self.engine.has_work
        if not pending and not self.cycle_active:
            return None
        if not self.running:
            self.start()
        if self.cycle_active:
            first = self.cycles_started
            target = first + 1 if pending else first
        else:
            first = target = self.cycles_started + 1
        self.flush_waiters += 1
        self.engine.cond.notify_all()
        return target, first

    def flush_verdict(self, ticket: Ticket, *, until_done: bool) -> bool | None:
        """``True``/``False`` once the flush is decided, ``None`` while it is not."""
        target, first = ticket
        if self.clean_cycle >= target:
            return self.loss_cycle < first
        if until_done and self.cycles_done >= target:
            return False
        if not self.running:
            return False
        return None

    # -- the thread ----------------------------------------------------------------------

    def _run(self) -> None:
        engine = self.engine
        with self.serve_lock:
            try:
                self._serve()
            except BaseException:
                logger.exception("Moesif users sender stopped after an unexpected error")
            finally:
                self._close_client()
                with engine.lock:
                    if self.thread is threading.current_thread():
                        self.thread = None
                        self.running = False
                        if not self.stopping and engine.has_work:
                            self.start()  # resumed while it was exiting
                    engine.cond.notify_all()

    def _serve(self) -> None:
        engine = self.engine
        while self._wait_for_work():
            try:
                engine.drain()
                run_cycle(engine, self)
            except Exception:  # a bug, not the network: keep the records and carry on
                engine.warnings.log(
                    logging.ERROR,
                    "cycle-error",
                    "Moesif users sender: unexpected error while sending; will retry",
                    exc_info=True,
                )

    def _wait_for_work(self) -> bool:
        """Block until a cycle is due (``True``) or the worker stops (``False``)."""
        engine = self.engine
        with engine.lock:
            while True:
                if engine.inbox_signalled:  # a backlog of deferred captures: finish them
                    engine.inbox_signalled = False
                    engine.lock.release()
                    try:
                        engine.drain()
                    finally:
                        engine.lock.acquire()
                    continue
                now = _monotonic()
                final = self.deadline_cap()
                pending = engine.has_work or engine.inbox
                if self.stopping or final < _INF:
                    if not pending or now >= final:
                        return False
                    due = max(self.not_before, self.backoff_until)
                    if due > final:
                        return False
                elif not pending:
                    if now >= self.next_cycle_at:
                        if engine.unchanged.any_due(now):
                            return True
                        self.next_cycle_at = now + self.interval()
                    engine.cond.wait(self.next_cycle_at - now)
                    continue
                else:
                    due = self.not_before
                    if not self.flush_waiters:
                        due = max(due, self.backoff_until)
                        if not self.urgent:
                            due = max(due, self.next_cycle_at)
                if now >= due:
                    return True
                engine.cond.wait(due - now)

    def sleep_until(self, moment: float, deadline: float) -> bool:
        """Wait until ``moment``; ``False`` if shutdown moved the deadline before it."""
        engine = self.engine
        with engine.lock:
            while True:
                now = _monotonic()
                if now >= moment:
                    return True
                if moment > min(deadline, self.deadline_cap()):
                    return False
                engine.cond.wait(moment - now)

    def _close_client(self) -> None:
        client, self.client = self.client, None
        if client is not None:
            try:
                client.close()
            except Exception:
                logger.debug("closing the HTTP client failed", exc_info=True)
