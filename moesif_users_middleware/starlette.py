"""Starlette / FastAPI adapter: a pure-ASGI middleware that keeps Moesif user profiles current.

    from moesif_users_middleware.starlette import MoesifUsersMiddleware

    app.add_middleware(
        MoesifUsersMiddleware,
        application_id="...",  # or MOESIF_APPLICATION_ID
        identify_user=lambda request, response: request.state.account.id,
    )

Hooks are called as ``hook(request, response)`` once the last byte of the response has
been handed to the server, so they never delay it:

- ``request`` is a :class:`starlette.requests.Request` over the request's scope, so
  ``request.state``, ``request.user`` (with ``AuthenticationMiddleware``),
  ``request.headers`` and ``request.path_params`` all work. Its body has been consumed.
- ``response`` is a :class:`ResponseView`: ``status_code`` and ``headers`` as sent.

``async def`` hooks are awaited. Plain ``def`` hooks are called directly on the event
loop, like any sync code in an async middleware: keep them cheap (no I/O), since a
blocking hook blocks every request of the worker.

Without ``identify_user``, the user id is ``scope["user"]`` (set by Starlette's
``AuthenticationMiddleware``, in any order relative to this one) when it is
authenticated: its ``identity`` (or ``username``).

A configuration mistake never fails a request: Starlette builds its middleware stack on
the first request (or lifespan startup) and would otherwise re-raise on every request.
Without an application id capture is off with one WARNING; any other bad option turns
capture off with one ERROR naming it. ``strict=True`` raises
:class:`~moesif_users_middleware._capture.config.ConfigurationError` from the constructor
instead, i.e. when the stack is built: at lifespan startup (so the server does not
start), or on the first request when the server runs no lifespan.

Only ``http`` scopes are captured; ``websocket`` and other scopes pass straight through.
On ``lifespan`` shutdown the shared sender is flushed (within ``shutdown_timeout``)
before the server is told the app has shut down, without blocking the event loop.
Servers that run no lifespan rely on the sender's own flush at process exit.
"""

from __future__ import annotations

from typing import Any

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from moesif_users_middleware._capture import hooks
from moesif_users_middleware._capture.config import (
    HOOK_OPTIONS,
    build_config,
    configure_or_disable,
)
from moesif_users_middleware._capture.pipeline import Capture
from moesif_users_middleware._capture.request_view import ScopeView

__all__ = ["MoesifUsersMiddleware", "ResponseView"]


_ADAPTER = "starlette adapter"
_SHUTDOWN_MESSAGES = frozenset({"lifespan.shutdown.complete", "lifespan.shutdown.failed"})


class ResponseView:
    """The response as hooks see it: ``status_code`` and ``headers`` (as sent)."""

    __slots__ = ("_headers", "_raw_headers", "status_code")

    def __init__(self, status_code: int, raw_headers: list[tuple[bytes, bytes]]) -> None:
        self.status_code = status_code
        self._raw_headers = raw_headers
        self._headers: Headers | None = None

    @property
    def headers(self) -> Headers:
        """The response headers (case-insensitive, read-only)."""
        if self._headers is None:
            self._headers = Headers(raw=self._raw_headers)
        return self._headers

    def __repr__(self) -> str:
        return f"ResponseView(status_code={self.status_code})"


class MoesifUsersMiddleware:
    """Pure-ASGI middleware: after each HTTP response, queue the user's profile update.

    Accepts every option of :data:`moesif_users_middleware._capture.config.CAPTURE_OPTIONS` as a
    keyword argument; they are validated here, once. A mistake turns capture off with one
    logged warning or error (``strict=True``: raises
    :class:`~moesif_users_middleware._capture.config.ConfigurationError`).
    """

    def __init__(self, app: ASGIApp, /, **options: Any) -> None:
        self.app = app
        configured = configure_or_disable(
            lambda: build_config(options)[0],
            adapter="Starlette/FastAPI",
            strict=options.get("strict"),
        )
        config = configured if configured is not None and configured.enabled else None
        self.capture: Capture | None = Capture(config) if config is not None else None
        self.is_async = self.capture is not None and self.capture.has_async_hooks
        # Hooks get native objects; without hooks they are never built.
        self.builds_request = config is not None and any(
            getattr(config, name) is not None for name in HOOK_OPTIONS
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        capture = self.capture
        if capture is None or scope["type"] != "http":
            if capture is not None and scope["type"] == "lifespan":
                send = self._lifespan_send(send)
            await self.app(scope, receive, send)  # websocket & co. pass straight through
            return

        # Per-request state lives in this frame: the response start and "body complete".
        start: Message | None = None
        complete = False

        async def send_wrapper(message: Message) -> None:
            nonlocal start, complete
            await send(message)
            kind = message["type"]
            if kind == "http.response.start":
                start = message
            elif kind == "http.response.body":
                if not message.get("more_body", False):
                    complete = True
            elif kind == "http.response.pathsend":
                complete = True

        # An exception from the app propagates unchanged, and nothing is recorded.
        await self.app(scope, receive, send_wrapper)
        if not complete or start is None:
            return
        try:  # the request must go on whatever happens here
            request: Request | None = None
            response: ResponseView | None = None
            if self.builds_request:
                request = Request(scope)
                response = ResponseView(start["status"], start.get("headers") or [])
            # Without identify_user, the view reads scope["user"] on demand.
            view = ScopeView(scope, request, response)
            if self.is_async:
                await capture.acapture(view)
            else:
                capture.capture(view)
        except Exception as exc:
            hooks.report("internal_errors", _ADAPTER, "record", repr(exc))

    def _lifespan_send(self, send: Send) -> Send:
        """Wrap a lifespan ``send`` so the sender is flushed before shutdown completes."""

        async def lifespan_send(message: Message) -> None:
            if message["type"] in _SHUTDOWN_MESSAGES:
                await self._flush()
            await send(message)

        return lifespan_send

    async def _flush(self) -> None:
        """Deliver what is queued within ``shutdown_timeout``, without blocking the loop."""
        capture = self.capture
        assert capture is not None
        try:
            sender = capture.sender
            await sender.aflush(sender.options.shutdown_timeout)
        except Exception as exc:
            hooks.report("internal_errors", _ADAPTER, "flush", repr(exc))
