"""The durable spool (``spool_dir``): pending records on disk, so a crash loses nothing.

With a spool, records take this path::

    queue ─▶ memory buffer ─persist─▶ this process's spool file ─checkout─▶ POST ─▶ settle

- **Persist**: the spool's own thread (:mod:`.spool_thread`, never the request path)
  moves what the memory buffer holds into the file, coalesced per key, every
  ``min(flush_interval / 2, 1 s)`` and whenever the buffer is half full; each send cycle
  persists first too. A record accepted more than that ago survives ``kill -9`` (a
  committed transaction survives the process, :mod:`.spool_db`). A key already on disk
  gets the new update merged over it by stamps (the one ordering rule: ``modified_time``).
- **Checkout** (:mod:`.spool_send`): a send cycle reads the file chunk by chunk, oldest
  first, so memory holds at most one chunk however large the spool grew during an outage.
- **Settle**: a record leaves the file once the API confirmed it (2xx), refused it for
  good, or it was skipped as unchanged; a record whose send gave up stays. While a key
  is being sent, updates for it go to a second row (part 1) and are folded back when
  the send settles, so a confirmation never deletes what came after it.
- **Bounded**: past ``max_spool_bytes`` a record for a new key is dropped (counted in
  ``dropped``); merges into records already on disk still apply (:mod:`.spool_store`).
- **Adoption** (:mod:`.spool_adopt`): at start, and every few seconds, the files of
  processes that are gone (their POSIX lock can be taken, :mod:`.spool_dir`) are merged
  *under* this process's records and removed.
- **Faults**: a full disk or an I/O error keeps the records in memory and writes them
  again shortly; a corrupt file is moved aside and a new one is used.
- **Stop**: what memory holds is persisted; the file is removed when empty, else kept
  for the next process (or ``moesif-users spool DIR --send``).

This module is what the engine, the worker and a send cycle use: :class:`Spool`.

Locks: ``Spool.lock`` guards the file and its counts (:class:`.spool_store.SpoolStore`);
it may be held while taking the engine's lock, never the other way round (the request
path only ever waits for the engine's lock, and only briefly).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from typing import TYPE_CHECKING

from .buffer import Entry
from .kinds import Key
from .spool_adopt import adopt_orphans
from .spool_send import SpoolCycle
from .spool_store import WRITE_ERRORS, SpoolStore
from .spool_thread import SpoolThread

if TYPE_CHECKING:
    from .engine import Engine

__all__ = ["Spool"]

logger = logging.getLogger("moesif_users_middleware.sender")
_monotonic = time.monotonic

ADOPT_INTERVAL = 5.0  # seconds between looks for files of processes that are gone
MAX_PERSIST_INTERVAL = 1.0
WRITE_CHUNK = 5000  # records per transaction

_abandoned: list[object] = []  # a parent's spools in a forked child: never closed here


class Spool:
    """One sender's spool: its file in ``directory``, its thread, its bookkeeping."""

    def __init__(self, engine: Engine, directory: str, tag: str) -> None:
        self.engine = engine
        options = engine.options
        self.interval = min(options.flush_interval / 2, MAX_PERSIST_INTERVAL)
        self.lock = threading.Lock()
        self.store = SpoolStore(
            directory,
            tag,
            options.max_spool_bytes,
            max(100, 10 * options.batch_size),
            engine.warnings,
        )
        self.thread = SpoolThread(self)
        # Guarded by the engine's lock:
        self.stopped = False
        # Records on disk that no running send cycle will reach: a cycle is due for them.
        self.unsent = False
        self.adopted = False  # the first look for files of processes that are gone is done
        self.adopt_lock = threading.Lock()  # one look at a time
        self.persist_at = 0.0
        self.adopt_at = 0.0
        self.write_failed = False  # the last write failed: wait the interval, do not rush

    @property
    def rows(self) -> int:
        """Keys on disk (records of every kind)."""
        return self.store.rows

    def spooled(self, kind: str | None = None) -> int:
        """Keys on disk: of one kind, or of all."""
        return self.store.rows if kind is None else self.store.kind_rows[kind]

    @property
    def waiting(self) -> bool:
        """Records to send that no running cycle will send (the engine's lock is held):
        on disk, being written there (drained from the memory buffer), or left by
        processes that are gone (until the first look for them)."""
        if self.store.disabled:
            return False
        return (
            not self.adopted
            or (self.unsent and self.store.rows > 0)
            or bool(self.engine.buffer.inflight)
        )

    def abandon(self) -> None:
        """In a forked child: leave the parent's file alone (closing it here could disturb
        the parent's SQLite locks); the child opens its own."""
        _abandoned.append((self.store.db, self.store.lock_fd))

    def start(self) -> None:
        """Run the spool's thread (the engine's lock is held)."""
        if self.store.disabled:
            return
        self.stopped = False
        self.thread.start()

    def adopt(self) -> None:
        """Take over the files of processes that are gone (see :mod:`.spool_adopt`)."""
        with self.adopt_lock:
            from_dead = adopt_orphans(self)
            with self.engine.lock:
                self.adopt_at = _monotonic() + ADOPT_INTERVAL
                self.adopted = True
                if from_dead:
                    self.engine.cond.notify_all()  # the worker sends them

    # -- persisting ---------------------------------------------------------------------------

    def persist(self, timeout: float = -1, *, final: bool = False) -> None:
        """Move what the memory buffer holds to the file (waits ``timeout`` for the lock).

        Once stopped, only the stop's own (``final``) persist may open a file.
        """
        if not self.lock.acquire(timeout=timeout):
            return
        try:
            store = self.store
            if (store.db is not None or final or not self.stopped) and store.open():
                self._persist_locked()
        finally:
            self.lock.release()

    def persist_if_due(self) -> None:
        """Persist now if the interval has passed (between the chunks of a long adoption)."""
        with self.engine.lock:
            due = bool(self.engine.buffer.pending) and _monotonic() >= self.persist_at
        if due:
            self.persist()

    def _persist_locked(self) -> None:
        engine = self.engine
        with engine.lock:
            drained = engine.buffer.drain()
        if not drained:
            self._next_persist()
            return
        kept, refused, unserializable = self._write_chunks(drained)
        with engine.lock:
            buffer = engine.buffer
            for key, entry in kept.items():
                buffer.merge_back(key, entry.id_field, entry.timed_records())
            buffer.release(drained)
            tallies = engine.tallies
            for key in refused:
                tallies[key[0]].dropped += 1
            for key in unserializable:
                tallies[key[0]].failed += 1
            self.write_failed = bool(kept)
            if len(kept) < len(drained):
                self.unsent = True
        # A repeat of a key's last capture keeps its moment only in a pending record:
        # once on disk, the next capture of these keys is finished and queued again.
        with engine.inbox_lock:
            forget = engine.unchanged.forget
            for key in drained:
                forget(key)
        self._next_persist()
        self._warn_dropped(len(refused), len(unserializable))

    def _write_chunks(
        self, drained: dict[Key, Entry]
    ) -> tuple[dict[Key, Entry], list[Key], list[Key]]:
        """Write ``drained`` in small transactions (a small WAL): the entries not written
        (kept in memory, to be written again), the keys refused, those not serializable."""
        store = self.store
        refused: list[Key] = []
        unserializable: list[Key] = []
        items = list(drained.items())
        for start in range(0, len(items), WRITE_CHUNK):
            try:
                chunk_refused, chunk_unserializable = store.write(
                    dict(items[start : start + WRITE_CHUNK])
                )
            except WRITE_ERRORS as exc:
                store.broken(exc)
                return dict(items[start:]), refused, unserializable
            refused += chunk_refused
            unserializable += chunk_unserializable
        return {}, refused, unserializable

    def _warn_dropped(self, refused: int, unserializable: int) -> None:
        warnings = self.engine.warnings
        if refused:
            warnings.warning(
                "spool-full",
                "Moesif users sender: the spool in %s is full (max_spool_bytes, %d bytes); "
                "%d records for new keys dropped",
                self.store.directory,
                self.store.max_bytes,
                refused,
            )
        if unserializable:
            warnings.warning(
                "spool-unserializable",
                "Moesif users sender: %d records could not be serialized and were dropped "
                "(was a queued dict changed after queue_user?)",
                unserializable,
            )

    def _next_persist(self) -> None:
        with self.engine.lock:
            self.persist_at = _monotonic() + self.interval

    def merge_in(self, entries: dict[Key, Entry]) -> list[Key]:
        """Merge entries read from another process's file; the keys refused (no room)."""
        with self.lock:
            store = self.store
            if self.stopped or not store.open():
                return list(entries)
            try:
                refused = store.write(entries, refuse_new=True)[0]
            except WRITE_ERRORS as exc:
                store.broken(exc)
                return list(entries)
            self.mark_unsent()
            return refused

    def mark_unsent(self) -> None:
        """Records on disk wait for the next cycle."""
        with self.engine.lock:
            self.unsent = True

    # -- sending ------------------------------------------------------------------------------

    def cycle(self) -> SpoolCycle | None:
        """A send cycle's view of the spool; ``None`` when the spool is off (send from memory)."""
        with self.lock:
            if not self.store.open():
                return None
        return SpoolCycle(self)

    def start_scan(self) -> int:
        """Persist what memory holds; the last row a cycle starting now is to send.

        Whatever is written after this is left for the next cycle (``unsent``).
        """
        with self.lock:
            store = self.store
            if not store.open():
                return 0
            self._persist_locked()
            try:
                last = store.db.last_rowid() if store.db is not None else 0
            except sqlite3.Error as exc:
                store.broken(exc)
                return 0
            with self.engine.lock:
                self.unsent = False
            return last

    # -- stopping -----------------------------------------------------------------------------

    def stop(self, deadline: float, *, worker_alive: bool) -> None:
        """Persist what memory holds (until ``deadline``); close the file unless the worker
        still runs. What is left stays on disk for the next process."""
        engine = self.engine
        with engine.lock:
            self.stopped = True
            engine.cond.notify_all()
        self.persist(timeout=max(0.0, deadline - _monotonic()), final=True)
        self.thread.join(max(0.0, deadline - _monotonic()))  # it ends at its next look
        if worker_alive or not self.lock.acquire(timeout=max(0.0, deadline - _monotonic())):
            return
        try:
            store = self.store
            name, rows = store.name, store.rows
            if name is None:
                return
            store.close(remove=rows == 0)
            if rows:
                logger.warning(
                    "Moesif users sender stopped with %d records kept in the spool file %s; "
                    "the next process started with this spool_dir sends them "
                    "(or: moesif-users spool %s --send)",
                    rows,
                    name.db,
                    store.directory,
                )
        finally:
            self.lock.release()
