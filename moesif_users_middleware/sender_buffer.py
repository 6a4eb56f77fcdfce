"""The sender's pending updates: coalescing per user, bounded by users and bytes.

:class:`PendingBuffer` is not thread-safe; the sender calls it with its lock held. It
never mutates a record it is given: merging goes through :func:`merge_update`, which
returns new dicts.

A user's pending update is one merged record plus the older distinct session tokens
that were replaced in it (the server keeps every token, so each must reach it; they are
sent as ``{"user_id", "session_token"}`` records ahead of the merged one).

Users being sent ("in flight") still occupy their slot: the bound covers pending and in
flight together, so records merged back after a failed send never exceed it.

Each entry also keeps its *stamp*: the moment (seconds since the epoch) of the newest
update merged into it, or the caller's explicit ``modified_time`` (then also kept as the
text given). Updates merged back after a failed send, or re-asserted later, are ordered
by it: an older one goes *under* what is pending, a newer one over it.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

from .merge import merge_update

__all__ = ["MAX_TOKENS_PER_USER", "DeliveredLog", "Entry", "PendingBuffer", "Timed"]

MAX_TOKENS_PER_USER = 32
_INITIAL_BYTES_PER_USER = 1024


# A record with its stamp and, when the caller gave one, its ``modified_time`` text.
Timed = tuple[dict[str, Any], float, "str | None"]


class Entry:
    """One user's pending update."""

    __slots__ = ("last", "record", "stamp", "stamp_text", "tokens")

    def __init__(
        self, record: dict[str, Any], stamp: float = 0.0, stamp_text: str | None = None
    ) -> None:
        self.record = record  # the merged update, carrying the newest session token
        self.last = record  # the newest update given (for the cheap "unchanged" test)
        self.tokens: list[str] | None = None  # older distinct tokens, oldest first
        self.stamp = stamp  # the newest moment merged in (seconds since the epoch)
        self.stamp_text = stamp_text  # the caller's modified_time for that moment, if given

    def touch(self, stamp: float, stamp_text: str | None) -> None:
        """Note an update of moment ``stamp`` merged in (the newest moment is kept)."""
        if stamp >= self.stamp:
            self.stamp = stamp
            self.stamp_text = stamp_text

    def timed_records(self) -> list[Timed]:
        """:meth:`records`, each with this entry's stamp (for :meth:`PendingBuffer.merge_back`)."""
        return [(record, self.stamp, self.stamp_text) for record in self.records()]

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

    def add(
        self,
        user_id: str,
        record: dict[str, Any],
        stamp: float = 0.0,
        stamp_text: str | None = None,
    ) -> bool:
        """Queue one validated update; ``False`` (and counted) when the buffer is full."""
        entry = self.pending.get(user_id)
        if entry is None:
            if user_id not in self.inflight:
                if self.slots >= self.slot_limit:
                    self.dropped += 1
                    return False
                self.slots += 1
            self.pending[user_id] = Entry(record, stamp, stamp_text)
            self.queued += 1
            return True
        self.queued += 1
        self.coalesced += 1
        self.coalesce(entry, record, stamp, stamp_text)
        return True

    def coalesce(
        self, entry: Entry, record: dict[str, Any], stamp: float, stamp_text: str | None
    ) -> None:
        """Merge the newest update given for a pending user into its entry."""
        entry.touch(stamp, stamp_text)
        # Merging an update equal to the newest one changes nothing (merges are idempotent).
        # Note: == treats True == 1 == 1.0, an accepted imprecision for the cheap path.
        last = entry.last
        try:
            if record is last or record == last:
                return
        except Exception:  # a value that cannot be compared: merge it, never lose it
            pass
        self._merge_over(entry, record)
        entry.last = record

    def _merge_over(self, entry: Entry, record: dict[str, Any]) -> None:
        """Merge ``record`` over ``entry`` (it wins every field it has)."""
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

    def drain(self) -> dict[str, Entry]:
        """Move everything pending to in flight and return it (the caller owns it)."""
        drained = self.pending
        self.pending = {}
        if self.inflight:
            self.inflight.update(dict.fromkeys(drained, True))
        else:
            self.inflight = dict.fromkeys(drained, True)
        return drained

    def merge_back(self, records: list[Timed]) -> None:
        """Put records from a failed send back, ordered by stamp among pending updates.

        ``records`` are in send order; each user's must still be in flight. A record
        older than (or as old as) the user's pending update goes *under* it; a newer one
        (possible only with explicit ``modified_time`` values) goes over it.
        """
        for record, stamp, stamp_text in reversed(records):  # newest first: older tokens in front
            user_id = record["user_id"]
            entry = self.pending.get(user_id)
            if entry is None:
                self.pending[user_id] = Entry(record, stamp, stamp_text)
            else:
                self._merge_timed(entry, record, stamp, stamp_text)

    def reassert(self, records: Iterable[Timed]) -> None:
        """Queue delivered records again under their newer stamps (see ``DeliveredLog.touch``).

        A user with a pending update gets the record merged by stamp; any other takes a
        free slot, and is left out when none is free (its values were delivered).
        """
        for record, stamp, stamp_text in records:
            user_id = record["user_id"]
            entry = self.pending.get(user_id)
            if entry is not None:
                self._merge_timed(entry, record, stamp, stamp_text)
            elif user_id in self.inflight or self.slots < self.slot_limit:
                if user_id not in self.inflight:
                    self.slots += 1
                self.pending[user_id] = Entry(record, stamp, stamp_text)

    def _merge_timed(
        self, entry: Entry, record: dict[str, Any], stamp: float, stamp_text: str | None
    ) -> None:
        if stamp > entry.stamp:
            self._merge_over(entry, record)
            entry.touch(stamp, stamp_text)
            return
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


class _Delivered:
    """What was last delivered for one user, and any newer repeat of it not sent."""

    __slots__ = ("at", "fingerprint", "record", "stamp", "touched", "touched_text")

    def __init__(self, fingerprint: int, at: float, timed: Timed) -> None:
        self.fingerprint = fingerprint
        self.at = at  # when (monotonic clock)
        self.record, self.stamp, _ = timed
        self.touched = 0.0  # the moment of the newest repeat not sent (0: none)
        self.touched_text: str | None = None


class DeliveredLog:
    """Bounded LRU of what was last delivered per user, to skip unchanged updates.

    A skipped repeat is *touched*: its moment is newer than the delivered record's. Within
    one process that changes nothing; across processes another one may have sent other
    values for the user meanwhile, and the receiver keeps the newest ``modified_time``.
    So once ``interval`` has passed since the delivery (or at shutdown), :meth:`due`
    hands the delivered record back with the repeat's moment, to be sent once more.
    """

    def __init__(self, capacity: int, interval: float) -> None:
        self.capacity = capacity
        self.interval = interval
        self._entries: OrderedDict[str, _Delivered] = OrderedDict()
        self._touched: dict[str, None] = {}  # users with a repeat to re-assert

    def unchanged(self, user_id: str, fingerprint: int, now: float) -> bool:
        """Whether this exact update was delivered less than ``interval`` ago."""
        if self.interval <= 0:
            return False
        hit = self._entries.get(user_id)
        return hit is not None and hit.fingerprint == fingerprint and now - hit.at < self.interval

    def delivered(self, user_id: str, fingerprint: int, now: float, timed: Timed) -> None:
        """Remember a delivery (evicting the least recently delivered user when full)."""
        if self.interval <= 0:
            return
        entries = self._entries
        previous = entries.get(user_id)
        current = entries[user_id] = _Delivered(fingerprint, now, timed)
        entries.move_to_end(user_id)
        if previous is not None and previous.touched > current.stamp:
            current.touched, current.touched_text = previous.touched, previous.touched_text
        else:
            self._touched.pop(user_id, None)
        if len(entries) > self.capacity:
            evicted, _ = entries.popitem(last=False)
            self._touched.pop(evicted, None)

    def touch(self, user_id: str, stamp: float, stamp_text: str | None) -> None:
        """A repeat of the user's delivered update, of moment ``stamp``, was not sent."""
        hit = self._entries.get(user_id)
        if hit is not None and stamp > hit.stamp and stamp > hit.touched:
            hit.touched, hit.touched_text = stamp, stamp_text
            self._touched[user_id] = None

    def due(self, now: float, everything: bool = False) -> list[Timed]:
        """Delivered records to send again under their repeat's moment (and forget them).

        Those delivered ``interval`` ago or longer; all of them when ``everything``.
        """
        out: list[Timed] = []
        if not self._touched:
            return out
        entries = self._entries
        for user_id in list(self._touched):
            hit = entries.get(user_id)
            if hit is None:
                del self._touched[user_id]
            elif everything or now - hit.at >= self.interval:
                del self._touched[user_id]
                del entries[user_id]  # so the record is not skipped as unchanged again
                out.append((hit.record, hit.touched, hit.touched_text))
        return out

    def any_due(self, now: float) -> bool:
        """Whether :meth:`due` would return something now."""
        entries = self._entries
        for user_id in self._touched:
            hit = entries.get(user_id)
            if hit is None or now - hit.at >= self.interval:
                return True
        return False

    def __len__(self) -> int:
        return len(self._entries)
