"""Failing hooks: counted every time, logged once per (hook, kind) per minute, never raised."""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from moesif_users_middleware._capture import hooks
from moesif_users_middleware._capture.config import build_config
from moesif_users_middleware._capture.pipeline import Capture, capture_stats
from moesif_users_middleware._capture.request_view import EnvironView, ScopeView
from moesif_users_middleware.sender import _reset_senders_for_tests

SECRET_APP_ID = "secret-app-id-0123456789"
LOGGER = "moesif_users_middleware"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(hooks, "_clock", clock)
    monkeypatch.setattr(hooks, "_last_logged", {})
    return clock


@pytest.fixture
def unused_url() -> Iterator[str]:
    """Nothing listens here; these tests look at logs and counters, not deliveries."""
    yield "http://127.0.0.1:9"
    _reset_senders_for_tests()


def failing_identify(request: Any, response: Any) -> str:
    raise ValueError(f"lookup failed for app {SECRET_APP_ID}")


def list_metadata(request: Any, response: Any) -> list[str]:
    return ["not", "a", "dict"]


def make(url: str, **options: Any) -> Capture:
    config, _ = build_config(
        {
            "application_id": SECRET_APP_ID,
            "base_url": url,
            "flush_interval": 3600,
            "shutdown_timeout": 0,
            **options,
        }
    )
    return Capture(config)


def view() -> EnvironView:
    return EnvironView({"REMOTE_ADDR": "203.0.113.1"}, None, None, auth_user=lambda: "u1")


def records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.name == LOGGER]


def test_one_log_per_hook_and_kind_per_minute(
    clock: Clock, unused_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    capture = make(unused_url, identify_user=failing_identify)
    before = capture_stats()["hook_errors"]
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        for _ in range(5):
            capture.capture(view())
        assert len(records(caplog)) == 1
        clock.now += 59
        capture.capture(view())
        assert len(records(caplog)) == 1
        clock.now += 2
        capture.capture(view())
        assert len(records(caplog)) == 2
    assert capture_stats()["hook_errors"] - before == 7
    message = records(caplog)[0].getMessage()
    assert "identify_user" in message
    assert "failing_identify" in message
    assert "ValueError" in message
    assert "lookup failed" in message


def test_each_hook_is_logged_on_its_own(
    clock: Clock, unused_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    capture = make(
        unused_url,
        identify_user=lambda req, res: "u",
        get_metadata=list_metadata,
        identify_company=failing_identify,
    )
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        for _ in range(3):
            capture.capture(view())
    messages = [record.getMessage() for record in records(caplog)]
    assert len(messages) == 2
    assert any("get_metadata" in m and "returned list" in m for m in messages)
    assert any("identify_company" in m and "ValueError" in m for m in messages)


def test_the_application_id_is_never_logged(
    clock: Clock, unused_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    capture = make(unused_url, identify_user=failing_identify)
    with caplog.at_level(logging.DEBUG, logger=LOGGER):
        capture.capture(view())
    assert records(caplog)
    assert SECRET_APP_ID not in caplog.text


def test_coroutine_on_the_sync_path_is_named(
    clock: Clock, unused_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def identify_user(request: Any, response: Any) -> str:
        return "u"

    capture = make(unused_url, identify_user=identify_user)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert not capture.capture(view())
    assert "async" in records(caplog)[0].getMessage()


def test_capture_stats_is_a_snapshot() -> None:
    stats = capture_stats()
    assert set(stats) >= {"captured", "skipped", "anonymous", "hook_errors", "invalid"}
    stats["captured"] = -1
    assert capture_stats()["captured"] != -1


header_text = st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x2FF), max_size=80)
HEADERS = [
    "authorization",
    "x-api-key",
    "user-agent",
    "referer",
    "host",
    "x-forwarded-for",
    "forwarded",
    "x-real-ip",
    "cookie",
]


@pytest.fixture(scope="module")
def fuzz_capture() -> Iterator[Capture]:
    capture = make("http://127.0.0.1:9", jwt_user_id_claim="sub", max_queue_size=10)
    yield capture
    _reset_senders_for_tests()


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    values=st.dictionaries(st.sampled_from(HEADERS), header_text),
    raw=st.lists(st.tuples(st.binary(max_size=20), st.binary(max_size=60)), max_size=6),
    query=st.text(max_size=80),
    peer=st.one_of(st.none(), st.text(max_size=40), st.sampled_from(["10.0.0.1", "::1"])),
    user=st.one_of(st.none(), st.text(max_size=10), st.integers(), st.booleans()),
)
def test_capture_never_raises_on_any_request(
    fuzz_capture: Capture,
    values: dict[str, str],
    raw: list[tuple[bytes, bytes]],
    query: str,
    peer: str | None,
    user: Any,
) -> None:
    environ: dict[str, Any] = {"QUERY_STRING": query}
    if peer is not None:
        environ["REMOTE_ADDR"] = peer
    for name, value in values.items():
        environ["HTTP_" + name.upper().replace("-", "_")] = value
    before = capture_stats()["internal_errors"]
    result = fuzz_capture.capture(EnvironView(environ, None, None, auth_user=lambda: user))
    assert isinstance(result, bool)
    headers = raw + [(name.encode(), value.encode("utf-8")) for name, value in values.items()]
    scope = {"headers": headers, "query_string": query.encode(), "client": (peer, 1), "user": user}
    scope_view = ScopeView(scope, None, None)
    assert isinstance(fuzz_capture.capture(scope_view), bool)
    assert capture_stats()["internal_errors"] == before
    # What would be recorded is well-formed: a real address or none, text headers.
    ip = fuzz_capture._resolver.resolve(scope_view.peer, scope_view.header)
    assert ip is None or str(ipaddress.ip_address(ip)) == ip
    for name in HEADERS:
        text = scope_view.header(name)
        assert text is None or isinstance(text, str)
