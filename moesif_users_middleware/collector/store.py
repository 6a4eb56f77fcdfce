"""SQLite storage for the collector: profiles partitioned by a hash of the application id.

One connection guarded by a lock serves every thread (``:memory:`` works the same as a
file), each write is one transaction, and a file database runs in WAL mode with
``synchronous=NORMAL``. The application id itself is never stored: callers pass
:func:`partition_key` of it.

Each record kind (:mod:`.kinds`: users, companies) has the same two tables, named by the
kind: its profiles, and the last :data:`HISTORY_LIMIT` updates that changed each one.
Every method takes ``kind`` (users by default). Updates are ordered by their
``modified_time``, value by value (see :mod:`.ordering`): beside each profile the table
keeps its clocks. It also keeps the profile's ``modified_time`` as epoch milliseconds and
its label (a user's company id, a company's domain), indexed, so the HTML page can sort
newest first, search and page through 100k profiles quickly, and a company's page can
list its users.
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

from .changes import profile_changes
from .kinds import KINDS, USERS, Kind
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
HISTORY_LIMIT = 50  # history rows kept per profile
_SELECT_CHUNK = 500  # well under SQLite's bound-parameter limit
_TOP = "\U0010ffff"  # sorts after every character: "starts with x" is [x, x + _TOP)


def _schema(kind: Kind) -> str:
    key, label = kind.id_field, kind.label_field
    return f"""
CREATE TABLE IF NOT EXISTS {kind.table} (
    partition TEXT NOT NULL,
    {key} TEXT NOT NULL,
    profile TEXT NOT NULL,
    modified_ms INTEGER NOT NULL DEFAULT 0,
    {label} TEXT,
    history_seq INTEGER NOT NULL DEFAULT 0,
    clocks TEXT NOT NULL DEFAULT '{{}}',
    PRIMARY KEY (partition, {key})
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS {kind.history_table} (
    partition TEXT NOT NULL,
    {key} TEXT NOT NULL,
    seq INTEGER NOT NULL,
    applied_time TEXT NOT NULL,
    modified_time TEXT NOT NULL,
    changes TEXT NOT NULL,
    PRIMARY KEY (partition, {key}, seq)
) WITHOUT ROWID;
"""


def _index(kind: Kind) -> str:
    """The page's one index per kind, created after the columns exist (an old database
    gets them by migration first).

    Its entries are (modified_ms, label, partition, id) (a WITHOUT ROWID index holds the
    primary key), so sorting newest first, filtering by partition, id or label prefix (or
    an exact label: a company's users), counting and paging read only the index.
    """
    return (
        f"CREATE INDEX IF NOT EXISTS {_index_name(kind)}"
        f" ON {kind.table} (modified_ms, {kind.label_field})"
    )


def _index_name(kind: Kind) -> str:
    return f"{kind.table}_by_modified"


def _newest_first(kind: Kind, table: str = "") -> str:
    prefix = f"{table}." if table else ""
    columns = ("modified_ms", kind.label_field, "partition", kind.id_field)
    return "ORDER BY " + ", ".join(f"{prefix}{column} DESC" for column in columns)


def partition_key(application_id: str) -> str:
    """The stored stand-in for an application id: a sha256 hex prefix."""
    digest = hashlib.sha256(application_id.encode("utf-8", "surrogatepass")).hexdigest()
    return digest[:PARTITION_KEY_LENGTH]


@dataclass
class Stats:
    """Per-partition counters of one kind since the collector started."""

    requests: int = 0  # POSTs to /v1/{kind} and /v1/{kind}/batch, whatever their outcome
    batches: int = 0  # of which to the batch route
    rejected: int = 0  # of which answered with an error
    records: int = 0  # records stored by accepted POSTs


class Store:
    """Profiles keyed by (kind, partition, id); safe to share between threads."""

    def __init__(self, db_path: str | os.PathLike[str] = ":memory:") -> None:
        self._lock = threading.Lock()
        self._stats: dict[tuple[str, str], Stats] = {}
        self._conn = sqlite3.connect(
            db_path, check_same_thread=False, isolation_level=None, timeout=30.0
        )
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        for kind in KINDS.values():
            self._conn.executescript(_schema(kind))
            self._migrate(kind)
            self._conn.execute(_index(kind))
        self._closed = False

    def apply(
        self, partition: str, updates: Sequence[Mapping[str, Any]], now: str, kind: Kind = USERS
    ) -> None:
        """Merge validated updates into their profiles, in order, in one transaction.

        Every update that changes a profile adds a row to its history (the oldest rows
        beyond :data:`HISTORY_LIMIT` are deleted in the same transaction).
        """
        key = kind.id_field
        ids = list(dict.fromkeys(update[key] for update in updates))
        with self._lock:
            conn = self._conn
            # The write lock is taken before reading, so another process sharing the
            # file cannot slip an update in between.
            conn.execute("BEGIN IMMEDIATE")
            try:
                profiles, seqs, clocks = self._load(kind, partition, ids)
                history: list[tuple[str, str, int, str, str, str]] = []
                for update in updates:
                    record_id = update[key]
                    before = profiles.get(record_id)
                    after, clocks[record_id] = merge_profile(
                        before, clocks.get(record_id, {}), update, now, kind
                    )
                    profiles[record_id] = after
                    changes = profile_changes(before, after, update, kind)
                    if changes:
                        seq = seqs[record_id] = seqs.get(record_id, 0) + 1
                        stamp = update.get("modified_time") or now
                        history.append((partition, record_id, seq, now, stamp, _dumps(changes)))
                self._write(kind, partition, ids, profiles, seqs, clocks)
                if history:
                    self._add_history(kind, partition, history)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            self._stats_for(partition, kind).records += len(updates)

    def count_request(
        self, partition: str, *, batch: bool, rejected: bool, kind: Kind = USERS
    ) -> None:
        """Count one POST of ``kind`` for ``partition`` in :meth:`stats`."""
        with self._lock:
            stats = self._stats_for(partition, kind)
            stats.requests += 1
            stats.batches += batch
            stats.rejected += rejected

    def stats(self, partition: str, kind: Kind = USERS) -> dict[str, int]:
        """The counters of ``partition`` for ``kind``, plus how many of its profiles are
        stored (under the kind's name: ``users``, ``companies``)."""
        with self._lock:
            stats = self._stats.get((kind.name, partition), Stats())
            (stored,) = self._conn.execute(
                f"SELECT COUNT(*) FROM {kind.table} WHERE partition = ?", (partition,)
            ).fetchone()
        return {
            "requests": stats.requests,
            "batches": stats.batches,
            "rejected": stats.rejected,
            "records": stats.records,
            kind.name: stored,
        }

    def get(self, partition: str, record_id: str, kind: Kind = USERS) -> dict[str, Any] | None:
        """One stored profile, or ``None``."""
        with self._lock:
            row = self._conn.execute(
                f"SELECT profile FROM {kind.table} WHERE partition = ? AND {kind.id_field} = ?",
                (partition, record_id),
            ).fetchone()
        return None if row is None else _loads(row[0])

    def list_profiles(
        self, partition: str, *, limit: int, offset: int = 0, kind: Kind = USERS
    ) -> list[dict[str, Any]]:
        """Profiles of one partition ordered by id."""
        with self._lock:
            rows = self._conn.execute(
                f"SELECT profile FROM {kind.table} WHERE partition = ?"
                f" ORDER BY {kind.id_field} LIMIT ? OFFSET ?",
                (partition, limit, offset),
            ).fetchall()
        return [_loads(profile) for (profile,) in rows]

    def count_all(
        self, *, prefix: str = "", search: str = "", label: str | None = None, kind: Kind = USERS
    ) -> int:
        """How many profiles :meth:`list_all` has to page through."""
        where, params = _filter(kind, prefix, search, label)
        with self._lock:
            (count,) = self._conn.execute(
                f"SELECT COUNT(*) FROM {kind.table} INDEXED BY {_index_name(kind)}{where}", params
            ).fetchone()
        return int(count)

    def list_all(
        self,
        *,
        prefix: str = "",
        search: str = "",
        label: str | None = None,
        limit: int,
        offset: int = 0,
        kind: Kind = USERS,
    ) -> list[tuple[str, dict[str, Any]]]:
        """(partition, profile) pairs, newest ``modified_time`` first.

        ``prefix`` keeps partitions whose key starts with it (a whole key selects one);
        ``search`` keeps profiles whose id or label (company id, domain) starts with it;
        ``label`` keeps those whose label is exactly that (the users of a company).
        """
        where, params = _filter(kind, prefix, search, label)
        key, table, index = kind.id_field, kind.table, _index_name(kind)
        # The page of keys comes from the index alone; only its rows are read in full.
        sql = (
            f"SELECT t.partition, t.profile FROM (SELECT modified_ms, {kind.label_field},"
            f" partition, {key} FROM {table} INDEXED BY {index}{where} {_newest_first(kind)}"
            f" LIMIT ? OFFSET ?) AS page JOIN {table} AS t USING (partition, {key})"
            f" {_newest_first(kind, 'page')}"
        )
        with self._lock:
            rows = self._conn.execute(sql, (*params, limit, offset)).fetchall()
        return [(partition, _loads(profile)) for partition, profile in rows]

    def find(
        self, record_id: str, partition: str = "", kind: Kind = USERS
    ) -> list[tuple[str, dict[str, Any]]]:
        """(partition, profile) for ``record_id`` in the partitions whose key starts with
        ``partition`` (a whole key selects one; "" every partition)."""
        where, params = _filter(kind, partition, "", None)
        joiner = " AND " if where else " WHERE "
        sql = (
            f"SELECT partition, profile FROM {kind.table}{where}{joiner}{kind.id_field} = ?"
            " ORDER BY partition"
        )
        with self._lock:
            rows = self._conn.execute(sql, (*params, record_id)).fetchall()
        return [(key, _loads(profile)) for key, profile in rows]

    def partitions_with_label(
        self, label: str, partition: str = "", kind: Kind = USERS
    ) -> list[str]:
        """The partitions holding a profile labelled ``label`` (users of that company)."""
        where, params = _filter(kind, partition, "", label)
        with self._lock:
            rows = self._conn.execute(
                f"SELECT DISTINCT partition FROM {kind.table} INDEXED BY {_index_name(kind)}"
                f"{where} ORDER BY partition",
                params,
            ).fetchall()
        return [key for (key,) in rows]

    def history(self, partition: str, record_id: str, kind: Kind = USERS) -> list[dict[str, Any]]:
        """The profile's recorded changes, newest first: ``applied_time``,
        ``modified_time``, ``changes`` (see :func:`profile_changes`)."""
        with self._lock:
            rows = self._conn.execute(
                f"SELECT applied_time, modified_time, changes FROM {kind.history_table}"
                f" WHERE partition = ? AND {kind.id_field} = ? ORDER BY seq DESC",
                (partition, record_id),
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

    def _write(
        self,
        kind: Kind,
        partition: str,
        ids: Iterable[str],
        profiles: Mapping[str, Mapping[str, Any]],
        seqs: Mapping[str, int],
        clocks: Mapping[str, Mapping[str, Clock]],
    ) -> None:
        rows = [
            (
                partition,
                record_id,
                _dumps(profiles[record_id]),
                epoch_ms(profiles[record_id]["modified_time"]),
                profiles[record_id].get(kind.label_field),
                seqs.get(record_id, 0),
                _dumps(clocks[record_id]),
            )
            for record_id in ids
        ]
        self._conn.executemany(
            f"INSERT OR REPLACE INTO {kind.table} (partition, {kind.id_field}, profile,"
            f" modified_ms, {kind.label_field}, history_seq, clocks) VALUES (?, ?, ?, ?, ?, ?, ?)",
            rows,
        )

    def _add_history(
        self, kind: Kind, partition: str, history: Sequence[tuple[str, str, int, str, str, str]]
    ) -> None:
        conn = self._conn
        conn.executemany(f"INSERT INTO {kind.history_table} VALUES (?, ?, ?, ?, ?, ?)", history)
        trimmed = {
            (record_id, seq - HISTORY_LIMIT)
            for _, record_id, seq, *_rest in history
            if seq > HISTORY_LIMIT
        }
        if trimmed:
            conn.executemany(
                f"DELETE FROM {kind.history_table}"
                f" WHERE partition = ? AND {kind.id_field} = ? AND seq <= ?",
                [(partition, record_id, upto) for record_id, upto in trimmed],
            )

    def _migrate(self, kind: Kind) -> None:
        """Give a table written by an older collector the columns this one sorts on."""
        conn = self._conn
        table, key, label = kind.table, kind.id_field, kind.label_field
        columns = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
        added = [
            (name, column)
            for name, column in (
                ("modified_ms", "INTEGER NOT NULL DEFAULT 0"),
                (label, "TEXT"),
                ("history_seq", "INTEGER NOT NULL DEFAULT 0"),
                ("clocks", "TEXT NOT NULL DEFAULT '{}'"),
            )
            if name not in columns
        ]
        if not added:
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            for name, column in added:
                conn.execute(f"ALTER TABLE {table} ADD COLUMN {name} {column}")
            rows = conn.execute(f"SELECT partition, {key}, profile FROM {table}").fetchall()
            updates = []
            for partition, record_id, text in rows:
                profile = _loads(text)
                stamp = profile.get("modified_time")
                updates.append(
                    (
                        epoch_ms(stamp) if isinstance(stamp, str) else 0,
                        profile.get(label),
                        partition,
                        record_id,
                    )
                )
            conn.executemany(
                f"UPDATE {table} SET modified_ms = ?, {label} = ?"
                f" WHERE partition = ? AND {key} = ?",
                updates,
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def _load(
        self, kind: Kind, partition: str, ids: Iterable[str]
    ) -> tuple[dict[str, dict[str, Any]], dict[str, int], dict[str, dict[str, Clock]]]:
        wanted = list(ids)
        found: dict[str, dict[str, Any]] = {}
        seqs: dict[str, int] = {}
        clocks: dict[str, dict[str, Clock]] = {}
        for start in range(0, len(wanted), _SELECT_CHUNK):
            chunk = wanted[start : start + _SELECT_CHUNK]
            marks = ",".join("?" * len(chunk))
            cursor = self._conn.execute(
                f"SELECT {kind.id_field}, profile, history_seq, clocks FROM {kind.table}"
                f" WHERE partition = ? AND {kind.id_field} IN ({marks})",
                (partition, *chunk),
            )
            for record_id, profile, seq, clock in cursor:
                found[record_id] = _loads(profile)
                seqs[record_id] = seq
                clocks[record_id] = _loads(clock)
        return found, seqs, clocks

    def _stats_for(self, partition: str, kind: Kind) -> Stats:
        stats = self._stats.get((kind.name, partition))
        if stats is None:
            stats = self._stats[kind.name, partition] = Stats()
        return stats


def _filter(kind: Kind, prefix: str, search: str, label: str | None) -> tuple[str, tuple[str, ...]]:
    """WHERE clause (with its leading space) and parameters for the page's filters."""
    clauses: list[str] = []
    params: list[str] = []
    if len(prefix) == PARTITION_KEY_LENGTH:
        clauses.append("partition = ?")
        params.append(prefix)
    elif prefix:
        clauses.append("partition >= ? AND partition < ?")
        params += [prefix, prefix + _TOP]
    key, column = kind.id_field, kind.label_field
    if search:
        upper = search + _TOP
        clauses.append(f"(({key} >= ? AND {key} < ?) OR ({column} >= ? AND {column} < ?))")
        params += [search, upper, search, upper]
    if label is not None:
        clauses.append(f"{column} = ?")
        params.append(label)
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), tuple(params)


_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def _dumps(profile: Mapping[str, Any]) -> str:
    return _ENCODER.encode(profile)


def _loads(text: str) -> dict[str, Any]:
    profile: dict[str, Any] = json.loads(text)
    return profile
