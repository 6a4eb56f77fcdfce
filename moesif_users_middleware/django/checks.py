"""System checks for the Django adapter (registered by the app config's ``ready()``).

- ``moesif_users.E001`` ``settings.MOESIF_USERS`` is not a dict
- ``moesif_users.E002`` unknown keys (with the closest valid key; the hint lists them all)
- ``moesif_users.E003`` retired: a missing application id is now ``W004``
- ``moesif_users.E004`` a value of the wrong type, or a hook path that cannot be imported
- ``moesif_users.W001`` the middleware is missing from ``MIDDLEWARE``
- ``moesif_users.W002`` the middleware is placed before ``AuthenticationMiddleware``
- ``moesif_users.W003`` no ``AuthenticationMiddleware`` and no ``IDENTIFY_USER``
- ``moesif_users.W004`` no application id (while enabled): capture is off
- ``moesif_users.E005`` ``settings.MOESIF_MIDDLEWARE``, read because there is no
  ``MOESIF_USERS``, is not a dict
- ``moesif_users.E006`` a bad value in ``settings.MOESIF_MIDDLEWARE`` (a hook that is not
  callable, cannot be imported or has the wrong signature; a header name that is not text)
- ``moesif_users.I001`` both ``MOESIF_USERS`` and ``MOESIF_MIDDLEWARE`` are set: the
  middleware reads ``MOESIF_USERS``

Every ``E`` here is a mistake the middleware logs as one ERROR and answers by turning
capture off (``"STRICT": True``: by raising); ``W004`` is its one WARNING.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from django.apps import AppConfig
from django.conf import settings
from django.core.checks import CheckMessage, Error, Info, Warning
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from moesif_users_middleware._capture.moesif_settings import USED_KEYS
from moesif_users_middleware.django.conf import (
    MOESIF_SETTING,
    SETTING,
    active_setting,
    both_settings,
    parse,
    parse_moesif,
    raw_settings,
    unknown_keys_error,
    valid_keys,
)
from moesif_users_middleware.django.middleware import MoesifUsersMiddleware
from moesif_users_middleware.errors import ConfigurationError

__all__ = ["check_middleware", "check_settings"]

_OURS = "moesif_users_middleware.django.MoesifUsersMiddleware"
_AUTH = "django.contrib.auth.middleware.AuthenticationMiddleware"
# Stands in for a missing application id so the other values still get checked.
_PLACEHOLDER_ID = "placeholder-application-id"


def check_settings(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[CheckMessage]:
    """Validate ``settings.MOESIF_USERS``: shape, keys, application id, value types.

    Without it, ``settings.MOESIF_MIDDLEWARE`` (read as Moesif's settings) instead.
    """
    if active_setting() == MOESIF_SETTING:
        return _check_moesif_settings(getattr(settings, MOESIF_SETTING))
    try:
        raw = raw_settings()
    except ImproperlyConfigured as exc:
        return [Error(str(exc), id="moesif_users.E001")]
    messages: list[CheckMessage] = []
    if both_settings():
        messages.append(
            Info(
                f"Both settings.{SETTING} and settings.{MOESIF_SETTING} are set: "
                f"MoesifUsersMiddleware reads settings.{SETTING} only (settings."
                f"{MOESIF_SETTING} is left to Moesif's middleware).",
                hint=f"Remove settings.{SETTING} to have it read settings.{MOESIF_SETTING} "
                "as it is.",
                id="moesif_users.I001",
            )
        )
    valid = valid_keys()
    unknown = [key for key in raw if key not in valid]
    if unknown:
        messages.append(
            Error(
                str(unknown_keys_error(unknown)).partition("; valid ones are:")[0] + ".",
                hint=f"Valid keys: {', '.join(valid)}.",
                id="moesif_users.E002",
            )
        )
    known = {key: value for key, value in raw.items() if key in valid}
    if known.get("ENABLED", True) is not False and _missing_application_id(known):
        messages.append(_missing_id_warning(SETTING))
        known["APPLICATION_ID"] = _PLACEHOLDER_ID
    messages.extend(_value_errors(known, parse, SETTING, "moesif_users.E004"))
    return messages


def _check_moesif_settings(raw: object) -> list[CheckMessage]:
    """``settings.MOESIF_MIDDLEWARE``, read as ``moesifdjango``'s settings (unknown keys are
    Moesif's to judge: this library ignores the ones about event capture)."""
    if not isinstance(raw, Mapping):
        return [
            Error(
                f"settings.{MOESIF_SETTING} must be a dict (moesifdjango's settings), not "
                f"{type(raw).__name__}.",
                hint=f"Set settings.{SETTING} instead, or make settings.{MOESIF_SETTING} a dict.",
                id="moesif_users.E005",
            )
        ]
    messages: list[CheckMessage] = []
    known = {key: value for key, value in raw.items() if key in USED_KEYS}
    if known.get("ENABLED", True) is not False and _missing_application_id(known):
        messages.append(_missing_id_warning(MOESIF_SETTING))
        known["APPLICATION_ID"] = _PLACEHOLDER_ID
    messages.extend(_value_errors(known, parse_moesif, MOESIF_SETTING, "moesif_users.E006"))
    return messages


def check_middleware(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[CheckMessage]:
    """Check that the middleware is installed, after ``AuthenticationMiddleware``."""
    setting = active_setting()
    try:
        raw = raw_settings() if setting == SETTING else getattr(settings, setting)
    except ImproperlyConfigured:
        return []  # reported by check_settings
    if not isinstance(raw, Mapping) or raw.get("ENABLED", True) is False:
        return []
    middleware = [entry for entry in getattr(settings, "MIDDLEWARE", None) or () if entry]
    ours = _position(middleware, _OURS, _is_ours)
    auth = _position(middleware, _AUTH, _is_auth)
    if ours is None:
        return [
            Warning(
                f"settings.{setting} is set but MoesifUsersMiddleware is not in MIDDLEWARE: "
                "no user profile is recorded.",
                hint=f"Add {_OURS!r} to MIDDLEWARE after {_AUTH!r}.",
                id="moesif_users.W001",
            )
        ]
    if auth is not None and ours < auth:
        return [
            Warning(
                "MoesifUsersMiddleware is placed before AuthenticationMiddleware in MIDDLEWARE.",
                hint=f"Move {_OURS!r} after {_AUTH!r}.",
                id="moesif_users.W002",
            )
        ]
    if auth is None and raw.get("IDENTIFY_USER") is None:
        return [
            Warning(
                "AuthenticationMiddleware is not in MIDDLEWARE and no IDENTIFY_USER is set: "
                "requests have no user, so nothing is recorded.",
                hint=f"Add {_AUTH!r} to MIDDLEWARE or set settings.{setting}['IDENTIFY_USER'].",
                id="moesif_users.W003",
            )
        ]
    return []


def _missing_id_warning(setting: str) -> Warning:
    return Warning(
        f"No Moesif application id: settings.{setting} has no APPLICATION_ID "
        "and MOESIF_APPLICATION_ID is not set, so no user profile is recorded.",
        hint=f"Set settings.{setting}['APPLICATION_ID'] or the MOESIF_APPLICATION_ID "
        f"environment variable, or set settings.{setting}['ENABLED'] = False.",
        id="moesif_users.W004",
    )


def _missing_application_id(known: Mapping[str, Any]) -> bool:
    value = known.get("APPLICATION_ID")
    if value is None:
        value = os.environ.get("MOESIF_APPLICATION_ID")
        return value is None or not value.strip()
    return isinstance(value, str) and not value.strip()


def _value_errors(
    known: Mapping[str, Any], parse: Callable[[Any], object], setting: str, error_id: str
) -> list[CheckMessage]:
    """One error per bad value (each key checked alone), then the whole set together."""
    # Each key is checked beside a valid application id, so one bad id is reported once.
    base = {"APPLICATION_ID": _PLACEHOLDER_ID}
    errors: list[str] = []
    for key, value in known.items():
        try:
            parse({**base, key: value})
        except ConfigurationError as exc:
            errors.append(str(exc))
    if not errors:
        try:
            parse({**base, **known})
        except ConfigurationError as exc:
            errors.append(str(exc))
    return [Error(f"Invalid settings.{setting}: {error}", id=error_id) for error in errors]


def _position(middleware: Sequence[str], path: str, matches: Callable[[str], bool]) -> int | None:
    for index, entry in enumerate(middleware):
        if entry == path or matches(entry):
            return index
    return None


def _is_ours(entry: str) -> bool:
    return _is_subclass(entry, MoesifUsersMiddleware)


def _is_auth(entry: str) -> bool:
    # Imported here: it imports auth models, which cannot load while apps are populated.
    from django.contrib.auth.middleware import AuthenticationMiddleware

    return _is_subclass(entry, AuthenticationMiddleware)


def _is_subclass(entry: str, cls: type) -> bool:
    try:
        obj = import_string(entry)
    except Exception:  # an unimportable entry is Django's own check to report
        return False
    return isinstance(obj, type) and issubclass(obj, cls)
