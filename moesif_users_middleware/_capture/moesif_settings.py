"""Moesif's own middleware settings (``moesifdjango``, ``moesifwsgi``, ``moesifasgi``) as options.

Teams on Moesif's middleware already have its settings dict (``settings.MOESIF_MIDDLEWARE``
in Django, the dict given to the WSGI or ASGI middleware) and hooks written for it.
:func:`moesif_config` reads that dict as it is into a :class:`CaptureConfig`:

- ``APPLICATION_ID``; ``BASE_URI`` (then ``LOCAL_MOESIF_BASEURL``, where that package reads it);
- the hooks ``IDENTIFY_USER``, ``IDENTIFY_COMPANY``, ``GET_SESSION_TOKEN``,
  ``GET_METADATA`` and ``SKIP`` with that package's call shapes (:data:`FLAVORS`); a hook
  of the wrong shape (e.g. written for another of Moesif's packages) is a configuration
  error naming the shape this adapter calls;
- ``AUTHORIZATION_HEADER_NAME``, ``AUTHORIZATION_USER_ID_FIELD`` and, in Django,
  ``REQUEST_HEADER_MASKS``: they decide the default user id, derived exactly as that
  package derives it for its events (:mod:`.moesif_ids`), so profiles and events share
  ids. ``IDENTIFY_USER`` returning nothing falls back to it, as there;
- ``LOCAL_DEBUG`` (Django; ``DEBUG`` there too) / ``DEBUG``: debug logging for this
  library's logger;
- in Django, ``STRICT`` and ``ENABLED``: this library's own keys (Moesif's middleware
  ignores them); the WSGI and ASGI adapters take ``strict=`` and ``enabled=`` keyword
  arguments beside ``moesif_settings=`` instead.

Every other key concerns event capture only (``LOG_BODY``, masks, ``BATCH_SIZE`` of
events, ``CAPTURE_OUTGOING_REQUESTS``...) and is ignored, listed at DEBUG level.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal

from .._options.endpoint import resolve_base_url
from ..errors import ConfigurationError, HookError
from .config import CaptureConfig, build_config
from .fields import UNSET, describe
from .hooks import Hook, check_signature, hook_label, is_async_hook, report, resolve_hook
from .moesif_ids import (
    DEFAULT_FIELD,
    DEFAULT_HEADER_NAMES,
    django_user_id,
    environ_plan,
    environ_user_id,
    header_names,
    scope_user_id,
)
from .request_view import RequestView

__all__ = [
    "FLAVORS",
    "HOOK_KEYS",
    "MOESIF_OPTION",
    "USED_KEYS",
    "Flavor",
    "config_for",
    "moesif_config",
]

Framework = Literal["django", "wsgi", "asgi"]

MOESIF_OPTION = "moesif_settings"
"""The keyword argument of the WSGI and ASGI adapters that takes Moesif's settings dict."""

HOOK_KEYS: dict[str, str] = {
    "IDENTIFY_USER": "identify_user",
    "IDENTIFY_COMPANY": "identify_company",
    "GET_SESSION_TOKEN": "get_session_token",
    "GET_METADATA": "get_metadata",
    "SKIP": "skip",
}

logger = logging.getLogger("moesif_users_middleware")

_REQUEST_RESPONSE = ("request", "response")
_APP_ENVIRON = ("app", "environ")
_APP_ENVIRON_HEADERS = ("app", "environ", "response_headers")


@dataclass(frozen=True)
class Flavor:
    """What one of Moesif's middlewares reads, and how it calls hooks."""

    package: str
    adapter: str  # this library's adapter taking its settings, for messages
    debug_keys: tuple[str, ...]  # any of them true turns on debug logging
    base_uri_keys: tuple[str, ...]  # read in order, the first non-empty one wins
    params: Mapping[str, tuple[str, ...]]  # hook key -> the arguments it is called with


FLAVORS: dict[str, Flavor] = {
    "django": Flavor(
        "moesifdjango",
        "the Django middleware",
        ("LOCAL_DEBUG", "DEBUG"),
        ("BASE_URI", "LOCAL_MOESIF_BASEURL"),
        dict.fromkeys(HOOK_KEYS, _REQUEST_RESPONSE),
    ),
    "wsgi": Flavor(
        "moesifwsgi",
        "the plain WSGI middleware",
        ("DEBUG",),
        ("BASE_URI", "LOCAL_MOESIF_BASEURL"),
        {
            "IDENTIFY_USER": _APP_ENVIRON_HEADERS,
            "IDENTIFY_COMPANY": _APP_ENVIRON_HEADERS,
            "GET_SESSION_TOKEN": _APP_ENVIRON,
            "GET_METADATA": _APP_ENVIRON,
            "SKIP": _APP_ENVIRON,
        },
    ),
    "asgi": Flavor(
        "moesifasgi",
        "the Starlette/FastAPI middleware",
        ("DEBUG",),
        ("BASE_URI",),
        dict.fromkeys(HOOK_KEYS, _REQUEST_RESPONSE),
    ),
}

_OWN_KEYS = {"STRICT": "strict", "ENABLED": "enabled"}
USED_KEYS: frozenset[str] = frozenset(
    {
        "APPLICATION_ID",
        "BASE_URI",
        "LOCAL_MOESIF_BASEURL",
        "AUTHORIZATION_HEADER_NAME",
        "AUTHORIZATION_USER_ID_FIELD",
        "REQUEST_HEADER_MASKS",  # Django: a masked header gives moesifdjango no user id
        "LOCAL_DEBUG",
        "DEBUG",
        *HOOK_KEYS,
        *_OWN_KEYS,  # Django only
    }
)


@dataclass(frozen=True)
class _Translated:
    options: dict[str, Any]
    labels: dict[str, str]
    default_user_id: Callable[[RequestView], object]
    debug: bool
    ignored: tuple[str, ...]


def config_for(
    options: Mapping[str, Any],
    framework: Framework,
    *,
    app: object = None,
    extra_options: Iterable[str] = (),
    sync_hooks: str | None = None,
) -> tuple[CaptureConfig, dict[str, Any]]:
    """An adapter's configuration from its keyword options, with or without ``moesif_settings``.

    Without it this is :func:`~.config.build_config`; with it, Moesif's dict is read by
    :func:`moesif_config` and the other keyword options apply on top of it.
    """
    if MOESIF_OPTION not in options:
        return build_config(options, extra_options=extra_options, sync_hooks=sync_hooks)
    rest = {name: value for name, value in options.items() if name != MOESIF_OPTION}
    return moesif_config(
        options[MOESIF_OPTION],
        framework,
        source=MOESIF_OPTION,
        app=app,
        options=rest,
        extra_options=extra_options,
        sync_hooks=sync_hooks,
    )


def moesif_config(
    settings: object,
    framework: Framework,
    *,
    source: str,
    app: object = None,
    options: Mapping[str, Any] | None = None,
    extra_options: Iterable[str] = (),
    sync_hooks: str | None = None,
) -> tuple[CaptureConfig, dict[str, Any]]:
    """Validate Moesif's ``settings`` for ``framework`` (and ``options`` on top of them).

    ``source`` names the dict in errors (``settings.MOESIF_MIDDLEWARE``,
    ``moesif_settings``); ``app`` is what WSGI hooks get as their first argument. Raises
    :class:`ConfigurationError` naming the key at fault.
    """
    given = dict(options or {})
    translated = _translate(settings, FLAVORS[framework], source, app)
    labels = {name: label for name, label in translated.labels.items() if name not in given}
    config, extras = build_config(
        {**translated.options, **given},
        extra_options=extra_options,
        sync_hooks=sync_hooks,
        default_user_id=translated.default_user_id,
        labels=labels,
    )
    if translated.debug and logger.level == logging.NOTSET:
        logger.setLevel(logging.DEBUG)
    logger.debug(
        "moesif_users_middleware: %s read as Moesif's %s settings; ignored (event capture "
        "only): %s",
        source,
        FLAVORS[framework].package,
        ", ".join(translated.ignored) or "nothing",
    )
    return config, extras


def _translate(settings: object, flavor: Flavor, source: str, app: object) -> _Translated:
    if not isinstance(settings, Mapping):
        raise ConfigurationError(
            f"{source} must be a dict (the settings of Moesif's {flavor.package}), "
            f"not {type(settings).__name__}"
        )

    def label(key: str) -> str:
        return f"{source}[{key!r}]"

    options: dict[str, Any] = {}
    labels: dict[str, str] = {"application_id": label("APPLICATION_ID")}
    if "APPLICATION_ID" in settings:
        options["application_id"] = settings["APPLICATION_ID"]
    base_key, base_uri = _base_uri(settings, flavor)
    labels["base_url"] = label(base_key)
    if base_uri is not None:
        options["base_url"] = _checked_url(base_uri, label(base_key))
    if flavor is FLAVORS["django"]:  # the only way to set them there
        for key, name in _OWN_KEYS.items():
            labels[name] = label(key)
            if key in settings:
                options[name] = settings[key]
    for key, name in HOOK_KEYS.items():
        labels[name] = label(key)
        hook = _hook(settings.get(key), key, label(key), flavor)
        if hook is not None:
            options[name] = _adapted(hook, key, flavor, app)
    return _Translated(
        options=options,
        labels=labels,
        default_user_id=_default_user_id(settings, flavor, label),
        debug=any(settings.get(key) for key in flavor.debug_keys),
        ignored=tuple(sorted(str(key) for key in settings if key not in USED_KEYS)),
    )


def _base_uri(settings: Mapping[Any, Any], flavor: Flavor) -> tuple[str, object]:
    """The key and value of the API address, read as ``flavor.package`` reads it."""
    for key in flavor.base_uri_keys:
        value = settings.get(key)
        if value:
            return key, value
    return flavor.base_uri_keys[0], None


def _checked_url(value: object, label: str) -> str:
    if not isinstance(value, str):
        raise ConfigurationError(f"{label} must be a string (the API's URL), not {_kind(value)}")
    try:
        return resolve_base_url(value)
    except ConfigurationError as exc:
        raise ConfigurationError(f"{label}: {exc}") from None


# -- hooks -------------------------------------------------------------------------------


def _hook(value: object, key: str, label: str, flavor: Flavor) -> Hook | None:
    """The hook for ``key``, checked against the shape ``flavor`` calls it with."""
    try:
        hook = resolve_hook(value, label, params=None)
    except HookError as exc:
        raise ConfigurationError(str(exc)) from exc.__cause__
    if hook is None:
        return None
    params = flavor.params[key]
    try:
        check_signature(hook, label, params, call=key)
    except HookError as exc:
        raise ConfigurationError(f"{exc}, as {flavor.package} calls it") from None
    other = _written_for(hook, params)
    if other is not None:
        package, theirs = other
        raise ConfigurationError(
            f"{label}: {hook_label(hook)}{_signature(hook)} takes {package}'s "
            f"{key}({', '.join(theirs)}); {flavor.adapter}, like {flavor.package}, calls "
            f"it as {key}({', '.join(params)})"
        )
    if flavor is FLAVORS["wsgi"] and is_async_hook(hook):
        raise ConfigurationError(
            f"{label} is an async def hook ({hook_label(hook)}); {flavor.package}'s hooks "
            "run synchronously, and so does this WSGI middleware: make it a plain function"
        )
    return hook


def _written_for(hook: Hook, params: tuple[str, ...]) -> tuple[str, tuple[str, ...]] | None:
    """The other Moesif package whose call shape ``hook``'s parameter names spell, if any."""
    try:
        names = [
            parameter.name
            for parameter in inspect.signature(hook).parameters.values()
            if parameter.kind in (parameter.POSITIONAL_ONLY, parameter.POSITIONAL_OR_KEYWORD)
        ]
    except (TypeError, ValueError):
        return None
    if params[0] == "request" and names[:2] == list(_APP_ENVIRON):
        return "moesifwsgi", tuple(names[:3])
    if params[0] == "app" and names[:2] == list(_REQUEST_RESPONSE):
        return "moesifdjango's and moesifasgi", _REQUEST_RESPONSE
    return None


def _adapted(hook: Hook, key: str, flavor: Flavor, app: object) -> Hook:
    """``hook`` as this library calls hooks, ``hook(request, response)``, with Moesif's rules."""
    if flavor is FLAVORS["wsgi"]:
        if key == "IDENTIFY_USER":
            return _WsgiIdentifyUser(hook, app)
        return (_WsgiWithHeaders if key == "IDENTIFY_COMPANY" else _WsgiEnvironOnly)(hook, app)
    if key != "IDENTIFY_USER":
        return hook  # called as Moesif calls it
    return (_AsyncIdentifyUser if is_async_hook(hook) else _IdentifyUser)(hook, app)


class _Adapted:
    """A Moesif hook adapted to ``(request, response)``, named as the user's hook in messages.

    ``IDENTIFY_USER`` returning nothing gives ``UNSET``: the default id then, as in Moesif.
    """

    __module__ = ""  # hook_label() then shows the __qualname__ given: the user's hook's

    def __init__(self, hook: Callable[..., Any], app: object) -> None:
        self._hook = hook
        self._app = app  # what moesifwsgi's hooks get first
        self.__qualname__ = hook_label(hook)
        self._label = f"identify_user hook ({self.__qualname__})"


class _IdentifyUser(_Adapted):
    def __call__(self, request: Any, response: Any) -> Any:
        user_id = self._hook(request, response)
        return user_id if user_id else UNSET


class _AsyncIdentifyUser(_Adapted):
    async def __call__(self, request: Any, response: Any) -> Any:
        user_id = self._hook(request, response)
        if inspect.isawaitable(user_id):
            user_id = await user_id
        return user_id if user_id else UNSET


class _WsgiIdentifyUser(_Adapted):
    def __call__(self, environ: Any, response: Any) -> Any:
        try:
            user_id = self._hook(self._app, environ, _header_dict(response))
        except Exception as exc:  # moesifwsgi logs it and falls back to the headers: so does this
            report("hook_errors", self._label, "raised", f"raised {describe(exc)}")
            return UNSET
        return user_id if user_id else UNSET


class _WsgiWithHeaders(_Adapted):
    def __call__(self, environ: Any, response: Any) -> Any:
        return self._hook(self._app, environ, _header_dict(response))


class _WsgiEnvironOnly(_Adapted):
    def __call__(self, environ: Any, response: Any) -> Any:
        return self._hook(self._app, environ)


def _header_dict(response: Any) -> dict[str, str]:
    """The response headers as moesifwsgi hands them to hooks: a dict, the last value wins."""
    headers = getattr(response, "headers", None) or ()
    return dict(headers)


def _signature(hook: Hook) -> str:
    try:
        return str(inspect.signature(hook))
    except (TypeError, ValueError):
        return "(...)"


# -- the default user id -----------------------------------------------------------------


def _default_user_id(
    settings: Mapping[Any, Any], flavor: Flavor, label: Callable[[str], str]
) -> Callable[[RequestView], object]:
    """``default_user_id(view)``: the id Moesif's ``flavor.package`` puts on the event."""
    names = header_names(_text(settings, "AUTHORIZATION_HEADER_NAME", DEFAULT_HEADER_NAMES, label))
    field = _text(settings, "AUTHORIZATION_USER_ID_FIELD", DEFAULT_FIELD, label).lower()
    if flavor is FLAVORS["asgi"]:
        return partial(scope_user_id, names=names, field=field)
    if flavor is FLAVORS["wsgi"]:
        return partial(environ_user_id, plan=environ_plan(names, "wsgi"), field=field)
    masked = _masked(settings.get("REQUEST_HEADER_MASKS"))
    visible = () if masked is None else tuple(name for name in names if name not in masked)
    return partial(django_user_id, plan=environ_plan(visible, "django"), field=field)


def _text(settings: Mapping[Any, Any], key: str, default: str, label: Callable[[str], str]) -> str:
    value = settings.get(key)
    if value is None:
        return default
    if not isinstance(value, str):
        raise ConfigurationError(f"{label(key)} must be a string, not {_kind(value)}")
    return value


def _masked(masks: object) -> frozenset[str] | None:
    """The header names moesifdjango masks (``None``: its header parsing fails, no names)."""
    if masks is None:
        return frozenset()
    try:
        return frozenset(mask.lower() for mask in masks)  # type: ignore[attr-defined]
    except Exception:
        return None


def _kind(value: object) -> str:
    return type(value).__name__
