"""The spool's own thread: it persists and adopts when due, never on the request path.

It wakes every ``min(flush_interval / 2, 1 s)`` while records wait in memory (sooner when
the memory buffer is half full, unless the last write failed), and every few seconds to
look for the files of processes that are gone. Nothing tells it of a new record: it looks
again every interval. A bug in what it runs is logged (once a minute) and retried after
the interval; it never ends the thread, which ends when the spool stops (or a newer
thread replaced it).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .spool import Spool

__all__ = ["SpoolThread"]

_monotonic = time.monotonic


class SpoolThread:
    """The spool's thread (``current``); the moments it waits for live on the :class:`.Spool`."""

    def __init__(self, spool: Spool) -> None:
        self.spool = spool
        self.current: threading.Thread | None = None  # guarded by the engine's lock

    def start(self) -> None:
        """Run the thread unless it runs (the engine's lock is held)."""
        thread = self.current
        if thread is not None and thread.is_alive():
            return
        thread = threading.Thread(target=self._run, name="moesif-users-spool", daemon=True)
        try:
            thread.start()
        except RuntimeError:  # interpreter shutting down: the stop persists inline
            return
        self.current = thread

    def join(self, timeout: float) -> None:
        """Wait for the thread to end (it ends at its next look once the spool stopped)."""
        thread = self.current
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def _run(self) -> None:
        spool = self.spool
        with spool.lock:
            if not spool.store.open():
                return
        self._guarded(spool.adopt)
        while self._wait():
            self._guarded(self._persist_and_adopt)

    def _persist_and_adopt(self) -> None:
        spool = self.spool
        spool.engine.drain()  # captures not finished yet are records too
        spool.persist()
        if _monotonic() >= spool.adopt_at:
            spool.adopt()

    def _guarded(self, work: Callable[[], None]) -> None:
        """Run ``work``; a bug is logged (once a minute), never ends the thread."""
        spool = self.spool
        try:
            work()
        except Exception:
            spool.engine.warnings.log(
                logging.ERROR,
                "spool-error",
                "Moesif users sender: unexpected error in the spool; will retry",
                exc_info=True,
            )
            with spool.engine.lock:
                spool.persist_at = spool.adopt_at = _monotonic() + spool.interval

    def _wait(self) -> bool:
        """Until something is to persist or to adopt (``True``), or the spool stops."""
        spool = self.spool
        engine = spool.engine
        with engine.lock:
            while True:
                if spool.stopped or self.current is not threading.current_thread():
                    return False
                now = _monotonic()
                buffer = engine.buffer
                waiting = bool(buffer.pending or engine.inbox)
                full = buffer.slots >= buffer.wake_slots and not spool.write_failed
                if waiting and (now >= spool.persist_at or full):
                    return True
                if now >= spool.adopt_at:
                    return True
                # Nothing tells this thread of a new record: look again every interval.
                wake = min(spool.adopt_at, spool.persist_at if waiting else now + spool.interval)
                engine.cond.wait(max(0.005, wake - now))
