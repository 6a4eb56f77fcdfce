"""Retry timing for the sender: exponential backoff with full jitter, capped Retry-After.

Within one batch, attempt ``n`` (from 0) waits ``uniform(0, min(backoff_cap,
backoff_base * 2**n))``, or the server's ``Retry-After`` capped at ``retry_after_cap``,
and the batch gives up (its records go back to the buffer) once the next attempt would
start after ``batch_deadline``. After a send cycle gave up, the next regular cycle waits
``uniform(0, min(cycle_backoff_cap, cycle_backoff_base * 2**failures))`` on top of the
flush interval.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

__all__ = ["DEFAULT_RETRY", "RetryPolicy", "is_retryable_status"]


def is_retryable_status(status_code: int) -> bool:
    """408, 429 and 5xx are worth retrying; other statuses are final."""
    return status_code in (408, 429) or status_code >= 500


@dataclass(frozen=True)
class RetryPolicy:
    """Backoff and deadline settings (seconds); tests use much smaller ones."""

    backoff_base: float = 0.5
    backoff_cap: float = 10.0
    batch_deadline: float = 30.0
    retry_after_cap: float = 60.0
    cycle_backoff_base: float = 1.0
    cycle_backoff_cap: float = 60.0

    def backoff(self, attempt: int, rng: random.Random | None = None) -> float:
        """Full-jitter delay before retry number ``attempt + 1`` of a batch."""
        ceiling = min(self.backoff_cap, self.backoff_base * 2.0 ** min(attempt, 62))
        return (rng or random).uniform(0.0, ceiling)

    def retry_after(self, seconds: float) -> float:
        """The server's ``Retry-After``, capped."""
        return min(max(0.0, seconds), self.retry_after_cap)

    def cycle_backoff(self, failures: int, rng: random.Random | None = None) -> float:
        """Extra delay before the next regular cycle after ``failures`` failed cycles in a row."""
        if failures <= 0:
            return 0.0
        ceiling = min(self.cycle_backoff_cap, self.cycle_backoff_base * 2.0 ** min(failures, 62))
        return (rng or random).uniform(0.0, ceiling)


DEFAULT_RETRY = RetryPolicy()
