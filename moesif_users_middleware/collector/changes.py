"""What one update changed in a profile: the diff kept in the history table."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .kinds import USERS, Kind

__all__ = ["profile_changes"]

_NOT_DIFFED = frozenset({"session_token", "modified_time"})


def profile_changes(
    before: Mapping[str, Any] | None,
    after: Mapping[str, Any],
    update: Mapping[str, Any],
    kind: Kind = USERS,
) -> dict[str, Any]:
    """What ``update`` changed from ``before`` to ``after``: a compact, JSON-able diff.

    ``{field: [old, new]}`` for top-level fields, ``{"metadata.a.b": [old, new]}`` (and
    ``campaign.key``) for nested keys, ``{"session_token": token}`` for an appended
    token; absent values are ``None``. Creating a profile records its id (``user_id``,
    ``company_id``) too. Only the keys the update names are compared (a merge touches
    nothing else); ``modified_time`` and ``created_time`` are not changes.
    """
    old: Mapping[str, Any] = before or {}
    id_field = kind.id_field
    diff: dict[str, Any] = {} if before else {id_field: [None, after[id_field]]}
    for key, value in update.items():
        if key in _NOT_DIFFED or key == id_field:
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
