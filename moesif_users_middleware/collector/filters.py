"""The page's filters and order as SQL: partition prefix, id or label prefix, exact label,
newest first."""

from __future__ import annotations

from .kinds import Kind
from .partition import PARTITION_KEY_LENGTH

__all__ = ["filter_clause", "newest_first"]

_TOP = "\U0010ffff"  # sorts after every character: "starts with x" is [x, x + _TOP)


def filter_clause(
    kind: Kind, prefix: str, search: str, label: str | None
) -> tuple[str, tuple[str, ...]]:
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


def newest_first(kind: Kind, table: str = "") -> str:
    """ORDER BY the page's index, newest ``modified_time`` first."""
    prefix = f"{table}." if table else ""
    columns = ("modified_ms", kind.label_field, "partition", kind.id_field)
    return "ORDER BY " + ", ".join(f"{prefix}{column} DESC" for column in columns)
