"""The Starlette adapter through Starlette's own TestClient, delivering to the real collector."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import anyio.to_thread
import pytest

pytest.importorskip("starlette")

import starlette
from servers import CollectorHandle
from starlette.applications import Starlette
from starlette.authentication import (
    AuthCredentials,
    AuthenticationBackend,
    BaseUser,
    SimpleUser,
)
from starlette.middleware import Middleware
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.testclient import TestClient
from starlette.types import Message, Receive, Scope, Send
from starlette.websockets import WebSocket

import moesif_users_middleware.starlette as adapter
from moesif_users_middleware._capture.config import HOOK_OPTIONS, ConfigurationError
from moesif_users_middleware._capture.pipeline import capture_stats
from moesif_users_middleware.sender import _reset_senders_for_tests, get_sender
from moesif_users_middleware.starlette import MoesifUsersMiddleware, ResponseView

# TestClient streams a response body (rather than buffering it) from Starlette 1.9 on.
STREAMING_TESTCLIENT = tuple(int(part) for part in starlette.__version__.split(".")[:2]) >= (1, 9)

HOOK_NAMES = HOOK_OPTIONS


@pytest.fixture(autouse=True)
def _no_sender_left() -> Iterator[None]:
    yield
    _reset_senders_for_tests()


# --- a small app ---------------------------------------------------------------------------
async def hello(request: Request) -> Response:
    request.state.plan = "pro"
    return JSONResponse({"hello": "world"}, status_code=201, headers={"x-app": "1"})


async def boom(request: Request) -> Response:
    raise LookupError("the view failed")


async def echo(websocket: WebSocket) -> None:
    await websocket.accept()
    text = await websocket.receive_text()
    await websocket.send_text(f"echo: {text}")
    await websocket.close()


def routes(*extra: Any) -> list[Any]:
    return [
        Route("/hello", hello),
        Route("/items/{item_id}", hello),
        Route("/health", hello),
        Route("/boom", boom),
        WebSocketRoute("/ws", echo),
        *extra,
    ]


def make_app(app_id: str, collector: CollectorHandle, *extra: Any, **options: Any) -> Starlette:
    options.setdefault("flush_interval", 0.2)
    return Starlette(
        routes=routes(*extra),
        middleware=[
            Middleware(
                MoesifUsersMiddleware,
                application_id=app_id,
                base_url=collector.url,
                **options,
            )
        ],
    )


def deliver(app_id: str, collector: CollectorHandle) -> None:
    assert get_sender(application_id=app_id, base_url=collector.url).flush(5)


def header_user(request: Request, response: ResponseView) -> str | None:
    return request.headers.get("x-user-id")


# --- hooks, sync and async twins -----------------------------------------------------------
def sync_hooks() -> dict[str, Any]:
    def identify_user(request: Request, response: ResponseView) -> str | None:
        return request.headers.get("x-user-id")

    def identify_company(request: Request, response: ResponseView) -> str | None:
        return "acme"

    def get_metadata(request: Request, response: ResponseView) -> dict[str, Any]:
        return {
            "email": f"{request.headers['x-user-id']}@acme.example",
            "plan": request.state.plan,
            "last_status": response.status_code,
        }

    return {
        "identify_user": identify_user,
        "identify_company": identify_company,
        "get_metadata": get_metadata,
    }


def async_hooks() -> dict[str, Any]:
    async def identify_user(request: Request, response: ResponseView) -> str | None:
        await asyncio.sleep(0)
        return request.headers.get("x-user-id")

    async def identify_company(request: Request, response: ResponseView) -> str | None:
        await asyncio.sleep(0)
        return "acme"

    async def get_metadata(request: Request, response: ResponseView) -> dict[str, Any]:
        await anyio.to_thread.run_sync(lambda: None)  # a real await that leaves the loop
        return {
            "email": f"{request.headers['x-user-id']}@acme.example",
            "plan": request.state.plan,
            "last_status": response.status_code,
        }

    return {
        "identify_user": identify_user,
        "identify_company": identify_company,
        "get_metadata": get_metadata,
    }


def mixed_hooks() -> dict[str, Any]:
    hooks = sync_hooks()
    hooks["get_metadata"] = async_hooks()["get_metadata"]
    return hooks


@pytest.mark.parametrize("make_hooks", [sync_hooks, async_hooks, mixed_hooks])
def test_profile_arrives_with_every_field(
    app_id: str, collector: CollectorHandle, make_hooks: Callable[[], dict[str, Any]]
) -> None:
    app = make_app(app_id, collector, **make_hooks())
    with TestClient(app, client=("203.0.113.7", 4321)) as client:
        response = client.get(
            "/hello?utm_source=newsletter&utm_medium=email&utm_campaign=spring",
            headers={
                "x-user-id": "u-1",
                "authorization": "Bearer tok-123",
                "user-agent": "acme-cli/2.1",
            },
        )
        assert response.status_code == 201
        deliver(app_id, collector)

    profile = collector.get_user(app_id, "u-1")
    assert profile is not None
    assert profile["company_id"] == "acme"
    assert profile["session_tokens"] == ["tok-123"]
    assert profile["ip_address"] == "203.0.113.7"
    assert profile["user_agent_string"] == "acme-cli/2.1"
    assert profile["campaign"]["utm_source"] == "newsletter"
    assert profile["campaign"]["utm_medium"] == "email"
    assert profile["campaign"]["utm_campaign"] == "spring"
    assert profile["metadata"] == {
        "email": "u-1@acme.example",
        "plan": "pro",
        "last_status": 201,
    }


def test_client_ip_from_trusted_proxy(app_id: str, collector: CollectorHandle) -> None:
    app = make_app(app_id, collector, identify_user=header_user)
    with TestClient(app, client=("127.0.0.1", 5000)) as client:
        client.get("/hello", headers={"x-user-id": "u-ip", "x-forwarded-for": "198.51.100.9"})
        deliver(app_id, collector)
    profile = collector.get_user(app_id, "u-ip")
    assert profile is not None
    assert profile["ip_address"] == "198.51.100.9"


def test_hooks_get_starlette_request_and_response_view(
    app_id: str, collector: CollectorHandle
) -> None:
    seen: list[tuple[Any, Any]] = []

    def identify_user(request: Request, response: ResponseView) -> str:
        seen.append((request, response))
        return "u-view"

    app = make_app(app_id, collector, identify_user=identify_user)
    with TestClient(app) as client:
        client.get("/items/42")
    [(request, response)] = seen
    assert isinstance(request, Request)
    assert request.path_params == {"item_id": "42"}
    assert request.state.plan == "pro"  # set by the endpoint on the same scope
    assert request.url.path == "/items/42"
    assert isinstance(response, ResponseView)
    assert response.status_code == 201
    assert response.headers["x-app"] == "1"
    assert response.headers["content-type"] == "application/json"


# --- the default user id: scope["user"] ----------------------------------------------------
class Account(BaseUser):
    def __init__(self, account_id: str) -> None:
        self.account_id = account_id

    @property
    def is_authenticated(self) -> bool:
        return True

    @property
    def display_name(self) -> str:
        return f"Account {self.account_id}"

    @property
    def identity(self) -> str:
        return self.account_id


class TokenBackend(AuthenticationBackend):
    async def authenticate(self, conn: HTTPConnection) -> tuple[AuthCredentials, BaseUser] | None:
        token = conn.headers.get("x-api-key")
        if token is None:
            return None  # UnauthenticatedUser
        if token.startswith("simple-"):
            return AuthCredentials(["authenticated"]), SimpleUser(token.removeprefix("simple-"))
        return AuthCredentials(["authenticated"]), Account(token.removeprefix("key-"))


@pytest.mark.parametrize("ours_outermost", [True, False])
def test_default_user_id_is_the_authenticated_scope_user(
    app_id: str, collector: CollectorHandle, ours_outermost: bool
) -> None:
    ours = Middleware(
        MoesifUsersMiddleware, application_id=app_id, base_url=collector.url, flush_interval=0.2
    )
    auth = Middleware(AuthenticationMiddleware, backend=TokenBackend())
    stack = [ours, auth] if ours_outermost else [auth, ours]
    app = Starlette(routes=routes(), middleware=stack)
    with TestClient(app) as client:
        assert client.get("/hello", headers={"x-api-key": "key-acct-7"}).status_code == 201
        assert client.get("/hello", headers={"x-api-key": "simple-sam"}).status_code == 201
        assert client.get("/hello").status_code == 201  # anonymous
        deliver(app_id, collector)

    profile = collector.get_user(app_id, "acct-7")
    assert profile is not None
    assert profile["session_tokens"] == ["key-acct-7"]  # X-Api-Key is a default token header
    assert collector.get_user(app_id, "sam") is not None
    assert [p["user_id"] for p in collector.list_users(app_id)] == ["acct-7", "sam"]


# --- nothing recorded ----------------------------------------------------------------------
def test_skip_and_anonymous_record_nothing(app_id: str, collector: CollectorHandle) -> None:
    def skip(request: Request, response: ResponseView) -> bool:
        return request.url.path == "/health"

    app = make_app(app_id, collector, identify_user=header_user, skip=skip)
    with TestClient(app) as client:
        assert client.get("/health", headers={"x-user-id": "u-skipped"}).status_code == 201
        assert client.get("/hello").status_code == 201  # no user id: anonymous
        assert client.get("/hello", headers={"x-user-id": "u-seen"}).status_code == 201
        deliver(app_id, collector)

    assert [p["user_id"] for p in collector.list_users(app_id)] == ["u-seen"]
    assert get_sender(application_id=app_id, base_url=collector.url).stats()["queued"] == 1


def test_app_exception_propagates_and_records_nothing(
    app_id: str, collector: CollectorHandle
) -> None:
    app = make_app(app_id, collector, identify_user=header_user)
    with TestClient(app) as client:
        with pytest.raises(LookupError, match="the view failed"):
            client.get("/boom", headers={"x-user-id": "u-boom"})
        client.get("/hello", headers={"x-user-id": "u-ok"})
        deliver(app_id, collector)
    assert [p["user_id"] for p in collector.list_users(app_id)] == ["u-ok"]


@pytest.mark.anyio
async def test_app_exception_is_reraised_unchanged(app_id: str, collector: CollectorHandle) -> None:
    error = LookupError("exactly this one")

    async def failing(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"partial"})
        raise error

    middleware = MoesifUsersMiddleware(
        failing, application_id=app_id, base_url=collector.url, identify_user=lambda r, s: "u-x"
    )
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    with pytest.raises(LookupError) as raised:
        await middleware(http_scope(), no_body, send)
    assert raised.value is error
    assert len(sent) == 2
    assert get_sender(application_id=app_id, base_url=collector.url).stats()["queued"] == 0


# --- a raising hook never changes the response ---------------------------------------------
def response_signature(app: Starlette) -> tuple[int, bytes, list[tuple[str, str]]]:
    with TestClient(app) as client:
        response = client.get("/hello", headers={"x-user-id": "u-raise"})
        return response.status_code, response.content, response.headers.multi_items()


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("hook_name", HOOK_NAMES)
def test_raising_hook_leaves_response_untouched(
    app_id: str, collector: CollectorHandle, hook_name: str, is_async: bool
) -> None:
    def raising(request: Request, response: ResponseView) -> Any:
        raise RuntimeError(f"{hook_name} is broken")

    async def araising(request: Request, response: ResponseView) -> Any:
        raise RuntimeError(f"{hook_name} is broken")

    options: dict[str, Any] = {"identify_user": header_user}
    if hook_name.startswith("get_company_"):  # called only for a request with a company
        options["identify_company"] = lambda request, response: "co-raise"
    options[hook_name] = araising if is_async else raising
    before = capture_stats()

    bare = Starlette(routes=routes())
    assert response_signature(make_app(app_id, collector, **options)) == response_signature(bare)
    after = capture_stats()
    assert after["hook_errors"] == before["hook_errors"] + 1
    assert after["skipped"] == before["skipped"] + (hook_name == "skip")

    deliver(app_id, collector)
    profile = collector.get_user(app_id, "u-raise")
    if hook_name in ("identify_user", "skip"):
        assert profile is None  # no user id, or skip fails closed: no record
    else:
        assert profile is not None  # only the failing hook's field is lost
    if hook_name == "identify_company":
        assert profile is not None
        assert "company_id" not in profile or profile["company_id"] is None


def test_internal_error_is_contained(
    app_id: str, collector: CollectorHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A bug in the library itself (no real server can provoke one): the view cannot be built.
    def broken_view(*args: Any) -> None:
        raise TypeError("a bug in the library")

    monkeypatch.setattr(adapter, "ScopeView", broken_view)
    before = capture_stats()["internal_errors"]
    app = make_app(app_id, collector, identify_user=header_user)
    bare = Starlette(routes=routes())
    assert response_signature(app) == response_signature(bare)
    assert capture_stats()["internal_errors"] == before + 1


# --- capture happens after the last byte ---------------------------------------------------
async def no_body() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


def http_scope(path: str = "/hello") -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"testserver"), (b"x-user-id", b"u-order")],
        "client": ("203.0.113.9", 1234),
        "server": ("testserver", 80),
    }


@pytest.mark.anyio
async def test_hooks_run_after_the_final_body_was_sent(
    app_id: str, collector: CollectorHandle
) -> None:
    sent: list[Message] = []
    seen_at_hook: list[list[str]] = []

    async def identify_user(request: Request, response: ResponseView) -> str:
        seen_at_hook.append([m["type"] for m in sent])
        return "u-order"

    app = Starlette(routes=routes())
    middleware = MoesifUsersMiddleware(
        app, application_id=app_id, base_url=collector.url, identify_user=identify_user
    )

    async def send(message: Message) -> None:
        sent.append(message)

    await middleware(http_scope(), no_body, send)
    assert seen_at_hook == [["http.response.start", "http.response.body"]]
    assert sent[-1].get("more_body", False) is False


@pytest.mark.skipif(
    not STREAMING_TESTCLIENT, reason="TestClient streams responses from Starlette 1.9 on"
)
def test_streaming_response_still_streams(app_id: str, collector: CollectorHandle) -> None:
    proceed = threading.Event()

    async def chunks() -> AsyncIterator[bytes]:
        yield b"first\n"
        # Only a client that already got the first chunk can release the second one.
        released = await anyio.to_thread.run_sync(proceed.wait, 10)
        yield b"second\n" if released else b"buffered!\n"

    async def stream(request: Request) -> Response:
        return StreamingResponse(chunks(), media_type="text/plain")

    app = make_app(app_id, collector, Route("/stream", stream), identify_user=header_user)
    sender = get_sender(application_id=app_id, base_url=collector.url)
    with TestClient(app) as client:
        with client.stream("GET", "/stream", headers={"x-user-id": "u-stream"}) as response:
            body = response.iter_bytes()
            assert next(body) == b"first\n"
            assert sender.stats()["queued"] == 0  # nothing captured before the last chunk
            proceed.set()
            assert b"".join(body) == b"second\n"
        deliver(app_id, collector)
    assert sender.stats()["queued"] == 1
    assert collector.get_user(app_id, "u-stream") is not None


def test_large_plain_response_unchanged(app_id: str, collector: CollectorHandle) -> None:
    payload = "x" * 300_000

    async def large(request: Request) -> Response:
        return PlainTextResponse(payload)

    app = make_app(app_id, collector, Route("/large", large), identify_user=header_user)
    with TestClient(app) as client:
        response = client.get("/large", headers={"x-user-id": "u-large"})
        assert response.text == payload
        assert response.headers["content-length"] == str(len(payload))
        deliver(app_id, collector)
    assert collector.get_user(app_id, "u-large") is not None


# --- other scopes pass straight through ----------------------------------------------------
def test_websocket_route_works_and_records_nothing(app_id: str, collector: CollectorHandle) -> None:
    app = make_app(app_id, collector, identify_user=lambda request, response: "u-ws")
    with TestClient(app) as client:
        with client.websocket_connect("/ws", headers={"x-user-id": "u-ws"}) as websocket:
            websocket.send_text("hi")
            assert websocket.receive_text() == "echo: hi"
        deliver(app_id, collector)
    assert collector.get_user(app_id, "u-ws") is None


@pytest.mark.anyio
@pytest.mark.parametrize("scope_type", ["websocket", "custom.protocol"])
async def test_non_http_scopes_get_the_original_callables(
    app_id: str, collector: CollectorHandle, scope_type: str
) -> None:
    calls: list[tuple[Scope, Receive, Send]] = []

    async def inner(scope: Scope, receive: Receive, send: Send) -> None:
        calls.append((scope, receive, send))

    async def send(message: Message) -> None:
        raise AssertionError("unused")

    middleware = MoesifUsersMiddleware(inner, application_id=app_id, base_url=collector.url)
    scope = {"type": scope_type, "path": "/ws", "headers": []}
    await middleware(scope, no_body, send)
    assert calls == [(scope, no_body, send)]
    assert calls[0][0] is scope
    assert calls[0][2] is send


@pytest.mark.anyio
async def test_disabled_middleware_is_a_pass_through(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MOESIF_APPLICATION_ID", raising=False)
    calls: list[Send] = []

    async def inner(scope: Scope, receive: Receive, send: Send) -> None:
        calls.append(send)

    async def send(message: Message) -> None:
        raise AssertionError("unused")

    middleware = MoesifUsersMiddleware(inner, enabled=False)  # no application id needed
    await middleware(http_scope(), no_body, send)
    assert calls == [send]


def plain_hello(request: Request) -> Response:
    return PlainTextResponse("hello")


@pytest.mark.parametrize(
    ("given", "level", "fragment"),
    [
        ({}, "WARNING", "MOESIF_APPLICATION_ID"),
        (
            {"application_id": "x", "batchsize": 5},
            "ERROR",
            "unknown option 'batchsize': did you mean 'batch_size'?",
        ),
        ({"application_id": "x", "identify_user": 42}, "ERROR", "identify_user must be"),
        ({"application_id": "x", "skip": "no_such_module_x.skip"}, "ERROR", "skip: cannot"),
    ],
)
def test_configuration_mistakes_turn_capture_off(
    given: dict[str, Any],
    level: str,
    fragment: str,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Starlette builds the stack on first use: a mistake must not answer 500 ever after."""
    monkeypatch.delenv("MOESIF_APPLICATION_ID", raising=False)
    caplog.set_level("DEBUG", logger="moesif_users_middleware")
    app = Starlette(routes=[Route("/", plain_hello)])
    app.add_middleware(MoesifUsersMiddleware, **{"identify_user": header_user, **given})
    with TestClient(app) as client:  # lifespan too
        for _ in range(3):
            response = client.get("/", headers={"X-User": "off"})
            assert (response.status_code, response.text) == (200, "hello")
    records = [r for r in caplog.records if r.name == "moesif_users_middleware"]
    assert [r.levelname for r in records] == [level]  # once, not per request
    assert fragment in records[0].getMessage()


def test_strict_raises_when_the_stack_is_built(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MOESIF_APPLICATION_ID", raising=False)
    with pytest.raises(ConfigurationError, match="did you mean 'batch_size'"):
        MoesifUsersMiddleware(Starlette(), application_id="x", batchsize=5, strict=True)
    with pytest.raises(ConfigurationError, match="MOESIF_APPLICATION_ID"):
        MoesifUsersMiddleware(Starlette(), strict=True)
    # Added to an app: lifespan startup fails, so the server never starts serving...
    app = Starlette(routes=[Route("/", plain_hello)])
    app.add_middleware(MoesifUsersMiddleware, strict=True)
    with pytest.raises(ConfigurationError), TestClient(app):
        pass
    # ... and without lifespan, the first request raises (deterministically, every time).
    app = Starlette(routes=[Route("/", plain_hello)])
    app.add_middleware(MoesifUsersMiddleware, strict=True)
    client = TestClient(app)
    for _ in range(2):
        with pytest.raises(ConfigurationError):
            client.get("/")


def test_response_view_repr_and_headers() -> None:
    view = ResponseView(204, [(b"x-a", b"1"), (b"X-B", b"2")])
    assert view.status_code == 204
    assert view.headers["x-a"] == "1"
    assert view.headers is view.headers  # built once
    assert repr(view) == "ResponseView(status_code=204)"
