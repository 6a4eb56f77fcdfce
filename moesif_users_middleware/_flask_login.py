"""Flask-Login logins: ``update_on_login`` queues the user's profile on ``user_logged_in``.

The profile is ``get_user_profile(user)`` (a dict or ``User``, or ``None``: nothing),
else the user's id (``get_id()``); the login request adds its IP, user agent and
campaign (:mod:`moesif_users_middleware._capture.login`). Any ``login_user`` call
inside a request counts. The receiver is connected for one app, weakly: the app's
extension state keeps it.
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib.util import find_spec
from typing import Any

from flask import Flask, has_request_context, request

from ._capture.config import CaptureConfig, ConfigurationError
from ._capture.hooks import HookError, import_path
from ._capture.login import LoginCapture, ProfileOf
from ._capture.pipeline import Capture, user_id_from_object
from ._capture.request_view import EnvironView

__all__ = ["FlaskLogins", "listen_for_logins", "login_profile"]


def login_profile(config: CaptureConfig, extras: Mapping[str, Any]) -> ProfileOf | None:
    """How to build a profile at login; ``None`` when ``update_on_login`` is off.

    Raises :class:`ConfigurationError` for a mistake: no Flask-Login, a
    ``get_user_profile`` that does not import or is not callable, or an
    ``identify_user`` hook without ``get_user_profile`` (the login's profile would not
    know which user id that hook gives).
    """
    if not extras.get("update_on_login"):
        return None
    if find_spec("flask_login") is None:
        raise ConfigurationError(
            "update_on_login listens to Flask-Login's logins: pip install flask-login"
        )
    hook = extras.get("get_user_profile")
    if hook is None:
        if config.identify_user is not None:
            raise ConfigurationError(
                "update_on_login with identify_user needs get_user_profile(user), returning "
                "the profile with the user id identify_user gives"
            )
        return _user_id_only
    if isinstance(hook, str):
        try:
            hook = import_path(hook.strip(), "get_user_profile")
        except HookError as exc:
            raise ConfigurationError(str(exc)) from exc.__cause__
    if not callable(hook):
        raise ConfigurationError(
            f"get_user_profile must be a callable or a dotted path, not {type(hook).__name__}"
        )
    profile_of: ProfileOf = hook
    return profile_of


class FlaskLogins:
    """The ``user_logged_in`` receiver of one app."""

    def __init__(self, capture: Capture, profile_of: ProfileOf) -> None:
        self.logins = LoginCapture(capture, profile_of)

    def on_login(self, sender: Any, user: Any = None, **extra: Any) -> None:
        if user is None or not has_request_context():
            return
        native = request._get_current_object()  # type: ignore[attr-defined]
        self.logins.record(EnvironView(native.environ, native, None), user)


def listen_for_logins(app: Flask, capture: Capture, profile_of: ProfileOf) -> FlaskLogins:
    """Connect the receiver to ``app``'s logins; keep what it returns alive."""
    from flask_login.signals import user_logged_in  # checked by login_profile

    receiver = FlaskLogins(capture, profile_of)
    user_logged_in.connect(receiver.on_login, sender=app)
    return receiver


def _user_id_only(user: Any) -> dict[str, str] | None:
    user_id = user_id_from_object(user)
    return None if user_id is None else {"user_id": user_id}
