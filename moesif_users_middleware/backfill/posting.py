"""Posting one sealed batch of ``moesif-users send`` (the sender thread's side).

:class:`BatchPoster` posts over the client's one reused connection with the sender's
retry rules (``post_with_retries``: 408/429/5xx and network errors retried with backoff,
``Retry-After`` honoured) until ``retry_timeout`` runs out, and splits with
``deliver_split``: 413 halves the batch, 400/422 drops the record the API names or
bisects down to the refused one. It returns the refused records and raises
:class:`StopSending` when the run cannot go on (the API unreachable past the budget, any
other 4xx, or an interrupt while retrying).
"""

from __future__ import annotations

import threading
import time

from .._delivery.post import Answer, Outcome, Part, deliver_split, post_with_retries, refusal
from ..errors import ApiError
from ..transport import UsersClient
from .batching import Batch, batch_body
from .kinds import SendKind
from .options import BackfillOptions
from .progress import plural
from .summary import Summary

__all__ = ["BatchPoster", "Refusal", "StopSending"]

Refusal = tuple[int, str | None, str]  # the record's index in its batch, field, message


class StopSending(Exception):
    """The sender must stop: the reason is the message."""


class BatchPoster:
    """Posts batches to ``kind``'s batch endpoint; counts batches and retries in ``summary``."""

    def __init__(
        self,
        client: UsersClient,
        kind: SendKind,
        options: BackfillOptions,
        stopping: threading.Event,
        summary: Summary,
    ) -> None:
        self.client = client
        self.kind = kind
        self.options = options
        self.stopping = stopping  # set: end retry waits early
        self.summary = summary

    def deliver(self, batch: Batch) -> list[Refusal]:
        """Send a batch; returns the records the API refused as (index, field, message).

        Raises ``StopSending`` when the API stays unavailable or refuses the batch as a whole.
        """
        refused: list[Refusal] = []
        whole = len(batch.parts)

        def post(part: Part) -> Answer:
            if len(part) == whole:  # encoded (and gzipped) ahead, while the last one was sent
                return self._post(batch.body, batch.encoding)
            return self._post(*batch_body((batch.parts[i] for i in part), self.options.gzip))

        def settle(part: Part, answer: Answer) -> None:
            outcome = answer.outcome
            if outcome is Outcome.SENT:
                self.summary.batches += 1
            elif outcome is Outcome.TOO_LARGE:
                refused.append((part[0], None, "too large (413)"))
            elif outcome is Outcome.REJECTED and answer.status in (400, 422):
                _, field_name, message = refusal(answer)
                refused.extend((index, field_name, message) for index in part)
            elif outcome is Outcome.REJECTED:
                error = ApiError(answer.status or 0, answer.text)
                raise StopSending(f"the API refused the batch: {error}")
            elif self.stopping.is_set():
                raise StopSending(f"interrupted while retrying: {answer.error}")
            else:
                attempts = plural(answer.attempts, "attempt")
                raise StopSending(f"not delivered after {attempts}: {answer.error}")

        deliver_split(whole, post, settle, bisect_unnamed=True)
        return refused

    def _post(self, body: bytes, encoding: str | None) -> Answer:
        """POST with retries until 2xx, a final answer, or the retry budget ends."""
        client = self.client
        path = self.kind.batch_path
        deadline = time.monotonic() + self.options.retry_timeout
        answer = post_with_retries(
            lambda: client.post_body(path, body, encoding),
            self.options.retry,
            deadline=lambda: deadline,
            now=time.monotonic,
            wait_until=lambda moment: not self.stopping.wait(max(0.0, moment - time.monotonic())),
        )
        self.summary.retries += max(0, answer.attempts - 1)
        return answer
