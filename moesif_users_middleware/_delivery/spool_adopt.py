"""Adopting the spool files of processes that are gone: each one once, by one process.

A file's owner holds the POSIX lock of its ``.lock`` file while it lives (:mod:`.spool_dir`);
taking that lock (non-blocking) is the right to adopt the file, so two processes never
adopt the same one, and a live owner's file is never touched. The adopter reads the file
in chunks, merges each chunk *under* its own records (by stamps, the ``modified_time``
rule), commits, then deletes the adopted rows from the orphan; once the orphan is empty
it is removed. A crash in between adopts the same rows again later: merging a record
twice changes nothing. When this process's spool has no room for a new key, adoption
stops there and the rest of the file waits for a later look.

A file that cannot be read is moved aside with one ERROR; unreadable rows in a file
that can be read are dropped with one ERROR for the file.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from typing import TYPE_CHECKING

from .buffer import Entry
from .kinds import Key
from .spool_db import Row, SpoolDB, decode_entry, merged_entries
from .spool_dir import (
    SpoolError,
    SpoolName,
    claim,
    list_names,
    lock_new,
    move_aside,
    release_claim,
    remove_files,
    try_lock,
)

if TYPE_CHECKING:
    from .spool import Spool

__all__ = ["adopt_orphans"]

logger = logging.getLogger("moesif_users_middleware.sender")
ADOPT_CHUNK = 2000  # rows read from an orphan at a time


def adopt_orphans(spool: Spool) -> bool:
    """Merge every orphaned file of this application into ``spool``; whether any record came."""
    adopted = False
    for name in list_names(spool.store.directory, spool.store.tag):
        if spool.stopped:
            break
        if not claim(name.stem):  # this process's own file, or one it is adopting
            continue
        try:
            adopted = _adopt(spool, name) or adopted
        finally:
            release_claim(name.stem)
    return adopted


def _adopt(spool: Spool, name: SpoolName) -> bool:
    fd = try_lock(name.lock)
    if fd is None:
        if os.path.exists(name.lock) or not os.path.exists(name.db):
            return False  # its owner lives, another process adopts it, or it is gone
        try:  # a database without its lock file: whoever creates the lock adopts it
            fd = lock_new(name.lock)
        except OSError:
            return False
    try:
        if not os.path.exists(name.db):  # adopted meanwhile: only its lock file was left
            remove_files(name)
            return False
        return _merge_file(spool, name)
    finally:
        os.close(fd)


def _merge_file(spool: Spool, name: SpoolName) -> bool:
    """Move the rows of one orphan into ``spool``; whether any came."""
    try:
        source = SpoolDB.open(name.db)
    except (SpoolError, sqlite3.Error) as exc:
        _set_aside(name, exc)
        return False
    adopted = bad = 0
    complete = False
    try:
        after = 0
        while not spool.stopped:
            rows = source.rows_after(after, 2**62, ADOPT_CHUNK, part=None)
            if not rows:
                complete = True
                break
            after = rows[-1][0]
            entries, rowids, done = _read_chunk(rows)
            bad += len(done)
            refused = set(spool.merge_in(entries))
            adopted += len(entries) - len(refused)
            for key, ids in rowids.items():
                if key not in refused:
                    done += ids
            source.begin()
            source.delete_rowids(done)
            source.commit()
            if refused:  # no room: the rest waits for a later look
                break
            spool.persist_if_due()  # a long adoption does not hold up what arrives meanwhile
    except sqlite3.Error as exc:
        source.close()
        _set_aside(name, exc)
        return adopted > 0
    source.close()
    _finish(name, adopted, bad, complete)
    return adopted > 0


def _read_chunk(
    rows: list[tuple[int, Row]],
) -> tuple[dict[Key, Entry], dict[Key, list[int]], list[int]]:
    """The entries of a chunk of an orphan's rows (both parts of a key merged by stamp),
    the rowids each key came from, and the rowids of rows that cannot be read."""
    entries: dict[Key, Entry] = {}
    rowids: dict[Key, list[int]] = {}
    unreadable: list[int] = []
    for rowid, (kind, record_id, _, stamp, data) in rows:
        try:
            entry = decode_entry(kind, stamp, data)
        except ValueError:
            unreadable.append(rowid)
            continue
        key = (kind, record_id)
        prior = entries.get(key)
        entries[key] = entry if prior is None else merged_entries(key, prior, entry)
        rowids.setdefault(key, []).append(rowid)
    return entries, rowids, unreadable


def _finish(name: SpoolName, adopted: int, bad: int, complete: bool) -> None:
    """Log what came of one orphan; remove it once it was read to the end."""
    if bad:
        logger.error(
            "Moesif users sender: %d unreadable records in the spool file %s were dropped",
            bad,
            name.db,
        )
    if complete:
        remove_files(name)
    if adopted:
        logger.info(
            "Moesif users sender: %d records adopted from %s (left by process %d)",
            adopted,
            name.db,
            name.pid,
        )


def _set_aside(name: SpoolName, exc: BaseException) -> None:
    moved = move_aside(name)
    logger.error(
        "Moesif users sender: the spool file %s cannot be read (%s); moved aside to %s "
        "(its records are not sent)",
        name.db,
        exc,
        moved,
    )
