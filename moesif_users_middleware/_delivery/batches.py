"""Turning drained entries into POST bodies: serialize each record once, pack by count and bytes.

Records are serialized to compact ASCII JSON (so characters equal bytes), one string per
record; a batch body is ``[`` + the strings joined by ``,`` + ``]``: a batch is encoded
once, and a part of it (after a 413) is re-joined, not re-encoded. Each record's
``modified_time`` (its entry's stamp) is appended to its string last, so the string
before it gives the key's fingerprint for skip-unchanged: the same values at another
moment are the same update.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .._time import utc_text
from .buffer import Entry, Timed
from .kinds import Key

__all__ = ["Batch", "Item", "pack", "serialize"]

_ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=False)


@dataclass
class Item:
    """One serialized record; ``main`` marks a key's merged record (vs. an older token)."""

    key: Key
    record: dict[str, Any]
    text: str
    main: bool
    stamp: float = 0.0
    stamp_text: str | None = None
    fingerprint: int = 0  # of the record without its modified_time

    @property
    def timed(self) -> Timed:
        """The record with its stamp (to merge it back or remember it)."""
        return self.record, self.stamp, self.stamp_text


@dataclass
class Batch:
    """Records sent in one POST."""

    items: list[Item] = field(default_factory=list)
    size: int = 2  # the brackets

    def body(self) -> bytes:
        """The JSON array body."""
        return ("[" + ",".join(item.text for item in self.items) + "]").encode("ascii")

    def halves(self) -> tuple[Batch, Batch]:
        """Split in two (after a 413, or to find the record a 400 refused)."""
        middle = len(self.items) // 2
        return batch_of(self.items[:middle]), batch_of(self.items[middle:])

    def without(self, index: int) -> Batch:
        """The batch less its ``index``-th record (one the API refused)."""
        return batch_of(self.items[:index] + self.items[index + 1 :])


def batch_of(items: list[Item]) -> Batch:
    """A batch of these items."""
    return Batch(items, 2 + sum(len(item.text) for item in items) + max(0, len(items) - 1))


def serialize(
    entries: Iterable[tuple[Key, Entry]],
) -> tuple[list[Item], list[tuple[Key, dict[str, Any], Exception]]]:
    """Serialize every entry's records; unserializable ones come back as errors.

    A record fails here only if the caller changed it after queueing (validation ran
    when it was queued).
    """
    items: list[Item] = []
    errors: list[tuple[Key, dict[str, Any], Exception]] = []
    encode = _ENCODER.encode
    for key, entry in entries:
        records = entry.records()
        last = len(records) - 1
        stamp, stamp_text = entry.stamp, entry.stamp_text
        moment = ',"modified_time":"' + (stamp_text or utc_text(stamp)) + '"}'
        for index, record in enumerate(records):
            try:
                if "modified_time" in record:  # the caller's; the entry's stamp says which
                    text = encode({k: v for k, v in record.items() if k != "modified_time"})
                else:
                    text = encode(record)
            except (TypeError, ValueError, RecursionError, RuntimeError) as exc:
                errors.append((key, record, exc))
                continue
            items.append(
                Item(key, record, text[:-1] + moment, index == last, stamp, stamp_text, hash(text))
            )
    return items, errors


def pack(
    items: Iterable[Item], batch_size: int, max_batch_bytes: int
) -> tuple[list[Batch], list[Item]]:
    """Batches of at most ``batch_size`` records and ``max_batch_bytes`` bytes, in order.

    Returns ``(batches, too_large)``: an item that cannot fit even alone is left out.
    """
    batches: list[Batch] = []
    too_large: list[Item] = []
    current = Batch()
    for item in items:
        length = len(item.text)
        if length + 2 > max_batch_bytes:
            too_large.append(item)
            continue
        extra = length + (1 if current.items else 0)
        if current.items and (
            len(current.items) >= batch_size or current.size + extra > max_batch_bytes
        ):
            batches.append(current)
            current = Batch()
            extra = length
        current.items.append(item)
        current.size += extra
    if current.items:
        batches.append(current)
    return batches, too_large
