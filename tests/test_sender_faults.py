"""The sender against a scripted fault server (500/429/413/400/401, resets, silence)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from faults import Accept, Blackhole, FaultServer, Reply, Reset, TooLarge
from servers import CollectorHandle

from moesif_users_middleware._delivery.retry import RetryPolicy
from moesif_users_middleware.sender import Sender, _reset_senders_for_tests, get_sender

FAST_RETRY = RetryPolicy(
    backoff_base=0.02,
    backoff_cap=0.1,
    batch_deadline=3.0,
    retry_after_cap=5.0,
    cycle_backoff_base=0.02,
    cycle_backoff_cap=0.1,
)


@pytest.fixture(autouse=True)
def _no_leftover_senders() -> Iterator[None]:
    yield
    _reset_senders_for_tests()
    # a worker abandoned inside an unanswered request ends once that request times out
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


def user_ids(server: FaultServer) -> list[str]:
    return [record["user_id"] for record in server.accepted_records()]


def test_server_errors_are_retried_until_accepted(
    faults: FaultServer, collector: CollectorHandle, app_id: str
) -> None:
    faults.script(Reply(500), Reply(502), Reply(503), Reset())
    sender = make_sender(app_id, faults.url)
    sender.queue_users([{"user_id": f"r{i}"} for i in range(5)])
    assert sender.flush(timeout=10) is True
    assert [r.status for r in faults.received] == [500, 502, 503, None, 201]
    assert sorted(user_ids(faults)) == [f"r{i}" for i in range(5)]
    assert len(collector.list_users(app_id)) == 5
    stats = sender.stats()
    assert stats["retries"] == 4
    assert stats["sent"] == 5
    assert stats["batches"] == 1
    assert stats["failed"] == 0


def test_429_retry_after_is_honoured(faults: FaultServer, app_id: str) -> None:
    faults.script(Reply(429, headers={"Retry-After": "0.6"}))
    sender = make_sender(app_id, faults.url)
    sender.queue_user({"user_id": "limited"})
    assert sender.flush(timeout=10) is True
    first, second = faults.received
    assert (first.status, second.status) == (429, 201)
    assert second.time - first.time >= 0.55
    assert sender.stats()["retries"] == 1


def test_retry_after_beyond_the_deadline_defers_to_a_later_cycle(
    faults: FaultServer, app_id: str
) -> None:
    retry = RetryPolicy(
        backoff_base=0.02,
        backoff_cap=0.1,
        batch_deadline=0.3,
        retry_after_cap=5.0,
        cycle_backoff_base=0.02,
        cycle_backoff_cap=0.1,
    )
    faults.script(Reply(503, headers={"Retry-After": "1"}))
    sender = make_sender(app_id, faults.url, retry=retry)
    sender.queue_user({"user_id": "deferred"})
    assert sender.flush(timeout=10) is True
    first, second = faults.received
    assert second.time - first.time >= 0.95
    assert user_ids(faults) == ["deferred"]


def test_413_splits_the_batch(faults: FaultServer, collector: CollectorHandle, app_id: str) -> None:
    faults.mode = TooLarge(max_records=3)
    sender = make_sender(app_id, faults.url)
    sender.queue_users([{"user_id": f"s{i}"} for i in range(10)])
    assert sender.flush(timeout=10) is True
    assert sorted(user_ids(faults)) == sorted(f"s{i}" for i in range(10))
    assert all(len(r.records) <= 3 for r in faults.accepted)
    assert [r.status for r in faults.received].count(413) >= 1
    assert collector.stats(app_id)["records"] == 10
    stats = sender.stats()
    assert stats["sent"] == 10
    assert stats["failed"] == 0
    assert stats["batches"] == len(faults.accepted)


def test_single_record_413_is_dropped(faults: FaultServer, app_id: str) -> None:
    faults.mode = TooLarge(max_records=0)
    sender = make_sender(app_id, faults.url)
    sender.queue_users([{"user_id": "a"}, {"user_id": "b"}])
    assert sender.flush(timeout=10) is False
    assert [r.status for r in faults.received] == [413, 413, 413]
    assert sender.stats()["failed"] == 2
    assert sender.stats()["retries"] == 0


def test_400_is_dropped_not_retried(
    faults: FaultServer, app_id: str, caplog: pytest.LogCaptureFixture
) -> None:
    faults.script(Reply(400, {"error": "invalid user", "field": "user_id"}))
    sender = make_sender(app_id, faults.url)
    sender.queue_users([{"user_id": "x"}, {"user_id": "y"}])
    with caplog.at_level(logging.WARNING, logger="moesif_users_middleware"):
        assert sender.flush(timeout=5) is False
    assert [r.status for r in faults.received] == [400]
    stats = sender.stats()
    assert (stats["failed"], stats["retries"], stats["sent"]) == (2, 0, 0)
    lines = [r.getMessage() for r in caplog.records if "400" in r.getMessage()]
    assert len(lines) == 1
    sender.queue_user({"user_id": "z"})
    assert sender.flush(timeout=5) is True
    assert user_ids(faults) == ["z"]


def test_401_says_the_application_id_was_rejected(
    faults: FaultServer, app_id: str, caplog: pytest.LogCaptureFixture
) -> None:
    faults.mode = Reply(401, {"message": f"bad id {app_id}"})
    sender = make_sender(app_id, faults.url)
    sender.queue_user({"user_id": "u"})
    with caplog.at_level(logging.WARNING, logger="moesif_users_middleware"):
        assert sender.flush(timeout=5) is False
    (line,) = [r for r in caplog.records if "401" in r.getMessage()]
    assert line.levelno == logging.ERROR
    assert "application id" in line.getMessage()
    assert app_id not in line.getMessage()
    assert len(faults.received) == 1


def test_failed_batch_goes_back_under_newer_updates(faults: FaultServer, app_id: str) -> None:
    retry = RetryPolicy(
        backoff_base=0.02,
        backoff_cap=0.05,
        batch_deadline=0.4,
        retry_after_cap=1.0,
        cycle_backoff_base=0.02,
        cycle_backoff_cap=0.05,
    )
    faults.mode = Reply(503, delay=0.15)
    sender = make_sender(app_id, faults.url, retry=retry, flush_interval=0.05)
    sender.queue_user(
        {"user_id": "m", "company_id": "old", "session_token": "t1", "metadata": {"a": 1, "b": 1}}
    )
    wait_for(lambda: len(faults.received) >= 1)
    sender.queue_user({"user_id": "m", "session_token": "t2", "metadata": {"a": 2}})
    # the first batch gave up and came back merged under the newer update (two records)
    wait_for(lambda: any(len(request.records) == 2 for request in faults.received))
    faults.mode = Accept()
    assert sender.flush(timeout=10) is True
    records = faults.accepted_records()
    times = {record.pop("modified_time") for record in records}
    assert len(times) == 1  # the newest update's moment, on every record of the user
    assert records == [
        {"user_id": "m", "session_token": "t1"},
        {"user_id": "m", "company_id": "old", "session_token": "t2", "metadata": {"a": 2, "b": 1}},
    ]


def test_connection_resets_and_silence_are_retried(faults: FaultServer, app_id: str) -> None:
    faults.script(Reset(), Blackhole(), Reset())
    sender = make_sender(app_id, faults.url, timeout=0.3)
    sender.queue_user({"user_id": "patient"})
    assert sender.flush(timeout=10) is True
    assert [r.status for r in faults.received] == [None, None, None, 201]
    assert user_ids(faults) == ["patient"]


def test_slow_answers_within_the_timeout_are_fine(faults: FaultServer, app_id: str) -> None:
    faults.mode = Accept(delay=0.3)
    sender = make_sender(app_id, faults.url, timeout=2.0)
    sender.queue_user({"user_id": "slow"})
    assert sender.flush(timeout=10) is True
    assert sender.stats()["retries"] == 0


def test_shutdown_interrupts_retries(faults: FaultServer, app_id: str) -> None:
    slow_retry = RetryPolicy(backoff_base=5.0, backoff_cap=5.0, batch_deadline=60.0)
    faults.mode = Reply(503)
    sender = make_sender(app_id, faults.url, retry=slow_retry, flush_interval=0.01)
    sender.queue_user({"user_id": "stuck"})
    wait_for(lambda: len(faults.received) >= 1)
    started = time.monotonic()
    sender.shutdown(timeout=0.3)
    assert time.monotonic() - started < 2.0
    assert not [t for t in threading.enumerate() if t.name == "moesif-users-sender"]


def test_shutdown_bounded_when_the_api_never_answers(faults: FaultServer, app_id: str) -> None:
    faults.mode = Blackhole()
    sender = make_sender(app_id, faults.url, timeout=30.0, flush_interval=0.01)
    sender.queue_user({"user_id": "void"})
    wait_for(lambda: len(faults.received) >= 1)
    started = time.monotonic()
    sender.shutdown(timeout=0.3)
    assert time.monotonic() - started < 2.0


def test_mock_transport_for_faults_a_server_cannot_produce(app_id: str) -> None:
    calls: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(len(request.content))
        if len(calls) == 1:
            raise httpx.WriteError("broken pipe mid-body")
        return httpx.Response(201, json={"records": 1})

    sender = get_sender(
        app_id,
        "http://moesif.invalid",
        flush_interval=60.0,
        _retry=FAST_RETRY,
        _transport=httpx.MockTransport(handler),
    )
    sender.queue_user({"user_id": "u"})
    assert sender.flush(timeout=5) is True
    assert len(calls) == 2
    assert sender.stats()["retries"] == 1
