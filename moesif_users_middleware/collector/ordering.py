"""Applying an update to a stored profile, ordered by ``modified_time``, field by field.

Several processes send updates for one user (or company), and they arrive in any order. Each update
carries the moment it describes (``modified_time``; the server's clock when it has
none). The collector keeps, beside each profile, a *clock* per value: the moment of the
update that set it, for every top-level field, every campaign key and every metadata
leaf (a tree mirroring the metadata). An update sets a value when it is at least as new
as that value's clock, or when the value is absent; otherwise the newer value stays. So
an update older than the profile fills what is absent and never overwrites anything
newer, while it still replaces the older values it names (a per-value last-writer-wins
map). Session tokens are append-only either way.

When the update is newer than every clock the result is exactly
:func:`moesif_users_middleware._merge.merge_update` (a test keeps the two in step). A
value with no clock (a profile stored by a collector that kept none) takes the
profile's ``modified_time`` as its clock.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from typing import Any

from ..models import ValidationError, parse_timestamp
from .kinds import USERS, Kind

__all__ = ["Clock", "epoch_ms", "instant", "merge_profile"]

# An int (epoch milliseconds) for a value, a dict mirroring a nested object.
Clock = Any

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MILLISECOND = timedelta(milliseconds=1)
_NESTED = ("metadata", "campaign")


def instant(timestamp: str) -> datetime:
    """The moment an ISO-8601 timestamp names (UTC when it names no zone)."""
    text = timestamp
    if len(text) != 24 or text[-1] != "Z":  # not the canonical ``...T..:..:..sssZ`` form
        text = parse_timestamp(text)
    return datetime.fromisoformat(text[:-1] + "+00:00")


def epoch_ms(timestamp: str) -> int:
    """Milliseconds since the Unix epoch for an ISO-8601 timestamp (0 if unreadable)."""
    try:
        moment = instant(timestamp)
    except (ValidationError, ValueError):
        return 0
    return (moment - _EPOCH) // _MILLISECOND


def merge_profile(
    profile: Mapping[str, Any] | None,
    clocks: Mapping[str, Clock],
    update: Mapping[str, Any],
    now: str,
    kind: Kind = USERS,
) -> tuple[dict[str, Any], dict[str, Clock]]:
    """Apply one validated wire-form update of ``kind``; the new profile and its new clocks.

    Neither argument is mutated. ``modified_time`` of the result is the newest seen,
    ``created_time`` the oldest, and never after ``modified_time``.
    """
    changes = dict(update)
    token = changes.pop("session_token", None)
    stamp: str = changes.pop("modified_time", None) or now
    moment = epoch_ms(stamp)
    if profile is None:
        merged: dict[str, Any] = {"session_tokens": []}
        new_clocks: dict[str, Clock] = {}
        base = moment
    else:
        merged = dict(profile)
        new_clocks = dict(clocks)
        base = epoch_ms(profile.get("modified_time") or now)
    for key, value in changes.items():
        if key == kind.id_field:
            merged[key] = value
        elif key in _NESTED and type(value) is dict:
            merged[key], new_clocks[key] = _merge_tree(
                merged.get(key), new_clocks.get(key, base), value, moment
            )
        elif key not in merged or moment >= _newest(new_clocks.get(key, base)):
            merged[key] = value
            new_clocks[key] = moment
    _stamp_times(merged, profile, stamp, moment, now)
    tokens: list[str] = merged["session_tokens"]
    if token is not None and token not in tokens:
        merged["session_tokens"] = [*tokens, token]
    return {key: merged[key] for key in kind.fields if key in merged}, new_clocks


def _stamp_times(
    merged: dict[str, Any],
    profile: Mapping[str, Any] | None,
    stamp: str,
    moment: int,
    now: str,
) -> None:
    """``modified_time``: the newest moment seen; ``created_time``: the oldest, not after it."""
    newest = profile.get("modified_time") if profile else None
    if newest is None or moment >= epoch_ms(newest):
        merged["modified_time"] = stamp
    first = profile.get("created_time") if profile else None
    if first is None:
        first = now
    if moment < epoch_ms(first):
        first = stamp
    if epoch_ms(first) > epoch_ms(merged["modified_time"]):
        first = merged["modified_time"]
    merged["created_time"] = first


def _merge_tree(
    current: Any, clock: Clock, update: Mapping[str, Any], moment: int
) -> tuple[Any, Clock]:
    """Merge the object ``update`` (of ``moment``) into ``current`` (clocked by ``clock``)."""
    if type(current) is not dict:
        if current is not None and moment < _newest(clock):
            return current, clock  # a newer non-object value stays
        current, clock = {}, moment
    merged = dict(current)
    # An int clock on an object: every value inside it is that old.
    clocks: dict[str, Clock] = dict(clock) if type(clock) is dict else {}
    inherited = clock if type(clock) is int else -1
    for key, value in update.items():
        key_clock = clocks.get(key, inherited)
        if type(value) is dict:
            merged[key], clocks[key] = _merge_tree(merged.get(key), key_clock, value, moment)
        elif key not in merged or moment >= _newest(key_clock):
            merged[key] = value
            clocks[key] = moment
    return merged, clocks


def _newest(clock: Clock) -> int:
    """The newest moment in a clock (-1: none)."""
    if type(clock) is int:
        return clock
    if type(clock) is dict:
        return max((_newest(value) for value in clock.values()), default=-1)
    return -1
