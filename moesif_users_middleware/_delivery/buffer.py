"""Pending records: coalesced per (kind, id), bounded by slots and bytes.

:class:`PendingBuffer` is not thread-safe; the engine calls it with its lock held. It
never mutates a record it is given: merging goes through :func:`merge_update`, which
returns new dicts.

A key's pending record is one merged record plus the older distinct session tokens that
were replaced in it (the API keeps every token, so each must reach it; they are sent as
``{id field, "session_token"}`` records ahead of the merged one).

Keys being sent ("in flight") still occupy their slot: the bound covers pending and in
flight together, so records merged back after a failed send never exceed it.

Each entry keeps its *stamp*: the moment (seconds since the epoch) of the newest update
merged into it, or the caller's explicit ``modified_time`` (then also kept as the text
given). Records merged back after a failed send, or re-asserted later, are ordered by
it: an older one goes *under* what is pending, a newer one over it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .._merge import merge_update
from .kinds import KINDS, USERS, Key
from .tally import Tally, new_tallies, total

__all__ = ["MAX_TOKENS_PER_RECORD", "Entry", "PendingBuffer", "Timed"]

MAX_TOKENS_PER_RECORD = USERS.max_tokens  # a user's; see RecordKind.max_tokens
_MAX_TOKENS = {kind.id_field: kind.max_tokens for kind in KINDS.values()}
_INITIAL_BYTES_PER_RECORD = 1024

# A record with its stamp and, when the caller gave one, its ``modified_time`` text.
Timed = tuple[dict[str, Any], float, "str | None"]


class Entry:
    """One key's pending record."""

    __slots__ = ("id_field", "last", "record", "stamp", "stamp_text", "tokens")

    def __init__(
        self,
        record: dict[str, Any],
        id_field: str,
        stamp: float = 0.0,
        stamp_text: str | None = None,
    ) -> None:
        self.record = record  # the merged update, carrying the newest session token
        self.last = record  # the newest update given (for the cheap "same again" test)
        self.id_field = id_field
        # Older distinct tokens, oldest first: a dict (as an ordered set) so that finding,
        # moving and evicting one costs O(1) with a company's 256 of them.
        self.tokens: dict[str, None] | None = None
        self.stamp = stamp  # the newest moment merged in (seconds since the epoch)
        self.stamp_text = stamp_text  # the caller's modified_time for that moment, if given

    @property
    def max_tokens(self) -> int:
        """How many older distinct tokens this key keeps (its kind's ``max_tokens``)."""
        return _MAX_TOKENS.get(self.id_field, MAX_TOKENS_PER_RECORD)

    def touch(self, stamp: float, stamp_text: str | None) -> None:
        """Note an update of moment ``stamp`` merged in (the newest moment is kept)."""
        if stamp >= self.stamp:
            self.stamp = stamp
            self.stamp_text = stamp_text

    def records(self) -> list[dict[str, Any]]:
        """What to send for this key: older tokens first, then the merged record."""
        if not self.tokens:
            return [self.record]
        field = self.id_field
        record_id = self.record[field]
        out: list[dict[str, Any]] = [{field: record_id, "session_token": t} for t in self.tokens]
        out.append(self.record)
        return out

    def timed_records(self) -> list[Timed]:
        """:meth:`records`, each with this entry's stamp (for :meth:`PendingBuffer.merge_back`)."""
        return [(record, self.stamp, self.stamp_text) for record in self.records()]


class PendingBuffer:
    """Pending records by key, plus the keys currently in flight."""

    def __init__(self, max_records: int, max_bytes: int) -> None:
        self.max_records = max_records
        self.max_bytes = max_bytes
        self.pending: dict[Key, Entry] = {}
        self.inflight: dict[Key, bool] = {}
        self.slots = 0  # distinct keys pending or in flight
        self.bytes_per_record = float(_INITIAL_BYTES_PER_RECORD)
        self.slot_limit = max_records
        self.wake_slots = max(1, max_records // 2)
        self.tallies = new_tallies()  # the engine's counters too; queued/coalesced/dropped here

    @property
    def queued(self) -> int:
        return total(self.tallies.values(), "queued")

    @property
    def coalesced(self) -> int:
        return total(self.tallies.values(), "coalesced")

    @property
    def dropped(self) -> int:
        return total(self.tallies.values(), "dropped")

    @property
    def bound(self) -> str:
        """Which bound limits the slots now (for the log line when it is reached)."""
        return "max_queue_size" if self.slot_limit >= self.max_records else "max_queue_bytes"

    def add(
        self,
        key: Key,
        record: dict[str, Any],
        id_field: str,
        stamp: float = 0.0,
        stamp_text: str | None = None,
    ) -> bool:
        """Queue one validated record; ``False`` (and counted) when the buffer is full."""
        tally = self.tallies[key[0]]
        entry = self.pending.get(key)
        if entry is None:
            if key not in self.inflight:
                if self.slots >= self.slot_limit:
                    tally.dropped += 1
                    return False
                self.slots += 1
            self.pending[key] = Entry(record, id_field, stamp, stamp_text)
            tally.queued += 1
            return True
        tally.queued += 1
        tally.coalesced += 1
        self.coalesce(entry, record, stamp, stamp_text, tally)
        return True

    def coalesce(
        self,
        entry: Entry,
        record: dict[str, Any],
        stamp: float,
        stamp_text: str | None,
        tally: Tally,
    ) -> None:
        """Merge the newest update given for a pending key into its entry."""
        entry.touch(stamp, stamp_text)
        # Merging an update equal to the newest one changes nothing (merges are idempotent).
        # Note: == treats True == 1 == 1.0, an accepted imprecision for the cheap path.
        last = entry.last
        try:
            if record is last or record == last:
                return
        except Exception:  # a value that cannot be compared: merge it, never lose it
            pass
        self._merge_over(entry, record, tally)
        entry.last = record

    def _merge_over(self, entry: Entry, record: dict[str, Any], tally: Tally) -> None:
        """Merge ``record`` over ``entry`` (it wins every field it has)."""
        current = entry.record
        token = record.get("session_token")
        if token is not None:
            previous = current.get("session_token")
            tokens = entry.tokens
            if tokens is not None:
                tokens.pop(token, None)
            if previous is not None and previous != token:
                if tokens is None:
                    entry.tokens = tokens = {}
                tokens[previous] = None
                if len(tokens) > entry.max_tokens:
                    del tokens[next(iter(tokens))]
                    tally.dropped += 1
        entry.record = merge_update(current, record)

    def drain(self) -> dict[Key, Entry]:
        """Move everything pending to in flight and return it (the caller owns it)."""
        drained = self.pending
        self.pending = {}
        if self.inflight:
            self.inflight.update(dict.fromkeys(drained, True))
        else:
            self.inflight = dict.fromkeys(drained, True)
        return drained

    def merge_back(self, key: Key, id_field: str, records: list[Timed]) -> None:
        """Put one key's records from a failed send back, ordered by stamp.

        ``records`` are in send order; the key must still be in flight. A record older
        than (or as old as) the key's pending update goes *under* it; a newer one
        (possible only with explicit ``modified_time`` values) goes over it.
        """
        tally = self.tallies[key[0]]
        for record, stamp, stamp_text in reversed(records):  # newest first: older tokens first
            entry = self.pending.get(key)
            if entry is None:
                self.pending[key] = Entry(record, id_field, stamp, stamp_text)
            else:
                self._merge_timed(entry, record, stamp, stamp_text, tally)

    def reassert(self, records: Iterable[tuple[Key, str, Timed]]) -> None:
        """Queue delivered records again under their newer stamps (see ``Unchanged.touch``).

        A key with a pending update gets the record merged by stamp; any other takes a
        free slot, and is left out when none is free (its values were delivered).
        """
        for key, id_field, (record, stamp, stamp_text) in records:
            entry = self.pending.get(key)
            if entry is not None:
                self._merge_timed(entry, record, stamp, stamp_text, self.tallies[key[0]])
            elif key in self.inflight or self.slots < self.slot_limit:
                if key not in self.inflight:
                    self.slots += 1
                self.pending[key] = Entry(record, id_field, stamp, stamp_text)

    def _merge_timed(
        self,
        entry: Entry,
        record: dict[str, Any],
        stamp: float,
        stamp_text: str | None,
        tally: Tally,
    ) -> None:
        if stamp > entry.stamp:
            self._merge_over(entry, record, tally)
            entry.touch(stamp, stamp_text)
            return
        token = record.get("session_token")
        merged = merge_update(record, entry.record)
        if token is not None and token != merged.get("session_token"):
            tokens = entry.tokens
            if tokens is None:
                entry.tokens = {token: None}
            elif token not in tokens:
                if len(tokens) >= entry.max_tokens:  # it would be the oldest: evicted at once
                    tally.dropped += 1
                else:
                    entry.tokens = {token: None, **tokens}
        entry.record = merged

    def release(self, keys: Iterable[Key]) -> None:
        """These keys are no longer in flight (sent, given up, or merged back)."""
        inflight = self.inflight
        pending = self.pending
        for key in keys:
            if inflight.pop(key, None) is not None and key not in pending:
                self.slots -= 1

    def observe(self, total_bytes: int, records: int) -> None:
        """Learn the serialized size per record; the byte bound becomes a slot bound."""
        if records <= 0:
            return
        sample = total_bytes / records
        self.bytes_per_record = 0.5 * self.bytes_per_record + 0.5 * sample
        by_bytes = int(self.max_bytes // max(1.0, self.bytes_per_record))
        self.slot_limit = max(1, min(self.max_records, by_bytes))
        self.wake_slots = max(1, self.slot_limit // 2)

    @property
    def idle(self) -> bool:
        """Nothing pending and nothing in flight."""
        return not self.pending and not self.inflight
