"""This process's own spool file while it is open, and what it counts.

:class:`SpoolStore` opens the file (creating it privately, holding its POSIX lock and its
claim, :mod:`.spool_dir`), writes entries into it (merged by stamps over what a key has on
disk, new keys only while ``max_spool_bytes`` has room), handles its faults, and closes
it. It keeps the counts the sender reports and the budget is checked against: keys on
disk per kind (part 0 rows) and bytes (every row, :func:`.spool_db.row_size`). The counts
change only once a transaction committed; the send side (:mod:`.spool_send`) keeps them
too as it settles keys.

Not thread-safe: every use holds the spool's lock (:attr:`.spool.Spool.lock`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
from collections import Counter
from dataclasses import dataclass, field

from .._ratelimit import RateLimitedLog
from .buffer import Entry
from .kinds import Key
from .spool_db import Row, SpoolDB, decode_entry, encode_entry, merged_entries, row_size
from .spool_dir import (
    SpoolError,
    SpoolName,
    check_directory,
    claim,
    lock_new,
    move_aside,
    release_claim,
    remove_files,
)

__all__ = ["WRITE_ERRORS", "SpoolStore"]

logger = logging.getLogger("moesif_users_middleware.sender")

# What a write may fail with (see SpoolStore.broken): SQLite, the disk, a row on disk that
# cannot be read.
WRITE_ERRORS = (sqlite3.Error, OSError, ValueError)


class SpoolStore:
    """The file this process writes in ``directory``, open or not, and its counts."""

    def __init__(
        self, directory: str, tag: str, max_bytes: int, chunk: int, warnings: RateLimitedLog
    ) -> None:
        self.directory = directory
        self.tag = tag
        self.max_bytes = max_bytes
        self.chunk = chunk  # records a send cycle checks out at a time
        self.warnings = warnings
        self.db: SpoolDB | None = None
        self.name: SpoolName | None = None
        self.lock_fd: int | None = None
        self.disabled = False  # the directory cannot be used: records stay in memory
        self.kind_rows: Counter[str] = Counter()  # keys on disk, per record kind
        self.bytes = 0
        self.sending: dict[Key, tuple[Entry, int]] = {}  # checked out: entry, row size
        self.overlays: dict[Key, int] = {}  # keys with a part 1 row: its size

    @property
    def rows(self) -> int:
        """Keys on disk (records of every kind)."""
        return sum(self.kind_rows.values())

    def forget_checkouts(self) -> None:
        """No key is being sent any more (the file closed, or it is counted again)."""
        self.sending.clear()
        self.overlays.clear()

    # -- opening and closing ------------------------------------------------------------------

    def open(self) -> bool:
        """Open this process's file; ``False`` when the spool is off."""
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
        self.forget_checkouts()
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

    def close(self, remove: bool) -> None:
        """Close the file; remove it when it holds nothing."""
        db, name, fd = self.db, self.name, self.lock_fd
        self.db = self.name = self.lock_fd = None
        self.forget_checkouts()
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

    def broken(self, exc: BaseException) -> None:
        """The file failed to read or write.

        A full disk or an I/O error is passing: the caller keeps its records and tries
        again. A corrupt file is moved aside (one ERROR) and a new one is opened.
        """
        if isinstance(exc, (sqlite3.OperationalError, OSError)):
            self.warnings.warning(
                "spool-write",
                "Moesif users sender: the spool in %s could not be written (%s); records "
                "are kept in memory and written again shortly",
                self.directory,
                exc,
            )
            return
        name = self.name
        self.close(remove=False)
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

    # -- writing ------------------------------------------------------------------------------

    def write(
        self, entries: dict[Key, Entry], *, refuse_new: bool = False
    ) -> tuple[list[Key], list[Key]]:
        """Merge ``entries`` into the (open) file in one transaction.

        Returns the keys refused for want of room (new keys past ``max_spool_bytes``)
        and those whose records could not be serialized. ``refuse_new``: once one
        key was refused, refuse every further new key too (adoption stops there and
        leaves the rest where it was). The counts change only once the data is committed.
        A key being sent gets its update in a part 1 row (its part 0 is in flight).
        """
        db = self.db
        assert db is not None
        groups: dict[tuple[str, int], list[Key]] = {}
        for key in entries:
            groups.setdefault((key[0], 1 if key in self.sending else 0), []).append(key)
        change = _Change(self.bytes, refuse_new)
        db.begin()
        try:
            for (kind, part), keys in groups.items():
                existing = db.get(kind, [key[1] for key in keys], part)
                db.put(self._rows(change, kind, part, keys, entries, existing))
            db.commit()
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                db.rollback()
            raise
        self.kind_rows.update(change.added)
        self.bytes = change.size
        self.overlays.update(change.overlays)
        return change.refused, change.unserializable

    def _rows(
        self,
        change: _Change,
        kind: str,
        part: int,
        keys: list[Key],
        entries: dict[Key, Entry],
        existing: dict[str, tuple[float, str]],
    ) -> list[Row]:
        """The rows to put for ``keys`` (of one kind and part), noted in ``change``."""
        puts: list[Row] = []
        refused, size, max_bytes = change.refused, change.size, self.max_bytes
        for key in keys:
            entry = entries[key]
            old = existing.get(key[1])
            if old is not None:
                entry = merged_entries(key, entry, decode_entry(kind, *old))
            elif part == 0 and refused and change.refuse_new:
                refused.append(key)
                continue
            data = _encoded(entry)
            if data is None:
                change.unserializable.append(key)
                continue
            grown = row_size(key, data) - (0 if old is None else row_size(key, old[1]))
            if old is None and part == 0:
                if size + grown > max_bytes:
                    refused.append(key)
                    continue
                change.added[kind] += 1
            size += grown
            if part == 1:
                change.overlays[key] = row_size(key, data)
            puts.append((kind, key[1], part, entry.stamp, data))
        change.size = size
        return puts


@dataclass
class _Change:
    """What one write transaction changes, applied to the counts once it is committed."""

    size: int  # the file's bytes with the rows written so far
    refuse_new: bool
    added: Counter[str] = field(default_factory=Counter)
    overlays: dict[Key, int] = field(default_factory=dict)
    refused: list[Key] = field(default_factory=list)
    unserializable: list[Key] = field(default_factory=list)


def _encoded(entry: Entry) -> str | None:
    """A row's data, or ``None`` for a record that is not JSON (changed after queueing)."""
    try:
        return encode_entry(entry)
    except (TypeError, ValueError, RecursionError):
        return None
