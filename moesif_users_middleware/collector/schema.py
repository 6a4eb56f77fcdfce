"""The collector's tables: each kind's profiles and history, the page's index, the
upgrade of a database written by an older collector, and the JSON its TEXT columns hold.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping
from typing import Any

from .kinds import KINDS, Kind
from .ordering import epoch_ms

__all__ = ["create_tables", "dumps", "index_name", "loads"]


def create_tables(conn: sqlite3.Connection) -> None:
    """Every kind's tables and index, the tables of an older collector migrated first."""
    for kind in KINDS.values():
        conn.executescript(_schema(kind))
        _migrate(conn, kind)
        conn.execute(_index(kind))


def index_name(kind: Kind) -> str:
    """The page's index of ``kind`` (see :func:`_index`)."""
    return f"{kind.table}_by_modified"


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
        f"CREATE INDEX IF NOT EXISTS {index_name(kind)}"
        f" ON {kind.table} (modified_ms, {kind.label_field})"
    )


def _migrate(conn: sqlite3.Connection, kind: Kind) -> None:
    """Give a table written by an older collector the columns this one sorts on."""
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
            profile = loads(text)
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
            f"UPDATE {table} SET modified_ms = ?, {label} = ? WHERE partition = ? AND {key} = ?",
            updates,
        )
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def dumps(value: Mapping[str, Any]) -> str:
    """A profile, clocks or changes as the TEXT a column holds."""
    return _ENCODER.encode(value)


def loads(text: str) -> dict[str, Any]:
    """A column's TEXT back as a dict."""
    value: dict[str, Any] = json.loads(text)
    return value
