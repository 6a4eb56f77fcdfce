"""AWS Lambda: a FastAPI app behind Mangum, invoked with API Gateway v2 (HTTP API) events.

The collector must hold the user when the handler returns: Lambda freezes the
environment right after, so nothing may be left to the sender's thread.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("mangum")
pytest.importorskip("fastapi")

from fastapi import FastAPI, Request
from faults import Blackhole, FaultServer
from mangum import Mangum
from servers import CollectorHandle

from moesif_users_middleware import get_sender
from moesif_users_middleware.aws_lambda import flush_after, flush_budget
from moesif_users_middleware.sender import _reset_senders_for_tests
from moesif_users_middleware.starlette import MoesifUsersMiddleware

SOURCE_IP = "203.0.113.9"


@pytest.fixture(autouse=True)
def _no_sender_left() -> Iterator[None]:
    yield
    _reset_senders_for_tests()


@pytest.fixture(autouse=True)
def _event_loop() -> Iterator[None]:
    """The loop Mangum runs the app on (it takes the current one), closed afterwards."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    yield
    asyncio.set_event_loop(None)
    loop.close()


class FakeContext:
    """The Lambda context's part that matters here: the invocation's deadline."""

    function_name = "users-api"
    aws_request_id = "c0ffee"

    def __init__(self, remaining: float = 30.0) -> None:
        self.deadline = time.monotonic() + remaining

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self.deadline - time.monotonic()) * 1000))


def http_api_event(path: str, user: str, query: str = "") -> dict[str, Any]:
    """An API Gateway HTTP API (payload format 2.0) event, as Lambda hands it over."""
    headers = {
        "host": "abc123.execute-api.eu-west-1.amazonaws.com",
        "user-agent": "lambda-client/1.0",
        "x-user": user,
        "x-forwarded-for": SOURCE_IP,
        "x-forwarded-proto": "https",
        "x-forwarded-port": "443",
    }
    return {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": query,
        "headers": headers,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "abc123",
            "domainName": headers["host"],
            "domainPrefix": "abc123",
            "http": {
                "method": "GET",
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": SOURCE_IP,
                "userAgent": headers["user-agent"],
            },
            "requestId": "req-1",
            "routeKey": "$default",
            "stage": "$default",
            "time": "03/Dec/2026:10:00:00 +0000",
            "timeEpoch": 1796292000000,
        },
        "isBase64Encoded": False,
    }


def make_app(app_id: str, base_url: str, **options: Any) -> FastAPI:
    app = FastAPI()

    @app.get("/me")
    async def me(request: Request) -> dict[str, str]:
        return {"user": request.headers["x-user"]}

    app.add_middleware(
        MoesifUsersMiddleware,
        application_id=app_id,
        base_url=base_url,
        identify_user=lambda request, response: request.headers.get("x-user"),
        identify_company=lambda request, response: "acme",
        flush_interval=60,  # the wrapper, not the sender's timer, must deliver
        **options,
    )
    return app


@pytest.mark.parametrize("lifespan", ["off", "auto"])
def test_the_user_is_at_the_collector_when_the_handler_returns(
    app_id: str, collector: CollectorHandle, lifespan: str
) -> None:
    handler = flush_after(Mangum(make_app(app_id, collector.url), lifespan=lifespan), timeout=5)
    answer = handler(http_api_event("/me", "ada", "utm_source=lambda"), FakeContext())
    assert answer["statusCode"] == 200
    profile = collector.get_user(app_id, "ada")
    assert profile is not None
    assert profile["company_id"] == "acme"
    assert profile["ip_address"] == SOURCE_IP
    assert profile["user_agent_string"] == "lambda-client/1.0"
    assert profile["campaign"] == {"utm_source": "lambda"}


def test_without_the_wrapper_the_user_is_still_queued_when_the_handler_returns(
    app_id: str, collector: CollectorHandle
) -> None:
    handler = Mangum(make_app(app_id, collector.url), lifespan="off")
    assert handler(http_api_event("/me", "bob"), FakeContext())["statusCode"] == 200
    assert collector.get_user(app_id, "bob") is None  # frozen here on Lambda: not delivered


def test_every_invocation_delivers_its_own_users(app_id: str, collector: CollectorHandle) -> None:
    handler = flush_after(Mangum(make_app(app_id, collector.url), lifespan="off"))
    for user in ("u1", "u2", "u3"):
        handler(http_api_event("/me", user), FakeContext())
        assert collector.get_user(app_id, user) is not None


def test_the_flush_ends_before_the_invocations_deadline(app_id: str) -> None:
    with FaultServer(mode=Blackhole()) as dead_api:
        app = make_app(app_id, dead_api.url, shutdown_timeout=0.2)
        handler = flush_after(Mangum(app, lifespan="off"), timeout=5)
        started = time.monotonic()
        answer = handler(http_api_event("/me", "carol"), FakeContext(remaining=0.6))
        took = time.monotonic() - started
        dead_api.released.set()
    assert answer["statusCode"] == 200
    assert took < 0.6  # bounded by the remaining time less the reserve, not by timeout=5


def test_a_handler_that_raises_still_delivers(app_id: str, collector: CollectorHandle) -> None:
    @flush_after(timeout=5)
    def handler(event: dict[str, Any], context: Any) -> None:
        sender = get_sender(app_id, collector.url, flush_interval=60)
        sender.queue_user({"user_id": event["user"]})
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        handler({"user": "dora"}, FakeContext())
    assert collector.get_user(app_id, "dora") is not None


def test_the_budget() -> None:
    assert flush_budget(FakeContext(remaining=10), 2.0) == 2.0
    assert 0.35 < flush_budget(FakeContext(remaining=0.5), 2.0, reserve=0.1) <= 0.4
    assert flush_budget(FakeContext(remaining=0.05), 2.0) == 0.0
    assert flush_budget(None, 1.5) == 1.5  # no context (a local call): the timeout alone
    with pytest.raises(ValueError, match="zero or more"):
        flush_after(lambda event, context: None, timeout=-1)
