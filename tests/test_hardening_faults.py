"""Fault matrix: the sender against every kind of API failure, over real loopback HTTP.

For each fault: what the sender does (retries, splits, drops, counts), that nothing it
accepted is lost once the fault clears within the retry budget, that nothing is
delivered twice, and that the request path is never slowed while the API is down.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

pytest.importorskip("flask")  # hardening_apps builds Flask and Starlette apps
pytest.importorskip("starlette")

from faults import (
    Accept,
    AcceptThenReset,
    Action,
    Blackhole,
    Drip,
    FaultServer,
    Garbage,
    Reply,
    Reset,
    TooLarge,
    Truncate,
)
from hardening_apps import KINDS, Answer, make_site, request_header
from servers import CollectorHandle

from moesif_users_middleware._delivery.retry import RetryPolicy
from moesif_users_middleware.sender import Sender, _reset_senders_for_tests, get_sender

FAST_RETRY = RetryPolicy(
    backoff_base=0.02,
    backoff_cap=0.1,
    batch_deadline=5.0,
    retry_after_cap=5.0,
    cycle_backoff_base=0.02,
    cycle_backoff_cap=0.1,
)
USERS = 12


@pytest.fixture(autouse=True)
def _no_leftover_senders() -> Iterator[None]:
    yield
    _reset_senders_for_tests()
    wait_for(lambda: not [t for t in threading.enumerate() if t.name == "moesif-users-sender"])


@pytest.fixture
def faults(collector: CollectorHandle) -> Iterator[FaultServer]:
    with FaultServer(forward_to=collector.url) as server:
        yield server


def make_sender(app_id: str, url: str, retry: RetryPolicy = FAST_RETRY, **options: Any) -> Sender:
    options.setdefault("flush_interval", 60.0)
    options.setdefault("timeout", 2.0)
    options.setdefault("shutdown_timeout", 0.5)
    return get_sender(app_id, url, _retry=retry, **options)


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.01)


def first_updates() -> list[dict[str, Any]]:
    return [
        {"user_id": f"u{i}", "session_token": f"t1-{i}", "metadata": {"v": 1, "first": i}}
        for i in range(USERS)
    ]


def newer_updates() -> list[dict[str, Any]]:
    return [
        {"user_id": f"u{i}", "session_token": f"t2-{i}", "metadata": {"v": 2}} for i in range(USERS)
    ]


def assert_latest_profiles(collector: CollectorHandle, app_id: str) -> None:
    profiles = {p["user_id"]: p for p in collector.list_users(app_id)}
    assert sorted(profiles) == sorted(f"u{i}" for i in range(USERS))
    for i in range(USERS):
        profile = profiles[f"u{i}"]
        assert profile["metadata"] == {"v": 2, "first": i}
        assert profile["session_tokens"] == [f"t1-{i}", f"t2-{i}"]


def assert_nothing_twice(faults: FaultServer, collector: CollectorHandle, app_id: str) -> None:
    records = faults.accepted_records()
    repeats = Counter(json.dumps(r, sort_keys=True) for r in records)
    assert max(repeats.values()) == 1, repeats.most_common(3)
    # the collector stored exactly what was acknowledged: no request got in unanswered
    assert collector.stats(app_id)["records"] == len(records)
    assert not [r for r in faults.received if r.forwarded and r.status is None]


# --- faults the sender retries -------------------------------------------------------------


@dataclass(frozen=True)
class Fault:
    make: Callable[[], Action]
    timeout: float = 2.0  # the sender's per-request timeout for this fault


RETRIED: dict[str, Fault] = {
    "500": Fault(lambda: Reply(500)),
    "502-html": Fault(
        lambda: Reply(502, b"<html>Bad Gateway</html>", {"Content-Type": "text/html"})
    ),
    "503": Fault(lambda: Reply(503)),
    "504": Fault(lambda: Reply(504)),
    "408": Fault(lambda: Reply(408)),
    "429": Fault(lambda: Reply(429)),
    "429-retry-after": Fault(lambda: Reply(429, headers={"Retry-After": "0.2"})),
    "503-retry-after": Fault(lambda: Reply(503, headers={"Retry-After": "0.2"})),
    "429-retry-after-past-date": Fault(
        lambda: Reply(429, headers={"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"})
    ),
    "429-retry-after-garbage": Fault(lambda: Reply(429, headers={"Retry-After": "soon"})),
    "reset": Fault(Reset),
    "blackhole": Fault(Blackhole, timeout=0.5),
    "slow-past-timeout": Fault(lambda: Reply(503, delay=1.5), timeout=0.5),
    "truncated-answer": Fault(Truncate),
    "garbage-answer": Fault(Garbage),
}


@pytest.mark.parametrize("name", list(RETRIED))
def test_retried_fault_loses_nothing_and_sends_nothing_twice(
    name: str, faults: FaultServer, collector: CollectorHandle, app_id: str
) -> None:
    fault = RETRIED[name]
    faults.mode = fault.make()
    sender = make_sender(app_id, faults.url, timeout=fault.timeout, flush_interval=0.02)
    assert sender.queue_users(first_updates())
    wait_for(lambda: len(faults.received) >= 2)  # failing, and retrying
    assert sender.queue_users(newer_updates())  # newer values arrive during the outage
    faults.mode = Accept()
    faults.release()
    assert sender.flush(timeout=15) is True

    assert all(r.status is None or r.status >= 400 for r in faults.received[:2])
    assert_latest_profiles(collector, app_id)
    assert_nothing_twice(faults, collector, app_id)
    stats = sender.stats()
    assert stats["retries"] >= 1
    assert (stats["failed"], stats["dropped"]) == (0, 0)
    assert stats["queued"] == 2 * USERS
    assert stats["sent"] == len(faults.accepted_records())
    assert stats["batches"] == len(faults.accepted)


def test_retry_after_spaces_the_attempts(faults: FaultServer, app_id: str) -> None:
    faults.script(
        Reply(503, headers={"Retry-After": "0.4"}), Reply(429, headers={"Retry-After": "0.4"})
    )
    sender = make_sender(app_id, faults.url)
    sender.queue_user({"user_id": "spaced"})
    assert sender.flush(timeout=10) is True
    times = [r.time for r in faults.received]
    assert [r.status for r in faults.received] == [503, 429, 201]
    assert min(b - a for a, b in itertools.pairwise(times)) >= 0.35


def test_huge_retry_after_is_capped(faults: FaultServer, app_id: str) -> None:
    capped = RetryPolicy(
        backoff_base=0.02,
        backoff_cap=0.1,
        batch_deadline=5.0,
        retry_after_cap=0.3,
        cycle_backoff_base=0.02,
        cycle_backoff_cap=0.1,
    )
    faults.script(Reply(429, headers={"Retry-After": "86400"}))
    sender = make_sender(app_id, faults.url, retry=capped)
    sender.queue_user({"user_id": "capped"})
    assert sender.flush(timeout=10) is True
    first, second = faults.received
    assert 0.25 <= second.time - first.time < 5.0


# --- faults that drop the batch ------------------------------------------------------------

DROPPED = {
    "400": Reply(400, {"error": "invalid user", "field": "user_id"}),
    "401": Reply(401, {"message": "unknown application id"}),
    "403": Reply(403),
    "404": Reply(404, b"not found", {"Content-Type": "text/plain"}),
    "422": Reply(422),
}


@pytest.mark.parametrize("name", list(DROPPED))
def test_rejected_batch_is_dropped_counted_and_never_resent(
    name: str, faults: FaultServer, collector: CollectorHandle, app_id: str
) -> None:
    faults.script(DROPPED[name])
    sender = make_sender(app_id, faults.url)
    assert sender.queue_users(first_updates())
    assert sender.flush(timeout=5) is False
    assert [r.status for r in faults.received] == [int(name)]
    stats = sender.stats()
    assert (stats["failed"], stats["retries"], stats["sent"]) == (USERS, 0, 0)
    assert collector.list_users(app_id) == []

    # the API is fine again: later updates go through, the dropped ones stay dropped
    sender.queue_user({"user_id": "after"})
    assert sender.flush(timeout=5) is True
    assert [r["user_id"] for r in faults.accepted_records()] == ["after"]
    assert [p["user_id"] for p in collector.list_users(app_id)] == ["after"]


# --- 413: split until it fits ----------------------------------------------------------------


@pytest.mark.parametrize("max_records", [1, 5])
def test_413_splits_keep_every_record_once_and_in_order(
    max_records: int, faults: FaultServer, collector: CollectorHandle, app_id: str
) -> None:
    faults.mode = TooLarge(max_records=max_records)
    sender = make_sender(app_id, faults.url)
    sender.queue_users(first_updates())
    sender.queue_users(newer_updates())  # coalesced: two records per user (two tokens)
    assert sender.flush(timeout=10) is True
    assert all(len(r.records) <= max_records for r in faults.accepted)
    assert_latest_profiles(collector, app_id)  # token order survived the halving
    assert_nothing_twice(faults, collector, app_id)
    stats = sender.stats()
    assert (stats["sent"], stats["failed"], stats["retries"]) == (2 * USERS, 0, 0)


# --- an answer lost after the API accepted ----------------------------------------------------


def test_lost_answer_resends_and_the_profile_is_unchanged_by_the_repeat(
    faults: FaultServer, collector: CollectorHandle, app_id: str
) -> None:
    faults.script(AcceptThenReset())
    sender = make_sender(app_id, faults.url)
    sender.queue_users(first_updates())
    assert sender.flush(timeout=10) is True
    first, second = faults.received
    assert first.forwarded  # stored by the collector...
    assert first.status is None  # ...but the sender never heard so
    assert second.status == 201
    # at-least-once: the collector saw the batch twice, and merging it twice is harmless
    assert collector.stats(app_id)["records"] == 2 * USERS
    for i in range(USERS):
        profile = collector.get_user(app_id, f"u{i}")
        assert profile is not None
        assert profile["session_tokens"] == [f"t1-{i}"]
        assert profile["metadata"] == {"v": 1, "first": i}
    assert sender.stats()["retries"] == 1


# --- an outage that outlasts the batch deadline -------------------------------------------------


def test_outage_longer_than_the_batch_deadline_keeps_everything(
    faults: FaultServer, collector: CollectorHandle, app_id: str
) -> None:
    # Retry-After beyond the deadline: every cycle makes one full-length attempt, gives up
    # and merges its batch back under whatever was queued meanwhile.
    short = RetryPolicy(
        backoff_base=0.02,
        backoff_cap=0.05,
        batch_deadline=0.35,
        retry_after_cap=1.0,
        cycle_backoff_base=0.02,
        cycle_backoff_cap=0.05,
    )
    faults.mode = Reply(503, headers={"Retry-After": "0.4"})
    sender = make_sender(app_id, faults.url, retry=short, flush_interval=0.02)
    sender.queue_users(first_updates())
    wait_for(lambda: len(faults.received) >= 3)  # three cycles gave up
    sender.queue_users(newer_updates())
    wait_for(lambda: len(faults.received) >= 5)
    faults.mode = Accept()
    assert sender.flush(timeout=10) is True
    assert_latest_profiles(collector, app_id)
    assert_nothing_twice(faults, collector, app_id)
    assert sender.stats()["failed"] == 0
    assert sender.stats()["retries"] == 0  # no attempt fitted in any batch deadline


def test_an_attempt_is_never_cut_short_by_the_batch_deadline(
    faults: FaultServer, collector: CollectorHandle, app_id: str
) -> None:
    retry = RetryPolicy(
        backoff_base=0.01,
        backoff_cap=0.01,
        batch_deadline=1.0,
        retry_after_cap=1.0,
        cycle_backoff_base=0.01,
        cycle_backoff_cap=0.01,
    )
    faults.script(Reply(503, delay=0.6))  # the retry starts with about 0.4 s of deadline left
    faults.mode = Accept(delay=0.8)  # healthy, well within the 2 s timeout
    sender = make_sender(app_id, faults.url, retry=retry, timeout=2.0)
    sender.queue_user({"user_id": "once", "session_token": "t"})
    assert sender.flush(timeout=10) is True
    wait_for(lambda: all(r.status is not None for r in faults.received[1:]))
    assert collector.stats(app_id)["records"] == 1


# --- a slow API never blocks the caller ----------------------------------------------------------


def test_queueing_never_waits_for_a_slow_answer(
    faults: FaultServer, collector: CollectorHandle, app_id: str
) -> None:
    faults.script(Accept(delay=1.5))
    sender = make_sender(app_id, faults.url, flush_interval=0.01)
    sender.queue_user({"user_id": "first"})
    wait_for(lambda: len(faults.received) >= 1)  # the worker waits for a slow answer now
    started = time.monotonic()
    for i in range(500):
        assert sender.queue_user({"user_id": f"q{i % 50}", "metadata": {"i": i}})
    elapsed = time.monotonic() - started
    assert elapsed < 0.75  # far less than the slow answer: queueing never waited for it
    assert sender.flush(timeout=15) is True
    profiles = {p["user_id"]: p for p in collector.list_users(app_id)}
    assert len(profiles) == 51
    assert profiles["q49"]["metadata"] == {"i": 499}
    assert sender.stats()["retries"] == 0


def test_full_queue_during_an_outage_drops_new_users_but_merges_pending_ones(
    faults: FaultServer, collector: CollectorHandle, app_id: str
) -> None:
    faults.mode = Blackhole()
    sender = make_sender(app_id, faults.url, max_queue_size=5, timeout=3.0, flush_interval=0.01)
    assert sender.queue_users([{"user_id": f"p{i}", "metadata": {"v": 1}} for i in range(5)])
    wait_for(lambda: len(faults.received) >= 1)  # in flight, never answered
    assert not any(sender.queue_user({"user_id": f"new{i}"}) for i in range(10))
    assert all(sender.queue_user({"user_id": f"p{i}", "metadata": {"v": 2}}) for i in range(5))
    faults.mode = Accept()
    faults.release()
    assert sender.flush(timeout=10) is True
    profiles = {p["user_id"]: p["metadata"] for p in collector.list_users(app_id)}
    assert profiles == {f"p{i}": {"v": 2} for i in range(5)}
    stats = sender.stats()
    assert stats["dropped"] == 10
    assert stats["failed"] == 0


# --- a trickling answer ------------------------------------------------------------------------


def test_trickling_answer_is_abandoned_after_the_timeout(faults: FaultServer, app_id: str) -> None:
    faults.script(Drip(interval=0.1, size=40))  # about 4 s for the whole answer
    short = RetryPolicy(
        backoff_base=0.02,
        backoff_cap=0.05,
        batch_deadline=0.5,
        retry_after_cap=1.0,
        cycle_backoff_base=0.02,
        cycle_backoff_cap=0.05,
    )
    sender = make_sender(app_id, faults.url, retry=short, timeout=0.3, flush_interval=0.02)
    sender.queue_user({"user_id": "trickled"})
    # bounded by timeout: the first attempt is abandoned and a second one follows quickly
    wait_for(lambda: len(faults.received) >= 2, timeout=2.0)
    assert faults.received[0].status is None  # still trickling when it was given up
    wait_for(lambda: [r["user_id"] for r in faults.accepted_records()] == ["trickled"])


# --- the request path is never slowed --------------------------------------------------------


def timed(call: Callable[[], Answer], expected: Answer) -> float:
    started = time.monotonic()
    answer = call()
    elapsed = time.monotonic() - started
    assert answer == expected
    return elapsed


@pytest.mark.parametrize("kind", KINDS)
def test_requests_during_a_blackhole_are_as_fast_as_with_a_healthy_api(
    kind: str, faults: FaultServer, collector: CollectorHandle, app_id: str
) -> None:
    requests = 30
    sender = make_sender(app_id, faults.url, timeout=3.0, flush_interval=0.01)
    site = make_site(
        kind,
        {
            "application_id": app_id,
            "base_url": faults.url,
            "identify_user": lambda request, response: request_header(request, "X-User"),
            "get_metadata": lambda request, response: {"kind": kind},
        },
    )
    expected = make_site(kind, None).request()

    def call(user: str) -> Callable[[], Answer]:
        return lambda: site.request(headers={"X-User": user})

    site.request(headers={"X-User": "warm-up"})
    assert sender.flush(timeout=5) is True
    healthy = [timed(call(f"h{i}"), expected) for i in range(requests)]
    assert sender.flush(timeout=5) is True

    faults.mode = Blackhole()
    site.request(headers={"X-User": "stuck"})
    wait_for(lambda: faults.received[-1].status is None)  # the sender waits on the blackhole
    dark = [timed(call(f"d{i}"), expected) for i in range(requests)]

    # A request that waited on the API would take the 3 s timeout; these take milliseconds.
    assert max(dark) < 1.5
    assert sum(dark) < max(10 * sum(healthy), 2.0)

    faults.mode = Accept()
    faults.release()
    assert sender.flush(timeout=10) is True
    stored = {p["user_id"] for p in collector.list_users(app_id)}
    assert stored == {"warm-up", "stuck"} | {f"h{i}" for i in range(requests)} | {
        f"d{i}" for i in range(requests)
    }
    assert_nothing_twice(faults, collector, app_id)
