"""Reading ``settings.MOESIF_USERS`` (upper-case keys) into a capture configuration."""

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
from moesif_users_middleware._options import adapter_options

__all__ = [
    "EXTRA_OPTIONS",
    "SETTING",
    "DjangoSettings",
    "MissingSettingsApplicationIdError",
    "SettingsError",
    "parse",
    "raw_settings",
    "read_settings",
    "strict_setting",
    "unknown_keys_error",
    "valid_keys",
]

SETTING = "MOESIF_USERS"
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
    """Read and validate ``settings.MOESIF_USERS``; problems raise :class:`SettingsError`."""
    try:
        return parse(raw_settings())
    except ImproperlyConfigured as exc:  # not a dict
        raise SettingsError(str(exc)) from exc
    except ConfigurationError as exc:
        error = SettingsError(str(exc))
        if isinstance(exc, MissingApplicationIdError):
            error = MissingSettingsApplicationIdError(str(exc))
        raise error from exc


def strict_setting() -> object:
    """``settings.MOESIF_USERS["STRICT"]`` as given (``None`` when it cannot be read)."""
    value = getattr(settings, SETTING, None)
    return value.get("STRICT") if isinstance(value, Mapping) else None
