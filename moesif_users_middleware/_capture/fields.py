"""Turning hook results and request snapshots into an update's fields (both halves use it).

:class:`Fields` is the part of :class:`~.pipeline.Capture` that checks and converts: a
hook's result into an id, a token, metadata or a campaign, and the defaults read from
the request (the framework's user, the ``Authorization`` Bearer token or ``X-Api-Key``,
the utm/Referer campaign). A failing hook or an invalid value is counted and logged at
most once a minute (see :mod:`.hooks`) and loses only its own field. Values are coerced
where the intent is clear (an ``int`` or ``UUID`` id becomes a string, an empty string
means "none"); ``bool`` is never an id. Oversize values are dropped (ids, tokens,
metadata over :data:`MAX_METADATA_LENGTH` serialized) or cut (the user agent), and
counted as ``invalid``.
"""

from __future__ import annotations

import enum
import inspect
import json
from collections.abc import Callable, Mapping
from typing import Any, Final, Literal
from uuid import UUID

from .._json import check_json, is_valid_text, plain_bound
from ..models import MAX_ID_LENGTH, Campaign, ValidationError, normalize_campaign
from .campaign import extract_campaign
from .client_ip import ClientIpResolver
from .hooks import count, report
from .request_view import RequestView
from .session_token import MAX_TOKEN_LENGTH, bearer_token, jwt_claim, token_from_authorization

__all__ = [
    "FAILED",
    "MAX_CAMPAIGN_VALUE_LENGTH",
    "MAX_METADATA_LENGTH",
    "UNSET",
    "Fields",
    "Marker",
    "describe",
    "user_id_from_object",
]

# Metadata longer than this many characters as compact JSON is dropped.
MAX_METADATA_LENGTH = 64 * 1024
MAX_CAMPAIGN_VALUE_LENGTH = 2048
_CAMPAIGN_CACHE_SIZE = 512
_MAX_CACHED_CAMPAIGN_KEY = 1024


class Marker(enum.Enum):
    FAILED = 0  # the hook failed (distinct from a legitimate ``None``)
    UNSET = 1  # the hook is not configured: use the default

    # Members are singletons compared by identity: hash them so too, in C (Enum's own
    # __hash__ is Python code, and markers are hashed in every capture's reuse key).
    __hash__ = object.__hash__


FAILED: Final = Marker.FAILED
UNSET: Final = Marker.UNSET
_FailedType = Literal[Marker.FAILED]


class Fields:
    """Checks and conversions shared by the two halves of a capture (see the module doc).

    The attributes are set by :class:`~.pipeline.Capture` from its configuration.
    """

    _secret: str
    _labels: dict[str, str]
    _resolver: ClientIpResolver
    _token_headers: tuple[str, ...]
    _jwt_claim: str | None
    _capture_campaign: bool
    _max_ua: int
    _default_id: Callable[[RequestView], object] | None
    _campaigns: dict[tuple[str, str | None, str | None], dict[str, str] | None]
    _reports: int  # problems reported so far (a result is reused only if none was)

    def _raised(self, name: str, exc: Exception) -> _FailedType:
        self._hook_error(name, "raised", f"raised {describe(exc)}")
        return FAILED

    def _hook_error(self, name: str, kind: str, detail: str) -> None:
        self._reports += 1
        report("hook_errors", self._labels.get(name, name), kind, detail, self._secret)

    def _wrong_type(self, name: str, result: object, expected: str) -> _FailedType:
        if inspect.iscoroutine(result):
            result.close()  # no "never awaited" warning
            self._hook_error(
                name,
                "coroutine",
                "is async but the server is synchronous: its coroutine was discarded",
            )
        else:
            self._hook_error(
                name, "wrong type", f"returned {type(result).__name__}, expected {expected}"
            )
        return FAILED

    def _invalid(self, what: str, kind: str, detail: str) -> None:
        self._reports += 1
        report("invalid", what, kind, detail, self._secret)

    def _internal_error(self, exc: Exception) -> None:
        report(
            "internal_errors",
            "capture",
            "internal error",
            f"failed: {describe(exc)}",
            self._secret,
        )

    # -- turning hook results into fields --------------------------------------------------

    def _to_skip(self, result: object) -> bool:
        """Whether ``skip``'s result skips the request; a failed ``skip`` does (fails closed).

        The hook error itself is already counted (raised) or is counted here.
        """
        if result is True or result is False or result is None:
            return bool(result)
        if result is FAILED:
            return True  # it raised: skip is how users keep requests out of profiles
        if inspect.iscoroutine(result):
            self._wrong_type("skip", result, "a bool")
            return True
        try:
            return bool(result)
        except Exception as exc:
            self._hook_error(
                "skip", "wrong type", f"returned an object whose truth raised {describe(exc)}"
            )
            return True

    def _user_id(self, view: RequestView, result: object) -> str | None:
        """The user id from ``identify_user``'s result (or the defaults when unset)."""
        user_id = (
            self._default_user_id(view) if result is UNSET else self._to_id("identify_user", result)
        )
        if user_id is None:
            count("anonymous")
            return None
        return None if user_id is FAILED else user_id

    def _to_id(self, name: str, result: object) -> str | _FailedType | None:
        if type(result) is not str:
            if result is None or result is FAILED:
                return result
            coerced = self._coerced(name, result)
            if coerced is None or coerced is FAILED:
                return FAILED
            result = coerced
        if not is_valid_text(result):
            self._invalid(name, "not text", "returned an id that is not valid Unicode")
            return FAILED
        if len(result) <= MAX_ID_LENGTH:
            return None if not result or result.isspace() else result
        self._invalid(name, "oversize", f"returned an id longer than {MAX_ID_LENGTH} characters")
        return FAILED

    def _to_token(self, result: object) -> str | None:
        if type(result) is not str:
            if result is None or result is FAILED:
                return None
            coerced = self._coerced("get_session_token", result)
            if coerced is None or coerced is FAILED:
                return None
            result = coerced
        if not is_valid_text(result):
            self._invalid(
                "get_session_token", "not text", "returned a token that is not valid Unicode"
            )
            return None
        return self._checked_token("get_session_token", result.strip())

    def _coerced(self, name: str, result: object) -> str | _FailedType | None:
        """``_coerce_id`` for a hook's result: a wrong type or a failing conversion is counted."""
        try:
            coerced = _coerce_id(result)
        except Exception as exc:  # e.g. 10**5000, or an int subclass whose __int__ raises
            self._hook_error(
                name, "wrong type", f"returned an id that failed to convert: {describe(exc)}"
            )
            return FAILED
        if coerced is None:
            return self._wrong_type(name, result, "a string or None")
        return coerced

    def _checked_token(self, name: str, token: str | None) -> str | None:
        if not token:
            return None
        if len(token) > MAX_TOKEN_LENGTH:
            self._invalid(
                name, "oversize", f"session token longer than {MAX_TOKEN_LENGTH} characters"
            )
            return None
        return token

    def _to_domain(self, result: object) -> str | None:
        """``get_company_domain``'s result: text (stripped) of at most MAX_ID_LENGTH, or None."""
        if type(result) is not str:
            if result is None or result is FAILED or result is UNSET:
                return None
            coerced = self._coerced("get_company_domain", result)  # as ids are
            if coerced is None or coerced is FAILED:
                return None
            result = coerced
        if not is_valid_text(result):
            self._invalid("get_company_domain", "not text", "returned a domain that is not text")
            return None
        result = result.strip()
        if len(result) > MAX_ID_LENGTH:
            self._invalid(
                "get_company_domain",
                "oversize",
                f"returned a domain longer than {MAX_ID_LENGTH} characters",
            )
            return None
        return result or None

    def _to_metadata(self, result: object, name: str = "get_metadata") -> dict[str, Any] | None:
        return self._checked_metadata(result, name)[0]

    def _checked_metadata(
        self, result: object, name: str = "get_metadata"
    ) -> tuple[dict[str, Any] | None, bool]:
        """The metadata to send, and whether ``result`` was plain data (see plain_bound)."""
        if result is None or result is FAILED:
            return None, True
        # The common shape (dicts of plain data) is checked by plain_bound; anything
        # else, valid or not, goes through check_json, which names the field at fault.
        bound = plain_bound(result) if type(result) is dict else None
        plain = bound is not None
        if bound is not None:
            metadata: dict[str, Any] = result  # type: ignore[assignment]
        else:
            if not isinstance(result, Mapping):
                self._wrong_type(name, result, "a dict or None")
                return None, False
            try:
                metadata, bound = check_json(result, "metadata")
            except ValidationError as exc:
                self._invalid(name, "not JSON", f"returned metadata that is not JSON: {exc}")
                return None, False
        if bound > MAX_METADATA_LENGTH:
            # The estimate is generous; measure before dropping.
            size = len(json.dumps(metadata, separators=(",", ":"), ensure_ascii=False))
            if size > MAX_METADATA_LENGTH:
                self._invalid(
                    name,
                    "oversize",
                    f"returned metadata of {size} characters as JSON "
                    f"(limit {MAX_METADATA_LENGTH}): dropped",
                )
                return None, plain
        return metadata or None, plain

    def _to_campaign(self, result: object) -> dict[str, str] | None:
        if result is None or result is FAILED:
            return None
        if not isinstance(result, (Mapping, Campaign)):
            self._wrong_type("get_campaign", result, "a dict, a Campaign or None")
            return None
        try:
            campaign = normalize_campaign(result)
        except ValidationError as exc:
            self._invalid(
                "get_campaign", "invalid campaign", f"returned an invalid campaign: {exc}"
            )
            return None
        if campaign:
            for key, value in list(campaign.items()):
                if len(value) > MAX_CAMPAIGN_VALUE_LENGTH:
                    del campaign[key]
                    self._invalid(
                        "get_campaign",
                        "oversize",
                        f"campaign.{key} longer than {MAX_CAMPAIGN_VALUE_LENGTH} characters: dropped",
                    )
        return campaign or None

    # -- defaults ------------------------------------------------------------------------

    def _default_user_id(self, view: RequestView) -> str | _FailedType | None:
        """The server's user, else the framework's user, else (opt-in) the JWT claim.

        A configured ``default_user_id`` (Moesif settings) replaces all three.
        """
        try:
            if self._default_id is not None:
                return self._to_id("identify_user", self._default_id(view))
            user_id = view.user_id_default()
            if user_id is None:
                user_id = user_id_from_object(view.auth_user())
        except Exception as exc:  # the adapter's lazy user loader (e.g. a database error)
            self._hook_error(
                "identify_user", "user loader", f"loading the user raised {describe(exc)}"
            )
            return FAILED
        if user_id is None and self._jwt_claim is not None:
            authorization = view.header("authorization")
            token = bearer_token(authorization) if authorization else None
            if token is not None:
                user_id = jwt_claim(token, self._jwt_claim)
        if user_id is not None and len(user_id) > MAX_ID_LENGTH:
            self._invalid(
                "identify_user", "oversize", f"user id longer than {MAX_ID_LENGTH} characters"
            )
            return FAILED
        return user_id

    def _default_token(self, header: Callable[[str], str | None]) -> str | None:
        authorization = header("authorization")
        if authorization:
            token = token_from_authorization(authorization)
            if token:
                if len(token) <= MAX_TOKEN_LENGTH:
                    return token  # the common case of _checked_token, inline
                return self._checked_token("session token header", token)
        for name in self._token_headers:
            value = header(name)
            if value:
                token = (
                    token_from_authorization(value) if name == "authorization" else value.strip()
                )
                if token:
                    return self._checked_token("session token header", token)
        return None

    def _default_campaign(
        self, view: RequestView, header: Callable[[str], str | None]
    ) -> dict[str, str] | None:
        query = view.query_string
        referer = header("referer")
        if referer is None:
            if not query or ("utm_" not in query and "gclid" not in query):
                return None
            key: tuple[str, str | None, str | None] = (query, None, None)
        else:
            key = (query, referer, header("host"))
        # Landing pages see the same utm query (and referrers) from many visitors.
        cache = self._campaigns
        try:
            return cache[key]
        except KeyError:
            pass
        campaign = extract_campaign(*key)
        if len(query) + len(referer or "") <= _MAX_CACHED_CAMPAIGN_KEY:
            if len(cache) >= _CAMPAIGN_CACHE_SIZE:
                cache.clear()
            cache[key] = campaign
        return campaign


def user_id_from_object(user: Any) -> str | None:
    """The id of a framework's user object; ``None`` when anonymous or unknown. Never raises.

    Understands Django users (``pk``), Flask-Login (``get_id()``), Starlette's
    ``BaseUser`` (``identity``, else ``username``), dicts (``user_id``/``id``/``sub``),
    plain strings, integers and UUIDs. Objects reporting ``is_authenticated`` false or
    ``is_anonymous`` true are anonymous.
    """
    try:
        return _user_id_from_object(user)
    except Exception:
        return None


def _user_id_from_object(user: Any) -> str | None:
    if user is None:
        return None
    direct = _coerce_id(user)
    if direct is not None:
        return direct if direct and not direct.isspace() else None
    if isinstance(user, Mapping):
        for key in ("user_id", "id", "sub"):
            value = _coerce_id(user.get(key))
            if value:
                return value
        return None
    authenticated = _flag(user, "is_authenticated")
    if authenticated is False or _flag(user, "is_anonymous") is True:
        return None
    for name in ("pk", "id", "get_id", "identity", "username"):
        try:
            value = getattr(user, name, None)
            if name == "get_id" and callable(value):
                value = value()
        except Exception:  # e.g. Starlette's BaseUser.identity raises NotImplementedError
            continue
        coerced = _coerce_id(value)
        if coerced and not coerced.isspace():
            return coerced
    return None


def _flag(user: object, name: str) -> bool | None:
    try:
        value = getattr(user, name, None)
        if callable(value):  # pre-property APIs: user.is_authenticated()
            value = value()
    except Exception:
        return None
    return None if value is None else bool(value)


def _coerce_id(value: object) -> str | None:
    """A string for ids given as str, int (not bool) or UUID; ``None`` for anything else."""
    if isinstance(value, str):
        return value if type(value) is str else str.__str__(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return str(int(value))
    if isinstance(value, UUID):
        return str(value)
    return None


def describe(exc: BaseException) -> str:
    message = str(exc)
    if len(message) > 300:
        message = message[:300] + "..."
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__
