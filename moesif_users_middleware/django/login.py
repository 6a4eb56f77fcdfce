"""Django logins: ``UPDATE_ON_LOGIN`` queues the user's profile on ``user_logged_in``.

The profile is built exactly as the ``moesif_users_backfill`` command builds it
(:class:`~moesif_users_middleware.backfill.django_source.ProfileBuilder`:
``GET_USER_PROFILE(user)``, else the hooks that take a ``user`` parameter and the user
model's ``email`` / ``first_name`` / ``last_name``), then the login request adds its IP,
user agent and campaign (:mod:`moesif_users_middleware._capture.login`). Any login
counts: a login view, ``django.contrib.auth.login`` or ``alogin`` in your code, and the
test client's ``login`` / ``force_login``.

The middleware connects the receiver when Django loads it; the receiver lives as long
as that middleware (a weak connection), and a middleware loaded later replaces it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from django.contrib.auth.signals import user_logged_in

from moesif_users_middleware._capture.login import LoginCapture
from moesif_users_middleware._capture.pipeline import Capture
from moesif_users_middleware._capture.request_view import EnvironView
from moesif_users_middleware.backfill.django_source import (
    BackfillConfigurationError,
    ProfileBuilder,
)
from moesif_users_middleware.backfill.items import Skipped, Unparsed
from moesif_users_middleware.django.conf import SETTING, raw_settings

__all__ = ["DjangoLogins", "listen_for_logins", "stop_listening"]

logger = logging.getLogger("moesif_users_middleware")
_UID = "moesif_users_middleware.django.login"


class ProfileHookError(Exception):
    """``GET_USER_PROFILE`` (or a hook the profile builder called) raised."""


class DjangoLogins:
    """The ``user_logged_in`` receiver of one middleware."""

    def __init__(self, capture: Capture, builder: ProfileBuilder) -> None:
        self.builder = builder
        self.logins = LoginCapture(capture, self.profile, label=f"settings.{SETTING} login")

    def profile(self, user: Any) -> Any:
        """The backfill's profile of ``user`` (``None``: left out)."""
        built = self.builder.build(user)
        if built is Skipped:
            return None
        if isinstance(built, Unparsed):
            raise ProfileHookError(f"{built.field}: {built.message}")
        return built

    def __call__(self, sender: Any, request: Any = None, user: Any = None, **kwargs: Any) -> None:
        meta = getattr(request, "META", None)
        if user is None or not isinstance(meta, Mapping):
            return
        self.logins.record(EnvironView(meta, request, None), user)


def listen_for_logins(capture: Capture, enabled: bool) -> DjangoLogins | None:
    """Connect (or, when not ``enabled``, disconnect) the login receiver; keep what it returns."""
    stop_listening()
    if not enabled:
        return None
    try:
        builder = ProfileBuilder.from_settings(raw_settings(), _unused_hook)
    except (BackfillConfigurationError, ImportError, TypeError) as exc:
        logger.error(
            "moesif_users_middleware: Django: profiles at login are off "
            "(settings.%s['UPDATE_ON_LOGIN']): %s",
            SETTING,
            exc,
        )
        return None
    receiver = DjangoLogins(capture, builder)
    user_logged_in.connect(receiver, weak=True, dispatch_uid=_UID)
    return receiver


def stop_listening() -> None:
    """Disconnect the login receiver, if one is connected."""
    user_logged_in.disconnect(dispatch_uid=_UID)


def _unused_hook(message: str) -> None:
    """A request hook without a ``user`` parameter adds nothing at login: the request
    capture after the login response runs it as usual."""
