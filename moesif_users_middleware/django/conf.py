"""Reading ``settings.MOESIF_USERS`` (upper-case keys) into a capture configuration."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from moesif_users_middleware.config import (
    CAPTURE_OPTIONS,
    CaptureConfig,
    ConfigurationError,
    build_config,
    options_from_upper,
)

__all__ = [
    "EXTRA_OPTIONS",
    "SETTING",
    "DjangoSettings",
    "parse",
    "raw_settings",
    "read_settings",
    "valid_keys",
]

SETTING = "MOESIF_USERS"
# Options only the Django adapter understands (lower-case, as build_config expects).
# GET_USER_PROFILE is read by the moesif_users_backfill command, not the middleware.
EXTRA_OPTIONS: tuple[str, ...] = ("force_user_load", "get_user_profile")


@dataclass(frozen=True)
class DjangoSettings:
    """The resolved configuration of the Django adapter."""

    config: CaptureConfig
    force_user_load: bool


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
        raise ConfigurationError(
            f"settings.{SETTING} keys must be upper-case strings, got "
            f"{', '.join(repr(key) for key in bad_keys)}; valid keys: {', '.join(valid_keys())}"
        )
    config, extras = build_config(
        options_from_upper(raw), extra_options=EXTRA_OPTIONS, source=f"settings.{SETTING}"
    )
    force_user_load = extras.get("force_user_load", False)
    if not isinstance(force_user_load, bool):
        raise ConfigurationError(
            f"settings.{SETTING}['FORCE_USER_LOAD'] must be True or False, not {force_user_load!r}"
        )
    return DjangoSettings(config=config, force_user_load=force_user_load)


def read_settings() -> DjangoSettings:
    """Read and validate ``settings.MOESIF_USERS``; problems raise ``ImproperlyConfigured``."""
    try:
        return parse(raw_settings())
    except ConfigurationError as exc:
        raise ImproperlyConfigured(str(exc)) from exc
