"""User ids derived exactly as Moesif's own middlewares derive them for their events.

With Moesif's settings (:mod:`.moesif_settings`), the default user id (no ``IDENTIFY_USER``,
or one that returned nothing) is what ``moesifdjango``, ``moesifwsgi`` or ``moesifasgi``
puts on the request's event, so a profile and its events share one id:

- Django (``moesifdjango``): ``request.user.username`` when the user is authenticated;
  else the header logic. A request without ``request.user`` has no id.
- WSGI and ASGI (``moesifwsgi``, ``moesifasgi``): the header logic.

The header logic, step by step as those packages run it (their ``get_user_id``): the
first header of ``AUTHORIZATION_HEADER_NAME`` (comma-separated, default
``authorization``) present in the request, its first comma-separated part; then

- a value containing ``Bearer``: the part after it, split on ``.``; with three parts or
  more, the claim ``AUTHORIZATION_USER_ID_FIELD`` (default ``sub``; claim names compared
  lower-case) of the JWT payload, as ``str(value)``. The JWT is **read, not verified**;
- a value containing ``Basic``: the username of the Basic credential (the password is
  never kept, cached or sent);
- anything else: the same claim from the part after the first ``.``, or from the whole
  value when it has none (a bare base64 JSON object).

A payload is decoded with :func:`base64.b64decode` after padding, as they do (so
characters outside the standard alphabet are skipped). Anything that fails gives no id,
never an error. Header names map to environ keys the way each package builds its header
dict: a name containing ``_`` never matches under WSGI or Django, ``moesifwsgi`` reads
``HTTP_CGI_AUTHORIZATION`` as ``authorization``, and when two keys give one name the
later one in the environ wins.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Mapping
from typing import Any

from .request_view import EnvironView, RequestView

__all__ = [
    "DEFAULT_FIELD",
    "DEFAULT_HEADER_NAMES",
    "EnvironPlan",
    "django_user_id",
    "environ_plan",
    "environ_user_id",
    "header_names",
    "scope_user_id",
    "user_id_from_token",
]

DEFAULT_HEADER_NAMES = "authorization"
DEFAULT_FIELD = "sub"

EnvironPlan = tuple[tuple[str, ...], ...]
"""For each header name, in order, the environ keys that carry it."""

_CACHE_SIZE = 512
_claims: dict[tuple[str, str], str | None] = {}
_claims_lock = threading.Lock()
# Environ keys besides HTTP_<NAME> that each package's header dict maps to a name.
_DJANGO_KEYS = {"content-type": ("CONTENT_TYPE",), "content-length": ("CONTENT_LENGTH",)}
_WSGI_KEYS = {**_DJANGO_KEYS, "authorization": ("HTTP_CGI_AUTHORIZATION",)}


def header_names(value: str) -> tuple[str, ...]:
    """``AUTHORIZATION_HEADER_NAME`` as they read it: lower-case, split on ``,``, stripped."""
    return tuple(name.strip() for name in value.lower().split(","))


def environ_plan(names: tuple[str, ...], flavor: str) -> EnvironPlan:
    """The environ keys of each name for ``"django"`` (``request.META``) or ``"wsgi"``."""
    extra = _DJANGO_KEYS if flavor == "django" else _WSGI_KEYS
    plan: list[tuple[str, ...]] = []
    for name in names:
        if "_" in name or (flavor == "wsgi" and name == "cgi-authorization"):
            plan.append(())  # their header dict never has such a name
            continue
        plan.append((*extra.get(name, ()), "HTTP_" + name.upper().replace("-", "_")))
    return tuple(plan)


def django_user_id(view: RequestView, plan: EnvironPlan, field: str) -> str | None:
    """``moesifdjango``'s id: the authenticated user's ``username``, else the headers.

    ``view.auth_user()`` is the adapter's user (loaded, as ``moesifdjango`` loads it); an
    error loading it propagates, to be reported as the user loader's.
    """
    if not hasattr(view.request, "user"):
        return None  # moesifdjango stops at the AttributeError
    user = view.auth_user()
    try:
        if user and user.is_authenticated and user.username:
            username: str | None = user.username
            return username
    except Exception:
        return None
    return environ_user_id(view, plan, field)


def environ_user_id(view: RequestView, plan: EnvironPlan, field: str) -> str | None:
    """The header logic over a WSGI environ or ``request.META``."""
    environ = view.environ if isinstance(view, EnvironView) else {}
    for keys in plan:
        present = [key for key in keys if key in environ]
        if present:
            key = present[0] if len(present) == 1 else _last_in(environ, present)
            value = environ[key]
            return _first_value_id(value, field) if type(value) is str else None
    return None


def scope_user_id(view: RequestView, names: tuple[str, ...], field: str) -> str | None:
    """The header logic over an ASGI request (first value of a repeated header)."""
    for name in names:
        value = view.header(name)
        if value is not None:
            return _first_value_id(value, field)
    return None


def user_id_from_token(token: str, field: str) -> str | None:
    """The id in one credential (the first comma-separated part of the header). Never raises."""
    try:
        if "Bearer" in token:
            parts = token.split("Bearer", 1)[1].strip().split(".")
            return _claim(parts[1], field) if len(parts) >= 3 and parts[1] else None
        if "Basic" in token:
            credential = base64.b64decode(token.split("Basic", 1)[1].strip()).decode("utf-8")
            return credential.split(":", 1)[0].strip()
        parts = token.split(".")
        return _claim(parts[1] if len(parts) > 1 and parts[1] else token, field)
    except Exception:  # as theirs: any failure gives no id
        return None


def _first_value_id(value: str, field: str) -> str | None:
    token = value.split(",", 1)[0].strip()
    return user_id_from_token(token, field) if token else None


def _last_in(environ: Mapping[str, Any], keys: list[str]) -> str:
    """Of ``keys``, the one latest in the environ (it overwrites the others in their dict)."""
    wanted = set(keys)
    last = keys[0]
    for key in environ:
        if key in wanted:
            last = key
    return last


def _claim(payload: str, field: str) -> str | None:
    """``str(claim)`` of a base64 JSON payload (cached: tokens repeat across requests)."""
    key = (payload, field)
    try:
        return _claims[key]
    except KeyError:
        pass
    value = _decode_claim(payload, field)
    with _claims_lock:
        if len(_claims) >= _CACHE_SIZE:
            del _claims[next(iter(_claims))]
        _claims[key] = value
    return value


def _decode_claim(payload: str, field: str) -> str | None:
    try:
        payload += "=" * (-len(payload) % 4)
        data = json.loads(base64.b64decode(payload).decode("utf-8"))
        claims = {name.lower(): value for name, value in data.items()}
        return str(claims[field]) if field in claims else None
    except Exception:
        return None
