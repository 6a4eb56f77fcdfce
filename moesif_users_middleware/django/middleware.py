"""The Django middleware: after each response, queue the user's profile update."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

from asgiref.sync import async_to_sync, iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.core.exceptions import MiddlewareNotUsed
from django.http import HttpRequest
from django.http.response import HttpResponseBase
from django.utils.functional import LazyObject, empty

from moesif_users_middleware._capture import hooks
from moesif_users_middleware._capture.config import configure_or_disable
from moesif_users_middleware._capture.pipeline import Capture
from moesif_users_middleware._capture.request_view import EnvironView, RequestView
from moesif_users_middleware.django.conf import SETTING, read_settings, strict_setting
from moesif_users_middleware.django.login import listen_for_logins

__all__ = ["MoesifUsersMiddleware"]

_ADAPTER = "django adapter"

GetResponse = Callable[[HttpRequest], HttpResponseBase]
AsyncGetResponse = Callable[[HttpRequest], Awaitable[HttpResponseBase]]


class MoesifUsersMiddleware:
    """Hybrid sync/async Django middleware that records the requesting user's profile.

    Place it after ``AuthenticationMiddleware``; configure it with ``settings.MOESIF_USERS``
    (upper-case option names, read once here). ``"ENABLED": False`` raises
    ``MiddlewareNotUsed`` (Django drops the middleware). A mistake never stops the
    project: no application id logs one WARNING, any other bad value one ERROR naming
    the key (also reported by the system checks), and the middleware is dropped the same
    way; with ``"STRICT": True`` it raises
    :class:`~moesif_users_middleware.django.conf.SettingsError` (a ``ConfigurationError``
    and an ``ImproperlyConfigured``) instead.

    The view runs first; then hooks are called as ``hook(request, response)`` with Django's
    own request and response, so users set inside the view (DRF, JWT) are seen. Without
    ``IDENTIFY_USER`` the user id is ``request.user.pk`` when the user is authenticated
    *and was already loaded* by the request; an unloaded lazy user is never forced (that
    would read the session and add ``Vary: Cookie``) unless ``FORCE_USER_LOAD`` is true
    (under ASGI it is then loaded with ``await request.auser()``). A user the view loaded
    with ``await request.auser()`` is also what ``request.user`` returns in hooks.

    Under ASGI the middleware runs on the event loop without a thread hop: ``async def``
    hooks are awaited, plain hooks are called directly and must not touch the database.
    Under WSGI ``async def`` hooks work too: they are awaited on a private event loop
    (``async_to_sync``), which costs more per request than plain hooks.
    Nothing here can break a request: a failure is logged (rate-limited) and the
    response is returned unchanged. Streaming responses keep streaming.
    """

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: GetResponse | AsyncGetResponse) -> None:
        resolved = configure_or_disable(
            read_settings,
            adapter="Django",
            strict=strict_setting(),
            strict_hint=f"settings.{SETTING}['STRICT'] = True",
        )
        if resolved is None:
            raise MiddlewareNotUsed(f"settings.{SETTING} has a mistake (logged): capture is off")
        if not resolved.config.enabled:
            raise MiddlewareNotUsed(f"settings.{SETTING}['ENABLED'] is False")
        self.get_response: Callable[[HttpRequest], Any] = get_response
        self.capture = Capture(resolved.config)
        self.logins = listen_for_logins(self.capture, resolved.update_on_login)
        self.force_user_load = resolved.force_user_load
        self.user_reader = _request_user if self.force_user_load else _loaded_user
        self.async_hooks = self.capture.has_async_hooks
        # Only the default user id (no IDENTIFY_USER) needs the user: FORCE_USER_LOAD
        # loads it for that, never for a hook.
        self.reads_user = resolved.config.identify_user is None
        self.async_mode = iscoroutinefunction(get_response)
        if self.async_mode:
            # Django then awaits __call__, which hands out the coroutine of __acall__.
            markcoroutinefunction(self)

    def __repr__(self) -> str:
        return f"<{type(self).__qualname__} async_mode={self.async_mode}>"

    def __call__(self, request: HttpRequest) -> Any:
        if self.async_mode:
            return self.__acall__(request)
        response = self.get_response(request)
        try:
            if "_acached_user" in request.__dict__:
                _share_async_user(request)
            view = EnvironView(request.META, request, response, partial(self.user_reader, request))
            if self.async_hooks:
                # Only with async hooks under WSGI: run them on a private event loop.
                async_to_sync(self.capture.acapture)(view)
            else:
                self.capture.capture(view)
        except Exception as exc:  # the request must go on whatever happens here
            hooks.report("internal_errors", _ADAPTER, "record", repr(exc))
        return response

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        response: HttpResponseBase = await self.get_response(request)
        try:
            await self._arecord(request, response)
        except Exception as exc:  # the request must go on whatever happens here
            hooks.report("internal_errors", _ADAPTER, "record", repr(exc))
        return response

    async def _arecord(self, request: HttpRequest, response: HttpResponseBase) -> None:
        _share_async_user(request)
        reader: Callable[[], Any]
        if self.force_user_load and self.reads_user:
            reader = partial(_constant, await _aload_user(request))
        else:
            reader = partial(_loaded_user, request)
        view: RequestView = EnvironView(request.META, request, response, reader)
        if self.async_hooks:
            await self.capture.acapture(view)
        else:
            self.capture.capture(view)


def _loaded_user(request: HttpRequest) -> Any:
    """The request's user if something already loaded it, else ``None``; never queries.

    ``AuthenticationMiddleware`` sets ``request.user`` to a lazy object; it counts once
    evaluated (or once ``auser()`` cached it). A plain object set by the view (DRF's
    ``Request.user`` setter assigns ``request._request.user``, ``login()`` assigns
    ``request.user``) is the user as is.
    """
    attrs = request.__dict__
    user = attrs.get("user")
    if user is None:
        return None
    # isinstance() looks at type() first, so it does not evaluate the lazy object.
    if isinstance(user, LazyObject):
        wrapped = user._wrapped  # reading _wrapped does not evaluate either
        if wrapped is not empty:
            return wrapped
        return attrs.get("_cached_user", attrs.get("_acached_user"))
    return user


def _share_async_user(request: HttpRequest) -> None:
    """Let ``request.user`` return the user a view loaded with ``await request.auser()``.

    Django caches the two separately; without this, a hook reading ``request.user``
    would query the database again (from the event loop, under ASGI, where that fails).
    """
    attrs = request.__dict__
    if "_acached_user" in attrs and "_cached_user" not in attrs:
        attrs["_cached_user"] = attrs["_acached_user"]


def _request_user(request: HttpRequest) -> Any:
    """``request.user``, loading it if needed (``FORCE_USER_LOAD`` under WSGI)."""
    return getattr(request, "user", None)


async def _aload_user(request: HttpRequest) -> Any:
    """The request's user, loaded without blocking the loop (``FORCE_USER_LOAD``, ASGI)."""
    user = _loaded_user(request)
    if user is not None or "user" not in request.__dict__:
        return user
    auser = getattr(request, "auser", None)
    if auser is None:
        # Django 4.2 has no request.auser(): evaluate the lazy user in a worker thread.
        return await sync_to_async(_evaluate_user, thread_sensitive=True)(request)
    user = await auser()
    _share_async_user(request)
    return user


def _evaluate_user(request: HttpRequest) -> Any:
    user = getattr(request, "user", None)
    if isinstance(user, LazyObject):
        user._setup()
        return user._wrapped
    return user


def _constant(value: Any) -> Any:
    return value
