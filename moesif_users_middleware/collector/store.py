"""SQLite storage for the collector: profiles partitioned by a hash of the application id.

One connection guarded by a lock serves every thread (``:memory:`` works the same as a
file), each write is one transaction, and a file database runs in WAL mode with
``synchronous=NORMAL``. The application id itself is never stored: callers pass
:func:`partition_key` of it.

Updates are ordered by their ``modified_time``, value by value (see :mod:`.ordering`):
beside each profile the table keeps its clocks. It also keeps the profile's
``modified_time`` as epoch milliseconds and its company id, indexed, so the HTML page can sort newest first, search and page through 100k profiles
quickly. The ``history`` table keeps, per user, the last :data:`HISTORY_LIMIT` updates
that changed the profile.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .ordering import Clock, epoch_ms, merge_profile

__all__ = [
    "HISTORY_LIMIT",
    "PARTITION_KEY_LENGTH",
    "Stats",
    "Store",
    "partition_key",
    "profile_changes",
]

PARTITION_KEY_LENGTH = 16
HISTORY_LIMIT = 50  # history rows kept per user
_SELECT_CHUNK = 500  # well under SQLite's bound-parameter limit
_NOT_DIFFED = frozenset({"user_id", "session_token", "modified_time"})

_SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    partition TEXT NOT NULL,
    user_id TEXT NOT NULL,
    profile TEXT NOT NULL,
    modified_ms INTEGER NOT NULL DEFAULT 0,
    company_id TEXT,
    history_seq INTEGER NOT NULL DEFAULT 0,
    clocks TEXT NOT NULL DEFAULT '{}',
    PRIMARY KEY (partition, user_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS history (
    partition TEXT NOT NULL,
    user_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    applied_time TEXT NOT NULL,
    modified_time TEXT NOT NULL,
    changes TEXT NOT NULL,
    PRIMARY KEY (partition, user_id, seq)
) WITHOUT ROWID;
"""
# Created after the columns exist (an old database gets them by migration first). One
# index serves the page: its entries are (modified_ms, company_id, partition, user_id)
# (a WITHOUT ROWID index holds the primary key), so sorting newest first, filtering by
# partition, user id or company id prefix, counting and paging read only the index.
_INDEXES = """
CREATE INDEX IF NOT EXISTS users_by_modified ON users (modified_ms, company_id);
"""
_NEWEST_FIRST = "ORDER BY modified_ms DESC, company_id DESC, partition DESC, user_id DESC"


def partition_key(application_id: str) -> str:
    """The stored stand-in for an application id: a sha256 hex prefix."""
    digest = hashlib.sha256(application_id.encode("utf-8", "surrogatepass")).hexdigest()
    return digest[:PARTITION_KEY_LENGTH]


def profile_changes(
    before: Mapping[str, Any] | None, after: Mapping[str, Any], update: Mapping[str, Any]
) -> dict[str, Any]:
    """What ``update`` changed from ``before`` to ``after``: a compact, JSON-able diff.

    ``{field: [old, new]}`` for top-level fields, ``{"metadata.a.b": [old, new]}`` (and
    ``campaign.key``) for nested keys, ``{"session_token": token}`` for an appended
    token; absent values are ``None``. Creating a profile records ``user_id`` too. Only the keys the update names are compared (a
    merge touches nothing else); ``modified_time`` and ``created_time`` are not changes.
    """
    old: Mapping[str, Any] = before or {}
    diff: dict[str, Any] = {} if before else {"user_id": [None, after["user_id"]]}
    for key, value in update.items():
        if key in _NOT_DIFFED:
            continue
        was, now = old.get(key), after.get(key)
        if was == now:
            continue
        if type(was) is dict and type(now) is dict and type(value) is dict:
            _nested_changes(key, was, now, value, diff)
        else:
            diff[key] = [was, now]
    token = update.get("session_token")
    if token is not None and token not in (old.get("session_tokens") or ()):
        diff["session_token"] = token
    return diff


def _nested_changes(
    path: str,
    was: Mapping[str, Any],
    now: Mapping[str, Any],
    touched: Mapping[str, Any],
    diff: dict[str, Any],
) -> None:
    for key in touched:
        before, after = was.get(key), now.get(key)
        if before == after:
            continue
        where = f"{path}.{key}"
        if type(before) is dict and type(after) is dict and type(touched[key]) is dict:
            _nested_changes(where, before, after, touched[key], diff)
        else:
            diff[where] = [before, after]


@dataclass
class Stats:
    """Per-partition counters since the collector started."""

    requests: int = 0  # POSTs to /v1/users and /v1/users/batch, whatever their outcome
    batches: int = 0  # of which to /v1/users/batch
    rejected: int = 0  # of which answered with an error
    records: int = 0  # users stored by accepted POSTs


class Store:
    """Profiles keyed by (partition, user_id); safe to share between threads."""

    def __init__(self, db_path: str | os.PathLike[str] = ":memory:") -> None:
        self._lock = threading.Lock()
        self._stats: dict[str, Stats] = {}
        self._conn = sqlite3.connect(
            db_path, check_same_thread=False, isolation_level=None, timeout=30.0
        )
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.executescript(_SCHEMA)
        self._migrate()
        self._conn.executescript(_INDEXES)
        self._closed = False

    def apply(self, partition: str, updates: Sequence[Mapping[str, Any]], now: str) -> None:
        """Merge validated updates into their profiles, in order, in one transaction.

        Every update that changes a profile adds a row to its history (the oldest rows
        beyond :data:`HISTORY_LIMIT` are deleted in the same transaction).
        """
        ids = list(dict.fromkeys(update["user_id"] for update in updates))
        with self._lock:
            conn = self._conn
            # The write lock is taken before reading, so another process sharing the
            # file cannot slip an update in between.
            conn.execute("BEGIN IMMEDIATE")
            try:
                profiles, seqs, clocks = self._load(partition, ids)
                history: list[tuple[str, str, int, str, str, str]] = []
                for update in updates:
                    user_id = update["user_id"]
                    before = profiles.get(user_id)
                    after, clocks[user_id] = merge_profile(
                        before, clocks.get(user_id, {}), update, now
                    )
                    profiles[user_id] = after
                    changes = profile_changes(before, after, update)
                    if changes:
                        seq = seqs[user_id] = seqs.get(user_id, 0) + 1
                        stamp = update.get("modified_time") or now
                        history.append((partition, user_id, seq, now, stamp, _dumps(changes)))
                rows = []
                for user_id in ids:
                    profile = profiles[user_id]
                    rows.append(
                        (
                            partition,
                            user_id,
                            _dumps(profile),
                            epoch_ms(profile["modified_time"]),
                            profile.get("company_id"),
                            seqs.get(user_id, 0),
                            _dumps(clocks[user_id]),
                        )
                    )
                conn.executemany(
                    "INSERT OR REPLACE INTO users (partition, user_id, profile, modified_ms,"
                    " company_id, history_seq, clocks) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    rows,
                )
                if history:
                    conn.executemany("INSERT INTO history VALUES (?, ?, ?, ?, ?, ?)", history)
                    trimmed = {
                        (user_id, seq - HISTORY_LIMIT)
                        for _, user_id, seq, *_rest in history
                        if seq > HISTORY_LIMIT
                    }
                    if trimmed:
                        conn.executemany(
                            "DELETE FROM history WHERE partition = ? AND user_id = ? AND seq <= ?",
                            [(partition, user_id, upto) for user_id, upto in trimmed],
                        )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            self._stats_for(partition).records += len(updates)

    def count_request(self, partition: str, *, batch: bool, rejected: bool) -> None:
        """Count one POST for ``partition`` in :meth:`stats`."""
        with self._lock:
            stats = self._stats_for(partition)
            stats.requests += 1
            stats.batches += batch
            stats.rejected += rejected

    def stats(self, partition: str) -> dict[str, int]:
        """The counters of ``partition`` plus its current number of stored users."""
        with self._lock:
            stats = self._stats.get(partition, Stats())
            (users,) = self._conn.execute(
                "SELECT COUNT(*) FROM users WHERE partition = ?", (partition,)
            ).fetchone()
        return {
            "requests": stats.requests,
            "batches": stats.batches,
            "rejected": stats.rejected,
            "records": stats.records,
            "users": users,
        }

    def get(self, partition: str, user_id: str) -> dict[str, Any] | None:
        """One stored profile, or ``None``."""
        with self._lock:
            row = self._conn.execute(
                "SELECT profile FROM users WHERE partition = ? AND user_id = ?",
                (partition, user_id),
            ).fetchone()
        return None if row is None else _loads(row[0])

    def list_users(self, partition: str, *, limit: int, offset: int = 0) -> list[dict[str, Any]]:
        """Profiles of one partition ordered by user id."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT profile FROM users WHERE partition = ? ORDER BY user_id LIMIT ? OFFSET ?",
                (partition, limit, offset),
            ).fetchall()
        return [_loads(profile) for (profile,) in rows]

    def count_all_users(self, *, prefix: str = "", search: str = "") -> int:
        """How many profiles :meth:`list_all_users` has to page through."""
        where, params = _filter(prefix, search)
        with self._lock:
            (count,) = self._conn.execute(
                f"SELECT COUNT(*) FROM users INDEXED BY users_by_modified{where}", params
            ).fetchone()
        return int(count)

    def list_all_users(
        self, *, prefix: str = "", search: str = "", limit: int, offset: int = 0
    ) -> list[tuple[str, dict[str, Any]]]:
        """(partition, profile) pairs, newest ``modified_time`` first.

        ``prefix`` keeps partitions whose key starts with it (a whole key selects one);
        ``search`` keeps users whose user id or company id starts with it.
        """
        where, params = _filter(prefix, search)
        # The page of keys comes from the index alone; only its rows are read in full.
        sql = (
            "SELECT u.partition, u.profile FROM (SELECT modified_ms, company_id, partition,"
            f" user_id FROM users INDEXED BY users_by_modified{where} {_NEWEST_FIRST}"
            " LIMIT ? OFFSET ?) AS page JOIN users AS u USING (partition, user_id)"
            " ORDER BY page.modified_ms DESC, page.company_id DESC, page.partition DESC,"
            " page.user_id DESC"
        )
        with self._lock:
            rows = self._conn.execute(sql, (*params, limit, offset)).fetchall()
        return [(partition, _loads(profile)) for partition, profile in rows]

    def find_user(self, user_id: str, partition: str = "") -> list[tuple[str, dict[str, Any]]]:
        """(partition, profile) for ``user_id`` in ``partition``, or in every partition."""
        sql = "SELECT partition, profile FROM users WHERE user_id = ?"
        params: tuple[str, ...] = (user_id,)
        if partition:
            sql += " AND partition = ?"
            params += (partition,)
        with self._lock:
            rows = self._conn.execute(sql + " ORDER BY partition", params).fetchall()
        return [(key, _loads(profile)) for key, profile in rows]

    def history(self, partition: str, user_id: str) -> list[dict[str, Any]]:
        """The user's recorded changes, newest first: ``applied_time``, ``modified_time``,
        ``changes`` (see :func:`profile_changes`)."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT applied_time, modified_time, changes FROM history"
                " WHERE partition = ? AND user_id = ? ORDER BY seq DESC",
                (partition, user_id),
            ).fetchall()
        return [
            {"applied_time": applied, "modified_time": modified, "changes": _loads(changes)}
            for applied, modified, changes in rows
        ]

    def close(self) -> None:
        """Close the database (idempotent)."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._conn.close()

    def _migrate(self) -> None:
        """Give a database written by an older collector the columns this one sorts on."""
        conn = self._conn
        columns = {row[1] for row in conn.execute("PRAGMA table_info(users)")}
        added = [
            (name, kind)
            for name, kind in (
                ("modified_ms", "INTEGER NOT NULL DEFAULT 0"),
                ("company_id", "TEXT"),
                ("history_seq", "INTEGER NOT NULL DEFAULT 0"),
                ("clocks", "TEXT NOT NULL DEFAULT '{}'"),
            )
            if name not in columns
        ]
        if not added:
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            for name, kind in added:
                conn.execute(f"ALTER TABLE users ADD COLUMN {name} {kind}")
            rows = conn.execute("SELECT partition, user_id, profile FROM users").fetchall()
            updates = []
            for partition, user_id, text in rows:
                profile = _loads(text)
                stamp = profile.get("modified_time")
                updates.append(
                    (
                        epoch_ms(stamp) if isinstance(stamp, str) else 0,
                        profile.get("company_id"),
                        partition,
                        user_id,
                    )
                )
            conn.executemany(
                "UPDATE users SET modified_ms = ?, company_id = ? WHERE partition = ? AND user_id = ?",
                updates,
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def _load(
        self, partition: str, ids: Iterable[str]
    ) -> tuple[dict[str, dict[str, Any]], dict[str, int], dict[str, dict[str, Clock]]]:
        wanted = list(ids)
        found: dict[str, dict[str, Any]] = {}
        seqs: dict[str, int] = {}
        clocks: dict[str, dict[str, Clock]] = {}
        for start in range(0, len(wanted), _SELECT_CHUNK):
            chunk = wanted[start : start + _SELECT_CHUNK]
            marks = ",".join("?" * len(chunk))
            cursor = self._conn.execute(
                "SELECT user_id, profile, history_seq, clocks FROM users"
                f" WHERE partition = ? AND user_id IN ({marks})",
                (partition, *chunk),
            )
            for user_id, profile, seq, clock in cursor:
                found[user_id] = _loads(profile)
                seqs[user_id] = seq
                clocks[user_id] = _loads(clock)
        return found, seqs, clocks

    def _stats_for(self, partition: str) -> Stats:
        stats = self._stats.get(partition)
        if stats is None:
            stats = self._stats[partition] = Stats()
        return stats


def _filter(prefix: str, search: str) -> tuple[str, tuple[str, ...]]:
    """WHERE clause (with its leading space) and parameters for the page's filters."""
    clauses: list[str] = []
    params: list[str] = []
    if len(prefix) == PARTITION_KEY_LENGTH:
        clauses.append("partition = ?")
        params.append(prefix)
    elif prefix:
        clauses.append("partition >= ? AND partition < ?")
        params += [prefix, prefix + "\U0010ffff"]
    if search:
        upper = search + "\U0010ffff"
        clauses.append("((user_id >= ? AND user_id < ?) OR (company_id >= ? AND company_id < ?))")
        params += [search, upper, search, upper]
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), tuple(params)


_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def _dumps(profile: Mapping[str, Any]) -> str:
    return _ENCODER.encode(profile)


def _loads(text: str) -> dict[str, Any]:
    profile: dict[str, Any] = json.loads(text)
    return profile
