"""``modified_time`` on every record, and the ordering it gives across processes.

Two senders with different base URLs that reach one collector stand in for two worker
processes: each has its own buffer and its own memory of what it delivered.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

import pytest
from faults import Accept, Blackhole, FaultServer
from samples import fast_retry
from servers import CollectorHandle

from moesif_users_middleware._delivery.buffer import PendingBuffer
from moesif_users_middleware._time import seconds_of, utc_text
from moesif_users_middleware.sender import (
    Sender,
    _reset_senders_for_tests,
    flush_all,
    get_sender,
)

FAST_RETRY = fast_retry(batch_deadline=30.0, retry_after_cap=1.0)
CANONICAL = "%Y-%m-%dT%H:%M:%S.%fZ"


@pytest.fixture(autouse=True)
def _no_leftover_senders() -> Iterator[None]:
    yield
    _reset_senders_for_tests()


@pytest.fixture
def faults(collector: CollectorHandle) -> Iterator[FaultServer]:
    with FaultServer(forward_to=collector.url) as server:
        yield server


def make_sender(app_id: str, url: str, **options: Any) -> Sender:
    options.setdefault("flush_interval", 60.0)
    options.setdefault("shutdown_timeout", 2.0)
    return get_sender(app_id, url, _retry=FAST_RETRY, **options)


def moment(text: str) -> float:
    assert datetime.strptime(text, CANONICAL), text  # UTC, milliseconds, Z
    assert len(text.rsplit(".", 1)[1]) == 4, text
    return seconds_of(text)


def wait_for(condition: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)


def test_utc_text_is_iso_8601_with_milliseconds() -> None:
    for seconds in (0.0, 1.5, 1_700_000_000.999, time.time()):
        expected = datetime.fromtimestamp(seconds, timezone.utc).strftime(CANONICAL)[:-4] + "Z"
        assert utc_text(seconds) == expected
        assert abs(seconds_of(utc_text(seconds)) - seconds) < 0.001


def test_every_record_carries_the_moment_of_its_newest_update(
    faults: FaultServer, app_id: str
) -> None:
    sender = make_sender(app_id, faults.url)
    sender.queue_user({"user_id": "a", "session_token": "t1"})
    time.sleep(0.05)
    before = time.time()
    sender.queue_user({"user_id": "a", "session_token": "t2", "metadata": {"n": 2}})
    after = time.time()
    sender.queue_user({"user_id": "b"})
    assert sender.flush(timeout=10)
    records = faults.accepted_records()
    assert [r["user_id"] for r in records] == ["a", "a", "b"]  # t1 alone, then the merge
    times = [moment(r["modified_time"]) for r in records]
    assert times[0] == times[1]  # the user's older token travels under the same moment
    assert before - 0.001 <= times[1] <= after
    assert times[2] >= times[1]


def test_an_explicit_modified_time_is_kept_as_given(
    faults: FaultServer, app_id: str, collector: CollectorHandle
) -> None:
    sender = make_sender(app_id, faults.url)
    sender.queue_user({"user_id": "given", "modified_time": "2031-05-06T07:08:09.123Z"})
    sender.queue_user(
        {"user_id": "dt", "modified_time": datetime(2030, 1, 2, 3, 4, 5, 678000, timezone.utc)}
    )
    assert sender.flush(timeout=10)
    sent = {r["user_id"]: r["modified_time"] for r in faults.accepted_records()}
    assert sent == {"given": "2031-05-06T07:08:09.123Z", "dt": "2030-01-02T03:04:05.678Z"}
    profile = collector.get_user(app_id, "given")
    assert profile is not None
    assert profile["modified_time"] == "2031-05-06T07:08:09.123Z"


def test_a_later_call_without_a_time_makes_the_update_newer(
    faults: FaultServer, app_id: str
) -> None:
    sender = make_sender(app_id, faults.url)
    sender.queue_user({"user_id": "u", "modified_time": "2020-01-01T00:00:00.000Z"})
    before = time.time()
    sender.queue_user({"user_id": "u", "company_id": "c"})
    assert sender.flush(timeout=10)
    (record,) = faults.accepted_records()
    assert moment(record["modified_time"]) >= before - 0.001


def test_a_failed_record_newer_by_its_time_merges_over_the_pending_one() -> None:
    key = ("users", "u")
    buffer = PendingBuffer(10, 10**9)
    buffer.add(key, {"user_id": "u", "company_id": "failed"}, "user_id", 200.0)
    failed = buffer.drain()[key].timed_records()
    record = {"user_id": "u", "company_id": "pending", "ip_address": "1.2.3.4"}
    buffer.add(key, record, "user_id", 100.0)
    buffer.merge_back(key, "user_id", failed)
    entry = buffer.pending[key]
    assert entry.record == {"user_id": "u", "company_id": "failed", "ip_address": "1.2.3.4"}
    assert entry.stamp == 200.0
    # ... and an older one (the usual case: it was queued first) merges under it.
    buffer = PendingBuffer(10, 10**9)
    buffer.add(
        key, {"user_id": "u", "company_id": "failed", "metadata": {"a": 1}}, "user_id", 100.0
    )
    failed = buffer.drain()[key].timed_records()
    buffer.add(key, {"user_id": "u", "company_id": "pending"}, "user_id", 200.0)
    buffer.merge_back(key, "user_id", failed)
    entry = buffer.pending[key]
    assert entry.record == {"user_id": "u", "company_id": "pending", "metadata": {"a": 1}}
    assert entry.stamp == 200.0


def test_a_repeat_sent_by_no_one_is_reasserted_after_the_interval(
    faults: FaultServer, app_id: str, collector: CollectorHandle
) -> None:
    """Process one sends v1, process two v2, then process one sees v1 again: it skips
    the repeat at first (it delivered v1 moments ago), then sends v1 once more, newer."""
    one = make_sender(app_id, faults.url, min_update_interval=0.6, flush_interval=0.05)
    two = make_sender(app_id, collector.url)
    v1 = {"user_id": "flip", "user_agent_string": "phone"}
    one.queue_user(v1)
    assert one.flush(timeout=10)
    two.queue_user({"user_id": "flip", "user_agent_string": "laptop"})
    assert two.flush(timeout=10)
    one.queue_user(dict(v1))
    assert one.flush(timeout=10)
    assert one.stats()["skipped_unchanged"] == 1
    profile = collector.get_user(app_id, "flip")
    assert profile is not None
    assert profile["user_agent_string"] == "laptop"  # for now
    wait_for(lambda: len(faults.accepted_records()) == 2, timeout=5)
    profile = collector.get_user(app_id, "flip")
    assert profile is not None
    assert profile["user_agent_string"] == "phone"
    first, again = faults.accepted_records()
    assert moment(again["modified_time"]) > moment(first["modified_time"])


def test_repeats_not_sent_are_reasserted_at_shutdown(faults: FaultServer, app_id: str) -> None:
    sender = make_sender(app_id, faults.url, min_update_interval=600)
    sender.queue_user({"user_id": "r", "company_id": "c"})
    assert sender.flush(timeout=10)
    sender.queue_user({"user_id": "r", "company_id": "c"})
    assert sender.flush(timeout=10)
    assert len(faults.accepted_records()) == 1  # skipped as unchanged
    sender.shutdown()
    first, again = faults.accepted_records()
    assert again["company_id"] == "c"
    assert moment(again["modified_time"]) > moment(first["modified_time"])


def test_no_repeat_no_reassert(faults: FaultServer, app_id: str) -> None:
    sender = make_sender(app_id, faults.url, min_update_interval=600)
    sender.queue_user({"user_id": "once"})
    assert sender.flush(timeout=10)
    sender.shutdown()
    assert len(faults.accepted_records()) == 1


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_flush_all_gives_every_sender_its_chance(
    faults: FaultServer, app_id: str, collector: CollectorHandle
) -> None:
    faults.mode = Blackhole()  # never answers: its sender retries until the end
    dead = make_sender(app_id, faults.url, timeout=5.0)
    live = make_sender(app_id, collector.url)
    dead.queue_user({"user_id": "lost-for-now"})
    live.queue_user({"user_id": "delivered"})
    started = time.monotonic()
    assert flush_all(timeout=1.0) is False
    assert time.monotonic() - started < 2.0
    assert collector.get_user(app_id, "delivered") is not None
    faults.mode = Accept()


def test_the_first_failed_delivery_is_logged_at_once(
    app_id: str, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    sender = make_sender(app_id, url)
    with caplog.at_level(logging.WARNING, logger="moesif_users_middleware"):
        sender.queue_user({"user_id": "nobody-listens"})
        assert sender.flush(timeout=0.5) is False
        wait_for(lambda: any(url in r.getMessage() for r in caplog.records), timeout=2)
        time.sleep(0.3)
    lines = [r for r in caplog.records if url in r.getMessage()]
    assert len(lines) == 1  # repeats are rate-limited
    assert lines[0].levelno == logging.WARNING
    assert app_id not in lines[0].getMessage()


def test_captures_carry_the_moment_of_their_request(
    app_id: str, collector: CollectorHandle
) -> None:
    pytest.importorskip("starlette")
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route
    from starlette.testclient import TestClient

    from moesif_users_middleware.starlette import MoesifUsersMiddleware

    app = Starlette(
        routes=[Route("/", lambda request: PlainTextResponse("ok"))],
        middleware=[
            Middleware(
                MoesifUsersMiddleware,
                application_id=app_id,
                base_url=collector.url,
                identify_user=lambda request, response: "stamped",
                flush_interval=60,
            )
        ],
    )
    with TestClient(app) as client:
        assert client.get("/").status_code == 200
        time.sleep(0.05)
        before = time.time()
        assert client.get("/").status_code == 200  # a repeat: skipped, but newer
        after = time.time()
        time.sleep(0.05)
        assert get_sender(app_id, collector.url).flush(timeout=10)
    profile = collector.get_user(app_id, "stamped")
    assert profile is not None
    assert before - 0.001 <= moment(profile["modified_time"]) <= after
    assert profile["created_time"] <= profile["modified_time"]  # same canonical form
