"""Configuration: environment fallbacks, option validation, the resolved per-adapter config."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from .client_ip import ClientIpResolver
from .hooks import Hook, HookError, resolve_hook

__all__ = [
    "CAPTURE_OPTIONS",
    "DEFAULT_BASE_URL",
    "HOOK_OPTIONS",
    "CaptureConfig",
    "ConfigurationError",
    "build_config",
    "options_from_upper",
    "redact",
    "resolve_application_id",
    "resolve_base_url",
]

Label = Callable[[str], str]

DEFAULT_BASE_URL = "https://api.moesif.net"


class ConfigurationError(ValueError):
    """Invalid or missing configuration, raised at construction time, never per request."""


def resolve_application_id(application_id: str | None) -> str:
    """The given id, else ``MOESIF_APPLICATION_ID``; a clear error when neither is set."""
    value = (
        application_id if application_id is not None else os.environ.get("MOESIF_APPLICATION_ID")
    )
    if not isinstance(value, str) or not value.strip():
        raise ConfigurationError(
            "application_id is required: pass application_id=... or set MOESIF_APPLICATION_ID"
        )
    value = value.strip()
    # It travels as an HTTP header value: visible ASCII only (the message must not echo it).
    if not value.isascii() or not value.isprintable():
        raise ConfigurationError(
            "application_id must be printable ASCII (it is sent as an HTTP header); "
            "check MOESIF_APPLICATION_ID for stray characters"
        )
    return value


def resolve_base_url(base_url: str | None) -> str:
    """The given URL, else ``MOESIF_BASE_URL``, else ``https://api.moesif.net`` (no trailing /)."""
    value = base_url if base_url is not None else os.environ.get("MOESIF_BASE_URL")
    if value is None or not value.strip():
        return DEFAULT_BASE_URL
    value = value.strip().rstrip("/")
    if not value.startswith(("http://", "https://")):
        raise ConfigurationError(f"base_url must start with http:// or https://, got {value!r}")
    return value


def redact(application_id: str) -> str:
    """A stand-in safe for logs and reprs: never the id itself."""
    return f"<application id, {len(application_id)} chars>"


# ---------------------------------------------------------------------------------------
# The resolved per-adapter configuration
# ---------------------------------------------------------------------------------------

HOOK_OPTIONS: tuple[str, ...] = (
    "identify_user",
    "identify_company",
    "get_session_token",
    "get_metadata",
    "get_campaign",
    "skip",
)
# Mirrors sender_options.SENDER_OPTIONS (a test keeps them equal); spelled out here
# because that module imports this one.
_SENDER_OPTION_NAMES: tuple[str, ...] = (
    "batch_size",
    "max_batch_bytes",
    "max_queue_size",
    "flush_interval",
    "min_update_interval",
    "timeout",
    "shutdown_timeout",
    "gzip",
)
CAPTURE_OPTIONS: tuple[str, ...] = (
    "application_id",
    "base_url",
    *HOOK_OPTIONS,
    "trusted_proxies",
    "client_ip_headers",
    "session_token_headers",
    "jwt_user_id_claim",
    "capture_campaign",
    "max_user_agent_length",
    "enabled",
    *_SENDER_OPTION_NAMES,
)
DEFAULT_SESSION_TOKEN_HEADERS: tuple[str, ...] = ("x-api-key",)
DEFAULT_MAX_USER_AGENT_LENGTH = 512


@dataclass(frozen=True, eq=False)
class CaptureConfig:
    """One adapter's validated options; built once by :func:`build_config`."""

    application_id: str = field(repr=False)
    base_url: str
    identify_user: Hook | None
    identify_company: Hook | None
    get_session_token: Hook | None
    get_metadata: Hook | None
    get_campaign: Hook | None
    skip: Hook | None
    trusted_proxies: tuple[str, ...] | None
    client_ip_headers: tuple[str, ...]
    session_token_headers: tuple[str, ...]
    jwt_user_id_claim: str | None
    capture_campaign: bool
    max_user_agent_length: int
    enabled: bool
    sender_options: Mapping[str, Any]


def options_from_upper(settings: Mapping[str, Any]) -> dict[str, Any]:
    """Django-style ``{"APPLICATION_ID": ..., "IDENTIFY_USER": ...}`` -> lower-case keys."""
    if not isinstance(settings, Mapping):
        raise ConfigurationError(
            f"the settings must be a dict of options, not {type(settings).__name__}"
        )
    options: dict[str, Any] = {}
    for key, value in settings.items():
        if not isinstance(key, str):
            raise ConfigurationError(f"setting names must be strings, not {key!r}")
        options[key.lower()] = value
    return options


def build_config(
    options: Mapping[str, Any], *, extra_options: Iterable[str] = (), source: str = "option"
) -> tuple[CaptureConfig, dict[str, Any]]:
    """Validate lower-case ``options`` once, at startup.

    Returns the configuration and the given adapter-specific options (those named in
    ``extra_options``). ``source`` is how options are named in errors: ``"option"``
    (keyword arguments) or a settings name such as ``"MOESIF_USERS"``, which makes errors
    read ``MOESIF_USERS['IDENTIFY_USER']``. Raises :class:`ConfigurationError` naming the
    option at fault.
    """
    extra = tuple(extra_options)

    def label(name: str) -> str:
        return name if source == "option" else f"{source}[{name.upper()!r}]"

    valid = CAPTURE_OPTIONS + extra
    unknown = sorted(key for key in options if key not in valid)
    if unknown:
        shown = ", ".join(valid if source == "option" else (name.upper() for name in valid))
        what = "option" if source == "option" else f"key in {source}"
        raise ConfigurationError(
            f"unknown {what}{'s' if len(unknown) > 1 else ''} "
            f"{', '.join(repr(k if source == 'option' else k.upper()) for k in unknown)}; "
            f"valid ones are: {shown}"
        )

    enabled = _bool(options, "enabled", True, label)
    application_id = options.get("application_id")
    if application_id is not None and not isinstance(application_id, str):
        raise ConfigurationError(
            f"{label('application_id')} must be a string, not {type(application_id).__name__}"
        )
    try:
        application_id = resolve_application_id(application_id)
    except ConfigurationError:
        if enabled:
            raise ConfigurationError(
                f"{label('application_id')} is required: set it or the MOESIF_APPLICATION_ID "
                "environment variable (or pass enabled=False to turn capture off)"
            ) from None
        application_id = ""
    base_url = options.get("base_url")
    if base_url is not None and not isinstance(base_url, str):
        raise ConfigurationError(
            f"{label('base_url')} must be a string, not {type(base_url).__name__}"
        )
    try:
        base_url = resolve_base_url(base_url)
    except ConfigurationError as exc:
        raise ConfigurationError(f"{label('base_url')}: {exc}") from None

    hooks: dict[str, Hook | None] = {}
    for name in HOOK_OPTIONS:
        try:
            hooks[name] = resolve_hook(options.get(name), label(name))
        except HookError as exc:
            raise ConfigurationError(str(exc)) from exc.__cause__

    claim = options.get("jwt_user_id_claim")
    if claim is not None and (not isinstance(claim, str) or not claim.strip()):
        raise ConfigurationError(f"{label('jwt_user_id_claim')} must be a non-empty string")
    max_ua = options.get("max_user_agent_length", DEFAULT_MAX_USER_AGENT_LENGTH)
    if type(max_ua) is not int or max_ua < 1:
        raise ConfigurationError(f"{label('max_user_agent_length')} must be a positive integer")

    trusted_proxies, client_ip_headers = _client_ip(
        options.get("trusted_proxies"), options.get("client_ip_headers", ()), label
    )
    config = CaptureConfig(
        application_id=application_id,
        base_url=base_url,
        trusted_proxies=trusted_proxies,
        client_ip_headers=client_ip_headers,
        session_token_headers=_header_names(
            options.get("session_token_headers", DEFAULT_SESSION_TOKEN_HEADERS),
            label("session_token_headers"),
        ),
        jwt_user_id_claim=claim.strip() if claim else None,
        capture_campaign=_bool(options, "capture_campaign", True, label),
        max_user_agent_length=max_ua,
        enabled=enabled,
        sender_options=MappingProxyType(_sender_options(options, label)),
        **hooks,
    )
    return config, {name: options[name] for name in extra if name in options}


def _bool(options: Mapping[str, Any], name: str, default: bool, label: Label) -> bool:
    value = options.get(name, default)
    if not isinstance(value, bool):
        raise ConfigurationError(f"{label(name)} must be True or False, not {value!r}")
    return value


def _strings(value: object, what: str) -> tuple[str, ...]:
    """A string (comma-separated) or an iterable of strings -> stripped, non-empty items."""
    if isinstance(value, str):
        items: list[object] = list(value.split(","))
    elif isinstance(value, Iterable) and not isinstance(value, (bytes, Mapping)):
        items = list(value)
    else:
        raise ConfigurationError(f"{what} must be a list of strings, not {type(value).__name__}")
    out: list[str] = []
    for item in items:
        if not isinstance(item, str):
            raise ConfigurationError(f"{what} must contain strings, not {type(item).__name__}")
        if item.strip():
            out.append(item.strip())
    return tuple(out)


def _header_names(value: object, what: str) -> tuple[str, ...]:
    names = tuple(name.lower() for name in _strings(value, what))
    for name in names:
        if not all(char.isalnum() or char in "-_" for char in name):
            raise ConfigurationError(f"{what}: {name!r} is not a header name")
    return names


def _client_ip(
    value: object, headers: object, label: Label
) -> tuple[tuple[str, ...] | None, tuple[str, ...]]:
    """Validate the client-IP options with the resolver that will use them."""
    proxies = None if value is None else _strings(value, label("trusted_proxies"))
    names = tuple(name.lower() for name in _strings(headers, label("client_ip_headers")))
    try:
        ClientIpResolver(proxies, ())
    except ValueError as exc:
        raise ConfigurationError(f"{label('trusted_proxies')}: {exc}") from None
    try:
        ClientIpResolver((), names)
    except ValueError as exc:
        raise ConfigurationError(f"{label('client_ip_headers')}: {exc}") from None
    return proxies, names


def _sender_options(options: Mapping[str, Any], label: Label) -> dict[str, Any]:
    """The sender options given, checked by the sender's own validation."""
    from .sender_options import validate_sender_options  # it imports this module

    given = {name: options[name] for name in _SENDER_OPTION_NAMES if name in options}
    try:
        validate_sender_options(given)
    except ConfigurationError as exc:
        message = str(exc)
        for name in given:
            if message.startswith(name + " "):
                message = label(name) + message[len(name) :]
        raise ConfigurationError(message) from None
    return given
