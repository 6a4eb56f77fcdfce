"""One small app per adapter kind, driven through its framework's own test client.

The ``test_hardening_*`` modules use these to compare an app with and without the
middleware: ``make_site(kind, options)`` returns a :class:`Site` whose ``request``
answers an :class:`Answer` (status, headers, body) as the client saw it. With
``options=None`` the app runs bare. Every app answers ``201`` with a fixed body, an
``X-App`` header and a ``Set-Cookie``, and reads the request body itself.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from flask import Flask
from flask import Response as FlaskResponse
from flask import request as flask_request
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from starlette.testclient import TestClient
from werkzeug.test import Client

from moesif_users_middleware.flask import MoesifUsers
from moesif_users_middleware.starlette import MoesifUsersMiddleware as AsgiMiddleware
from moesif_users_middleware.wsgi import MoesifUsersMiddleware as WsgiMiddleware

__all__ = ["KINDS", "PUBLIC_PEER", "Answer", "Site", "make_site"]

KINDS = ("wsgi", "flask", "starlette")
PUBLIC_PEER = "203.0.113.7"  # TEST-NET-3: never a trusted proxy
APP_BODY = b"app-body"
APP_HEADERS = {"Content-Type": "text/plain; charset=utf-8", "X-App": "kept"}
APP_COOKIE = "app-cookie=APP-SET-COOKIE-VALUE; Path=/"

Environ = dict[str, Any]


@dataclass(frozen=True)
class Answer:
    """A response as the client saw it; header names lower-cased and sorted."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes


class Site(Protocol):
    """An app behind (or without) the middleware, with its test client."""

    kind: str

    def request(
        self,
        path: str = "/echo",
        *,
        method: str = "GET",
        headers: Mapping[str, str] | None = None,
        body: bytes = b"",
        peer: str = PUBLIC_PEER,
    ) -> Answer: ...


def request_header(request: Any, name: str) -> str | None:
    """A request header from any adapter's hook request (the plain WSGI one is the environ)."""
    if isinstance(request, dict):  # plain WSGI: the environ
        value = request.get("HTTP_" + name.upper().replace("-", "_"))
        return value if isinstance(value, str) else None
    value = request.headers.get(name)
    return value if isinstance(value, str) else None


def _answer(status: int, headers: Iterable[tuple[str, str]], body: bytes) -> Answer:
    return Answer(status, tuple(sorted((k.lower(), v) for k, v in headers)), body)


# --- plain WSGI -------------------------------------------------------------------------


def _wsgi_app(environ: Environ, start_response: Callable[..., Any]) -> list[bytes]:
    stream = environ.get("wsgi.input")
    length = environ.get("CONTENT_LENGTH") or "0"
    if stream is not None and length.isdigit():
        stream.read(int(length))
    start_response("201 Created", [*APP_HEADERS.items(), ("Set-Cookie", APP_COOKIE)])
    return [APP_BODY]


class _WsgiSite:
    kind = "wsgi"

    def __init__(self, options: dict[str, Any] | None) -> None:
        app = _wsgi_app if options is None else WsgiMiddleware(_wsgi_app, **options)
        self.client = Client(app)

    def request(
        self,
        path: str = "/echo",
        *,
        method: str = "GET",
        headers: Mapping[str, str] | None = None,
        body: bytes = b"",
        peer: str = PUBLIC_PEER,
    ) -> Answer:
        response = self.client.open(
            path,
            method=method,
            headers=dict(headers or {}),
            data=body,
            environ_base={"REMOTE_ADDR": peer},
            buffered=True,
        )
        return _answer(response.status_code, response.headers.items(), response.get_data())


# --- Flask ------------------------------------------------------------------------------


class _FlaskSite:
    kind = "flask"

    def __init__(self, options: dict[str, Any] | None) -> None:
        app = Flask("hardening")

        @app.route("/echo", methods=["GET", "POST"])
        def echo() -> FlaskResponse:
            flask_request.get_data()
            response = FlaskResponse(APP_BODY, 201, headers=APP_HEADERS)
            response.headers["Set-Cookie"] = APP_COOKIE
            return response

        if options is not None:
            MoesifUsers(app, **options)
        self.client = app.test_client()

    def request(
        self,
        path: str = "/echo",
        *,
        method: str = "GET",
        headers: Mapping[str, str] | None = None,
        body: bytes = b"",
        peer: str = PUBLIC_PEER,
    ) -> Answer:
        response = self.client.open(
            path,
            method=method,
            headers=dict(headers or {}),
            data=body,
            environ_base={"REMOTE_ADDR": peer},
            buffered=True,
        )
        return _answer(response.status_code, response.headers.items(), response.get_data())


# --- Starlette --------------------------------------------------------------------------


async def _echo(request: Request) -> Response:
    await request.body()
    response = PlainTextResponse(APP_BODY, status_code=201, headers={"X-App": "kept"})
    response.headers.append("Set-Cookie", APP_COOKIE)
    return response


class _StarletteSite:
    kind = "starlette"

    def __init__(self, options: dict[str, Any] | None) -> None:
        middleware = [] if options is None else [Middleware(AsgiMiddleware, **options)]
        self.app = Starlette(
            routes=[Route("/echo", _echo, methods=["GET", "POST"])], middleware=middleware
        )
        self._clients: dict[str, TestClient] = {}

    def request(
        self,
        path: str = "/echo",
        *,
        method: str = "GET",
        headers: Mapping[str, str] | None = None,
        body: bytes = b"",
        peer: str = PUBLIC_PEER,
    ) -> Answer:
        client = self._clients.get(peer)
        if client is None:
            client = self._clients[peer] = TestClient(self.app, client=(peer, 50000))
        response = client.request(method, path, headers=dict(headers or {}), content=body)
        return _answer(response.status_code, response.headers.multi_items(), response.content)


def make_site(kind: str, options: dict[str, Any] | None) -> Site:
    """The ``kind`` app (``wsgi``, ``flask`` or ``starlette``), bare when ``options`` is None."""
    if kind == "wsgi":
        return _WsgiSite(options)
    if kind == "flask":
        return _FlaskSite(options)
    if kind == "starlette":
        return _StarletteSite(options)
    raise ValueError(f"unknown app kind {kind!r}")
