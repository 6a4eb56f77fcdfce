"""Configuration: environment fallbacks, option validation, the resolved per-adapter config."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, NamedTuple, TypeVar

from .._delivery.options import validate_sender_options
from .._options import (
    CAPTURE_OPTIONS,
    HOOK_OPTIONS,
    SENDER_OPTIONS,
    check_option,
    option,
    unknown_options_error,
)
from .._options.endpoint import (
    DEFAULT_BASE_URL,
    redact,
    resolve_application_id,
    resolve_base_url,
)
from ..errors import ConfigurationError, HookError, MissingApplicationIdError
from .client_ip import ClientIpResolver
from .hooks import Hook, hook_label, is_async_hook, resolve_hook
from .request_view import RequestView

__all__ = [
    "CAPTURE_OPTIONS",
    "DEFAULT_BASE_URL",
    "HOOK_OPTIONS",
    "CaptureConfig",
    "ConfigurationError",
    "MissingApplicationIdError",
    "build_config",
    "configure_or_disable",
    "options_from_upper",
    "redact",
    "resolve_application_id",
    "resolve_base_url",
    "unknown_options_error",
]

Label = Callable[[str], str]

logger = logging.getLogger("moesif_users_middleware")
T = TypeVar("T")

# ---------------------------------------------------------------------------------------
# The resolved per-adapter configuration
# ---------------------------------------------------------------------------------------

DEFAULT_SESSION_TOKEN_HEADERS: tuple[str, ...] = option("session_token_headers").default
DEFAULT_MAX_USER_AGENT_LENGTH: int = option("max_user_agent_length").default


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
    get_company_domain: Hook | None
    get_company_metadata: Hook | None
    trusted_proxies: tuple[str, ...] | None
    client_ip_headers: tuple[str, ...]
    session_token_headers: tuple[str, ...]
    jwt_user_id_claim: str | None
    capture_campaign: bool
    max_user_agent_length: int
    update_companies: bool
    enabled: bool
    sender_options: Mapping[str, Any]
    # Replaces the adapter's default user id (the framework's user, REMOTE_USER, the JWT
    # claim) when set: ``default_user_id(view)`` returns the id or None. Moesif settings
    # use it to derive ids exactly as Moesif's middleware does (see moesif_settings.py).
    default_user_id: Callable[[RequestView], object] | None = None


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
    options: Mapping[str, Any],
    *,
    extra_options: Iterable[str] = (),
    source: str = "option",
    sync_hooks: str | None = None,
    default_user_id: Callable[[RequestView], object] | None = None,
    labels: Mapping[str, str] = MappingProxyType({}),
) -> tuple[CaptureConfig, dict[str, Any]]:
    """Validate lower-case ``options`` once, at startup.

    Returns the configuration and the given adapter-specific options (those named in
    ``extra_options``). ``source`` is how options are named in errors: ``"option"``
    (keyword arguments) or a settings name such as ``"MOESIF_USERS"``, which makes errors
    read ``MOESIF_USERS['IDENTIFY_USER']``. ``sync_hooks`` names a framework that calls
    hooks synchronously (``"Flask"``): an ``async def`` hook is then an error.
    ``default_user_id`` replaces the adapter's default user id (see :class:`CaptureConfig`);
    ``labels`` names some options otherwise in errors (``{"base_url": "...['BASE_URI']"}``).

    Raises :class:`ConfigurationError` naming the option at fault (an unknown name comes
    with the closest valid one). Every other option is checked before the application
    id, so :class:`MissingApplicationIdError` means nothing else is wrong.
    """
    extra = tuple(extra_options)
    label = _labeller(source, labels)
    _reject_unknown(options, CAPTURE_OPTIONS + extra, source)
    enabled: bool = _checked(options, "enabled", label)
    _checked(options, "strict", label)  # read by configure_or_disable's caller
    given_id = _string_or_none(options, "application_id", label)
    base_url = _base_url(_string_or_none(options, "base_url", label), label)
    hooks = _hooks(options, label, sync_hooks)
    reading = _request_reading(options, label)
    sender_options = {name: options[name] for name in SENDER_OPTIONS if name in options}
    validate_sender_options(sender_options, label)
    # Last, so that a missing id (a warning) never hides a real mistake (an error).
    application_id = _application_id(given_id, enabled, label)
    config = CaptureConfig(
        application_id=application_id,
        base_url=base_url,
        trusted_proxies=reading.trusted_proxies,
        client_ip_headers=reading.client_ip_headers,
        session_token_headers=reading.session_token_headers,
        jwt_user_id_claim=reading.jwt_user_id_claim,
        capture_campaign=reading.capture_campaign,
        max_user_agent_length=reading.max_user_agent_length,
        update_companies=reading.update_companies,
        enabled=enabled,
        sender_options=MappingProxyType(sender_options),
        default_user_id=default_user_id,
        **hooks,
    )
    return config, {name: _checked(options, name, label) for name in extra if name in options}


def configure_or_disable(
    build: Callable[[], T],
    *,
    adapter: str,
    strict: object = False,
    strict_hint: str = "strict=True",
) -> T | None:
    """Run ``build`` (an adapter's configuration); on a mistake, log once and return None.

    The adapter then serves requests with capture off. No application id logs one
    WARNING; any other :class:`ConfigurationError` logs one ERROR naming the option and
    the fix. With ``strict`` (exactly ``True``) the error is raised instead; ``strict_hint``
    says how the adapter spells that. Called once per adapter construction, never per
    request.
    """
    try:
        return build()
    except ConfigurationError as exc:
        if strict is True:
            raise
        if isinstance(exc, MissingApplicationIdError):
            logger.warning(
                "moesif_users_middleware: %s: user profiles are not recorded: %s", adapter, exc
            )
        else:
            logger.error(
                "moesif_users_middleware: %s: capture is off because of a configuration "
                "error: %s (set %s to raise at startup instead)",
                adapter,
                exc,
                strict_hint,
            )
        return None


def _labeller(source: str, labels: Mapping[str, str]) -> Label:
    """How an option is named in errors: ``labels``' name, else as ``source`` spells it."""

    def label(name: str) -> str:
        given = labels.get(name)
        if given is not None:
            return given
        return name if source == "option" else f"{source}[{name.upper()!r}]"

    return label


def _reject_unknown(options: Mapping[str, Any], valid: tuple[str, ...], source: str) -> None:
    """Raise for option names not in ``valid``, spelt as ``source`` spells them."""
    unknown = [key for key in options if key not in valid]
    if not unknown:
        return
    if source == "option":
        raise unknown_options_error(unknown, valid)
    raise unknown_options_error(
        [key.upper() for key in unknown],
        valid,
        style=str.upper,
        noun="key",
        where=f" in {source}",
    )


def _checked(options: Mapping[str, Any], name: str, label: Label) -> Any:
    """The option's value (or its default), checked against the options table."""
    return check_option(name, options.get(name, option(name).default), label(name))


def _string_or_none(options: Mapping[str, Any], name: str, label: Label) -> str | None:
    value = options.get(name)
    if value is not None and not isinstance(value, str):
        raise ConfigurationError(f"{label(name)} must be a string, not {type(value).__name__}")
    return value


def _base_url(value: str | None, label: Label) -> str:
    try:
        return resolve_base_url(value)
    except ConfigurationError as exc:
        raise ConfigurationError(f"{label('base_url')}: {exc}") from None


def _hooks(
    options: Mapping[str, Any], label: Label, sync_hooks: str | None
) -> dict[str, Hook | None]:
    """Every hook option resolved; an ``async def`` one refused when ``sync_hooks`` is set."""
    hooks: dict[str, Hook | None] = {}
    for name in HOOK_OPTIONS:
        try:
            hook = hooks[name] = resolve_hook(options.get(name), label(name))
        except HookError as exc:
            raise ConfigurationError(str(exc)) from exc.__cause__
        if sync_hooks is not None and hook is not None and is_async_hook(hook):
            raise ConfigurationError(
                f"{label(name)} is an async def hook ({hook_label(hook)}); {sync_hooks} "
                "runs hooks synchronously: make it a plain function"
            )
    return hooks


class _RequestReading(NamedTuple):
    """The :class:`CaptureConfig` fields saying what is read from a request, and how."""

    jwt_user_id_claim: str | None
    max_user_agent_length: int
    trusted_proxies: tuple[str, ...] | None
    client_ip_headers: tuple[str, ...]
    session_token_headers: tuple[str, ...]
    capture_campaign: bool
    update_companies: bool


def _request_reading(options: Mapping[str, Any], label: Label) -> _RequestReading:
    claim: str | None = _checked(options, "jwt_user_id_claim", label)
    max_ua: int = _checked(options, "max_user_agent_length", label)
    trusted_proxies, client_ip_headers = _client_ip(
        options.get("trusted_proxies"), options.get("client_ip_headers", ()), label
    )
    session_token_headers = _header_names(
        options.get("session_token_headers", DEFAULT_SESSION_TOKEN_HEADERS),
        label("session_token_headers"),
    )
    return _RequestReading(
        jwt_user_id_claim=claim,
        max_user_agent_length=max_ua,
        trusted_proxies=trusted_proxies,
        client_ip_headers=client_ip_headers,
        session_token_headers=session_token_headers,
        capture_campaign=_checked(options, "capture_campaign", label),
        update_companies=_checked(options, "update_companies", label),
    )


def _application_id(given: str | None, enabled: bool, label: Label) -> str:
    """The given id, else the environment's; none valid: "" if capture is off, else raise."""
    try:
        return resolve_application_id(given)
    except MissingApplicationIdError:
        if enabled:
            raise MissingApplicationIdError(
                f"no application id: set {label('application_id')} or the "
                "MOESIF_APPLICATION_ID environment variable to record user profiles "
                f"(or set {label('enabled')} to False to turn capture off without this "
                "warning)"
            ) from None
        return ""
    except ConfigurationError as exc:
        if enabled:
            message = str(exc).removeprefix("application_id ")
            raise ConfigurationError(f"{label('application_id')} {message}") from None
        return ""


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
