"""UsersClient / AsyncUsersClient against the real collector and a scripted fault server."""

from __future__ import annotations

import asyncio
import gzip
import json
import pickle
import socket
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from typing import Any

import httpx
import pytest
from faults import Accept, Blackhole, Drip, DripHeaders, FaultServer, Reply, Reset
from samples import REFERENCE_USER
from servers import CollectorHandle

from moesif_users_middleware import ConfigurationError, User, ValidationError
from moesif_users_middleware.transport import (
    BATCH_PATH,
    ApiError,
    AsyncUsersClient,
    TransportError,
    UsersClient,
    parse_retry_after,
)

SECRET_ID = "app-id-that-must-stay-secret-7f3a"


@pytest.fixture
def faults() -> Iterator[FaultServer]:
    with FaultServer() as server:
        yield server


def closed_port_url() -> str:
    """A loopback URL nothing listens on (connection refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


# ----------------------------------------------------------------------- delivery


def test_update_user_stores_the_profile(collector: CollectorHandle, app_id: str) -> None:
    with UsersClient(app_id, collector.url) as client:
        client.update_user(REFERENCE_USER)
    profile = collector.get_user(app_id, "12345")
    assert profile is not None
    assert profile["company_id"] == "67890"
    assert profile["session_tokens"] == ["XXXXXXXXXX"]
    assert profile["campaign"] == REFERENCE_USER["campaign"]
    assert profile["metadata"] == REFERENCE_USER["metadata"]


def test_update_users_batch_stores_every_user(collector: CollectorHandle, app_id: str) -> None:
    users = [{**REFERENCE_USER, "user_id": f"u{i}", "metadata": {"n": i}} for i in range(30)]
    with UsersClient(app_id, collector.url) as client:
        client.update_users_batch([User(user_id="solo", company_id="c1"), *users])
    stored = {profile["user_id"]: profile for profile in collector.list_users(app_id)}
    assert len(stored) == 31
    assert stored["u7"]["metadata"] == {"n": 7}
    assert stored["solo"]["company_id"] == "c1"
    assert collector.stats(app_id)["batches"] == 1


def test_request_shape_headers_and_compact_json(faults: FaultServer) -> None:
    with UsersClient(SECRET_ID, faults.url) as client:
        client.update_user({"user_id": "u1", "metadata": {"a": 1}})
    (request,) = faults.received
    assert request.method == "POST"
    assert request.path == "/v1/users"
    assert request.headers["x-moesif-application-id"] == SECRET_ID
    assert request.headers["content-type"] == "application/json"
    assert "content-encoding" not in request.headers  # small bodies are not gzipped
    assert request.raw_body == b'{"user_id":"u1","metadata":{"a":1}}'


def test_large_bodies_are_gzipped(faults: FaultServer) -> None:
    users = [
        {"user_id": f"user-{i}", "metadata": {"email": f"u{i}@example.com"}} for i in range(60)
    ]
    with UsersClient(SECRET_ID, faults.url) as client:
        client.update_users_batch(users)
    (request,) = faults.received
    assert request.path == BATCH_PATH
    assert request.headers["content-encoding"] == "gzip"
    assert len(request.raw_body) < len(request.body)
    assert json.loads(gzip.decompress(request.raw_body)) == users


def test_gzip_can_be_turned_off(faults: FaultServer) -> None:
    users = [
        {"user_id": f"user-{i}", "metadata": {"email": f"u{i}@example.com"}} for i in range(60)
    ]
    with UsersClient(SECRET_ID, faults.url, gzip=False) as client:
        client.update_users_batch(users)
    assert "content-encoding" not in faults.received[0].headers
    assert faults.received[0].json == users


def test_gzipped_batch_is_accepted_by_the_collector(
    collector: CollectorHandle, app_id: str
) -> None:
    users = [{"user_id": f"g{i}", "metadata": {"bio": "x" * 100}} for i in range(40)]
    with UsersClient(app_id, collector.url) as client:
        client.update_users_batch(users)
    assert collector.stats(app_id)["records"] == 40


def test_empty_batch_sends_nothing(faults: FaultServer) -> None:
    with UsersClient(SECRET_ID, faults.url) as client:
        client.update_users_batch([])
    assert faults.received == []


def test_user_objects_are_accepted(faults: FaultServer) -> None:
    with UsersClient(SECRET_ID, faults.url) as client:
        client.update_user(User(user_id="u9", ip_address="10.0.0.1"))
    assert faults.received[0].json == {"user_id": "u9", "ip_address": "10.0.0.1"}


# --------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("user", "field"),
    [
        ({"company_id": "c"}, "user_id"),
        ({"user_id": 5}, "user_id"),
        ({"user_id": "u", "metadata": {"x": float("nan")}}, "metadata.x"),
        ({"user_id": "u", "bogus": 1}, "bogus"),
        ("not a user", "user"),
    ],
)
def test_invalid_user_names_the_field_and_sends_nothing(
    faults: FaultServer, user: Any, field: str
) -> None:
    with UsersClient(SECRET_ID, faults.url) as client, pytest.raises(ValidationError) as info:
        client.update_user(user)
    assert info.value.field == field
    assert faults.received == []


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        ({"user_id": ""}, "users[2].user_id"),
        ({"user_id": "u", "campaign": {"utm_source": 3}}, "users[2].campaign.utm_source"),
        (42, "users[2]"),
    ],
)
def test_invalid_batch_item_names_index_and_field(
    faults: FaultServer, bad: Any, field: str
) -> None:
    users = [{"user_id": "a"}, {"user_id": "b"}, bad, {"user_id": "d"}]
    with UsersClient(SECRET_ID, faults.url) as client, pytest.raises(ValidationError) as info:
        client.update_users_batch(users)
    assert info.value.field == field
    assert faults.received == []


def test_batch_must_be_a_list(faults: FaultServer) -> None:
    with UsersClient(SECRET_ID, faults.url) as client, pytest.raises(ValidationError) as info:
        client.update_users_batch({"user_id": "a"})
    assert info.value.field == "users"


# ------------------------------------------------------------------------- errors


def test_error_status_raises_api_error_with_body(faults: FaultServer) -> None:
    faults.script(Reply(400, {"error": "invalid user", "field": "user_id"}))
    with UsersClient(SECRET_ID, faults.url) as client, pytest.raises(ApiError) as info:
        client.update_user({"user_id": "u"})
    error = info.value
    assert error.status_code == 400
    assert json.loads(error.body)["field"] == "user_id"
    assert error.retry_after is None
    assert not error.retryable
    assert "400" in str(error)


def test_429_carries_retry_after(faults: FaultServer) -> None:
    faults.script(Reply(429, headers={"Retry-After": "7"}))
    with UsersClient(SECRET_ID, faults.url) as client, pytest.raises(ApiError) as info:
        client.update_users_batch([{"user_id": "u"}])
    assert info.value.status_code == 429
    assert info.value.retry_after == 7.0
    assert info.value.retryable


def test_503_is_retryable_api_error(faults: FaultServer) -> None:
    faults.script(Reply(503, b"down for maintenance", {"Content-Type": "text/plain"}))
    with UsersClient(SECRET_ID, faults.url) as client, pytest.raises(ApiError) as info:
        client.update_user({"user_id": "u"})
    assert info.value.status_code == 503
    assert info.value.body == "down for maintenance"
    assert info.value.retryable


def test_connection_refused_raises_transport_error() -> None:
    with UsersClient(SECRET_ID, closed_port_url()) as client, pytest.raises(TransportError) as info:
        client.update_user({"user_id": "u"})
    error = info.value
    assert isinstance(error, ApiError)
    assert error.status_code is None
    assert error.retryable
    assert isinstance(error.__cause__, httpx.ConnectError)


def test_connection_reset_raises_transport_error(faults: FaultServer) -> None:
    faults.script(Reset())
    with UsersClient(SECRET_ID, faults.url) as client, pytest.raises(TransportError):
        client.update_user({"user_id": "u"})
    assert len(faults.received) == 1


def test_unanswered_request_times_out(faults: FaultServer) -> None:
    faults.script(Blackhole())
    client = UsersClient(SECRET_ID, faults.url, timeout=0.3)
    with client, pytest.raises(TransportError) as info:
        client.update_user({"user_id": "u"})
    assert isinstance(info.value.__cause__, httpx.ReadTimeout)


def test_post_body_returns_error_responses_without_raising(faults: FaultServer) -> None:
    faults.script(Reply(429, headers={"Retry-After": "2"}))
    with UsersClient(SECRET_ID, faults.url) as client:
        response = client.post_body(BATCH_PATH, b'[{"user_id":"u"}]')
    assert response.status_code == 429
    assert response.retry_after == 2.0
    assert response.headers["content-type"] == "application/json"


def test_post_body_sends_content_encoding(faults: FaultServer) -> None:
    body = gzip.compress(b'[{"user_id":"u"}]')
    with UsersClient(SECRET_ID, faults.url) as client:
        assert client.post_body(BATCH_PATH, body, "gzip").status_code == 201
    assert faults.received[0].headers["content-encoding"] == "gzip"
    assert faults.received[0].records == [{"user_id": "u"}]


def test_mock_transport_is_used() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(502, text="bad gateway")

    client = UsersClient(SECRET_ID, "http://moesif.invalid", transport=httpx.MockTransport(handler))
    with client, pytest.raises(ApiError) as info:
        client.update_user({"user_id": "u"})
    assert info.value.status_code == 502
    assert seen[0].url == "http://moesif.invalid/v1/users"


# ---------------------------------------------------------- whole-request timeout
# Drip(0.1, size=40) needs about 4 s to send its whole answer; each test's timeout is
# 0.3 s. What proves the request was abandoned is that the server had not finished
# (``status is None``); the generous upper bound on the time only rules out waiting for it.

TRICKLE = Drip(interval=0.1, size=40)
LIMIT = 0.3
BATCH = b'[{"user_id":"u"}]'


def abandoned_within(call: Callable[[], object], limit: float) -> TransportError:
    started = time.monotonic()
    with pytest.raises(TransportError) as info:
        call()
    assert time.monotonic() - started < 5 * limit
    return info.value


def test_trickling_answer_to_post_body_is_abandoned(faults: FaultServer) -> None:
    faults.script(TRICKLE)
    with UsersClient(SECRET_ID, faults.url) as client:
        error = abandoned_within(lambda: client.post_body(BATCH_PATH, BATCH, timeout=LIMIT), LIMIT)
        assert faults.received[0].status is None  # the answer was still trickling
        # the abandoned connection is dropped: the pool still works
        assert client.post_body(BATCH_PATH, BATCH, timeout=LIMIT).status_code == 201
    assert str(error).startswith("Users API answer took longer than 0.3 s")
    assert isinstance(error.__cause__, httpx.TimeoutException)
    assert error.status_code is None
    assert error.retryable
    assert SECRET_ID not in str(error)


def test_client_timeout_bounds_the_whole_request(faults: FaultServer) -> None:
    faults.script(TRICKLE)
    with UsersClient(SECRET_ID, faults.url, timeout=LIMIT) as client:
        error = abandoned_within(lambda: client.update_user({"user_id": "u"}), LIMIT)
    assert faults.received[0].status is None
    assert "took longer than 0.3 s" in str(error)


def test_trickling_headers_are_abandoned(faults: FaultServer) -> None:
    faults.script(DripHeaders(interval=0.1))
    with UsersClient(SECRET_ID, faults.url) as client:
        error = abandoned_within(lambda: client.post_body(BATCH_PATH, BATCH, timeout=LIMIT), LIMIT)
    assert faults.received[0].status is None
    assert "took longer than 0.3 s" in str(error)


def test_trickle_is_abandoned_through_a_custom_transport(faults: FaultServer) -> None:
    # a transport passed in is not wrapped: the check as each chunk arrives bounds it
    faults.script(TRICKLE)
    client = UsersClient(SECRET_ID, faults.url, transport=httpx.HTTPTransport())
    with client:
        error = abandoned_within(lambda: client.post_body(BATCH_PATH, BATCH, timeout=LIMIT), LIMIT)
    assert faults.received[0].status is None
    assert str(error).startswith("Users API answer took longer than 0.3 s")
    assert isinstance(error.__cause__, httpx.ReadTimeout)


def test_blocked_read_ends_at_the_per_call_timeout(faults: FaultServer) -> None:
    faults.script(Blackhole())
    with UsersClient(SECRET_ID, faults.url, timeout=30.0) as client:
        error = abandoned_within(lambda: client.post_body(BATCH_PATH, BATCH, timeout=LIMIT), LIMIT)
    assert "took longer than 0.3 s" in str(error)
    assert isinstance(error.__cause__, httpx.ReadTimeout)


def test_async_trickling_answer_is_abandoned(faults: FaultServer) -> None:
    faults.script(TRICKLE, DripHeaders(interval=0.1))

    async def scenario() -> list[TransportError]:
        errors = []
        async with AsyncUsersClient(SECRET_ID, faults.url, timeout=LIMIT) as client:
            for _ in range(2):
                started = time.monotonic()
                with pytest.raises(TransportError) as info:
                    await client.post_body(BATCH_PATH, BATCH)
                assert time.monotonic() - started < 5 * LIMIT
                errors.append(info.value)
            await client.update_user({"user_id": "after"})  # the pool still works
        return errors

    errors = asyncio.run(scenario())
    assert [r.status for r in faults.received] == [None, None, 201]
    for error in errors:
        assert str(error).startswith("Users API answer took longer than 0.3 s")
        assert isinstance(error.__cause__, httpx.TimeoutException)
        assert SECRET_ID not in str(error)


def test_an_answer_in_many_chunks_is_parsed_whole(faults: FaultServer) -> None:
    faults.script(Drip(interval=0.001, size=40), Drip(interval=0.001, size=40))
    with UsersClient(SECRET_ID, faults.url, timeout=5.0) as client:
        response = client.post_body(BATCH_PATH, BATCH, timeout=5.0)

    async def scenario() -> str:
        async with AsyncUsersClient(SECRET_ID, faults.url, timeout=5.0) as client:
            return (await client.post_body(BATCH_PATH, BATCH)).text

    async_text = asyncio.run(scenario())
    expected = '{"records": 1}'.ljust(40)
    assert (response.status_code, response.text) == (201, expected)
    assert async_text == expected
    assert response.headers["content-length"] == "40"


def test_a_normal_answer_is_parsed(faults: FaultServer) -> None:
    faults.script(Accept(), Reply(422, {"message": "bad"}, {"X-Trace": "t1"}), Accept())
    with UsersClient(SECRET_ID, faults.url, timeout=LIMIT) as client:
        assert client.post_body(BATCH_PATH, BATCH).text == '{"records": 1}'
        rejected = client.post_body(BATCH_PATH, BATCH, timeout=LIMIT)

    async def scenario() -> str:
        async with AsyncUsersClient(SECRET_ID, faults.url, timeout=LIMIT) as client:
            return (await client.post_body(BATCH_PATH, BATCH, timeout=LIMIT)).text

    assert asyncio.run(scenario()) == '{"records": 1}'
    assert (rejected.status_code, json.loads(rejected.text)) == (422, {"message": "bad"})
    assert rejected.headers["x-trace"] == "t1"


def test_only_the_first_64_kib_of_an_answer_is_read(faults: FaultServer) -> None:
    huge = b"x" * (4 * 1024 * 1024)
    faults.script(Reply(201, huge), Reply(500, huge))
    with UsersClient(SECRET_ID, faults.url) as client:
        accepted = client.post_body(BATCH_PATH, BATCH)
        with pytest.raises(ApiError) as info:
            client.update_users_batch([{"user_id": "u"}])
    assert accepted.status_code == 201
    assert accepted.text == "x" * 64 * 1024
    assert info.value.status_code == 500
    assert info.value.body == "x" * 64 * 1024


# -------------------------------------------------------------- config and secrecy


def test_missing_application_id_fails_at_construction(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MOESIF_APPLICATION_ID", raising=False)
    with pytest.raises(ConfigurationError):
        UsersClient()
    with pytest.raises(ConfigurationError):
        AsyncUsersClient(application_id="  ")


def test_environment_fallbacks(monkeypatch: pytest.MonkeyPatch, faults: FaultServer) -> None:
    monkeypatch.setenv("MOESIF_APPLICATION_ID", "from-env")
    monkeypatch.setenv("MOESIF_BASE_URL", faults.url + "/")
    with UsersClient() as client:
        assert client.base_url == faults.url
        client.update_user({"user_id": "u"})
    assert faults.received[0].headers["x-moesif-application-id"] == "from-env"


def test_default_base_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MOESIF_BASE_URL", raising=False)
    with UsersClient("x") as client:
        assert client.base_url == "https://api.moesif.net"


def test_application_id_never_in_repr_or_errors(faults: FaultServer) -> None:
    faults.script(Reply(401, {"message": f"unknown application id {SECRET_ID}"}))
    with UsersClient(SECRET_ID, faults.url) as client:
        assert SECRET_ID not in repr(client)
        with pytest.raises(ApiError) as info:
            client.update_user({"user_id": "u"})
    assert info.value.status_code == 401
    assert SECRET_ID not in str(info.value)
    assert SECRET_ID not in info.value.body
    assert SECRET_ID not in repr(AsyncUsersClient(SECRET_ID, faults.url))


def test_closed_client_refuses_requests(faults: FaultServer) -> None:
    with UsersClient(SECRET_ID, faults.url) as client:
        pass
    with pytest.raises(RuntimeError):
        client.update_user({"user_id": "u"})
    assert faults.received == []


# ---------------------------------------------------------------------- Retry-After


def test_parse_retry_after() -> None:
    now = datetime(2030, 1, 1, tzinfo=timezone.utc)
    later = format_datetime(now + timedelta(seconds=30), usegmt=True)
    assert parse_retry_after("5") == 5.0
    assert parse_retry_after(" 1.5 ") == 1.5
    assert parse_retry_after("-3") == 0.0
    assert parse_retry_after(later, now=now.timestamp()) == pytest.approx(30.0)
    assert parse_retry_after(None) is None
    assert parse_retry_after("") is None
    assert parse_retry_after("soon") is None
    assert parse_retry_after("nan") is None
    assert parse_retry_after("inf") is None


# -------------------------------------------------------------------------- async


def test_async_client_delivers(collector: CollectorHandle, app_id: str) -> None:
    async def scenario() -> None:
        async with AsyncUsersClient(app_id, collector.url) as client:
            await client.update_user(REFERENCE_USER)
            await client.update_users_batch([{"user_id": f"a{i}"} for i in range(50)])

    asyncio.run(scenario())
    profile = collector.get_user(app_id, "12345")
    assert profile is not None
    assert profile["metadata"]["sales_info"]["lifetime_value"] == 24000
    assert collector.stats(app_id)["records"] == 51


def test_async_errors_and_validation(faults: FaultServer) -> None:
    faults.script(Reply(429, headers={"Retry-After": "3"}), Reset())

    async def scenario() -> tuple[ApiError, BaseException, ValidationError]:
        async with AsyncUsersClient(SECRET_ID, faults.url) as client:
            with pytest.raises(ApiError) as status:
                await client.update_user({"user_id": "u"})
            with pytest.raises(TransportError) as network:
                await client.update_users_batch([{"user_id": "u"}])
            with pytest.raises(ValidationError) as invalid:
                await client.update_users_batch([{"user_id": "u"}, {"user_id": 1}])
        return status.value, network.value, invalid.value

    status, network, invalid = asyncio.run(scenario())
    assert status.status_code == 429
    assert status.retry_after == 3.0
    assert isinstance(network, TransportError)
    assert invalid.field == "users[1].user_id"
    assert len(faults.received) == 2


def test_async_timeout_never_hangs(faults: FaultServer) -> None:
    faults.script(Blackhole())

    async def scenario() -> None:
        async with AsyncUsersClient(SECRET_ID, faults.url, timeout=0.3) as client:
            await client.update_user({"user_id": "u"})

    with pytest.raises(TransportError):
        asyncio.run(scenario())


def test_errors_survive_pickling() -> None:
    error = pickle.loads(pickle.dumps(ApiError(429, "slow down", 2.5)))
    assert (error.status_code, error.body, error.retry_after) == (429, "slow down", 2.5)
    assert str(error) == "Users API answered 429: slow down"
    network = pickle.loads(pickle.dumps(TransportError("refused")))
    assert isinstance(network, TransportError)
    assert network.status_code is None
    assert str(network) == "refused"
