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
from typing import Any

__all__ = ["deep_merge", "merge_update"]


def deep_merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """Return ``base`` recursively updated by ``update`` (a new dict)."""
    merged = dict(base)
    for key, value in update.items():
        current = merged.get(key)
        if isinstance(value, Mapping) and isinstance(current, Mapping):
            merged[key] = deep_merge(current, value)
        else:
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
            if isinstance(current, Mapping) and isinstance(value, Mapping):
                merged[key] = (
                    deep_merge(current, value)
                    if key == "metadata"
                    else {
                        **current,
                        **value,
                    }
                )
                continue
        merged[key] = value
    return merged
