"""SQLite storage for the collector: profiles partitioned by a hash of the application id.

One connection guarded by a lock serves every thread (``:memory:`` works the same as a
file), each write is one transaction, and a file database runs in WAL mode with
``synchronous=NORMAL``. The application id itself is never stored: callers pass
:func:`partition_key` of it.
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

from ..merge import merge_update

__all__ = ["PARTITION_KEY_LENGTH", "Stats", "Store", "merge_profile", "partition_key"]

PARTITION_KEY_LENGTH = 16
_SELECT_CHUNK = 500  # well under SQLite's bound-parameter limit
_PROFILE_ORDER = (
    "user_id",
    "company_id",
    "session_tokens",
    "modified_time",
    "created_time",
    "ip_address",
    "user_agent_string",
    "campaign",
    "metadata",
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    partition TEXT NOT NULL,
    user_id TEXT NOT NULL,
    profile TEXT NOT NULL,
    PRIMARY KEY (partition, user_id)
) WITHOUT ROWID;
"""


def partition_key(application_id: str) -> str:
    """The stored stand-in for an application id: a sha256 hex prefix."""
    digest = hashlib.sha256(application_id.encode("utf-8", "surrogatepass")).hexdigest()
    return digest[:PARTITION_KEY_LENGTH]


def merge_profile(
    profile: Mapping[str, Any] | None, update: Mapping[str, Any], now: str
) -> dict[str, Any]:
    """Apply one validated wire-form update to a stored profile (a new dict).

    Merge rules come from :func:`merge_update`; on top of them ``session_token`` is
    appended to ``session_tokens`` (no duplicates, order kept) and ``modified_time``
    is set to ``now`` unless the update carries one.
    """
    changes = dict(update)
    token = changes.pop("session_token", None)
    changes.setdefault("modified_time", now)
    if profile is None:
        merged: dict[str, Any] = {**changes, "session_tokens": [], "created_time": now}
    else:
        merged = merge_update(profile, changes)
    tokens: list[str] = merged["session_tokens"]
    if token is not None and token not in tokens:
        merged["session_tokens"] = [*tokens, token]
    return {key: merged[key] for key in _PROFILE_ORDER if key in merged}


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
        self._closed = False

    def apply(self, partition: str, updates: Sequence[Mapping[str, Any]], now: str) -> None:
        """Merge validated updates into their profiles, in order, in one transaction."""
        ids = list(dict.fromkeys(update["user_id"] for update in updates))
        with self._lock:
            conn = self._conn
            # The write lock is taken before reading, so another process sharing the
            # file cannot slip an update in between.
            conn.execute("BEGIN IMMEDIATE")
            try:
                profiles = self._load(partition, ids)
                for update in updates:
                    user_id = update["user_id"]
                    profiles[user_id] = merge_profile(profiles.get(user_id), update, now)
                rows = [(partition, user_id, _dumps(profiles[user_id])) for user_id in ids]
                conn.executemany(
                    "INSERT OR REPLACE INTO users (partition, user_id, profile) VALUES (?, ?, ?)",
                    rows,
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

    def list_all_users(
        self, *, prefix: str = "", limit: int, offset: int = 0
    ) -> list[tuple[str, dict[str, Any]]]:
        """(partition, profile) pairs across partitions whose key starts with ``prefix``."""
        upper = prefix + "\U0010ffff"
        with self._lock:
            rows = self._conn.execute(
                "SELECT partition, profile FROM users WHERE partition >= ? AND partition < ?"
                " ORDER BY partition, user_id LIMIT ? OFFSET ?",
                (prefix, upper, limit, offset),
            ).fetchall()
        return [(partition, _loads(profile)) for partition, profile in rows]

    def close(self) -> None:
        """Close the database (idempotent)."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._conn.close()

    def _load(self, partition: str, ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        wanted = list(ids)
        found: dict[str, dict[str, Any]] = {}
        for start in range(0, len(wanted), _SELECT_CHUNK):
            chunk = wanted[start : start + _SELECT_CHUNK]
            marks = ",".join("?" * len(chunk))
            cursor = self._conn.execute(
                f"SELECT user_id, profile FROM users WHERE partition = ? AND user_id IN ({marks})",
                (partition, *chunk),
            )
            for user_id, profile in cursor:
                found[user_id] = _loads(profile)
        return found

    def _stats_for(self, partition: str) -> Stats:
        stats = self._stats.get(partition)
        if stats is None:
            stats = self._stats[partition] = Stats()
        return stats


def _dumps(profile: Mapping[str, Any]) -> str:
    return json.dumps(profile, ensure_ascii=False, separators=(",", ":"))


def _loads(text: str) -> dict[str, Any]:
    profile: dict[str, Any] = json.loads(text)
    return profile
