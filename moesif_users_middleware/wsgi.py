"""Any WSGI app (Bottle, Falcon, Pyramid, a Flask app wrapped from outside).

    from moesif_users_middleware.wsgi import MoesifUsersMiddleware

    app = MoesifUsersMiddleware(app, application_id="...", identify_user=...)
    # Flask, from outside the app:  app.wsgi_app = MoesifUsersMiddleware(app.wsgi_app, ...)

The response passes through untouched: the body is never read, buffered or re-chunked
(a streaming response keeps streaming; a ``wsgi.file_wrapper`` object is handed to the
server as it is, so ``sendfile`` still works). The user is recorded when the server
closes the response iterable, i.e. after the last byte was handed to the server.

Hooks are called as ``hook(request, response)``, whatever else is installed:

- ``request`` is the WSGI ``environ`` dict itself (as Moesif's own WSGI middleware gives
  its hooks): ``environ["PATH_INFO"]``, ``environ.get("HTTP_X_API_KEY")``,
  ``environ.get("REMOTE_USER")``... The body (``wsgi.input``) has been read by the app.
  For an object instead, pass ``request_class``: any callable taking the environ (or
  its dotted path), called once per request that reaches a hook. With
  ``request_class=werkzeug.wrappers.Request`` hooks get the app's own werkzeug request
  when it left one in ``environ["werkzeug.request"]``, else a
  :class:`~moesif_users_middleware._capture.wsgi_request.LazyRequest` (a real werkzeug
  ``Request`` that parses only what the hook reads).
- ``response`` is a :class:`~moesif_users_middleware._capture.wsgi_response.ResponseView`:
  ``status`` (the status line, ``"201 Created"``), ``status_code`` (``201``; ``None``
  if the line does not start with a number), ``headers`` (the list of ``(name, value)``
  pairs the app passed to ``start_response``, as passed) and ``header(name)`` (the first
  value of a header, case-insensitive, or ``None``). The body is not available.

Without ``identify_user`` the user id is ``REMOTE_USER`` (set by the server's or an
outer middleware's authentication). An exception raised by the app propagates unchanged
and nothing is recorded for that request.

A configuration mistake never stops the app: without an application id capture is off
with one WARNING; any other bad option (including an ``async def`` hook: WSGI has no
event loop to await it on) turns capture off with one ERROR naming it. ``strict=True``
raises :class:`~moesif_users_middleware._capture.config.ConfigurationError` from the constructor
instead.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable, Iterable
from functools import partial
from typing import TYPE_CHECKING, Any

from moesif_users_middleware._capture import hooks
from moesif_users_middleware._capture.config import (
    HOOK_OPTIONS,
    ConfigurationError,
    configure_or_disable,
)
from moesif_users_middleware._capture.moesif_settings import MOESIF_OPTION, config_for
from moesif_users_middleware._capture.pipeline import Capture
from moesif_users_middleware._capture.profile_methods import ProfileMethods
from moesif_users_middleware._capture.request_view import EnvironView
from moesif_users_middleware._capture.wsgi_response import ResponseView, call_on_close
from moesif_users_middleware._options import adapter_options

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

__all__ = ["WSGI_OPTIONS", "MoesifUsersMiddleware", "ResponseView"]

WSGI_OPTIONS: tuple[str, ...] = adapter_options("wsgi")
"""Options only the plain WSGI middleware accepts, besides ``CAPTURE_OPTIONS``."""

_ADAPTER = "wsgi adapter"


class MoesifUsersMiddleware(ProfileMethods):
    """WSGI middleware: after each response is closed, queue the user's profile update.

    Accepts every option of :data:`moesif_users_middleware._capture.config.CAPTURE_OPTIONS`, and
    ``request_class``, as keyword arguments; they are validated here, once. A mistake
    turns capture off with one logged warning or error (``strict=True``: raises
    :class:`~moesif_users_middleware._capture.config.ConfigurationError`).

    ``moesif_settings=`` takes ``moesifwsgi``'s settings dict as it is, hooks and all
    (``IDENTIFY_USER(app, environ, response_headers)``, ...; ``app`` is the app wrapped
    here), with user ids derived as ``moesifwsgi`` derives them; other keyword options
    apply on top. ``update_user`` & co. work as ``moesifwsgi``'s do.
    """

    def __init__(self, app: WSGIApplication, **options: Any) -> None:
        self.app = app
        self.request_class: Callable[[WSGIEnvironment], Any] | None = None
        self.capture: Capture | None = None
        configured = configure_or_disable(
            partial(_configure, options, app), adapter="plain WSGI", strict=options.get("strict")
        )
        if configured is not None:
            self.capture, self.request_class = configured

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
            make = self.request_class
            request: Any = environ if make is None else make(environ)
            capture.capture(EnvironView(environ, request, response))
        except Exception as exc:  # the request must go on whatever happens here
            hooks.report("internal_errors", _ADAPTER, "record", repr(exc))

    def __repr__(self) -> str:
        return f"MoesifUsersMiddleware({self.app!r}, enabled={self.capture is not None})"


def _configure(
    options: dict[str, Any], app: WSGIApplication
) -> tuple[Capture | None, Callable[[WSGIEnvironment], Any] | None]:
    """The capture (``None`` when ``enabled=False``) and the request factory for hooks."""
    if MOESIF_OPTION in options and "request_class" in options:
        raise ConfigurationError(
            f"request_class does not apply with {MOESIF_OPTION}: moesifwsgi's hooks get the environ"
        )
    config, extras = config_for(
        options,
        "wsgi",
        app=app,
        extra_options=WSGI_OPTIONS,
        sync_hooks="a plain WSGI app (no event loop)",
    )
    if not config.enabled:
        return None, None
    request_class = _request_class(extras.get("request_class"))
    if all(getattr(config, name) is None for name in HOOK_OPTIONS):
        request_class = None  # no hook would see it
    return Capture(config), request_class


def _request_class(value: object) -> Callable[[WSGIEnvironment], Any] | None:
    """Resolve the ``request_class`` option: ``None``, a callable or a dotted path."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = hooks.import_path(value.strip(), "request_class")
        except hooks.HookError as exc:
            raise ConfigurationError(str(exc)) from exc.__cause__
    if not callable(value):
        raise ConfigurationError(
            "request_class must be a class or callable taking the WSGI environ "
            f"(e.g. werkzeug.wrappers.Request), not {type(value).__name__}"
        )
    if inspect.iscoroutinefunction(value):
        raise ConfigurationError("request_class must build the request object, not be async")
    try:
        inspect.signature(value).bind(None)
    except TypeError:
        raise ConfigurationError(
            f"request_class: {hooks.hook_label(value)} cannot be called as request_class(environ)"
        ) from None
    except ValueError:  # no signature (a C callable): trust it
        pass
    werkzeug = sys.modules.get("werkzeug.wrappers.request")  # given werkzeug's, it is loaded
    if werkzeug is not None and value is werkzeug.Request:
        from moesif_users_middleware._capture.wsgi_request import LazyRequest

        return partial(_werkzeug_request, LazyRequest)
    factory: Callable[[WSGIEnvironment], Any] = value
    return factory


def _werkzeug_request(lazy: Callable[[WSGIEnvironment], Any], environ: WSGIEnvironment) -> Any:
    """The app's own werkzeug request when it left one, else a lazily parsed new one."""
    existing = environ.get("werkzeug.request")
    if existing is not None:
        return existing
    return lazy(environ)
