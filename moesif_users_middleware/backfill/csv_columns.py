"""CSV columns: which header names ``moesif-users send`` accepts, and where each cell goes.

Columns are named after the kind's fields in the reference (users: ``user_id``,
``company_id``, ``session_token``, ``modified_time``, ``ip_address``,
``user_agent_string``; companies: ``company_id``, ``company_domain``, ``session_token``,
``modified_time``, ``ip_address``); ``campaign.<field>`` and
``metadata.<key>[.<key>...]`` become nested keys; a ``metadata`` or ``campaign`` column
holds a JSON object. Empty cells are absent. Cells are strings, unless the column name
ends in a type: ``metadata.age:int``, ``:float``, ``:number`` (int when it looks like
one, else float), ``:bool`` (true/false/yes/no/1/0) or ``:json``.

The header is checked once (:func:`column_plan`, a bad one fails the file with
:class:`.items.MalformedInputError`); each row is then built by :func:`build_record`
(a cell that does not convert makes the row :class:`.items.Unparsed`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any, Final

from ..models import CAMPAIGN_FIELDS
from .items import MalformedInputError, Unparsed
from .kinds import SendKind

__all__ = ["Column", "build_record", "column_plan"]

# A column: (index, path of keys, converter or None for strings).
Column = tuple[int, tuple[str, ...], "Callable[[str], Any] | None"]


def build_record(row: list[str], plan: list[Column]) -> Any:
    """The record of one row (a dict), or :class:`Unparsed` naming the cell that failed."""
    record: dict[str, Any] = {}
    for index, path, convert in plan:
        if index >= len(row):
            break
        cell = row[index]
        if not cell:
            continue
        if convert is not None:
            try:
                cell = convert(cell)
            except (ValueError, RecursionError) as exc:
                return Unparsed(str(exc), ".".join(path))
        target = record
        for key in path[:-1]:
            target = target.setdefault(key, {})
        target[path[-1]] = cell
    return record


def _to_int(cell: str) -> int:
    try:
        return int(cell)
    except ValueError:
        raise ValueError(f"not an integer: {cell[:64]!r}") from None


def _to_float(cell: str) -> float:
    try:
        number = float(cell)
    except ValueError:
        raise ValueError(f"not a number: {cell[:64]!r}") from None
    if not math.isfinite(number):
        raise ValueError(f"not a finite number: {cell[:64]!r}")
    return number


def _to_number(cell: str) -> int | float:
    text = cell.strip()
    if text.lstrip("+-").isdigit():
        return int(text)
    return _to_float(text)


_TRUE: Final = frozenset(("true", "yes", "1", "y", "t"))
_FALSE: Final = frozenset(("false", "no", "0", "n", "f"))


def _to_bool(cell: str) -> bool:
    text = cell.strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f"not a boolean (true/false, yes/no, 1/0): {cell[:64]!r}")


def _to_json(cell: str) -> Any:
    try:
        return json.loads(cell)
    except ValueError as exc:
        raise ValueError(f"not valid JSON: {exc}") from None


def _to_object(cell: str) -> Any:
    value = _to_json(cell)
    if not isinstance(value, dict):
        raise ValueError(f"must be a JSON object, not {type(value).__name__}")
    return value


_CONVERTERS: Final[dict[str, Callable[[str], Any] | None]] = {
    "str": None,
    "string": None,
    "int": _to_int,
    "integer": _to_int,
    "float": _to_float,
    "number": _to_number,
    "bool": _to_bool,
    "boolean": _to_bool,
    "json": _to_json,
}


def column_plan(header: list[str], name: str, kind: SendKind) -> list[Column]:
    """Check the header once and precompute where each cell goes."""
    top_level = kind.columns

    def bad(message: str) -> MalformedInputError:
        return MalformedInputError(
            f"{name}: {message}. CSV columns of {kind.name} are {', '.join(top_level)}, "
            "campaign.<field>, metadata.<key> (optionally typed, e.g. metadata.age:int)"
        )

    if not header or not any(column.strip() for column in header):
        raise bad("the first line is not a CSV header")
    plan: list[Column] = []
    seen: dict[tuple[str, ...], str] = {}
    for index, column in enumerate(header):
        label = column.strip()
        convert: Callable[[str], Any] | None = None
        base, _, type_name = label.rpartition(":")
        if base and type_name.lower() in _CONVERTERS:
            label, convert = base, _CONVERTERS[type_name.lower()]
        path = tuple(label.split("."))
        if len(path) == 1:
            if label in ("metadata", "campaign"):
                convert = _to_object
            elif label not in top_level:
                shown = column if len(column) <= 64 else column[:61] + "..."
                raise bad(f"unknown column {shown!r}")
            elif convert is not None:
                raise bad(f"column {column!r}: only metadata columns take a type")
        elif path[0] == "campaign":
            if len(path) != 2 or path[1] not in CAMPAIGN_FIELDS:
                raise bad(f"unknown campaign column {column!r} ({', '.join(CAMPAIGN_FIELDS)})")
            if convert is not None:
                raise bad(f"column {column!r}: only metadata columns take a type")
        elif path[0] != "metadata" or not all(path[1:]):
            raise bad(f"unknown column {column!r}")
        for other_path, other in seen.items():
            shorter, longer = sorted((path, other_path), key=len)
            if longer[: len(shorter)] == shorter:
                raise bad(f"columns {other!r} and {column!r} write the same key")
        seen[path] = column
        plan.append((index, path, convert))
    if (kind.id_field,) not in seen:
        raise bad(f"the header has no {kind.id_field} column")
    return plan
