"""Sending one batch: retries, ``Retry-After``, the deadline, 413 and 400 splitting.

Both the background sender and ``moesif-users send`` deliver through this module:

- :func:`post_with_retries` POSTs one encoded body until it is answered 2xx or with a
  final status, or until the next attempt could no longer start before the deadline.
  408, 429, 5xx and network errors are retried with exponential backoff and full jitter,
  or after the server's ``Retry-After`` (capped). The caller says how to wait (its own
  clock and interruptions: a shutdown, a Ctrl-C) and when the deadline is (re-read
  before each attempt, so a shutdown can bring it forward).
- :func:`deliver_split` sends a batch and its parts: a 413 splits it in halves (a single
  record answered 413 is refused as too large); a 400/422 that names the refused record
  (``{"index": 3, ...}``, as the local collector answers) drops that record and sends the
  rest, and one that does not either bisects down to the refused records or refuses the
  whole part, as the caller chooses.
"""

from __future__ import annotations

import enum
import json
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from .._transport.response import RawResponse
from ..errors import TransportError
from .retry import RetryPolicy, is_retryable_status

__all__ = ["Answer", "Outcome", "deliver_split", "post_with_retries", "refusal"]


class Outcome(enum.Enum):
    SENT = "sent"
    TOO_LARGE = "too large"  # 413
    REJECTED = "rejected"  # another final 4xx
    GAVE_UP = "gave up"  # retryable failures until the deadline


@dataclass(frozen=True)
class Answer:
    """How one POST ended: the outcome, and the last status, body text and failure seen."""

    outcome: Outcome
    status: int | None = None
    text: str = ""
    problem: str = ""  # the last retryable failure, short: "HTTP 503", a network error
    attempts: int = 1
    error: str = ""  # the last retryable failure in full (the ApiError's message)


Send = Callable[[], RawResponse]  # one attempt; raises TransportError for network trouble


def post_with_retries(
    send: Send,
    policy: RetryPolicy,
    *,
    deadline: Callable[[], float],
    now: Callable[[], float],
    wait_until: Callable[[float], bool],
    rng: random.Random | None = None,
    on_failure: Callable[[int, str, float | None], None] | None = None,
) -> Answer:
    """Send until answered (2xx or final), or until no attempt can start before ``deadline()``.

    ``wait_until(moment)`` sleeps until then on the caller's clock ``now``; ``False`` means
    interrupted (give up). ``on_failure(attempt, problem, retry_after)`` hears of every
    retryable failure (attempt 0 is the first) before the wait.
    """
    attempt = 0
    while True:
        if now() >= deadline():
            return Answer(Outcome.GAVE_UP, attempts=attempt, problem="deadline")
        retry_after: float | None = None
        try:
            response = send()
        except TransportError as exc:
            problem = error = str(exc)
            status: int | None = None
            text = ""
        else:
            status = response.status_code
            text = response.text
            if 200 <= status < 300:
                return Answer(Outcome.SENT, status, attempts=attempt + 1)
            if status == 413:
                return Answer(Outcome.TOO_LARGE, status, text, attempts=attempt + 1)
            if not is_retryable_status(status):
                return Answer(Outcome.REJECTED, status, text, attempts=attempt + 1)
            retry_after = response.retry_after
            problem = f"HTTP {status}"
            error = str(response.error())
        if on_failure is not None:
            on_failure(attempt, problem, retry_after)
        delay = (
            policy.backoff(attempt, rng) if retry_after is None else policy.retry_after(retry_after)
        )
        attempt += 1
        resume = now() + delay
        if resume > deadline() or not wait_until(resume):
            return Answer(Outcome.GAVE_UP, status, text, problem, attempt, error)


# A part of a batch, as the positions of its records in the whole batch.
Part = list[int]


def deliver_split(
    count: int,
    post: Callable[[Part], Answer],
    settle: Callable[[Part, Answer], None],
    *,
    bisect_unnamed: bool,
) -> None:
    """Send ``count`` records (``post(part)`` posts those positions) and settle every one.

    ``settle(part, answer)`` is called once per part that ended: sent, rejected, given up,
    or refused alone (a 413 record, or the one a 400/422 named). After a part gave up, the
    parts still waiting are settled as given up too, without being posted.
    """
    waiting: list[Part] = [list(range(count))]
    gave_up: Answer | None = None
    while waiting:
        part = waiting.pop()
        if gave_up is not None:
            settle(part, gave_up)
            continue
        answer = post(part)
        if answer.outcome is Outcome.GAVE_UP:
            gave_up = answer
        elif answer.outcome is Outcome.TOO_LARGE and len(part) > 1:
            waiting += _halves(part)
            continue
        elif answer.outcome is Outcome.REJECTED and answer.status in (400, 422):
            index = refusal(answer)[0]
            if index is not None and 0 <= index < len(part) and len(part) > 1:
                settle([part[index]], answer)
                waiting.append(part[:index] + part[index + 1 :])
                continue
            if bisect_unnamed and len(part) > 1:
                waiting += _halves(part)
                continue
        settle(part, answer)


def _halves(part: Part) -> list[Part]:
    middle = len(part) // 2
    return [part[middle:], part[:middle]]  # popped from the end: the first half goes first


def refusal(answer: Answer) -> tuple[int | None, str | None, str]:
    """``(index, field, message)`` from a 400 body such as the collector's."""
    try:
        data = json.loads(answer.text)
    except ValueError:
        return None, None, f"{answer.status} {answer.text[:300]}".strip()
    if not isinstance(data, Mapping):
        return None, None, f"{answer.status} {answer.text[:300]}"
    index = data.get("index")
    field_name = data.get("field")
    message = data.get("message") or data.get("error") or str(answer.status)
    return (
        index if type(index) is int else None,
        field_name if isinstance(field_name, str) else None,
        str(message),
    )
