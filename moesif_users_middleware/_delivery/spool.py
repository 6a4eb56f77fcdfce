"""The durable spool (``spool_dir``): pending records on disk, so a crash loses nothing.

With a spool, records take this path::

    queue ─▶ memory buffer ─persist─▶ this process's spool file ─checkout─▶ POST ─▶ settle

- **Persist**: the spool's own thread (never the request path) moves what the memory
  buffer holds into the file, coalesced per key, every ``min(flush_interval / 2, 1 s)``
  and whenever the buffer is half full; each send cycle persists first too. A record
  accepted more than that ago survives ``kill -9``. A key already on disk gets the new
  update merged over it by stamps (the one ordering rule: ``modified_time``).
- **Checkout**: a send cycle reads the file chunk by chunk, oldest first, so memory
  holds at most one chunk however large the spool grew during an outage.
- **Settle**: a record leaves the file once the API confirmed it (2xx), refused it for
  good, or it was skipped as unchanged; a record whose send gave up stays. While a key
  is being sent, updates for it go to a second row (part 1) and are folded back when
  the send settles, so a confirmation never deletes what came after it.
- **Bounded**: past ``max_spool_bytes`` a record for a new key is dropped (counted in
  ``dropped``); merges into records already on disk still apply.
- **Adoption** (:mod:`.spool_adopt`): at start, and every few seconds, the files of
  processes that are gone are merged *under* this process's records and removed.
- **Stop**: what memory holds is persisted; the file is removed when empty, else kept
  for the next process (or ``moesif-users spool DIR --send``).

Locks: ``Spool.lock`` guards the file and the bookkeeping here; it may be held while
taking the engine's lock, never the other way round (the request path only ever waits
for the engine's lock, and only briefly).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING

from .buffer import Entry, Timed
from .kinds import Key
from .spool_adopt import adopt_orphans
from .spool_file import (
    SpoolDB,
    SpoolError,
    SpoolName,
    app_tag,
    check_directory,
    claim,
    decode_entry,
    encode_entry,
    lock_new,
    merged,
    move_aside,
    release_claim,
    remove_files,
    row_size,
)

if TYPE_CHECKING:
    from .engine import Engine

__all__ = ["Spool", "SpoolCycle", "app_tag"]

logger = logging.getLogger("moesif_users_middleware.sender")
_monotonic = time.monotonic

ADOPT_INTERVAL = 5.0  # seconds between looks for files of processes that are gone
MAX_PERSIST_INTERVAL = 1.0
WRITE_CHUNK = 5000  # records per transaction


# -- the spool ----------------------------------------------------------------------------------

_abandoned: list[object] = []  # a parent's spools in a forked child: never closed here


class Spool:
    """One sender's spool: its file in ``directory``, its thread, its bookkeeping."""

    def __init__(self, engine: Engine, directory: str, tag: str) -> None:
        self.engine = engine
        self.directory = directory
        self.tag = tag
        options = engine.options
        self.max_bytes: int = options.max_spool_bytes
        self.interval = min(options.flush_interval / 2, MAX_PERSIST_INTERVAL)
        self.chunk = max(100, 10 * options.batch_size)
        self.pid = os.getpid()
        self.lock = threading.Lock()
        self.db: SpoolDB | None = None
        self.name: SpoolName | None = None
        self.lock_fd: int | None = None
        self.disabled = False
        self.kind_rows: Counter[str] = Counter()  # keys on disk, per record kind
        self.bytes = 0
        self.sending: dict[Key, tuple[Entry, int]] = {}  # checked out: entry, row size
        self.overlays: dict[Key, int] = {}  # keys with a part 1 row: its size
        # Guarded by the engine's lock:
        self.thread: threading.Thread | None = None
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
        return sum(self.kind_rows.values())

    def spooled(self, kind: str | None = None) -> int:
        """Keys on disk: of one kind, or of all."""
        return self.rows if kind is None else self.kind_rows[kind]

    @property
    def waiting(self) -> bool:
        """Records to send that no running cycle will send (the engine's lock is held):
        on disk, being written there (drained from the memory buffer), or left by
        processes that are gone (until the first look for them)."""
        if self.disabled:
            return False
        return (
            not self.adopted or (self.unsent and self.rows > 0) or bool(self.engine.buffer.inflight)
        )

    def abandon(self) -> None:
        """In a forked child: leave the parent's file alone (closing it here could disturb
        the parent's SQLite locks); the child opens its own."""
        _abandoned.append((self.db, self.lock_fd))

    # -- the thread ---------------------------------------------------------------------------

    def start(self) -> None:
        """Run the spool's thread (the engine's lock is held)."""
        if self.disabled:
            return
        self.stopped = False
        thread = self.thread
        if thread is not None and thread.is_alive():
            return
        thread = threading.Thread(target=self._run, name="moesif-users-spool", daemon=True)
        try:
            thread.start()
        except RuntimeError:  # interpreter shutting down: the stop persists inline
            return
        self.thread = thread

    def _run(self) -> None:
        with self.lock:
            if not self._open():
                return
        self._guarded(self.adopt)
        while self._wait():
            self._guarded(self._persist_and_adopt)

    def _persist_and_adopt(self) -> None:
        self.engine.drain()  # captures not finished yet are records too
        self.persist()
        if _monotonic() >= self.adopt_at:
            self.adopt()

    def _guarded(self, work: Callable[[], None]) -> None:
        """Run ``work``; a bug is logged (once a minute), never ends the thread."""
        try:
            work()
        except Exception:
            self.engine.warnings.log(
                logging.ERROR,
                "spool-error",
                "Moesif users sender: unexpected error in the spool; will retry",
                exc_info=True,
            )
            with self.engine.lock:
                self.persist_at = self.adopt_at = _monotonic() + self.interval

    def _wait(self) -> bool:
        """Until something is to persist or to adopt (``True``), or the spool stops."""
        engine = self.engine
        with engine.lock:
            while True:
                if self.stopped or self.thread is not threading.current_thread():
                    return False
                now = _monotonic()
                buffer = engine.buffer
                waiting = bool(buffer.pending or engine.inbox)
                full = buffer.slots >= buffer.wake_slots and not self.write_failed
                if waiting and (now >= self.persist_at or full):
                    return True
                if now >= self.adopt_at:
                    return True
                # Nothing tells this thread of a new record: look again every interval.
                wake = min(self.adopt_at, self.persist_at if waiting else now + self.interval)
                engine.cond.wait(max(0.005, wake - now))

    def adopt(self) -> None:
        """Take over the files of processes that are gone (see :mod:`.spool_adopt`)."""
        with self.adopt_lock:
            from_dead = adopt_orphans(self)
            with self.engine.lock:
                self.adopt_at = _monotonic() + ADOPT_INTERVAL
                self.adopted = True
                if from_dead:
                    self.engine.cond.notify_all()  # the worker sends them

    # -- the file -----------------------------------------------------------------------------

    def _open(self) -> bool:
        """Open this process's file (the lock is held); ``False`` when the spool is off."""
        if self.db is not None:
            return True
        if self.disabled:
            return False
        name = SpoolName.new(self.directory, self.tag)
        try:
            check_directory(self.directory)
            claim(name.stem)
            fd = lock_new(name.lock)
            try:
                db = SpoolDB.create(name.db)
            except BaseException:
                remove_files(name)
                os.close(fd)
                raise
        except (OSError, sqlite3.Error, SpoolError) as exc:
            release_claim(name.stem)
            self._give_up(exc)
            return False
        self.db, self.name, self.lock_fd = db, name, fd
        self.kind_rows, self.bytes = Counter(), 0
        self.sending.clear()
        self.overlays.clear()
        return True

    def _give_up(self, exc: BaseException) -> None:
        self.disabled = True
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        logger.error(
            "Moesif users sender: spool_dir %s cannot be used (%s); pending records are "
            "kept in memory only. Use a directory this process's user owns, mode 700.",
            self.directory,
            reason,
        )

    def _close(self, remove: bool) -> None:
        """Close the file (the lock is held); remove it when it holds nothing."""
        db, name, fd = self.db, self.name, self.lock_fd
        self.db = self.name = self.lock_fd = None
        self.sending.clear()
        self.overlays.clear()
        if db is not None:
            try:
                db.close()
            except sqlite3.Error:
                logger.debug("closing the spool failed", exc_info=True)
        if name is not None and remove:
            remove_files(name)
        if fd is not None:
            os.close(fd)  # the lock goes with it: the file may be adopted now
        if name is not None:
            release_claim(name.stem)

    def _broken(self, exc: BaseException) -> None:
        """This process's own file failed to read or write (the lock is held).

        A full disk or an I/O error is passing: the caller keeps its records and tries
        again. A corrupt file is moved aside (one ERROR) and a new one is opened.
        """
        if isinstance(exc, (sqlite3.OperationalError, OSError)):
            self.engine.warnings.warning(
                "spool-write",
                "Moesif users sender: the spool in %s could not be written (%s); records "
                "are kept in memory and written again shortly",
                self.directory,
                exc,
            )
            return
        name = self.name
        self._close(remove=False)
        self.kind_rows, self.bytes = Counter(), 0
        if name is not None:
            moved = move_aside(name)
            logger.error(
                "Moesif users sender: the spool file %s is corrupt (%s); moved aside to %s "
                "(its records are not sent); a new spool file is used",
                name.db,
                exc,
                moved,
            )

    # -- persisting ---------------------------------------------------------------------------

    def persist(self, timeout: float = -1, *, final: bool = False) -> None:
        """Move what the memory buffer holds to the file (waits ``timeout`` for the lock).

        Once stopped, only the stop's own (``final``) persist may open a file.
        """
        if not self.lock.acquire(timeout=timeout):
            return
        try:
            if (self.db is not None or final or not self.stopped) and self._open():
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
        kept: dict[Key, Entry] = {}
        refused: list[Key] = []
        unserializable: list[Key] = []
        items = list(drained.items())
        for start in range(0, len(items), WRITE_CHUNK):  # small transactions, a small WAL
            try:
                chunk_refused, chunk_unserializable = self._write(
                    dict(items[start : start + WRITE_CHUNK])
                )
            except (sqlite3.Error, OSError, ValueError) as exc:
                self._broken(exc)
                kept = dict(items[start:])
                break
            refused += chunk_refused
            unserializable += chunk_unserializable
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
        if refused:
            engine.warnings.warning(
                "spool-full",
                "Moesif users sender: the spool in %s is full (max_spool_bytes, %d bytes); "
                "%d records for new keys dropped",
                self.directory,
                self.max_bytes,
                len(refused),
            )
        if unserializable:
            engine.warnings.warning(
                "spool-unserializable",
                "Moesif users sender: %d records could not be serialized and were dropped "
                "(was a queued dict changed after queue_user?)",
                len(unserializable),
            )

    def _next_persist(self) -> None:
        with self.engine.lock:
            self.persist_at = _monotonic() + self.interval

    def merge_in(self, entries: dict[Key, Entry]) -> list[Key]:
        """Merge entries read from another process's file; the keys refused (no room)."""
        with self.lock:
            if self.stopped or not self._open():
                return list(entries)
            try:
                refused = self._write(entries, refuse_new=True)[0]
            except (sqlite3.Error, OSError, ValueError) as exc:
                self._broken(exc)
                return list(entries)
            self.mark_unsent()
            return refused

    def mark_unsent(self) -> None:
        """Records on disk wait for the next cycle."""
        with self.engine.lock:
            self.unsent = True

    def _write(
        self, entries: dict[Key, Entry], *, refuse_new: bool = False
    ) -> tuple[list[Key], list[Key]]:
        """Merge ``entries`` into the file in one transaction (the lock is held).

        Returns the keys refused for want of room (new keys past ``max_spool_bytes``)
        and those whose records could not be serialized. ``refuse_new``: once one
        key was refused, refuse every further new key too (adoption stops there and
        leaves the rest where it was). The counts change only once the data is committed.
        """
        db = self.db
        assert db is not None
        groups: dict[tuple[str, int], list[Key]] = {}
        for key in entries:
            groups.setdefault((key[0], 1 if key in self.sending else 0), []).append(key)
        added: Counter[str] = Counter()
        size = self.bytes
        overlays: dict[Key, int] = {}
        refused: list[Key] = []
        unserializable: list[Key] = []
        db.begin()
        try:
            for (kind, part), keys in groups.items():
                existing = db.get(kind, [key[1] for key in keys], part)
                puts = []
                for key in keys:
                    entry = entries[key]
                    old = existing.get(key[1])
                    if old is not None:
                        stored = decode_entry(kind, *old)
                        entry = merged(key, entry.id_field, entry, stored.timed_records())
                    elif part == 0 and refused and refuse_new:
                        refused.append(key)
                        continue
                    data = _encoded(entry)
                    if data is None:
                        unserializable.append(key)
                        continue
                    grown = row_size(key, data) - (0 if old is None else row_size(key, old[1]))
                    if old is None and part == 0:
                        if size + grown > self.max_bytes:
                            refused.append(key)
                            continue
                        added[kind] += 1
                    size += grown
                    if part == 1:
                        overlays[key] = row_size(key, data)
                    puts.append((kind, key[1], part, entry.stamp, data))
                db.put(puts)
            db.commit()
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                db.rollback()
            raise
        self.kind_rows.update(added)
        self.bytes = size
        self.overlays.update(overlays)
        return refused, unserializable

    # -- sending ------------------------------------------------------------------------------

    def cycle(self) -> SpoolCycle | None:
        """A send cycle's view of the spool; ``None`` when the spool is off (send from memory)."""
        with self.lock:
            if not self._open():
                return None
        return SpoolCycle(self)

    def start_scan(self) -> int:
        """Persist what memory holds; the last row a cycle starting now is to send.

        Whatever is written after this is left for the next cycle (``unsent``).
        """
        with self.lock:
            if not self._open():
                return 0
            self._persist_locked()
            try:
                last = self.db.last_rowid() if self.db is not None else 0
            except sqlite3.Error as exc:
                self._broken(exc)
                return 0
            with self.engine.lock:
                self.unsent = False
            return last

    def checkout(self, after: int, last: int) -> tuple[dict[Key, Entry], int]:
        """The next chunk of records to send (rowids in ``(after, last]``) and where it ended."""
        with self.lock:
            db = self.db
            if db is None:
                return {}, after
            chunk: dict[Key, Entry] = {}
            bad: list[tuple[str, str, int]] = []
            try:
                for rowid, (kind, record_id, part, stamp, data) in db.rows_after(
                    after, last, self.chunk
                ):
                    after = rowid
                    key = (kind, record_id)
                    try:
                        entry = decode_entry(kind, stamp, data)
                    except ValueError:
                        bad.append((kind, record_id, part))
                        continue
                    chunk[key] = entry
                    self.sending[key] = (entry, row_size(key, data))
                if bad:
                    self._drop_bad_rows(db, bad)
            except sqlite3.Error as exc:
                self._broken(exc)
                return {}, after
            return chunk, after

    def _drop_bad_rows(self, db: SpoolDB, bad: list[tuple[str, str, int]]) -> None:
        db.begin()
        db.delete(bad)
        db.commit()
        self.kind_rows, self.bytes = db.totals()
        logger.error(
            "Moesif users sender: %d unreadable records in the spool file %s were removed",
            len(bad),
            self.name.db if self.name else self.directory,
        )

    def settle(self, settled: list[Key], failed: dict[Key, list[Timed]]) -> None:
        """Apply what a send cycle decided for these checked-out keys.

        A key without failed records leaves the file (its part 1, if any, takes its
        place); a key whose records failed keeps those, merged under its part 1.
        """
        with self.lock:
            db = self.db
            if db is None or not settled:
                return
            try:
                db.begin()
                for key in settled:
                    self._settle_one(db, key, failed.get(key))
                db.commit()
            except (sqlite3.Error, ValueError) as exc:
                db.rollback()
                self._broken(exc)
                if self.db is db:  # passing trouble: count again, fold part 1 back later
                    self._recount()

    def _settle_one(self, db: SpoolDB, key: Key, records: list[Timed] | None) -> None:
        checked_out = self.sending.pop(key, None)
        if checked_out is None:
            return
        entry, size = checked_out
        overlay = self.overlays.pop(key, None)
        kind, record_id = key
        if not records:
            db.delete([(kind, record_id, 0)])
            self.bytes -= size
            if overlay is None:
                self.kind_rows[kind] -= 1
            else:
                db.promote([key])
            return
        records = sorted(records, key=lambda timed: timed[0] is entry.record)  # main last
        if overlay is None:
            if len(records) == len(entry.records()):
                return  # the row is as it was
            base = None
        else:
            stamp, data = db.get(kind, [record_id], 1)[record_id]
            base = decode_entry(kind, stamp, data)
            db.delete([(kind, record_id, 1)])
            self.bytes -= overlay
        kept = merged(key, entry.id_field, base, records)
        data = encode_entry(kept)
        db.put([(kind, record_id, 0, kept.stamp, data)])
        self.bytes += row_size(key, data) - size

    def _recount(self) -> None:
        """After a failed settle: fold part 1 rows of keys not in flight back, count again."""
        db = self.db
        assert db is not None
        self.sending.clear()
        self.overlays.clear()
        try:
            db.begin()
            for kind, record_id, _, stamp, data in list(db.iter_rows(part=1)):
                key = (kind, record_id)
                newer = decode_entry(kind, stamp, data)
                older = db.get(kind, [record_id], 0).get(record_id)
                if older is not None:
                    base = decode_entry(kind, *older)
                    newer = merged(key, newer.id_field, newer, base.timed_records())
                db.delete([(kind, record_id, 1)])
                db.put([(kind, record_id, 0, newer.stamp, encode_entry(newer))])
            db.commit()
            self.kind_rows, self.bytes = db.totals()
        except (sqlite3.Error, ValueError):
            db.rollback()
            logger.debug("recounting the spool failed", exc_info=True)

    # -- stopping -----------------------------------------------------------------------------

    def stop(self, deadline: float, *, worker_alive: bool) -> None:
        """Persist what memory holds (until ``deadline``); close the file unless the worker
        still runs. What is left stays on disk for the next process."""
        engine = self.engine
        with engine.lock:
            self.stopped = True
            engine.cond.notify_all()
        self.persist(timeout=max(0.0, deadline - _monotonic()), final=True)
        thread = self.thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(max(0.0, deadline - _monotonic()))  # it ends at its next look
        if worker_alive or not self.lock.acquire(timeout=max(0.0, deadline - _monotonic())):
            return
        try:
            name, rows = self.name, self.rows
            if name is None:
                return
            self._close(remove=rows == 0)
            if rows:
                logger.warning(
                    "Moesif users sender stopped with %d records kept in the spool file %s; "
                    "the next process started with this spool_dir sends them "
                    "(or: moesif-users spool %s --send)",
                    rows,
                    name.db,
                    self.directory,
                )
        finally:
            self.lock.release()


def _encoded(entry: Entry) -> str | None:
    """A row's data, or ``None`` for a record that is not JSON (changed after queueing)."""
    try:
        return encode_entry(entry)
    except (TypeError, ValueError, RecursionError):
        return None


class SpoolCycle:
    """One send cycle's records from the spool, chunk by chunk, and how each settled.

    The cycle calls :meth:`merge_back` and :meth:`release` with the engine's lock held
    (as it does the memory buffer's): they only note the outcome, and :meth:`commit`
    writes it, without that lock.
    """

    def __init__(self, spool: Spool) -> None:
        self.spool = spool
        self.failed: dict[Key, list[Timed]] = {}
        self.settled: list[Key] = []
        self.complete = False  # every record on disk at the start was tried

    def chunks(self) -> Iterator[dict[Key, Entry]]:
        """Persist what memory holds, then every record on disk now, a chunk at a time."""
        spool = self.spool
        if not spool.adopted:  # a flush at start sends what earlier processes left too
            spool.adopt()
        last = spool.start_scan()
        after = 0
        while True:
            chunk, after = spool.checkout(after, last)
            if not chunk:
                self.complete = True
                return
            yield chunk

    def merge_back(self, key: Key, id_field: str, records: list[Timed]) -> None:
        """These records of a checked-out key were not delivered: they stay."""
        self.failed.setdefault(key, []).extend(records)

    def release(self, keys: Iterable[Key]) -> None:
        """These keys are settled."""
        self.settled.extend(keys)

    def commit(self) -> None:
        """Write the outcomes noted so far."""
        settled, self.settled = self.settled, []
        if settled:
            failed = {key: self.failed.pop(key) for key in settled if key in self.failed}
            self.spool.settle(settled, failed)

    def finish(self) -> None:
        """The cycle ended: write the last outcomes; what it did not reach is for the next."""
        self.commit()
        if not self.complete:
            self.spool.mark_unsent()
