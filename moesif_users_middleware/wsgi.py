"""Any WSGI app (Bottle, Falcon, Pyramid, a Flask app wrapped from outside).

    from moesif_users_middleware.wsgi import MoesifUsersMiddleware

    app = MoesifUsersMiddleware(app, application_id="...", identify_user=...)
    # Flask, from outside the app:  app.wsgi_app = MoesifUsersMiddleware(app.wsgi_app, ...)

The response passes through untouched: the body is never read, buffered or re-chunked
(a streaming response keeps streaming; a ``wsgi.file_wrapper`` object is handed to the
server as it is, so ``sendfile`` still works). The user is recorded when the server
closes the response iterable, i.e. after the last byte was handed to the server.

Hooks are called as ``hook(request, response)``:

- ``request`` is a :class:`werkzeug.wrappers.Request` over the environ (the app's own
  one when it left it in ``environ["werkzeug.request"]``; Flask clears it at teardown),
  built only when a hook is configured, and parsed only as far as the hooks read it
  (:class:`~moesif_users_middleware.wsgi_request.LazyRequest`). Without werkzeug
  installed it is the raw environ dict.
- ``response`` is a :class:`~moesif_users_middleware.wsgi_response.ResponseView`:
  ``status_code`` (int), ``status`` (the status line) and ``headers`` (the list of
  ``(name, value)`` pairs the app passed to ``start_response``).

Without ``identify_user`` the user id is ``REMOTE_USER`` (set by the server's or an
outer middleware's authentication). An exception raised by the app propagates unchanged
and nothing is recorded for that request. Hooks must be plain functions: WSGI has no
event loop to await ``async def`` hooks on.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import partial
from typing import TYPE_CHECKING, Any

from moesif_users_middleware import hooks
from moesif_users_middleware.capture import Capture
from moesif_users_middleware.config import HOOK_OPTIONS, ConfigurationError, build_config
from moesif_users_middleware.request_view import EnvironView
from moesif_users_middleware.wsgi_response import ResponseView, call_on_close

try:
    from moesif_users_middleware.wsgi_request import LazyRequest as _Request
except ImportError:  # pragma: no cover - werkzeug is optional for plain WSGI apps
    _Request = None  # type: ignore[assignment,misc]

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

__all__ = ["MoesifUsersMiddleware", "ResponseView"]

_ADAPTER = "wsgi adapter"


class MoesifUsersMiddleware:
    """WSGI middleware: after each response is closed, queue the user's profile update.

    Accepts every option of :data:`moesif_users_middleware.config.CAPTURE_OPTIONS` as a
    keyword argument; they are validated here, once (a bad option raises
    :class:`~moesif_users_middleware.config.ConfigurationError`).
    """

    def __init__(self, app: WSGIApplication, **options: Any) -> None:
        config, _ = build_config(options)
        self.app = app
        self.capture: Capture | None = Capture(config) if config.enabled else None
        if self.capture is not None and self.capture.has_async_hooks:
            raise ConfigurationError(
                "async def hooks cannot run in a WSGI app: use plain functions"
            )
        # Hooks get native objects; without hooks the request object is never built.
        self.builds_request = any(getattr(config, name) is not None for name in HOOK_OPTIONS)

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if self.capture is None:
            return self.app(environ, start_response)
        response = ResponseView(start_response)
        # An exception from the app propagates unchanged, and nothing is recorded.
        body = self.app(environ, response)
        try:
            return call_on_close(
                body, partial(self._record, environ, response), environ.get("wsgi.file_wrapper")
            )
        except Exception as exc:  # the response must go out whatever happens here
            hooks.report("internal_errors", _ADAPTER, "wrap", repr(exc))
            return body

    def _record(self, environ: WSGIEnvironment, response: ResponseView) -> None:
        """Hand the finished request to the capture core; never raises."""
        capture = self.capture
        if capture is None or response.status is None:  # the app never started a response
            return
        try:
            request: Any = None
            if self.builds_request:
                request = _request(environ)
            capture.capture(EnvironView(environ, request, response))
        except Exception as exc:  # the request must go on whatever happens here
            hooks.report("internal_errors", _ADAPTER, "record", repr(exc))

    def __repr__(self) -> str:
        return f"MoesifUsersMiddleware({self.app!r}, enabled={self.capture is not None})"


def _request(environ: WSGIEnvironment) -> Any:
    """The app's own werkzeug request when it left one, else a new one, else the environ."""
    existing = environ.get("werkzeug.request")
    if existing is not None:
        return existing
    if _Request is None:
        return environ
    return _Request(environ)
