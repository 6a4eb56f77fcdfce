"""The sender's pending updates: coalescing per user, bounded by users and bytes.

:class:`PendingBuffer` is not thread-safe; the sender calls it with its lock held. It
never mutates a record it is given: merging goes through :func:`merge_update`, which
returns new dicts.

A user's pending update is one merged record plus the older distinct session tokens
that were replaced in it (the server keeps every token, so each must reach it; they are
sent as ``{"user_id", "session_token"}`` records ahead of the merged one).

Users being sent ("in flight") still occupy their slot: the bound covers pending and in
flight together, so records merged back after a failed send never exceed it.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from .merge import merge_update

__all__ = ["MAX_TOKENS_PER_USER", "DeliveredLog", "Entry", "PendingBuffer"]

MAX_TOKENS_PER_USER = 32
_INITIAL_BYTES_PER_USER = 1024


class Entry:
    """One user's pending update."""

    __slots__ = ("last", "record", "tokens")

    def __init__(self, record: dict[str, Any]) -> None:
        self.record = record  # the merged update, carrying the newest session token
        self.last = record  # the newest update given (for the cheap "unchanged" test)
        self.tokens: list[str] | None = None  # older distinct tokens, oldest first

    def records(self) -> list[dict[str, Any]]:
        """What to send for this user: older tokens first, then the merged record."""
        if not self.tokens:
            return [self.record]
        user_id = self.record["user_id"]
        out: list[dict[str, Any]] = [
            {"user_id": user_id, "session_token": token} for token in self.tokens
        ]
        out.append(self.record)
        return out


class PendingBuffer:
    """Pending updates keyed by user id, plus the users currently in flight."""

    def __init__(self, max_users: int, max_bytes: int) -> None:
        self.max_users = max_users
        self.max_bytes = max_bytes
        self.pending: dict[str, Entry] = {}
        self.inflight: dict[str, bool] = {}
        self.slots = 0  # distinct users in pending or in flight
        self.bytes_per_user = float(_INITIAL_BYTES_PER_USER)
        self.slot_limit = max_users
        self.wake_slots = max(1, max_users // 2)
        self.queued = 0
        self.coalesced = 0
        self.dropped = 0

    def add(self, user_id: str, record: dict[str, Any]) -> bool:
        """Queue one validated update; ``False`` (and counted) when the buffer is full."""
        entry = self.pending.get(user_id)
        if entry is None:
            if user_id not in self.inflight:
                if self.slots >= self.slot_limit:
                    self.dropped += 1
                    return False
                self.slots += 1
            self.pending[user_id] = Entry(record)
            self.queued += 1
            return True
        self.queued += 1
        self.coalesced += 1
        # Merging an update equal to the newest one changes nothing (merges are idempotent).
        # Note: == treats True == 1 == 1.0, an accepted imprecision for the cheap path.
        last = entry.last
        try:
            if record is last or record == last:
                return True
        except Exception:  # a value that cannot be compared: merge it, never lose it
            pass
        self.merge_newer(entry, record)
        return True

    def merge_newer(self, entry: Entry, record: dict[str, Any]) -> None:
        """Merge ``record``, newer than anything in ``entry``, into it (see :meth:`add`)."""
        current = entry.record
        token = record.get("session_token")
        if token is not None:
            previous = current.get("session_token")
            tokens = entry.tokens
            if tokens is not None and token in tokens:
                tokens.remove(token)
            if previous is not None and previous != token:
                if tokens is None:
                    entry.tokens = tokens = []
                tokens.append(previous)
                if len(tokens) > MAX_TOKENS_PER_USER:
                    del tokens[0]
                    self.dropped += 1
        entry.record = merge_update(current, record)
        entry.last = record

    def drain(self) -> dict[str, Entry]:
        """Move everything pending to in flight and return it (the caller owns it)."""
        drained = self.pending
        self.pending = {}
        if self.inflight:
            self.inflight.update(dict.fromkeys(drained, True))
        else:
            self.inflight = dict.fromkeys(drained, True)
        return drained

    def merge_back(self, records: list[dict[str, Any]]) -> None:
        """Put records from a failed send back, *under* any newer pending update.

        ``records`` are in send order; each user's must still be in flight.
        """
        for record in reversed(records):  # newest first, so older tokens end up in front
            user_id = record["user_id"]
            entry = self.pending.get(user_id)
            if entry is None:
                self.pending[user_id] = Entry(record)
                continue
            token = record.get("session_token")
            merged = merge_update(record, entry.record)
            if token is not None and token != merged.get("session_token"):
                if entry.tokens is None:
                    entry.tokens = [token]
                elif token not in entry.tokens:
                    entry.tokens.insert(0, token)
                    if len(entry.tokens) > MAX_TOKENS_PER_USER:
                        del entry.tokens[0]
                        self.dropped += 1
            entry.record = merged

    def release(self, user_ids: list[str]) -> None:
        """These users are no longer in flight (sent, given up, or merged back)."""
        inflight = self.inflight
        pending = self.pending
        for user_id in user_ids:
            if inflight.pop(user_id, None) is not None and user_id not in pending:
                self.slots -= 1

    def observe(self, total_bytes: int, users: int) -> None:
        """Learn the serialized size per user; the byte bound becomes a user bound."""
        if users <= 0:
            return
        sample = total_bytes / users
        self.bytes_per_user = 0.5 * self.bytes_per_user + 0.5 * sample
        by_bytes = int(self.max_bytes // max(1.0, self.bytes_per_user))
        self.slot_limit = max(1, min(self.max_users, by_bytes))
        self.wake_slots = max(1, self.slot_limit // 2)

    @property
    def idle(self) -> bool:
        """Nothing pending and nothing in flight."""
        return not self.pending and not self.inflight


class DeliveredLog:
    """Bounded LRU of ``user_id -> (fingerprint, time)`` of what was last delivered."""

    def __init__(self, capacity: int, interval: float) -> None:
        self.capacity = capacity
        self.interval = interval
        self._entries: OrderedDict[str, tuple[int, float]] = OrderedDict()

    def unchanged(self, user_id: str, fingerprint: int, now: float) -> bool:
        """Whether this exact update was delivered less than ``interval`` ago."""
        if self.interval <= 0:
            return False
        hit = self._entries.get(user_id)
        return hit is not None and hit[0] == fingerprint and now - hit[1] < self.interval

    def delivered(self, user_id: str, fingerprint: int, now: float) -> None:
        """Remember a delivery (evicting the least recently delivered user when full)."""
        if self.interval <= 0:
            return
        entries = self._entries
        entries[user_id] = (fingerprint, now)
        entries.move_to_end(user_id)
        if len(entries) > self.capacity:
            entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)
