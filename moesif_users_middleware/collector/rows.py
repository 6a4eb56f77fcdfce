"""One write's rows: the profiles it updates (with their clocks and history counter)
read and written in bulk, and their history rows added, trimmed to :data:`HISTORY_LIMIT`.

Callers hold the store's lock inside one transaction.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from .kinds import Kind
from .ordering import Clock, epoch_ms
from .schema import dumps, loads

__all__ = ["HISTORY_LIMIT", "HistoryRow", "add_history", "load_profiles", "write_profiles"]

HISTORY_LIMIT = 50  # history rows kept per profile
_SELECT_CHUNK = 500  # well under SQLite's bound-parameter limit

HistoryRow = tuple[str, str, int, str, str, str]  # partition, id, seq, applied, modified, changes


def load_profiles(
    conn: sqlite3.Connection, kind: Kind, partition: str, ids: Iterable[str]
) -> tuple[dict[str, dict[str, Any]], dict[str, int], dict[str, dict[str, Clock]]]:
    """The stored profiles of ``ids``, their history counters and clocks (by id)."""
    wanted = list(ids)
    found: dict[str, dict[str, Any]] = {}
    seqs: dict[str, int] = {}
    clocks: dict[str, dict[str, Clock]] = {}
    for start in range(0, len(wanted), _SELECT_CHUNK):
        chunk = wanted[start : start + _SELECT_CHUNK]
        marks = ",".join("?" * len(chunk))
        cursor = conn.execute(
            f"SELECT {kind.id_field}, profile, history_seq, clocks FROM {kind.table}"
            f" WHERE partition = ? AND {kind.id_field} IN ({marks})",
            (partition, *chunk),
        )
        for record_id, profile, seq, clock in cursor:
            found[record_id] = loads(profile)
            seqs[record_id] = seq
            clocks[record_id] = loads(clock)
    return found, seqs, clocks


def write_profiles(
    conn: sqlite3.Connection,
    kind: Kind,
    partition: str,
    ids: Iterable[str],
    profiles: Mapping[str, Mapping[str, Any]],
    seqs: Mapping[str, int],
    clocks: Mapping[str, Mapping[str, Clock]],
) -> None:
    """Store the profiles of ``ids`` with their sort columns, counters and clocks."""
    rows = [
        (
            partition,
            record_id,
            dumps(profiles[record_id]),
            epoch_ms(profiles[record_id]["modified_time"]),
            profiles[record_id].get(kind.label_field),
            seqs.get(record_id, 0),
            dumps(clocks[record_id]),
        )
        for record_id in ids
    ]
    conn.executemany(
        f"INSERT OR REPLACE INTO {kind.table} (partition, {kind.id_field}, profile,"
        f" modified_ms, {kind.label_field}, history_seq, clocks) VALUES (?, ?, ?, ?, ?, ?, ?)",
        rows,
    )


def add_history(
    conn: sqlite3.Connection, kind: Kind, partition: str, history: Sequence[HistoryRow]
) -> None:
    """Add history rows, deleting each profile's rows beyond the newest :data:`HISTORY_LIMIT`."""
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
