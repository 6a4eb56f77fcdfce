"""The spool's send side: a send cycle's records out of the file, and their outcomes back.

A cycle (:mod:`.cycle`) reads the file through a :class:`SpoolCycle`: every record on
disk when it starts (:meth:`.spool.Spool.start_scan`), oldest first, a chunk at a time,
so memory holds at most one chunk however large the spool grew during an outage. The
keys of a chunk are *checked out* (:attr:`.spool_store.SpoolStore.sending`): updates for
them meanwhile go to a part 1 row. As the cycle settles keys, a key without failed
records leaves the file (its part 1, if any, takes its place); a key whose records
failed keeps those, merged under its part 1. A confirmation thus never deletes what came
after it.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from .buffer import Entry, Timed
from .kinds import Key
from .spool_db import SpoolDB, decode_entry, encode_entry, merged, merged_entries, row_size
from .spool_store import SpoolStore

if TYPE_CHECKING:
    from .spool import Spool

__all__ = ["SpoolCycle"]

logger = logging.getLogger("moesif_users_middleware.sender")


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
            with spool.lock:
                chunk, after = _checkout(spool.store, after, last)
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
            with self.spool.lock:
                _settle(self.spool.store, settled, failed)

    def finish(self) -> None:
        """The cycle ended: write the last outcomes; what it did not reach is for the next."""
        self.commit()
        if not self.complete:
            self.spool.mark_unsent()


# The functions below run with the spool's lock held.


def _checkout(store: SpoolStore, after: int, last: int) -> tuple[dict[Key, Entry], int]:
    """The next chunk of records to send (rowids in ``(after, last]``) and where it ended."""
    db = store.db
    if db is None:
        return {}, after
    chunk: dict[Key, Entry] = {}
    bad: list[tuple[str, str, int]] = []
    try:
        for rowid, (kind, record_id, part, stamp, data) in db.rows_after(after, last, store.chunk):
            after = rowid
            key = (kind, record_id)
            try:
                entry = decode_entry(kind, stamp, data)
            except ValueError:
                bad.append((kind, record_id, part))
                continue
            chunk[key] = entry
            store.sending[key] = (entry, row_size(key, data))
        if bad:
            _drop_bad_rows(store, db, bad)
    except sqlite3.Error as exc:
        store.broken(exc)
        return {}, after
    return chunk, after


def _drop_bad_rows(store: SpoolStore, db: SpoolDB, bad: list[tuple[str, str, int]]) -> None:
    db.begin()
    db.delete(bad)
    db.commit()
    store.kind_rows, store.bytes = db.totals()
    logger.error(
        "Moesif users sender: %d unreadable records in the spool file %s were removed",
        len(bad),
        store.name.db if store.name else store.directory,
    )


def _settle(store: SpoolStore, settled: list[Key], failed: dict[Key, list[Timed]]) -> None:
    """Apply what a send cycle decided for these checked-out keys (see the module doc)."""
    db = store.db
    if db is None or not settled:
        return
    try:
        db.begin()
        for key in settled:
            _settle_one(store, db, key, failed.get(key))
        db.commit()
    except (sqlite3.Error, ValueError) as exc:
        db.rollback()
        store.broken(exc)
        if store.db is db:  # passing trouble: count again, fold part 1 back later
            _recount(store, db)


def _settle_one(store: SpoolStore, db: SpoolDB, key: Key, records: list[Timed] | None) -> None:
    checked_out = store.sending.pop(key, None)
    if checked_out is None:
        return
    entry, size = checked_out
    overlay = store.overlays.pop(key, None)
    kind, record_id = key
    if not records:
        db.delete([(kind, record_id, 0)])
        store.bytes -= size
        if overlay is None:
            store.kind_rows[kind] -= 1
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
        store.bytes -= overlay
    kept = merged(key, entry.id_field, base, records)
    data = encode_entry(kept)
    db.put([(kind, record_id, 0, kept.stamp, data)])
    store.bytes += row_size(key, data) - size


def _recount(store: SpoolStore, db: SpoolDB) -> None:
    """After a failed settle: fold part 1 rows of keys not in flight back, count again."""
    store.forget_checkouts()
    try:
        db.begin()
        for kind, record_id, _, stamp, data in list(db.iter_rows(part=1)):
            key = (kind, record_id)
            newer = decode_entry(kind, stamp, data)
            older = db.get(kind, [record_id], 0).get(record_id)
            if older is not None:
                newer = merged_entries(key, newer, decode_entry(kind, *older))
            db.delete([(kind, record_id, 1)])
            db.put([(kind, record_id, 0, newer.stamp, encode_entry(newer))])
        db.commit()
        store.kind_rows, store.bytes = db.totals()
    except (sqlite3.Error, ValueError):
        db.rollback()
        logger.debug("recounting the spool failed", exc_info=True)
