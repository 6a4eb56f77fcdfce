"""The capture's second half runs off the request path: order, repeats, bounds, threads.

A request's hooks run in its own thread; turning their results into the user's update
(token, client IP, user agent, campaign, metadata checks) is deferred to the sender,
which finishes deferred captures in order before anything reads or sends its state.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytest
from faults import FaultServer, Reply

from moesif_users_middleware._capture.config import build_config
from moesif_users_middleware._capture.pipeline import Capture, capture_stats
from moesif_users_middleware._capture.request_view import (
    EnvironView,
    ScopeView,
    SnapshotSpec,
    SnapshotView,
)
from moesif_users_middleware._delivery.engine import INBOX_MAX, INBOX_WAKE
from moesif_users_middleware.sender import _reset_senders_for_tests

PEER = "203.0.113.5"

Make = Callable[..., Capture]


def request_view(user: str, plan: str = "pro", agent: str = "agent/1") -> EnvironView:
    environ = {
        "REMOTE_ADDR": PEER,
        "QUERY_STRING": "",
        "HTTP_USER_AGENT": agent,
        "HTTP_AUTHORIZATION": f"Bearer token-{user}",
    }
    return EnvironView(environ, {"plan": plan}, None, auth_user=lambda: user)


def plan_metadata(request: Any, response: Any) -> dict[str, Any]:
    return {"plan": request["plan"]}


def profile(collector: Any, app_id: str, capture: Capture, user_id: str) -> dict[str, Any]:
    assert capture.sender.flush(timeout=10)
    stored: dict[str, Any] | None = collector.get_user(app_id, user_id)
    assert stored is not None, f"{user_id} did not arrive"
    return stored


# -- order -----------------------------------------------------------------------------------


def test_queue_user_is_merged_after_the_requests_captured_before_it(
    make: Make, collector: Any, app_id: str
) -> None:
    capture = make(get_metadata=plan_metadata)
    assert capture.capture(request_view("u-order", plan="pro"))
    # The app changes the plan itself after that request: its update must win.
    capture.sender.queue_user({"user_id": "u-order", "metadata": {"plan": "enterprise"}})
    assert profile(collector, app_id, capture, "u-order")["metadata"]["plan"] == "enterprise"


def test_the_latest_request_wins_for_each_user(make: Make, collector: Any, app_id: str) -> None:
    capture = make(get_metadata=plan_metadata)
    for round_number in range(5):
        for user in ("u-a", "u-b"):
            assert capture.capture(request_view(user, plan=f"{user}-{round_number}"))
    assert profile(collector, app_id, capture, "u-a")["metadata"]["plan"] == "u-a-4"
    assert profile(collector, app_id, capture, "u-b")["metadata"]["plan"] == "u-b-4"


# -- repeats ---------------------------------------------------------------------------------


def test_a_repeated_capture_is_counted_but_not_finished_again(
    make: Make, collector: Any, app_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    capture = make(get_metadata=plan_metadata)
    finished: list[str] = []
    original = capture.finish

    def counting_finish(item: tuple[Any, ...]) -> Any:
        finished.append(item[2])
        return original(item)

    monkeypatch.setattr(capture, "_finisher", counting_finish)
    before = capture_stats()["captured"]
    for _ in range(50):
        assert capture.capture(request_view("u-repeat"))
    stats = capture.sender.stats()
    assert finished == ["u-repeat"]
    assert stats["queued"] == 50
    assert stats["coalesced"] == 49
    assert capture_stats()["captured"] == before + 50
    assert profile(collector, app_id, capture, "u-repeat")["metadata"] == {"plan": "pro"}


def test_a_change_after_repeats_is_sent(make: Make, collector: Any, app_id: str) -> None:
    capture = make(get_metadata=plan_metadata)
    for _ in range(3):
        capture.capture(request_view("u-change", agent="agent/1"))
    assert profile(collector, app_id, capture, "u-change")["user_agent_string"] == "agent/1"
    for _ in range(3):
        capture.capture(request_view("u-change", agent="agent/2"))
    capture.capture(request_view("u-change", agent="agent/1"))
    assert profile(collector, app_id, capture, "u-change")["user_agent_string"] == "agent/1"


def test_queue_user_between_identical_requests_does_not_hide_the_second(
    make: Make, collector: Any, app_id: str
) -> None:
    capture = make(get_metadata=plan_metadata)
    capture.capture(request_view("u-direct", plan="pro"))
    capture.sender.queue_user({"user_id": "u-direct", "metadata": {"plan": "free"}})
    capture.capture(request_view("u-direct", plan="pro"))  # the same as the first request
    assert profile(collector, app_id, capture, "u-direct")["metadata"]["plan"] == "pro"


def test_repeats_are_finished_again_once_min_update_interval_is_zero(make: Make) -> None:
    capture = make(get_metadata=plan_metadata, min_update_interval=0)
    calls: list[str] = []
    original = capture.finish

    def counting_finish(item: tuple[Any, ...]) -> Any:
        calls.append(item[2])
        return original(item)

    capture._finisher = counting_finish
    for _ in range(3):
        capture.capture(request_view("u-every"))
    capture.sender.stats()
    assert calls == ["u-every"] * 3


def test_a_rejected_update_may_be_captured_again(collector: Any, app_id: str) -> None:
    """A batch the API refused (4xx) is lost: the same capture later is sent, not skipped."""
    with FaultServer(forward_to=collector.url) as api:
        api.script(Reply(400))  # the first batch is rejected, later ones reach the collector
        config, _ = build_config({"application_id": app_id, "base_url": api.url})
        capture = Capture(config)
        try:
            capture.capture(request_view("u-lost"))
            sender = capture.sender
            assert not sender.flush(timeout=10)  # rejected: lost
            assert collector.get_user(app_id, "u-lost") is None
            capture.capture(request_view("u-lost"))  # identical to the lost one
            assert sender.stats()["coalesced"] == 0  # finished again, not skipped
            assert sender.flush(timeout=10)
            assert collector.get_user(app_id, "u-lost") is not None
        finally:
            _reset_senders_for_tests()


def test_metadata_that_is_not_plain_data_is_never_compared(make: Make) -> None:
    """Only captures made of plain data are remembered as the user's last one."""

    class Unequal:
        def __eq__(self, other: object) -> bool:
            raise AssertionError("compared in the sender")

    capture = make(get_metadata=lambda request, response: {"odd": Unequal()})
    capture.capture(request_view("u-odd"))
    capture.capture(request_view("u-odd"))
    capture.sender.stats()  # finishes both without comparing them
    assert not capture.sender._engine.unchanged.repeat(("users", "u-odd"), None, 0.0)
    assert ("users", "u-odd") not in capture.sender._engine.unchanged._captures


# -- threads ---------------------------------------------------------------------------------


def test_non_plain_hook_results_are_converted_in_the_request_thread(make: Make) -> None:
    seen: list[threading.Thread] = []

    class RecordingMapping(Mapping[str, Any]):
        def __getitem__(self, key: str) -> Any:
            seen.append(threading.current_thread())
            return {"plan": "pro"}[key]

        def __iter__(self) -> Iterator[str]:
            seen.append(threading.current_thread())
            return iter(["plan"])

        def __len__(self) -> int:
            return 1

    capture = make(get_metadata=lambda request, response: RecordingMapping())
    result: list[bool] = []
    worker = threading.Thread(target=lambda: result.append(capture.capture(request_view("u-m"))))
    worker.start()
    worker.join()
    capture.sender.stats()
    assert result == [True]
    assert seen
    assert set(seen) == {worker}


def test_a_lazy_object_in_metadata_is_not_evaluated_in_the_sender(make: Make) -> None:
    evaluated: list[threading.Thread] = []

    class Lazy:
        """Like Django's SimpleLazyObject: asking for __class__ evaluates it."""

        @property  # type: ignore[misc]
        def __class__(self) -> type:
            evaluated.append(threading.current_thread())
            return str

    capture = make(get_metadata=lambda request, response: {"name": Lazy()})
    assert capture.capture(request_view("u-lazy"))
    capture.sender.flush(timeout=10)
    assert evaluated == []


# -- bounds and state ------------------------------------------------------------------------


def test_the_inbox_stays_bounded_while_the_worker_is_busy(make: Make) -> None:
    capture = make()
    sender = capture.sender
    engine = sender._engine
    engine.worker.running = True  # a worker stuck in a slow request: nothing finishes them
    try:
        for number in range(INBOX_MAX - 1):
            capture.capture(request_view(f"u-{number}"))
        assert len(engine.inbox) == INBOX_MAX - 1
        # The request that reaches the bound finishes the oldest batch itself...
        capture.capture(request_view("u-last"))
        assert len(engine.inbox) == INBOX_MAX - INBOX_WAKE
        assert sender.pending == INBOX_MAX
        # ...and however many more come, the inbox never grows past the bound.
        for number in range(3 * INBOX_MAX):
            capture.capture(request_view(f"u-more-{number}"))
            assert len(engine.inbox) <= INBOX_MAX
        total = 4 * INBOX_MAX
        stats = sender.stats()  # finishes the rest: every capture is kept or counted
        assert sender.pending == sender.options.max_queue_size
        assert stats["dropped"] == total - sender.options.max_queue_size
    finally:
        engine.worker.running = False


def test_capture_stats_and_pending_include_deferred_captures(make: Make) -> None:
    capture = make()
    sender = capture.sender
    with sender._engine.inbox_lock:
        capture.capture(request_view("u-pending"))
        assert sender.pending == 1  # counted while still deferred
    before = capture_stats()["captured"]
    capture.capture(request_view("u-pending-2"))
    assert capture_stats()["captured"] == before + 1


# -- the snapshot ----------------------------------------------------------------------------

SPEC = SnapshotSpec(("User-Agent", "x-forwarded-for", "referer"))


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("plain", "plain"),
        ("caf\u00c3\u00a9", "caf\u00e9"),  # WSGI: UTF-8 bytes seen as Latin-1
        ("\u00e9t\u00e9", "\u00e9t\u00e9"),  # not UTF-8 once encoded: kept as Latin-1
        (b"bytes", None),  # not text: ignored
    ],
)
def test_environ_snapshot_values_are_decoded_like_environ_headers(
    raw: Any, expected: str | None
) -> None:
    environ = {"HTTP_USER_AGENT": raw, "REMOTE_ADDR": PEER, "QUERY_STRING": "a=1"}
    live = EnvironView(environ, None, None)
    later = SnapshotView(SPEC, live.snapshot(SPEC))
    assert later.header("user-agent") == live.header("user-agent") == expected
    assert later.peer == PEER
    assert later.query_string == "a=1"
    assert later.header("referer") is None
    assert later.header("not-in-the-spec") is None


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"plain", "plain"),
        ("\u00c3\u00a9".encode(), "\u00c3\u00a9"),  # valid UTF-8: decoded once, not twice
        (b"caf\xe9", "caf\u00e9"),  # not UTF-8: Latin-1
        (bytearray(b"array"), "array"),
        ("text", None),  # not bytes (a malformed scope): ignored
    ],
)
def test_scope_snapshot_values_are_decoded_like_scope_headers(
    raw: Any, expected: str | None
) -> None:
    scope = {
        "type": "http",
        "headers": [(b"user-agent", raw), (b"x-forwarded-for", b"1.2.3.4")],
        "client": (PEER, 1234),
        "query_string": b"utm_source=x",
    }
    live = ScopeView(scope, None, None)
    later = SnapshotView(SPEC, live.snapshot(SPEC))
    assert later.header("user-agent") == live.header("user-agent") == expected
    assert later.header("x-forwarded-for") == "1.2.3.4"
    assert later.header("referer") is None
    assert later.peer == PEER
    assert later.query_string == live.query_string == "utm_source=x"


def test_deferred_captures_are_not_finished_in_a_forked_child(make: Make) -> None:
    capture = make()
    sender = capture.sender
    sender._engine.worker.running = True  # keep the parent's worker from finishing it first
    capture.capture(request_view("u-parent"))
    assert sender.pending == 1
    sender._engine.pid = -1  # what a fork looks like to the sender
    assert sender.stats()["queued"] == 0
    assert sender.pending == 0
