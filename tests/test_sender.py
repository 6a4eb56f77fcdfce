"""The background sender against the real collector over loopback HTTP."""

from __future__ import annotations

import asyncio
import logging
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from samples import REFERENCE_USER, fast_retry
from servers import CollectorHandle, ServerThread

from moesif_users_middleware import ConfigurationError, User, ValidationError
from moesif_users_middleware._delivery.kinds import USERS
from moesif_users_middleware.sender import (
    SENDER_OPTIONS,
    Sender,
    _reset_senders_for_tests,
    flush_all,
    get_sender,
)

FAST_RETRY = fast_retry(batch_deadline=2.0)


@pytest.fixture(autouse=True)
def _no_leftover_senders() -> Iterator[None]:
    yield
    _reset_senders_for_tests()
    assert not [t for t in threading.enumerate() if t.name == "moesif-users-sender"]


def make_sender(app_id: str, url: str, **options: Any) -> Sender:
    """A sender with test-sized timings (a long interval unless the test sets one)."""
    options.setdefault("flush_interval", 60.0)
    options.setdefault("timeout", 2.0)
    options.setdefault("shutdown_timeout", 0.5)
    return get_sender(app_id, url, _retry=FAST_RETRY, **options)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.01)


# ------------------------------------------------------------------------ basics


def test_queue_and_flush_delivers_the_reference_user(
    collector: CollectorHandle, app_id: str
) -> None:
    sender = make_sender(app_id, collector.url)
    assert sender.queue_user(REFERENCE_USER) is True
    assert sender.flush(timeout=10) is True
    profile = collector.get_user(app_id, "12345")
    assert profile is not None
    assert profile["metadata"] == REFERENCE_USER["metadata"]
    assert profile["campaign"] == REFERENCE_USER["campaign"]
    assert profile["session_tokens"] == ["XXXXXXXXXX"]
    assert sender.stats() == {
        "queued": 1,
        "coalesced": 0,
        "skipped_unchanged": 0,
        "sent": 1,
        "batches": 1,
        "retries": 0,
        "failed": 0,
        "dropped": 0,
        "spooled": 0,
    }


def test_flush_interval_sends_without_flush(collector: CollectorHandle, app_id: str) -> None:
    sender = make_sender(app_id, collector.url, flush_interval=0.05)
    sender.queue_user(User(user_id="timed", company_id="c"))
    wait_for(lambda: collector.get_user(app_id, "timed") is not None)
    assert sender.stats()["sent"] == 1


def test_flush_with_nothing_pending_is_true(collector: CollectorHandle, app_id: str) -> None:
    sender = make_sender(app_id, collector.url)
    assert sender.flush(timeout=1) is True
    assert asyncio.run(sender.aflush(timeout=1)) is True


def test_coalescing_10000_updates_for_100_users(collector: CollectorHandle, app_id: str) -> None:
    sender = make_sender(app_id, collector.url)
    for step in range(100):
        for user in range(100):
            sender.queue_user(
                {
                    "user_id": f"user-{user}",
                    "ip_address": f"10.0.{step}.{user}",
                    "metadata": {"step": step, f"seen_{step % 3}": True, "plan": {"n": step}},
                }
            )
    assert sender.flush(timeout=10) is True
    assert collector.stats(app_id)["records"] <= 100
    profiles = collector.list_users(app_id)
    assert len(profiles) == 100
    for profile in profiles:
        user = int(profile["user_id"].split("-")[1])
        assert profile["ip_address"] == f"10.0.99.{user}"
        assert profile["metadata"] == {
            "step": 99,
            "seen_0": True,
            "seen_1": True,
            "seen_2": True,
            "plan": {"n": 99},
        }
    stats = sender.stats()
    assert stats["queued"] == 10_000
    assert stats["coalesced"] == 9_900
    assert stats["sent"] == 100


def test_distinct_session_tokens_all_reach_the_server(
    collector: CollectorHandle, app_id: str
) -> None:
    sender = make_sender(app_id, collector.url)
    for token in ("token-a", "token-b", "token-a", "token-c"):
        sender.queue_user({"user_id": "multi", "session_token": token, "company_id": "c"})
    assert sender.flush(timeout=10) is True
    profile = collector.get_user(app_id, "multi")
    assert profile is not None
    assert set(profile["session_tokens"]) == {"token-a", "token-b", "token-c"}
    assert profile["company_id"] == "c"


def test_skip_unchanged_within_min_update_interval(collector: CollectorHandle, app_id: str) -> None:
    sender = make_sender(app_id, collector.url, min_update_interval=60)
    sender.queue_user(REFERENCE_USER)
    assert sender.flush(timeout=10)
    sender.queue_user(dict(REFERENCE_USER))
    assert sender.flush(timeout=10)
    assert sender.stats()["skipped_unchanged"] == 1
    assert collector.stats(app_id)["records"] == 1
    sender.queue_user({**REFERENCE_USER, "ip_address": "10.1.1.1"})
    assert sender.flush(timeout=10)
    assert collector.stats(app_id)["records"] == 2
    assert sender.stats()["sent"] == 2


def test_skip_unchanged_can_be_turned_off(collector: CollectorHandle, app_id: str) -> None:
    sender = make_sender(app_id, collector.url, min_update_interval=0)
    for _ in range(3):
        sender.queue_user(REFERENCE_USER)
        assert sender.flush(timeout=10)
    assert sender.stats()["skipped_unchanged"] == 0
    assert collector.stats(app_id)["records"] == 3


def test_drops_are_counted_at_the_bound(
    collector: CollectorHandle, app_id: str, caplog: pytest.LogCaptureFixture
) -> None:
    sender = make_sender(app_id, collector.url, max_queue_size=50)
    with caplog.at_level(logging.WARNING, logger="moesif_users_middleware"):
        accepted = [sender.queue_user({"user_id": f"u{i}"}) for i in range(80)]
    assert accepted.count(True) == 50
    assert accepted[50:] == [False] * 30
    assert sender.queue_user({"user_id": "u3", "company_id": "still-merged"}) is True
    assert sender.queue_users([{"user_id": "u4"}, {"user_id": "new-one"}]) is False
    stats = sender.stats()
    assert stats["dropped"] == 31
    assert stats["queued"] == 52
    drop_warnings = [r for r in caplog.records if "dropped" in r.getMessage()]
    assert len(drop_warnings) == 1
    assert "max_queue_size reached" in drop_warnings[0].getMessage()
    assert sender.flush(timeout=10)
    assert len(collector.list_users(app_id)) == 50
    profile = collector.get_user(app_id, "u3")
    assert profile is not None
    assert profile["company_id"] == "still-merged"


def test_batches_by_count(collector: CollectorHandle, app_id: str) -> None:
    sender = make_sender(app_id, collector.url, batch_size=10)
    assert sender.queue_users([{"user_id": f"b{i}"} for i in range(95)])
    assert sender.flush(timeout=10)
    assert collector.stats(app_id)["batches"] == 10
    assert sender.stats()["batches"] == 10
    assert len(collector.list_users(app_id)) == 95


def test_the_byte_bound_is_an_option_and_named_when_reached(
    collector: CollectorHandle, app_id: str, caplog: pytest.LogCaptureFixture
) -> None:
    sender = make_sender(app_id, collector.url, max_queue_size=1000, max_queue_bytes=20_000)
    padding = {"pad": "x" * 1000}
    for i in range(10):  # one send teaches the sender how large a record is (~1 KB)
        assert sender.queue_user({"user_id": f"big-{i}", "metadata": padding})
    assert sender.flush(timeout=10)
    with caplog.at_level(logging.WARNING, logger="moesif_users_middleware"):
        accepted = [
            sender.queue_user({"user_id": f"more-{i}", "metadata": padding}) for i in range(40)
        ]
    assert 10 <= accepted.count(True) < 40  # about 20 KB of records, far below 1000 users
    (warning,) = [r for r in caplog.records if "dropped" in r.getMessage()]
    assert "max_queue_bytes reached" in warning.getMessage()


def test_batches_by_bytes_and_oversize_user_dropped(
    collector: CollectorHandle, app_id: str
) -> None:
    sender = make_sender(app_id, collector.url, max_batch_bytes=2048)
    users = [{"user_id": f"b{i}", "metadata": {"pad": "x" * 300}} for i in range(20)]
    sender.queue_users([*users, {"user_id": "huge", "metadata": {"pad": "y" * 5000}}])
    assert sender.flush(timeout=10) is False  # the oversize user could not be delivered
    assert len(collector.list_users(app_id)) == 20
    assert collector.get_user(app_id, "huge") is None
    assert collector.stats(app_id)["batches"] >= 4
    assert sender.stats()["dropped"] == 1


def test_queue_users_validates_everything_first(collector: CollectorHandle, app_id: str) -> None:
    sender = make_sender(app_id, collector.url)
    with pytest.raises(ValidationError) as info:
        sender.queue_users([{"user_id": "ok"}, {"user_id": "ok2", "metadata": []}])
    assert info.value.field == "users[1].metadata"
    with pytest.raises(ValidationError) as single:
        sender.queue_user({"user_id": "x", "campaign": {"utm_source": 1}})
    assert single.value.field == "campaign.utm_source"
    assert sender.stats()["queued"] == 0


def test_the_engine_queues_validated_records_intact(
    collector: CollectorHandle, app_id: str
) -> None:
    sender = make_sender(app_id, collector.url)
    engine = sender._engine
    metadata = {"plan": {"tier": "pro"}}
    first = {"user_id": "hot", "metadata": metadata, "session_token": "t1"}
    second = {"user_id": "hot", "metadata": {"plan": {"seats": 2}}, "session_token": "t2"}
    assert engine.queue(USERS, first, 1.0, None)
    assert engine.queue(USERS, second, 2.0, None)
    assert engine.queue(USERS, {"no": "user id"}, 3.0, None) is False
    assert sender.flush(timeout=10)
    assert first == {"user_id": "hot", "metadata": {"plan": {"tier": "pro"}}, "session_token": "t1"}
    assert metadata == {"plan": {"tier": "pro"}}
    profile = collector.get_user(app_id, "hot")
    assert profile is not None
    assert profile["metadata"] == {"plan": {"tier": "pro", "seats": 2}}
    assert profile["session_tokens"] == ["t1", "t2"]


def test_many_threads_queue_concurrently(collector: CollectorHandle, app_id: str) -> None:
    sender = make_sender(app_id, collector.url, flush_interval=0.05)

    def worker(index: int) -> None:
        for i in range(200):
            sender.queue_user({"user_id": f"t{index}-{i % 50}", "metadata": {"i": i}})

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sender.flush(timeout=10)
    profiles = collector.list_users(app_id)
    assert len(profiles) == 400
    assert {p["metadata"]["i"] for p in profiles} == set(range(150, 200))
    stats = sender.stats()
    assert stats["queued"] == 1600
    assert stats["dropped"] == 0


def test_queue_from_a_coroutine_and_aflush(collector: CollectorHandle, app_id: str) -> None:
    sender = make_sender(app_id, collector.url)

    async def scenario() -> tuple[bool, int]:
        ticks = 0
        stop = asyncio.Event()

        async def ticker() -> None:
            nonlocal ticks
            while not stop.is_set():
                ticks += 1
                await asyncio.sleep(0)

        task = asyncio.create_task(ticker())
        for i in range(300):
            sender.queue_user({"user_id": f"async-{i}"})
        delivered = await sender.aflush(timeout=10)
        stop.set()
        await task
        return delivered, ticks

    delivered, ticks = asyncio.run(scenario())
    assert delivered is True
    assert ticks > 1  # the loop kept running while aflush waited
    assert len(collector.list_users(app_id)) == 300


def test_shutdown_delivers_pending_and_restarts_on_use(
    collector: CollectorHandle, app_id: str
) -> None:
    sender = make_sender(app_id, collector.url)
    sender.queue_users([{"user_id": f"s{i}"} for i in range(20)])
    sender.shutdown(timeout=5)
    assert len(collector.list_users(app_id)) == 20
    assert not [t for t in threading.enumerate() if t.name == "moesif-users-sender"]
    sender.queue_user({"user_id": "after"})
    assert sender.flush(timeout=10)
    assert collector.get_user(app_id, "after") is not None


def test_flush_all_flushes_every_sender(collector: CollectorHandle, app_id: str) -> None:
    first = make_sender(app_id, collector.url)
    second = make_sender(app_id + "-other", collector.url)
    first.queue_user({"user_id": "one"})
    second.queue_user({"user_id": "two"})
    assert flush_all(timeout=10)
    assert collector.get_user(app_id, "one") is not None
    assert collector.get_user(app_id + "-other", "two") is not None


# -------------------------------------------------------------- outage, recovery


def test_outage_then_recovery_loses_nothing(
    fresh_collector: Callable[..., ServerThread], collector: CollectorHandle, app_id: str
) -> None:
    port = free_port()
    sender = make_sender(app_id, f"http://127.0.0.1:{port}", flush_interval=0.05)
    for i in range(250):
        sender.queue_user({"user_id": f"o{i % 120}", "metadata": {"i": i}})
    wait_for(lambda: sender.stats()["retries"] >= 2)
    assert sender.flush(timeout=0.2) is False
    sender.queue_user({"user_id": "o1", "metadata": {"late": True}})
    server = fresh_collector(port=port)
    assert sender.flush(timeout=10) is True
    store_profiles = server.app.state.store.list_profiles(_partition(app_id), limit=1000, offset=0)
    assert len(store_profiles) == 120
    by_id = {p["user_id"]: p for p in store_profiles}
    assert by_id["o1"]["metadata"] == {"i": 241, "late": True}
    assert by_id["o119"]["metadata"] == {"i": 239}
    stats = sender.stats()
    assert stats["failed"] == 0
    assert stats["dropped"] == 0
    # o1's late update may travel in its own batch; nothing is ever sent twice
    assert stats["sent"] in (120, 121)
    assert server.app.state.store.stats(_partition(app_id))["records"] == stats["sent"]


def _partition(app_id: str) -> str:
    from moesif_users_middleware.collector.store import partition_key

    return partition_key(app_id)


def test_flush_reports_false_while_the_api_is_down(app_id: str) -> None:
    sender = make_sender(app_id, f"http://127.0.0.1:{free_port()}")
    sender.queue_user({"user_id": "u"})
    assert sender.flush(timeout=0.5) is False
    assert sender.flush() is False  # one attempt, bounded by the batch deadline
    assert sender.stats()["retries"] > 0
    assert sender.stats()["failed"] == 0  # kept for later, not given up


# --------------------------------------------------------------- registry, config


def test_get_sender_returns_one_sender_per_key(
    collector: CollectorHandle, app_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = get_sender(app_id, collector.url, batch_size=7)
    assert get_sender(app_id, collector.url + "/") is first
    assert get_sender(app_id, collector.url, batch_size=50) is first
    assert first.options.batch_size == 7
    assert get_sender(app_id + "x", collector.url) is not first
    monkeypatch.setenv("MOESIF_APPLICATION_ID", app_id)
    monkeypatch.setenv("MOESIF_BASE_URL", collector.url)
    assert get_sender() is first


def test_get_sender_rejects_bad_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MOESIF_APPLICATION_ID", raising=False)
    with pytest.raises(ConfigurationError):
        get_sender()
    with pytest.raises(TypeError) as unknown:
        get_sender("x", flush_every=3)
    assert "flush_interval" in str(unknown.value)
    with pytest.raises(ConfigurationError) as bad:
        get_sender("x", max_queue_size=0)
    assert "max_queue_size" in str(bad.value)
    assert "gzip" in SENDER_OPTIONS


def test_application_id_is_never_in_repr_or_logs(
    app_id: str, caplog: pytest.LogCaptureFixture
) -> None:
    sender = make_sender(app_id, f"http://127.0.0.1:{free_port()}", max_queue_size=1)
    with caplog.at_level(logging.DEBUG, logger="moesif_users_middleware"):
        sender.queue_user({"user_id": "a"})
        sender.queue_user({"user_id": "b"})
        sender.flush(timeout=0.3)
        get_sender(app_id, sender.base_url, batch_size=3)
        sender.shutdown(timeout=0.2)
    assert app_id not in repr(sender)
    assert "pending=" in repr(sender)
    assert caplog.records
    assert all(app_id not in record.getMessage() for record in caplog.records)


def test_pid_check_resets_state_inherited_from_another_process(
    collector: CollectorHandle, app_id: str
) -> None:
    sender = make_sender(app_id, collector.url)
    engine = sender._engine
    with engine.lock:  # state as a parent would leave it: pending, no thread here
        engine.buffer.add(("users", "from-parent"), {"user_id": "from-parent"}, "user_id")
    engine.pid = -1  # the process id changed without the at-fork hook running
    assert sender.queue_user({"user_id": "from-child"})
    assert sender.pending == 1
    assert sender.stats()["queued"] == 1
    assert sender.flush(timeout=10)
    assert collector.get_user(app_id, "from-child") is not None
    assert collector.get_user(app_id, "from-parent") is None


def test_warns_once_under_uwsgi_without_threads(
    collector: CollectorHandle,
    app_id: str,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import types

    from moesif_users_middleware import _lifecycle as sender_module

    fake = types.ModuleType("uwsgi")
    fake.opt = {"master": True}  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "uwsgi", fake)
    monkeypatch.setattr(sender_module, "_uwsgi_warned", False)
    with caplog.at_level(logging.WARNING, logger="moesif_users_middleware"):
        make_sender(app_id, collector.url).queue_user({"user_id": "u"})
        make_sender(app_id + "-2", collector.url).queue_user({"user_id": "u"})
    warnings = [r for r in caplog.records if "enable-threads" in r.getMessage()]
    assert len(warnings) == 1
    monkeypatch.setattr(sender_module, "_uwsgi_warned", False)
    fake.opt = {"enable-threads": True}  # type: ignore[attr-defined]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="moesif_users_middleware"):
        make_sender(app_id + "-3", collector.url).queue_user({"user_id": "u"})
    assert not [r for r in caplog.records if "enable-threads" in r.getMessage()]
