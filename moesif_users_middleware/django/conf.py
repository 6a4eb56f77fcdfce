"""Reading ``settings.MOESIF_USERS`` (upper-case keys) into a capture configuration.

Without ``MOESIF_USERS``, ``settings.MOESIF_MIDDLEWARE`` (``moesifdjango``'s settings) is
read as it is instead (see ``_capture/moesif_settings.py``); ``MOESIF_USERS`` wins when
both are set.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from moesif_users_middleware._capture.config import (
    CAPTURE_OPTIONS,
    CaptureConfig,
    ConfigurationError,
    MissingApplicationIdError,
    build_config,
    options_from_upper,
    unknown_options_error,
)
from moesif_users_middleware._capture.moesif_settings import moesif_config
from moesif_users_middleware._options import adapter_options

__all__ = [
    "EXTRA_OPTIONS",
    "MOESIF_SETTING",
    "SETTING",
    "DjangoSettings",
    "MissingSettingsApplicationIdError",
    "SettingsError",
    "active_setting",
    "both_settings",
    "parse",
    "parse_moesif",
    "raw_settings",
    "read_settings",
    "strict_setting",
    "unknown_keys_error",
    "valid_keys",
]

SETTING = "MOESIF_USERS"
MOESIF_SETTING = "MOESIF_MIDDLEWARE"
# Options only the Django adapter understands (lower-case, as build_config expects).
# GET_USER_PROFILE is read by the moesif_users_backfill command and at login (django/login.py).
EXTRA_OPTIONS: tuple[str, ...] = adapter_options("django")


@dataclass(frozen=True)
class DjangoSettings:
    """The resolved configuration of the Django adapter."""

    config: CaptureConfig
    force_user_load: bool
    update_on_login: bool = False


def valid_keys() -> tuple[str, ...]:
    """Every key ``settings.MOESIF_USERS`` accepts, upper-case."""
    return tuple(name.upper() for name in (*CAPTURE_OPTIONS, *EXTRA_OPTIONS))


def active_setting() -> str:
    """The setting the middleware reads: ``MOESIF_USERS``, else ``MOESIF_MIDDLEWARE`` if set."""
    if (
        getattr(settings, SETTING, None) is None
        and getattr(settings, MOESIF_SETTING, None) is not None
    ):
        return MOESIF_SETTING
    return SETTING


def both_settings() -> bool:
    """Whether both ``MOESIF_USERS`` and ``MOESIF_MIDDLEWARE`` are set (the first is read)."""
    return all(getattr(settings, name, None) is not None for name in (SETTING, MOESIF_SETTING))


def raw_settings() -> Mapping[str, Any]:
    """``settings.MOESIF_USERS`` as given (``{}`` when absent); not a dict is an error."""
    value = getattr(settings, SETTING, None)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ImproperlyConfigured(f"settings.{SETTING} must be a dict, not {type(value).__name__}")
    return value


def parse(raw: Mapping[str, Any]) -> DjangoSettings:
    """Validate upper-case settings; raises :class:`ConfigurationError` naming the option."""
    bad_keys = [key for key in raw if not isinstance(key, str) or key != key.upper()]
    if bad_keys:
        raise unknown_keys_error(bad_keys)
    config, extras = build_config(
        options_from_upper(raw),
        extra_options=EXTRA_OPTIONS,
        source=f"settings.{SETTING}",
    )
    return DjangoSettings(
        config=config,
        force_user_load=extras.get("force_user_load", False),
        update_on_login=extras.get("update_on_login", False),
    )


def parse_moesif(raw: object) -> DjangoSettings:
    """Validate ``moesifdjango``'s settings; raises :class:`ConfigurationError` naming the key.

    The user is loaded for the default id, as ``moesifdjango`` loads it for its events.
    """
    config, _ = moesif_config(raw, "django", source=f"settings.{MOESIF_SETTING}")
    return DjangoSettings(config=config, force_user_load=True)


def unknown_keys_error(keys: list[Any]) -> ConfigurationError:
    """Unknown (or not upper-case) keys, with the closest valid key for each."""
    return unknown_options_error(
        [key if isinstance(key, str) else repr(key) for key in keys],
        valid_keys(),
        noun="key",
        where=f" in settings.{SETTING}",
    )


class SettingsError(ConfigurationError, ImproperlyConfigured):
    """A mistake in ``settings.MOESIF_USERS`` raised with ``"STRICT": True``.

    Both the library's :class:`ConfigurationError` and Django's ``ImproperlyConfigured``.
    """


class MissingSettingsApplicationIdError(SettingsError, MissingApplicationIdError):
    """No ``APPLICATION_ID`` and no ``MOESIF_APPLICATION_ID`` (capture off, one warning)."""


def read_settings() -> DjangoSettings:
    """Read and validate the active setting; problems raise :class:`SettingsError`."""
    try:
        if active_setting() == MOESIF_SETTING:
            return parse_moesif(getattr(settings, MOESIF_SETTING))
        return parse(raw_settings())
    except ImproperlyConfigured as exc:  # not a dict
        raise SettingsError(str(exc)) from exc
    except ConfigurationError as exc:
        error = SettingsError(str(exc))
        if isinstance(exc, MissingApplicationIdError):
            error = MissingSettingsApplicationIdError(str(exc))
        raise error from exc


def strict_setting() -> object:
    """The active setting's ``"STRICT"`` as given (``None`` when it cannot be read)."""
    value = getattr(settings, active_setting(), None)
    return value.get("STRICT") if isinstance(value, Mapping) else None
