"""Flask extension: keep Moesif user profiles current from a Flask app.

    from moesif_users_middleware.flask import MoesifUsers

    moesif = MoesifUsers(app, identify_company=lambda request, response: g.account.company)
    # or, with an app factory:
    moesif = MoesifUsers(identify_user="myapp.hooks.identify_user")
    moesif.init_app(app)

Options are the keyword arguments of every adapter (``application_id``,
``identify_user``, ``skip``, ``flush_interval``, ...). Each may also come from
``app.config`` under ``MOESIF_USERS_<OPTION>`` (``MOESIF_USERS_APPLICATION_ID``,
``MOESIF_USERS_IDENTIFY_USER``, ...); keyword arguments win over ``app.config``, and
``init_app``'s over the constructor's. A configuration mistake never stops the app:
without an application id capture is off with one WARNING; an unknown key or option, a
bad value or an ``async def`` hook turns capture off with one ERROR naming it (and the
closest valid name for a misspelling). ``strict=True`` (or
``MOESIF_USERS_STRICT = True``) makes ``init_app`` raise
:class:`~moesif_users_middleware._capture.config.ConfigurationError` instead. The
per-app state lives in ``app.extensions["moesif_users"]`` (a :class:`FlaskState`), so
one extension object can serve several apps.

When the work happens: an ``after_request`` handler (registered by ``init_app``, so it
sees the final response) only registers a callback with ``response.call_on_close``,
holding a copy of the request's context variables (:func:`contextvars.copy_context`,
a constant-time snapshot). The server closes the response after it has sent the last
byte; the callback then runs the hooks inside that snapshot, so ``g``, ``request``,
``session`` and ``flask_login.current_user`` resolve to this request's objects, and no
hook ever delays the response. The alternatives measured worse: ``teardown_request``
costs as much but runs the hooks before the server writes the body, and
``copy_current_request_context`` costs ~25 µs per request and re-pushes the request
with a fresh ``g``.

Hooks are called as ``hook(request, response)`` with Flask's ``request`` and the
``Response`` as returned to the server. They run after Flask tore the request down:
``teardown_request``/``teardown_appcontext`` handlers have run, so a database session
removed there (Flask-SQLAlchemy) is closed. Read what the request already loaded (or
stash what you need on ``g`` in the view); a hook that raises is logged and counted and
never affects the response.

Without ``identify_user``: when Flask-Login is installed and the app has a
``LoginManager``, the user id is that of ``current_user`` — read in ``after_request``,
while the database session is still open, and only when the request itself loaded the
user (``login_required``, or any use of ``current_user``), so a request that never
touched it costs no user-loader call; ``force_user_load=True`` loads it for every
request (before the response is sent). Without a ``LoginManager`` it is ``REMOTE_USER``.
Anonymous requests record nothing.

Hooks must be plain functions: Flask runs them synchronously, so an ``async def``
hook is a configuration error (capture off, or raised with ``strict``).
Responses sent with ``direct_passthrough`` (``send_file``) are handled too; a
``wsgi.file_wrapper`` body is left as it is for the server's ``sendfile``.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextvars import copy_context
from functools import partial
from types import ModuleType
from typing import Any

from flask import Flask, Response, current_app, g, has_app_context, request

from moesif_users_middleware._capture import hooks
from moesif_users_middleware._capture.config import (
    CAPTURE_OPTIONS,
    CaptureConfig,
    ConfigurationError,
    build_config,
    configure_or_disable,
    unknown_options_error,
)
from moesif_users_middleware._capture.pipeline import Capture, user_id_from_object
from moesif_users_middleware._capture.profile_methods import ProfileMethods
from moesif_users_middleware._capture.request_view import EnvironView
from moesif_users_middleware._capture.wsgi_response import call_on_close
from moesif_users_middleware._flask_login import FlaskLogins, listen_for_logins, login_profile
from moesif_users_middleware._options import adapter_options

__all__ = ["CONFIG_PREFIX", "EXTENSION_KEY", "FLASK_OPTIONS", "FlaskState", "MoesifUsers"]

EXTENSION_KEY = "moesif_users"
CONFIG_PREFIX = "MOESIF_USERS_"
FLASK_OPTIONS: tuple[str, ...] = adapter_options("flask")
"""Options only the Flask extension accepts, besides ``CAPTURE_OPTIONS``."""

_ADAPTER = "flask adapter"
_VALID_OPTIONS = frozenset(CAPTURE_OPTIONS + FLASK_OPTIONS)


class MoesifUsers(ProfileMethods):
    """The Flask extension: ``MoesifUsers(app, **options)`` or ``init_app(app, **options)``.

    ``update_user`` & co. (as Moesif's middlewares have them) use the current app's
    configuration, or that of the one app initialised, outside an app context.
    """

    def __init__(self, app: Flask | None = None, **options: Any) -> None:
        self.options = options
        self._states: list[FlaskState] = []
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask, **options: Any) -> FlaskState:
        """Validate the options for ``app`` and register the ``after_request`` handler.

        A bad option or ``MOESIF_USERS_*`` key, or no application id, is logged once and
        leaves capture off (``strict=True`` raises :class:`ConfigurationError` instead).
        Raises :class:`ConfigurationError` when ``app`` already has the extension.
        """
        if EXTENSION_KEY in app.extensions:
            raise ConfigurationError("MoesifUsers is already initialised on this Flask app")
        given = {**self.options, **options}
        configured = configure_or_disable(
            partial(_configure, app.config, given),
            adapter="Flask",
            strict=given.get("strict", app.config.get(CONFIG_PREFIX + "STRICT")),
            strict_hint=f"strict=True or {CONFIG_PREFIX}STRICT",
        )
        config, extras = configured if configured is not None else (None, {})
        state = FlaskState(app, config, force_user_load=extras.get("force_user_load", False))
        app.extensions[EXTENSION_KEY] = state
        self._states.append(state)
        if state.capture is not None:
            app.after_request(state.after_request)
            if extras.get("login_profile") is not None:
                state.logins = listen_for_logins(app, state.capture, extras["login_profile"])
        return state

    def _profile_capture(self) -> Capture | None:
        if has_app_context():
            state = current_app.extensions.get(EXTENSION_KEY)
            return state.capture if isinstance(state, FlaskState) else None
        return self._states[0].capture if len(self._states) == 1 else None


def _configure(
    app_config: Mapping[str, Any], options: Mapping[str, Any]
) -> tuple[CaptureConfig, dict[str, Any]]:
    """The validated configuration and the Flask-only options (``login_profile`` resolved
    from ``update_on_login``); raises ``ConfigurationError``."""
    merged = {**options_from_app_config(app_config), **options}
    config, extras = build_config(merged, extra_options=FLASK_OPTIONS, sync_hooks="Flask")
    extras["login_profile"] = login_profile(config, extras)
    return config, extras


def options_from_app_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """``MOESIF_USERS_<OPTION>`` keys of ``app.config`` -> lower-case options.

    Raises :class:`ConfigurationError` naming an unknown ``MOESIF_USERS_*`` key (and the
    closest valid one).
    """
    options: dict[str, Any] = {}
    unknown: list[str] = []
    for key, value in config.items():
        if isinstance(key, str) and key.startswith(CONFIG_PREFIX):
            name = key[len(CONFIG_PREFIX) :].lower()
            if name not in _VALID_OPTIONS:
                unknown.append(key)
            options[name] = value
    if unknown:
        raise unknown_options_error(
            unknown,
            CAPTURE_OPTIONS + FLASK_OPTIONS,
            style=_config_key,
            bare=_option_name,
            noun="app.config key",
        )
    return options


def _config_key(name: str) -> str:
    return CONFIG_PREFIX + name.upper()


def _option_name(key: str) -> str:
    return key[len(CONFIG_PREFIX) :]


class FlaskState:
    """One app's extension state, stored in ``app.extensions["moesif_users"]``.

    ``capture`` is ``None`` when the extension was configured with ``enabled=False``;
    ``config`` is ``None`` too when the configuration had a mistake (logged at startup).
    """

    def __init__(self, app: Flask, config: CaptureConfig | None, *, force_user_load: bool) -> None:
        self.app = app
        self.config = config
        self.force_user_load = force_user_load
        self.capture: Capture | None = (
            Capture(config) if config is not None and config.enabled else None
        )
        # Imported once, here. Whether the app has a LoginManager is settled on its first
        # request (LoginManager.init_app may run before or after this extension's, but
        # Flask refuses it once requests are served).
        self.flask_login: ModuleType | None = (
            _import_flask_login()
            if self.capture is not None and self.capture.config.identify_user is None
            else None
        )
        self._uses_login: bool | None = None if self.flask_login is not None else False
        self.reads_jwt = config is not None and config.jwt_user_id_claim is not None
        self.logins: FlaskLogins | None = None  # update_on_login's receiver, kept alive here
        self._run = self._record  # bound once, not per request

    def after_request(self, response: Response) -> Response:
        """Arrange for the user to be recorded once the server closes ``response``."""
        try:
            login = self._uses_login
            if login is None:
                login = self._uses_login = getattr(self.app, "login_manager", None) is not None
            user_id: str | None = None
            if login:
                # The id is read now, while the request's database session is still open
                # (a committed, then detached, ORM user cannot be read after teardown).
                user_id = self._login_user_id()
                if user_id is None and not self.reads_jwt:
                    return response  # anonymous: nothing would be recorded
            deferred = _Deferred(copy_context().run, self._run, [response], login, user_id)
            if response.direct_passthrough:
                # The server gets `response.response` itself; Response.close() may never run.
                response.response = call_on_close(
                    response.response, deferred, request.environ.get("wsgi.file_wrapper")
                )
            response.call_on_close(deferred)
        except Exception as exc:  # the response must go out whatever happens here
            hooks.report("internal_errors", _ADAPTER, "after_request", repr(exc))
        return response

    def _login_user_id(self) -> str | None:
        if self.force_user_load:
            assert self.flask_login is not None
            user = self.flask_login.current_user._get_current_object()
        else:
            # Flask-Login keeps the user it loaded for this request on `g`.
            user = g.get("_login_user")
        return user_id_from_object(user)

    def _record(self, box: list[Response], login: bool, user_id: str | None) -> None:
        """Capture the boxed response on its first close (in the request's copied context).

        Never raises; later closes find the box empty and do nothing.
        """
        capture = self.capture
        if capture is None or not box:
            return
        try:
            response = box.pop()
            native = request._get_current_object()  # type: ignore[attr-defined]
            auth_user = partial(_identity, user_id) if login else None
            capture.capture(EnvironView(native.environ, native, response, auth_user))
        except Exception as exc:  # the request must go on whatever happens here
            hooks.report("internal_errors", _ADAPTER, "record", repr(exc))

    def __repr__(self) -> str:
        return f"FlaskState(app={self.app.name!r}, enabled={self.capture is not None})"


class _Deferred(partial[None]):
    """One response's pending capture: ``context.run(state._record, [response], ...)``.

    A ``partial`` (built and called in C) run by the first close. The response holds
    this callback and the callback holds the response, in a one-element list that the
    first run empties: that breaks the cycle, so the request's objects are freed by
    reference counting, as in a bare app, not left for the cyclic garbage collector;
    later closes find the list empty and do nothing.
    """

    __slots__ = ()


def _identity(value: str | None) -> str | None:
    return value


def _import_flask_login() -> ModuleType | None:
    try:
        import flask_login
    except ImportError:
        return None
    module: ModuleType = flask_login
    return module
