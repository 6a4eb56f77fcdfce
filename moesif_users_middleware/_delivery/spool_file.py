"""The spool's files: their names, private creation, the lock that says an owner lives, rows.

A spool directory holds one SQLite database (WAL mode) per process that writes to it:
``moesif-spool-<app>-<pid>-<token>.db`` with SQLite's ``-wal`` and ``-shm`` beside it,
and ``moesif-spool-<app>-<pid>-<token>.lock``, on which the owner holds a POSIX lock for
as long as it lives. ``<app>`` is a hash of the application id (the id itself is never
written anywhere), so senders of different applications sharing a directory never touch
each other's records; ``<token>`` makes the name unique even when a pid is reused (a
restarted container).

A lock that can be taken means the owner is gone (the kernel drops a dead process's
POSIX locks, ``kill -9`` included): whoever takes it may adopt the file. POSIX locks are
per process, so a forked child never inherits its parent's (it cannot take it either),
and closing *any* descriptor of a lock file drops this process's lock on it: the caller
keeps a registry of the files this process holds (:mod:`.spool`) and never opens those.

Every file is created ``0600`` (SQLite gives its ``-wal`` and ``-shm`` the database's
mode) in a directory that must belong to this process's user and must not be writable
by group or others: the records hold session tokens and personal data, and a file
planted by another user would be adopted and sent under this application's id.

A row holds one key's pending record as an :class:`.buffer.Entry`: ``part`` 0 is the
record waiting (or being sent); ``part`` 1 holds what was merged for a key while its
part 0 was being sent, folded back once that send settles (see :mod:`.spool`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import sqlite3
import stat
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from .buffer import Entry, PendingBuffer, Timed
from .kinds import KINDS, Key

try:
    import fcntl
except ImportError:  # pragma: no cover - not on Windows
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "FORMAT",
    "SpoolDB",
    "SpoolError",
    "SpoolName",
    "app_tag",
    "check_directory",
    "claim",
    "decode_entry",
    "encode_entry",
    "list_names",
    "lock_new",
    "merged",
    "move_aside",
    "release_claim",
    "remove_files",
    "row_size",
    "try_lock",
]

FORMAT = 1  # PRAGMA user_version of a spool file
PREFIX = "moesif-spool-"
_ROW_OVERHEAD = 48  # bytes a row costs beyond its id and data (kind, part, stamp, index)
_IN_CHUNK = 500  # ids per "IN (...)" query
_WAL_LIMIT = 8 * 1024 * 1024  # bytes of WAL kept after a checkpoint
# Records were validated when queued (plain JSON trees): no check for cycles (a record
# changed into one afterwards fails with RecursionError, counted as unserializable).
_ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=False, check_circular=False)

# One stored row: (kind name, record id, part, stamp, data).
Row = tuple[str, str, int, float, str]


class SpoolError(Exception):
    """The spool directory or a spool file cannot be used (the message says why)."""


def app_tag(application_id: str) -> str:
    """The application's part of a file name: a hash, never the id."""
    digest = hashlib.sha256(b"moesif-users-spool\0" + application_id.encode()).hexdigest()
    return digest[:16]


@dataclass(frozen=True)
class SpoolName:
    """One spool file's name, parsed."""

    directory: str
    tag: str
    pid: int
    token: str

    @classmethod
    def new(cls, directory: str, tag: str) -> SpoolName:
        """A fresh name for this process."""
        return cls(directory, tag, os.getpid(), secrets.token_hex(4))

    @classmethod
    def parse(cls, directory: str, filename: str) -> SpoolName | None:
        """The name of ``moesif-spool-<tag>-<pid>-<token>.db``, else ``None``."""
        if not (filename.startswith(PREFIX) and filename.endswith(".db")):
            return None
        parts = filename[len(PREFIX) : -3].split("-")
        if len(parts) != 3 or not parts[1].isdigit():
            return None
        return cls(directory, parts[0], int(parts[1]), parts[2])

    @property
    def stem(self) -> str:
        return f"{PREFIX}{self.tag}-{self.pid}-{self.token}"

    @property
    def db(self) -> str:
        return os.path.join(self.directory, self.stem + ".db")

    @property
    def lock(self) -> str:
        return os.path.join(self.directory, self.stem + ".lock")

    def sqlite_files(self) -> list[str]:
        """The database and the files SQLite keeps beside it."""
        return [self.db, self.db + "-wal", self.db + "-shm"]


def list_names(directory: str, tag: str | None = None) -> list[SpoolName]:
    """The spool files in ``directory`` (of one application when ``tag`` is given)."""
    try:
        filenames = sorted(os.listdir(directory))
    except OSError:
        return []
    names = (SpoolName.parse(directory, filename) for filename in filenames)
    return [name for name in names if name is not None and (tag is None or name.tag == tag)]


def check_directory(directory: str) -> None:
    """Create ``directory`` (``0700``) if missing; ``SpoolError`` unless this user owns it
    and no one else may write to it."""
    if fcntl is None:  # pragma: no cover - not on Windows
        raise SpoolError("the spool needs POSIX file locks (fcntl), which this system lacks")
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        info = os.stat(directory)
    except OSError as exc:
        raise SpoolError(f"cannot create or read the directory ({exc.strerror})") from exc
    if not stat.S_ISDIR(info.st_mode):
        raise SpoolError("it is not a directory")
    if info.st_uid != os.geteuid():
        raise SpoolError(
            f"it belongs to another user (uid {info.st_uid}); the spool holds personal "
            "data: use a directory this process's user owns"
        )
    if info.st_mode & 0o022:
        raise SpoolError(
            f"group or others may write to it (mode {stat.S_IMODE(info.st_mode):o}); "
            "the spool holds personal data: chmod 700 it"
        )


def create_private(path: str) -> None:
    """Create an empty file only this user may read or write (``FileExistsError`` if any)."""
    os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY | _NOFOLLOW, 0o600))


_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


def lock_new(path: str) -> int:
    """Create the lock file ``path`` and hold its lock; the descriptor."""
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR | _NOFOLLOW, 0o600)
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise
    return fd


def try_lock(path: str) -> int | None:
    """Take the lock of an existing lock file: its descriptor, or ``None`` when its owner
    lives (or another process holds it, or it is gone, or it is not ours)."""
    try:
        fd = os.open(path, os.O_RDWR | _NOFOLLOW)
    except OSError:
        return None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid():
            os.close(fd)
            return None
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        # Still the file at that path? An adopter may have removed it meanwhile.
        if os.stat(path).st_ino != info.st_ino:
            os.close(fd)
            return None
    except OSError:
        os.close(fd)
        return None
    return fd


def move_aside(name: SpoolName) -> str:
    """Rename a file that cannot be read out of the spool's way; the database's new path."""
    suffix = time.strftime(".corrupt-%Y%m%dT%H%M%S")
    for path in name.sqlite_files():
        with contextlib.suppress(FileNotFoundError):
            os.replace(path, path.replace(".db", ".db" + suffix, 1))
    _unlink(name.lock)
    return name.db.replace(".db", ".db" + suffix, 1)


def remove_files(name: SpoolName) -> None:
    """Delete a spool file (the database and SQLite's files first, the lock last)."""
    for path in name.sqlite_files():
        _unlink(path)
    _unlink(name.lock)


def _unlink(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


# -- the files this process holds (its own, and those it is adopting) -------------------------

_claims: dict[str, int] = {}  # file stem -> pid of the process that claimed it
_claims_lock = threading.Lock()
_claims_pid = os.getpid()


def claim(stem: str) -> bool:
    """Claim a file for this process; ``False`` if this process holds it already.

    A process must never open the lock file of a file it holds: closing that descriptor
    would drop its own POSIX lock. A forked child starts with no claims.
    """
    global _claims_lock, _claims_pid
    pid = os.getpid()
    if _claims_pid != pid:  # forked: the parent's claims are not ours
        _claims_lock = threading.Lock()
        _claims_pid = pid
        _claims.clear()
    with _claims_lock:
        if _claims.get(stem) == pid:
            return False
        _claims[stem] = pid
        return True


def release_claim(stem: str) -> None:
    """The file is no longer this process's (closed, adopted, or left to its owner)."""
    with _claims_lock:
        _claims.pop(stem, None)


# -- rows ------------------------------------------------------------------------------------


def encode_entry(entry: Entry) -> str:
    """A pending entry as a row's data (``TypeError``/``ValueError`` if not JSON)."""
    return _ENCODER.encode([entry.record, entry.tokens, entry.stamp_text])


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
    entry.tokens = tokens or None
    return entry


def merged(key: Key, id_field: str, base: Entry | None, records: list[Timed]) -> Entry:
    """``base`` with ``records`` merged in by stamp (older under, newer over): the rule the
    memory buffer applies to records merged back (:meth:`.PendingBuffer.merge_back`)."""
    scratch = PendingBuffer(1, 1)
    if base is not None:
        scratch.pending[key] = base
    scratch.merge_back(key, id_field, records)
    return scratch.pending[key]


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
        for start in range(0, len(ids), _IN_CHUNK):
            chunk = ids[start : start + _IN_CHUNK]
            marks = ",".join("?" * len(chunk))
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
        for start in range(0, len(rowids), _IN_CHUNK):
            chunk = rowids[start : start + _IN_CHUNK]
            marks = ",".join("?" * len(chunk))
            self.connection.execute(f"DELETE FROM records WHERE rowid IN ({marks})", chunk)

    def promote(self, keys: Iterable[Key]) -> None:
        """Part 1 becomes part 0 (its part 0 was deleted first)."""
        self.connection.executemany(
            "UPDATE records SET part = 0 WHERE kind = ? AND id = ? AND part = 1", keys
        )


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
