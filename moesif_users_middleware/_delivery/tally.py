"""The sender's counters, kept per record kind (``stats()`` sums them; ``stats(kind)`` one)."""

from __future__ import annotations

from collections.abc import Iterable

from .kinds import KINDS

__all__ = ["COUNTERS", "Tally", "new_tallies", "total"]

# The keys of ``Sender.stats()``, in its order.
COUNTERS = (
    "queued",
    "coalesced",
    "skipped_unchanged",
    "sent",
    "batches",
    "retries",
    "failed",
    "dropped",
)


class Tally:
    """One kind's counters since the sender started (changed under the engine's lock)."""

    __slots__ = COUNTERS

    def __init__(self) -> None:
        self.queued = 0
        self.coalesced = 0
        self.skipped_unchanged = 0
        self.sent = 0
        self.batches = 0
        self.retries = 0
        self.failed = 0
        self.dropped = 0

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in COUNTERS}


def new_tallies() -> dict[str, Tally]:
    """A fresh tally for every kind, by kind name."""
    return {name: Tally() for name in KINDS}


def total(tallies: Iterable[Tally], counter: str) -> int:
    """One counter summed over several kinds."""
    return sum(getattr(tally, counter) for tally in tallies)
