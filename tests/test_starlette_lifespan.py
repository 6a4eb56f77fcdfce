"""Lifespan: the middleware flushes the shared sender when the app shuts down."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

pytest.importorskip("starlette")

from servers import CollectorHandle, ServerThread
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from starlette.testclient import TestClient
from starlette.types import Message, Receive, Scope, Send

from moesif_users_middleware.collector import create_app
from moesif_users_middleware.sender import _reset_senders_for_tests, get_sender
from moesif_users_middleware.starlette import MoesifUsersMiddleware, ResponseView

# Long enough that only an explicit flush delivers during a test.
NO_PERIODIC_FLUSH = 60.0


@pytest.fixture(autouse=True)
def _no_sender_left() -> Iterator[None]:
    yield
    _reset_senders_for_tests()


async def hello(request: Request) -> Response:
    return PlainTextResponse("hello")


def header_user(request: Request, response: ResponseView) -> str | None:
    return request.headers.get("x-user-id")


def test_shutdown_delivers_what_was_queued(app_id: str, collector: CollectorHandle) -> None:
    app = Starlette(
        routes=[Route("/", hello)],
        middleware=[
            Middleware(
                MoesifUsersMiddleware,
                application_id=app_id,
                base_url=collector.url,
                identify_user=header_user,
                flush_interval=NO_PERIODIC_FLUSH,
            )
        ],
    )
    with TestClient(app) as client:  # runs lifespan startup ... shutdown
        for n in range(3):
            assert client.get("/", headers={"x-user-id": f"u-{n}"}).text == "hello"
        assert collector.list_users(app_id) == []  # still queued
    assert [p["user_id"] for p in collector.list_users(app_id)] == ["u-0", "u-1", "u-2"]


def test_flush_runs_after_the_apps_own_shutdown(app_id: str, collector: CollectorHandle) -> None:
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        # The app's own shutdown queues one more update; the middleware flushes after it.
        sender = get_sender(application_id=app_id, base_url=collector.url)
        sender.queue_user({"user_id": "u-from-shutdown", "metadata": {"bye": True}})

    app = Starlette(
        routes=[Route("/", hello)],
        lifespan=lifespan,
        middleware=[
            Middleware(
                MoesifUsersMiddleware,
                application_id=app_id,
                base_url=collector.url,
                identify_user=header_user,
                flush_interval=NO_PERIODIC_FLUSH,
            )
        ],
    )
    with TestClient(app) as client:
        client.get("/", headers={"x-user-id": "u-request"})
    users = {p["user_id"]: p for p in collector.list_users(app_id)}
    assert sorted(users) == ["u-from-shutdown", "u-request"]
    assert users["u-from-shutdown"]["metadata"] == {"bye": True}


def test_failed_app_shutdown_still_flushes(app_id: str, collector: CollectorHandle) -> None:
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        raise RuntimeError("shutdown failed")

    app = Starlette(
        routes=[Route("/", hello)],
        lifespan=lifespan,
        middleware=[
            Middleware(
                MoesifUsersMiddleware,
                application_id=app_id,
                base_url=collector.url,
                identify_user=header_user,
                flush_interval=NO_PERIODIC_FLUSH,
            )
        ],
    )
    with pytest.raises(RuntimeError, match="shutdown failed"), TestClient(app) as client:
        client.get("/", headers={"x-user-id": "u-failed-shutdown"})
    assert collector.get_user(app_id, "u-failed-shutdown") is not None


class SlowCollector:
    """The real collector behind a delay, so a flush takes a while."""

    def __init__(self, app: Any, delay: float) -> None:
        self.app = app
        self.delay = delay

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            await asyncio.sleep(self.delay)
        await self.app(scope, receive, send)


@pytest.mark.anyio
async def test_shutdown_flush_does_not_block_the_event_loop(app_id: str, tmp_path: Path) -> None:
    collector_app = create_app(tmp_path / "slow.db")
    slow = ServerThread(SlowCollector(collector_app, delay=0.5)).start()
    try:
        middleware = MoesifUsersMiddleware(
            Starlette(routes=[Route("/", hello)]),
            application_id=app_id,
            base_url=slow.url,
            identify_user=header_user,
            flush_interval=NO_PERIODIC_FLUSH,
        )
        await middleware(http_scope("u-slow"), no_body, discard)

        inbox: asyncio.Queue[Message] = asyncio.Queue()
        outbox: list[Message] = []

        async def send(message: Message) -> None:
            outbox.append(message)

        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        tick_task = asyncio.create_task(ticker())
        inbox.put_nowait({"type": "lifespan.startup"})
        inbox.put_nowait({"type": "lifespan.shutdown"})
        started = time.monotonic()
        await middleware({"type": "lifespan", "asgi": {"version": "3.0"}}, inbox.get, send)
        elapsed = time.monotonic() - started
        tick_task.cancel()
        delivered = httpx.get(
            f"{slow.url}/v1/users/u-slow", headers={"X-Moesif-Application-Id": app_id}
        )
    finally:
        slow.stop()
        collector_app.state.store.close()

    assert [m["type"] for m in outbox] == [
        "lifespan.startup.complete",
        "lifespan.shutdown.complete",
    ]
    assert delivered.status_code == 200  # delivered during shutdown
    assert elapsed >= 0.5  # the flush waited for the slow collector ...
    assert ticks >= 10  # ... while the loop kept running other tasks


async def no_body() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


async def discard(message: Message) -> None:
    return None


def http_scope(user_id: str) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/",
        "raw_path": b"/",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"testserver"), (b"x-user-id", user_id.encode())],
        "client": ("203.0.113.9", 1234),
        "server": ("testserver", 80),
    }
