"""The Users API's merge rules, shared by the sender's coalescing and the collector.

- ``metadata`` merges recursively: nested objects merge key by key, any other value
  (scalar, list, or a change of type) is replaced by the newer one.
- ``campaign`` merges field by field.
- Other scalar fields: the newer value wins; a field absent from the update is kept.
- ``session_token`` is append-only on the server; callers that must keep every token
  handle it themselves (see :func:`merge_update`).

Both functions return new dicts and never mutate their arguments, so a caller may keep
references to what it merged (for fingerprints, retries, or the hook's own objects).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeGuard

__all__ = ["deep_merge", "merge_update"]


# Values certainly not mappings: checked before the (slower) ``isinstance(x, Mapping)``.
_NOT_MAPPINGS = frozenset({str, int, float, bool, type(None), list})


def deep_merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """Return ``base`` recursively updated by ``update`` (a new dict)."""
    merged = dict(base)
    for key, value in update.items():
        kind = type(value)
        if kind is dict or (kind not in _NOT_MAPPINGS and isinstance(value, Mapping)):
            current = merged.get(key)
            kind = type(current)
            if kind is dict or (kind not in _NOT_MAPPINGS and isinstance(current, Mapping)):
                merged[key] = deep_merge(current, value)  # type: ignore[arg-type]
                continue
        merged[key] = value
    return merged


def merge_update(older: Mapping[str, Any], newer: Mapping[str, Any]) -> dict[str, Any]:
    """Merge two wire-form user updates for the same user; ``newer`` wins.

    ``session_token`` follows the scalar rule here (the newer one is kept); the sender
    keeps every distinct token separately so that none is lost.
    """
    merged = dict(older)
    for key, value in newer.items():
        if key == "metadata" or key == "campaign":
            current = merged.get(key)
            if _is_mapping(current) and _is_mapping(value):
                merged[key] = (
                    deep_merge(current, value) if key == "metadata" else {**current, **value}
                )
                continue
        merged[key] = value
    return merged


def _is_mapping(value: object) -> TypeGuard[Mapping[str, Any]]:
    return type(value) is dict or isinstance(value, Mapping)
