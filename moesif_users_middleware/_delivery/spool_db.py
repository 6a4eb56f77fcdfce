"""One spool file's contents: its table, what a row holds, the SQLite connection.

A row holds one key's pending record as an :class:`.buffer.Entry`: ``part`` 0 is the
record waiting (or being sent); ``part`` 1 holds what was merged for a key while its
part 0 was being sent, folded back once that send settles (see :mod:`.spool_send`).
A row's data is the JSON of ``[record, older session tokens, modified_time text]``;
``PRAGMA user_version`` says the format (:data:`FORMAT`).

The file is in WAL mode with ``synchronous = NORMAL``: a committed transaction survives
the process (``kill -9``, an OOM kill); only a power loss or an OS crash may roll back
the last ones. Names, locks and who may open a file: :mod:`.spool_dir`.
"""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import urllib.parse
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, TypeVar

from .buffer import Entry, PendingBuffer, Timed
from .kinds import KINDS, Key
from .spool_dir import SpoolError, create_private

__all__ = [
    "FORMAT",
    "Row",
    "SpoolDB",
    "decode_entry",
    "encode_entry",
    "merged",
    "merged_entries",
    "row_size",
]

FORMAT = 1  # PRAGMA user_version of a spool file
_ROW_OVERHEAD = 48  # bytes a row costs beyond its id and data (kind, part, stamp, index)
_IN_CHUNK = 500  # ids per "IN (...)" query
_WAL_LIMIT = 8 * 1024 * 1024  # bytes of WAL kept after a checkpoint
# Records were validated when queued (plain JSON trees): no check for cycles (a record
# changed into one afterwards fails with RecursionError, counted as unserializable).
_ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=False, check_circular=False)

# One stored row: (kind name, record id, part, stamp, data).
Row = tuple[str, str, int, float, str]

_T = TypeVar("_T")


# -- rows ------------------------------------------------------------------------------------


def encode_entry(entry: Entry) -> str:
    """A pending entry as a row's data (``TypeError``/``ValueError`` if not JSON)."""
    tokens = list(entry.tokens) if entry.tokens else None
    return _ENCODER.encode([entry.record, tokens, entry.stamp_text])


def decode_entry(kind: str, stamp: float, data: str) -> Entry:
    """A row's entry; ``ValueError`` for a row this version cannot read."""
    record_kind = KINDS.get(kind)
    if record_kind is None:
        raise ValueError(f"unknown record kind {kind!r}")
    try:
        record, tokens, stamp_text = json.loads(data)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"unreadable record data ({exc})") from None
    if (
        not isinstance(record, dict)
        or not isinstance(record.get(record_kind.id_field), str)
        or not (
            tokens is None or (isinstance(tokens, list) and all(type(t) is str for t in tokens))
        )
        or not (stamp_text is None or isinstance(stamp_text, str))
        or not isinstance(stamp, (int, float))
    ):
        raise ValueError("malformed record data")
    entry = Entry(record, record_kind.id_field, float(stamp), stamp_text)
    entry.tokens = dict.fromkeys(tokens) if tokens else None
    return entry


def merged(key: Key, id_field: str, base: Entry | None, records: list[Timed]) -> Entry:
    """``base`` with ``records`` merged in by stamp (older under, newer over): the rule the
    memory buffer applies to records merged back (:meth:`.PendingBuffer.merge_back`)."""
    scratch = PendingBuffer(1, 1)
    if base is not None:
        scratch.pending[key] = base
    scratch.merge_back(key, id_field, records)
    return scratch.pending[key]


def merged_entries(key: Key, base: Entry, other: Entry) -> Entry:
    """Two entries of one key merged into one by stamp (:func:`merged`)."""
    return merged(key, base.id_field, base, other.timed_records())


def row_size(key: Key, data: str) -> int:
    """What a row counts against ``max_spool_bytes``."""
    return len(data) + len(key[1]) + _ROW_OVERHEAD


# -- the database ----------------------------------------------------------------------------

_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    kind TEXT NOT NULL,
    id TEXT NOT NULL,
    part INTEGER NOT NULL,
    stamp REAL NOT NULL,
    data TEXT NOT NULL,
    UNIQUE (kind, id, part)
)
"""


class SpoolDB:
    """One spool file's connection: small typed queries, explicit transactions.

    Not thread-safe by itself: the spool serializes every use under its lock.
    """

    def __init__(self, connection: sqlite3.Connection) -> None:
        self.connection = connection

    @classmethod
    def create(cls, path: str) -> SpoolDB:
        """A new spool file at ``path`` (created ``0600`` first)."""
        create_private(path)
        db = cls(_connect(path))
        try:
            db.connection.execute(_SCHEMA)
            db.connection.execute(f"PRAGMA user_version = {FORMAT}")
        except BaseException:
            db.close()
            raise
        return db

    @classmethod
    def open(cls, path: str, *, read_only: bool = False) -> SpoolDB:
        """An existing spool file; ``SpoolError`` if it is not one this version reads.

        ``read_only``: to look, changing nothing (not even a checkpoint on close).
        """
        try:
            info = os.lstat(path)
        except OSError as exc:
            raise SpoolError(exc.strerror or str(exc)) from exc
        if not stat.S_ISREG(info.st_mode):
            raise SpoolError("not a regular file")
        if info.st_uid != os.geteuid():
            raise SpoolError(f"it belongs to another user (uid {info.st_uid})")
        db = cls(_connect(path, read_only=read_only))
        try:
            version = db.connection.execute("PRAGMA user_version").fetchone()[0]
            if version != FORMAT:
                raise SpoolError(f"format {version}, this version reads format {FORMAT}")
            db.connection.execute("SELECT kind, id, part, stamp, data FROM records LIMIT 1")
        except BaseException:
            db.close()
            raise
        return db

    def close(self) -> None:
        self.connection.close()

    # -- transactions

    def begin(self) -> None:
        self.connection.execute("BEGIN IMMEDIATE")

    def commit(self) -> None:
        self.connection.execute("COMMIT")

    def rollback(self) -> None:
        if self.connection.in_transaction:
            self.connection.execute("ROLLBACK")

    # -- reading

    def totals(self) -> tuple[Counter[str], int]:
        """(keys per kind, bytes counted against the budget) over the whole file."""
        counts: Counter[str] = Counter()
        size = 0
        query = "SELECT kind, part, length(id), length(data) FROM records"
        for kind, part, id_length, data_length in self.connection.execute(query):
            if part == 0:
                counts[kind] += 1
            size += id_length + data_length + _ROW_OVERHEAD
        return counts, size

    def last_rowid(self) -> int:
        value = self.connection.execute("SELECT max(rowid) FROM records").fetchone()[0]
        return int(value or 0)

    def get(self, kind: str, ids: Sequence[str], part: int) -> dict[str, tuple[float, str]]:
        """``{id: (stamp, data)}`` of the rows of these ids that exist."""
        found: dict[str, tuple[float, str]] = {}
        for chunk, marks in _in_chunks(ids):
            query = f"SELECT id, stamp, data FROM records WHERE kind = ? AND part = ? AND id IN ({marks})"
            for record_id, stamp, data in self.connection.execute(query, (kind, part, *chunk)):
                found[record_id] = (stamp, data)
        return found

    def rows_after(
        self, rowid: int, last: int, limit: int, part: int | None = 0
    ) -> list[tuple[int, Row]]:
        """Up to ``limit`` rows with ``rowid < n <= last`` in rowid order (first spooled first)."""
        where = "rowid > ? AND rowid <= ?" + ("" if part is None else " AND part = ?")
        query = f"SELECT rowid, kind, id, part, stamp, data FROM records WHERE {where} ORDER BY rowid LIMIT ?"
        params: tuple[Any, ...] = (rowid, last) + (() if part is None else (part,)) + (limit,)
        return [(row[0], row[1:]) for row in self.connection.execute(query, params)]

    def iter_rows(self, part: int | None = None) -> Iterator[Row]:
        """Every row (for summaries)."""
        where = "" if part is None else f" WHERE part = {int(part)}"
        yield from self.connection.execute(
            f"SELECT kind, id, part, stamp, data FROM records{where}"
        )

    # -- writing (inside a transaction)

    def put(self, rows: Iterable[Row]) -> None:
        self.connection.executemany(
            "INSERT INTO records (kind, id, part, stamp, data) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (kind, id, part) DO UPDATE SET stamp = excluded.stamp, data = excluded.data",
            rows,
        )

    def delete(self, keys: Iterable[tuple[str, str, int]]) -> None:
        self.connection.executemany(
            "DELETE FROM records WHERE kind = ? AND id = ? AND part = ?", keys
        )

    def delete_rowids(self, rowids: Sequence[int]) -> None:
        for chunk, marks in _in_chunks(rowids):
            self.connection.execute(f"DELETE FROM records WHERE rowid IN ({marks})", chunk)

    def promote(self, keys: Iterable[Key]) -> None:
        """Part 1 becomes part 0 (its part 0 was deleted first)."""
        self.connection.executemany(
            "UPDATE records SET part = 0 WHERE kind = ? AND id = ? AND part = 1", keys
        )


def _in_chunks(values: Sequence[_T]) -> Iterator[tuple[Sequence[_T], str]]:
    """``values`` in slices small enough for one ``IN (...)``, each with its ``?`` marks."""
    for start in range(0, len(values), _IN_CHUNK):
        chunk = values[start : start + _IN_CHUNK]
        yield chunk, ",".join("?" * len(chunk))


def _connect(path: str, *, read_only: bool = False) -> sqlite3.Connection:
    if read_only:
        uri = "file:" + urllib.parse.quote(path) + "?mode=ro"
        return sqlite3.connect(uri, uri=True, timeout=5.0, isolation_level=None)
    connection = sqlite3.connect(path, timeout=5.0, isolation_level=None, check_same_thread=False)
    try:
        connection.execute("PRAGMA journal_mode = WAL")
        # Committed transactions survive the process (kill -9, OOM); only a power loss or
        # an OS crash may roll back the last ones.
        connection.execute("PRAGMA synchronous = NORMAL")
        # A large write (a burst, an adoption) grows the WAL; give the room back after it.
        connection.execute(f"PRAGMA journal_size_limit = {_WAL_LIMIT}")
    except BaseException:
        connection.close()
        raise
    return connection
