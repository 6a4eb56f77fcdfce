"""Records into batches for ``moesif-users send``: each record validated and encoded once,
batches sealed by count, bytes, rejects or items read, and paced to ``max_rate``.

The calling thread fills one :class:`Filling` at a time and seals it into a :class:`Batch`
(the sending side posts it, see :mod:`.posting`); :class:`Pacer` holds sealed batches back
so that records go out at no more than ``max_rate`` per second.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from .._transport.body import compress
from ..models import ValidationError
from .items import Skipped, Unparsed
from .kinds import SendKind
from .options import BackfillOptions

__all__ = [
    "MAX_ITEMS_PER_BATCH",
    "MAX_REJECTS_PER_BATCH",
    "Batch",
    "Encode",
    "Filling",
    "Pacer",
    "Reject",
    "batch_body",
    "record_encoder",
    "records_per_batch",
]

MAX_REJECTS_PER_BATCH = 1000  # bounds memory when a long stretch of input is invalid
MAX_ITEMS_PER_BATCH = 10_000  # settles (and checkpoints) long stretches of skipped items
_ENCODE = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode

Reject = tuple[Any, str | None, str, Any]  # key, field, message, raw record


@dataclass
class Batch:
    """A sealed batch: its records as JSON, and the rejects read among them."""

    end: int  # position after this batch's last record
    cursor: Any  # key of the last record read
    keys: list[Any]
    parts: list[bytes]
    rejects: list[Reject]
    final: bool = False  # the end of the input: the run is complete once this settles
    body: bytes = b""
    encoding: str | None = None


class Filling:
    """The batch being read: its records as JSON so far, and the rejects among them."""

    __slots__ = ("keys", "parts", "rejects", "size", "start")

    def __init__(self, start: int) -> None:
        self.start = start  # the position it starts after
        self.keys: list[Any] = []
        self.parts: list[bytes] = []
        self.rejects: list[Reject] = []
        self.size = 0  # JSON bytes of the parts, with a comma each

    def add(self, key: Any, data: bytes) -> None:
        self.keys.append(key)
        self.parts.append(data)
        self.size += len(data) + 1

    def batch(self, end: int, cursor: Any, *, final: bool = False) -> Batch:
        """Sealed: ``end`` is the position after its last item, ``cursor`` that item's key."""
        return Batch(end, cursor, self.keys, self.parts, self.rejects, final=final)


def records_per_batch(options: BackfillOptions) -> int:
    """``batch_size``, lowered under ``max_rate``."""
    if options.max_rate is None:
        return options.batch_size
    # At least one batch a second: smooth, not bursty.
    return min(options.batch_size, max(1, int(options.max_rate)))


Encode = Callable[[Any, Any, Any, list[Reject]], bytes | None]


def record_encoder(kind: SendKind, max_batch_bytes: int) -> Encode:
    """``encode(key, value, raw, rejects)``: the record as JSON; None when skipped, or when
    rejected (added to ``rejects``)."""
    normalize, noun = kind.normalize, kind.noun

    def encode(key: Any, value: Any, raw: Any, rejects: list[Reject]) -> bytes | None:
        if type(value) is Unparsed:
            rejects.append((key, value.field, value.message, raw))
            return None
        if value is Skipped:
            return None
        try:
            # The noun names a record that is not an object: "user", "company".
            data = _ENCODE(normalize(value, noun)).encode()
        except ValidationError as exc:
            rejects.append((key, exc.field, exc.message, raw))
            return None
        except (TypeError, ValueError, RecursionError) as exc:
            rejects.append((key, None, str(exc) or type(exc).__name__, raw))
            return None
        if len(data) + 1 > max_batch_bytes - 2:  # a comma, the brackets
            message = f"{len(data)} bytes as JSON, over the batch limit of {max_batch_bytes} bytes"
            rejects.append((key, None, message, raw))
            return None
        return data

    return encode


def batch_body(parts: Iterable[bytes], gzip: bool) -> tuple[bytes, str | None]:
    """The records as a JSON array, gzipped (when large enough) if ``gzip``: (body, encoding)."""
    body = b"[" + b",".join(parts) + b"]"
    return compress(body) if gzip else (body, None)


class Pacer:
    """Holds batches back so that records go out at no more than ``rate`` per second."""

    def __init__(self, rate: float | None) -> None:
        self.rate = rate
        self.sent = 0
        self.started = time.monotonic()

    def wait(self, count: int, stop: threading.Event) -> None:
        if self.rate is None:
            return
        due = self.started + self.sent / self.rate
        self.sent += count
        delay = due - time.monotonic()
        if delay > 0:
            stop.wait(delay)
