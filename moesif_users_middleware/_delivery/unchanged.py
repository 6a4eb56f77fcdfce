"""The one place that decides "unchanged", before a capture is finished and before a send.

- **Captures**: a capture equal to the last one accepted for its key, within
  ``interval`` (``min_update_interval``), is a repeat: it is counted, not finished again.
  A direct update of the key (``queue_user``) or a lost record forgets what was
  remembered, so the next capture is finished whatever it holds.
- **Records**: a record identical to the last one delivered for its key within
  ``interval`` (compared by a fingerprint of its serialized form, without its
  ``modified_time``) is not sent again.

A repeat not sent is *touched*: it is newer than what was delivered. Within one process
that changes nothing; across processes another one may have sent other values for the
key meanwhile, and the receiver keeps the newest ``modified_time``. So once ``interval``
has passed since the delivery (or at shutdown), :meth:`Unchanged.due` hands the
delivered record back with the repeat's moment, to be sent once more.

Not thread-safe: the engine calls it with its lock held (captures: under the inbox lock).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable

from .buffer import Timed
from .kinds import Key

__all__ = ["Unchanged"]


class _Delivered:
    """What was last delivered for one key, and the newest repeat of it not sent."""

    __slots__ = ("at", "fingerprint", "id_field", "record", "stamp", "touched", "touched_text")

    def __init__(self, fingerprint: int, at: float, timed: Timed, id_field: str) -> None:
        self.fingerprint = fingerprint
        self.at = at  # when (monotonic clock)
        self.record, self.stamp, _ = timed
        self.id_field = id_field
        self.touched = 0.0  # the moment of the newest repeat not sent (0: none)
        self.touched_text: str | None = None


class Unchanged:
    """Bounded memories of the last capture accepted and the last record delivered, per key."""

    def __init__(self, capacity: int, interval: float) -> None:
        self.capacity = capacity
        self.interval = interval
        # key -> (signature, expiry, the keys of the records that capture queued)
        self._captures: dict[Key, tuple[Hashable, float, tuple[Key, ...]]] = {}
        self._delivered: OrderedDict[Key, _Delivered] = OrderedDict()
        self._touched: dict[Key, None] = {}  # keys with a repeat to re-assert

    # -- captures ----------------------------------------------------------------------

    def repeat(self, key: Key, signature: Hashable, now: float) -> tuple[Key, ...] | None:
        """If a capture with ``signature`` repeats the last one accepted for ``key``: the
        keys of the records that one queued (a user's capture may update its company too)."""
        last = self._captures.get(key)
        if last is not None and now < last[1] and last[0] == signature:
            return last[2]
        return None

    def remember(self, key: Key, signature: Hashable, now: float, keys: tuple[Key, ...]) -> None:
        """A capture was accepted for ``key``, queueing records for ``keys``; an equal one
        within ``interval`` repeats it."""
        if self.interval <= 0:
            return
        captures = self._captures
        if len(captures) >= self.capacity:
            captures.clear()
        captures[key] = (signature, now + self.interval, keys)

    def forget(self, key: Key) -> None:
        """The next capture for ``key`` is finished whatever it holds."""
        self._captures.pop(key, None)

    def forget_all(self) -> None:
        """Every next capture is finished (after records were lost)."""
        self._captures.clear()

    # -- records -----------------------------------------------------------------------

    def unchanged(self, key: Key, fingerprint: int, now: float) -> bool:
        """Whether this exact record was delivered for ``key`` less than ``interval`` ago."""
        if self.interval <= 0:
            return False
        hit = self._delivered.get(key)
        return hit is not None and hit.fingerprint == fingerprint and now - hit.at < self.interval

    def delivered(
        self, key: Key, fingerprint: int, now: float, timed: Timed, id_field: str
    ) -> None:
        """Remember a delivery (evicting the least recently delivered key when full)."""
        if self.interval <= 0:
            return
        entries = self._delivered
        previous = entries.get(key)
        current = entries[key] = _Delivered(fingerprint, now, timed, id_field)
        entries.move_to_end(key)
        if previous is not None and previous.touched > current.stamp:
            current.touched, current.touched_text = previous.touched, previous.touched_text
        else:
            self._touched.pop(key, None)
        if len(entries) > self.capacity:
            evicted, _ = entries.popitem(last=False)
            self._touched.pop(evicted, None)

    def touch(self, key: Key, stamp: float, stamp_text: str | None) -> None:
        """A repeat of the key's delivered record, of moment ``stamp``, was not sent."""
        hit = self._delivered.get(key)
        if hit is not None and stamp > hit.stamp and stamp > hit.touched:
            hit.touched, hit.touched_text = stamp, stamp_text
            self._touched[key] = None

    def due(self, now: float, everything: bool = False) -> list[tuple[Key, str, Timed]]:
        """Delivered records to send again under their repeat's moment (and forget them).

        Those delivered ``interval`` ago or longer; all of them when ``everything``.
        """
        out: list[tuple[Key, str, Timed]] = []
        if not self._touched:
            return out
        entries = self._delivered
        for key in list(self._touched):
            hit = entries.get(key)
            if hit is None:
                del self._touched[key]
            elif everything or now - hit.at >= self.interval:
                del self._touched[key]
                del entries[key]  # so the record is not skipped as unchanged again
                out.append((key, hit.id_field, (hit.record, hit.touched, hit.touched_text)))
        return out

    def any_due(self, now: float) -> bool:
        """Whether :meth:`due` would return something now."""
        entries = self._delivered
        for key in self._touched:
            hit = entries.get(key)
            if hit is None or now - hit.at >= self.interval:
                return True
        return False

    def __len__(self) -> int:
        return len(self._delivered)
