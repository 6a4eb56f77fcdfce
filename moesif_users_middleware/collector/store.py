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

This module is the store's interface and its lock; :mod:`.schema` creates the tables,
:mod:`.rows` reads and writes one update's rows, :mod:`.filters` words the page's
queries, :mod:`.partition` makes the partition key.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .changes import profile_changes
from .filters import filter_clause, newest_first
from .kinds import USERS, Kind
from .ordering import merge_profile
from .partition import PARTITION_KEY_LENGTH, partition_key
from .rows import HISTORY_LIMIT, HistoryRow, add_history, load_profiles, write_profiles
from .schema import create_tables, dumps, index_name, loads

__all__ = [
    "HISTORY_LIMIT",
    "PARTITION_KEY_LENGTH",
    "Stats",
    "Store",
    "partition_key",
    "profile_changes",
]


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
        create_tables(self._conn)
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
                profiles, seqs, clocks = load_profiles(conn, kind, partition, ids)
                history: list[HistoryRow] = []
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
                        history.append((partition, record_id, seq, now, stamp, dumps(changes)))
                write_profiles(conn, kind, partition, ids, profiles, seqs, clocks)
                if history:
                    add_history(conn, kind, partition, history)
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
        return None if row is None else loads(row[0])

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
        return [loads(profile) for (profile,) in rows]

    def count_all(
        self, *, prefix: str = "", search: str = "", label: str | None = None, kind: Kind = USERS
    ) -> int:
        """How many profiles :meth:`list_all` has to page through."""
        where, params = filter_clause(kind, prefix, search, label)
        with self._lock:
            (count,) = self._conn.execute(
                f"SELECT COUNT(*) FROM {kind.table} INDEXED BY {index_name(kind)}{where}", params
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
        where, params = filter_clause(kind, prefix, search, label)
        key, table, index = kind.id_field, kind.table, index_name(kind)
        # The page of keys comes from the index alone; only its rows are read in full.
        sql = (
            f"SELECT t.partition, t.profile FROM (SELECT modified_ms, {kind.label_field},"
            f" partition, {key} FROM {table} INDEXED BY {index}{where} {newest_first(kind)}"
            f" LIMIT ? OFFSET ?) AS page JOIN {table} AS t USING (partition, {key})"
            f" {newest_first(kind, 'page')}"
        )
        with self._lock:
            rows = self._conn.execute(sql, (*params, limit, offset)).fetchall()
        return [(partition, loads(profile)) for partition, profile in rows]

    def find(
        self, record_id: str, partition: str = "", kind: Kind = USERS
    ) -> list[tuple[str, dict[str, Any]]]:
        """(partition, profile) for ``record_id`` in the partitions whose key starts with
        ``partition`` (a whole key selects one; "" every partition)."""
        where, params = filter_clause(kind, partition, "", None)
        joiner = " AND " if where else " WHERE "
        sql = (
            f"SELECT partition, profile FROM {kind.table}{where}{joiner}{kind.id_field} = ?"
            " ORDER BY partition"
        )
        with self._lock:
            rows = self._conn.execute(sql, (*params, record_id)).fetchall()
        return [(key, loads(profile)) for key, profile in rows]

    def partitions_with_label(
        self, label: str, partition: str = "", kind: Kind = USERS
    ) -> list[str]:
        """The partitions holding a profile labelled ``label`` (users of that company)."""
        where, params = filter_clause(kind, partition, "", label)
        with self._lock:
            rows = self._conn.execute(
                f"SELECT DISTINCT partition FROM {kind.table} INDEXED BY {index_name(kind)}"
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
            {"applied_time": applied, "modified_time": modified, "changes": loads(changes)}
            for applied, modified, changes in rows
        ]

    def close(self) -> None:
        """Close the database (idempotent)."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._conn.close()

    def _stats_for(self, partition: str, kind: Kind) -> Stats:
        stats = self._stats.get((kind.name, partition))
        if stats is None:
            stats = self._stats[kind.name, partition] = Stats()
        return stats
