"""Turn one finished request into one queued user update (framework-neutral).

Order: ``skip`` -> user id (``identify_user``, or the defaults) -> ``identify_company``
-> session token -> ``get_metadata`` -> campaign -> client IP -> user agent -> the
sender. A request without a user id records nothing. Nothing here raises into the
request: a hook that raises or returns the wrong type is counted and logged at most
once a minute (see :mod:`.hooks`), and only its field is lost (for ``identify_user``,
the whole update). ``skip`` fails closed: when it raises, returns an object whose truth
raises, or returns a coroutine under a synchronous server, the request is skipped
(counted as ``skipped`` and as a hook error), since ``skip`` is how applications keep
requests out of profiles. A hook that is not configured
leaves its field to the default: the framework's user, the ``Authorization`` Bearer
token or ``X-Api-Key``, the utm/Referer campaign.

The work is split in two. On the request path: the hooks, the default user id, and a
snapshot of the few header strings the defaults need (:meth:`Capture.capture`; results
that are not plain data are converted here, in the request's thread). They are handed
to the sender as one :data:`Deferred` tuple, which carries the function that finishes it
(:meth:`Capture.finish`: token, client IP, user agent, campaign, metadata checks, the
update itself). The sender runs it off the request path, in order, before it sends,
flushes or reports counters, and queues the records it returns; a capture identical to
the user's last one within ``min_update_interval`` is not finished again. Nothing here
calls into the sender's internals, and the sender never looks inside a capture.

Values are coerced where the intent is clear (an ``int`` or ``UUID`` id becomes a
string, an empty string means "none"); ``bool`` is never an id. Oversize values are
dropped (ids, tokens, metadata over :data:`MAX_METADATA_LENGTH` serialized) or cut
(the user agent), and counted as ``invalid``.
"""

from __future__ import annotations

import enum
import inspect
import itertools
import json
import time
from collections.abc import Callable, Mapping
from typing import Any, Final, Literal
from uuid import UUID

from .._delivery.engine import Finished
from .._delivery.kinds import USERS, RecordKind
from .._json import check_json, is_valid_text, plain_bound
from ..models import MAX_ID_LENGTH, Campaign, ValidationError, normalize_campaign
from ..sender import Sender, drain_all, get_sender
from .campaign import extract_campaign
from .client_ip import ClientIpResolver
from .config import HOOK_OPTIONS, CaptureConfig
from .hooks import Hook, count, counters, hook_label, is_async_hook, report
from .request_view import RequestView, SnapshotSpec, SnapshotView
from .session_token import MAX_TOKEN_LENGTH, bearer_token, jwt_claim, token_from_authorization

__all__ = [
    "MAX_CAMPAIGN_VALUE_LENGTH",
    "MAX_METADATA_LENGTH",
    "Capture",
    "Deferred",
    "capture_stats",
    "user_id_from_object",
]

# Metadata longer than this many characters as compact JSON is dropped.
MAX_METADATA_LENGTH = 64 * 1024
MAX_CAMPAIGN_VALUE_LENGTH = 2048
_CAMPAIGN_CACHE_SIZE = 512
_now = time.time
# Captures handed to a sender: itertools.count's next() is atomic and costs ~20 ns.
_handed = itertools.count()
_count_handed = _handed.__next__

# What a request hands to the sender: (finish, kind, user id, company, token, metadata,
# campaign, header snapshot, moment). A plain tuple, not a NamedTuple: building one costs
# 0.06 us on the request path, a NamedTuple 0.4 us. The sender reads only the first three
# and the last (see ``_delivery.engine``); the rest is this module's, read in ``_finish``.
Deferred = tuple[
    Callable[[Any], "Finished | None"], RecordKind, str, Any, Any, Any, Any, Any, float
]


def capture_stats() -> dict[str, int]:
    """A snapshot of the process-wide capture counters (after finishing deferred captures).

    ``captured`` counts captures handed to a sender; ``skipped``, ``anonymous``,
    ``hook_errors``, ``invalid`` and ``internal_errors`` what the hooks and checks saw.
    """
    drain_all()
    stats = counters()
    # repr(count(n)) is "count(n)": the only way to read it without advancing it
    stats["captured"] += int(repr(_handed)[6:-1])
    return stats


_MAX_CACHED_CAMPAIGN_KEY = 1024


class _Marker(enum.Enum):
    FAILED = 0  # the hook failed (distinct from a legitimate ``None``)
    UNSET = 1  # the hook is not configured: use the default


FAILED: Final = _Marker.FAILED
UNSET: Final = _Marker.UNSET
_FailedType = Literal[_Marker.FAILED]
# Hook results that are certainly not awaitable (checked before the costlier test).
_PLAIN_SCALARS = frozenset({str, int, bool, type(None)})
# Hook results handed as they are to the second half of the capture, which runs in another
# thread: anything else is converted in the request's thread (converting a lazy object or
# a custom mapping may run the application's code, e.g. a database query).
_PLAIN_IDS = frozenset({str, type(None), _Marker})
_PLAIN_METADATA = frozenset({dict, type(None), _Marker})


class Capture:
    """The capture pipeline of one adapter, built once from a :class:`CaptureConfig`.

    Thread-safe and free of per-request state: one instance serves every request.
    """

    def __init__(self, config: CaptureConfig) -> None:
        self.config = config
        self._enabled = config.enabled
        self._secret = config.application_id
        self._sender: Sender | None = None
        self._resolver = ClientIpResolver(config.trusted_proxies, config.client_ip_headers)
        self._skip = config.skip
        self._identify_user = config.identify_user
        self._identify_company = config.identify_company
        self._get_session_token = config.get_session_token
        self._get_metadata = config.get_metadata
        self._get_campaign = config.get_campaign
        self._token_headers = config.session_token_headers
        self._jwt_claim = config.jwt_user_id_claim
        self._capture_campaign = config.capture_campaign
        self._max_ua = config.max_user_agent_length
        # What the defaults read once the request is over, kept when it finishes.
        names = ["user-agent", *self._resolver.header_names]
        if config.get_session_token is None:
            names += ["authorization", *config.session_token_headers]
        if config.get_campaign is None and config.capture_campaign:
            names += ["referer", "host"]
        self._snapshot_spec = SnapshotSpec(tuple(names))
        # (query, referer, host) -> default campaign; the dicts are shared, never mutated.
        self._campaigns: dict[tuple[str, str | None, str | None], dict[str, str] | None] = {}
        hooks = {name: getattr(config, name) for name in HOOK_OPTIONS}
        self._labels = {
            name: f"{name} hook ({hook_label(hook)})"
            for name, hook in hooks.items()
            if hook is not None
        }
        self._has_async_hooks = any(
            hook is not None and is_async_hook(hook) for hook in hooks.values()
        )
        self._finisher = self.finish  # bound once: it travels with every capture

    @property
    def sender(self) -> Sender:
        """The shared sender for this configuration's application id and base URL."""
        sender = self._sender
        if sender is None:
            config = self.config
            sender = self._sender = get_sender(
                application_id=config.application_id,
                base_url=config.base_url,
                **config.sender_options,
            )
        return sender

    @property
    def has_async_hooks(self) -> bool:
        """Whether any hook is an ``async def`` (it then needs :meth:`acapture`)."""
        return self._has_async_hooks

    # -- the two entry points ----------------------------------------------------------

    def capture(self, view: RequestView) -> bool:
        """Run the request half for one finished request; True if handed to the sender.

        The sender finishes it off the request path (:meth:`finish`). Never raises. An
        ``async def`` hook cannot run here: its coroutine is closed and counted as a hook
        error (for ``skip``, the request is then skipped).
        """
        if not self._enabled:
            return False
        try:
            # The hot path: hooks are called inline (no helper frame) and the common
            # results (False/None from skip, a plain string id) taken without a helper.
            request = view.request
            response = view.response
            hook = self._skip
            if hook is not None:
                try:
                    result: Any = hook(request, response)
                except Exception as exc:
                    result = self._raised("skip", exc)
                if result is not False and result is not None and self._to_skip(result):
                    count("skipped")
                    return False
            hook = self._identify_user
            if hook is None:
                user_id = self._user_id(view, UNSET)
            else:
                try:
                    result = hook(request, response)
                except Exception as exc:
                    result = self._raised("identify_user", exc)
                if (
                    type(result) is str
                    and 0 < len(result) <= MAX_ID_LENGTH
                    and result.isascii()
                    and not result.isspace()
                ):
                    user_id = result
                else:
                    user_id = self._user_id(view, result)
            if user_id is None:
                return False
            company: Any = UNSET
            hook = self._identify_company
            if hook is not None:
                try:
                    company = hook(request, response)
                except Exception as exc:
                    company = self._raised("identify_company", exc)
            token: Any = UNSET
            hook = self._get_session_token
            if hook is not None:
                try:
                    token = hook(request, response)
                except Exception as exc:
                    token = self._raised("get_session_token", exc)
            metadata: Any = UNSET
            hook = self._get_metadata
            if hook is not None:
                try:
                    metadata = hook(request, response)
                except Exception as exc:
                    metadata = self._raised("get_metadata", exc)
            campaign: Any = UNSET
            hook = self._get_campaign
            if hook is not None:
                try:
                    campaign = hook(request, response)
                except Exception as exc:
                    campaign = self._raised("get_campaign", exc)
            return self._defer(view, user_id, company, token, metadata, campaign)
        except Exception as exc:
            self._internal_error(exc)
            return False

    async def acapture(self, view: RequestView) -> bool:
        """Like :meth:`capture`, awaiting hooks that return awaitables. Never raises."""
        if not self._enabled:
            return False
        try:
            return await self._acapture(view)
        except Exception as exc:
            self._internal_error(exc)
            return False

    async def _acapture(self, view: RequestView) -> bool:
        request = view.request
        response = view.response
        call = self._acall
        hook = self._skip
        if hook is not None and self._to_skip(await call("skip", hook, request, response)):
            count("skipped")
            return False
        hook = self._identify_user
        user_id = self._user_id(
            view, UNSET if hook is None else await call("identify_user", hook, request, response)
        )
        if user_id is None:
            return False
        company, token, metadata, campaign = (
            self._identify_company,
            self._get_session_token,
            self._get_metadata,
            self._get_campaign,
        )
        return self._defer(
            view,
            user_id,
            UNSET
            if company is None
            else await call("identify_company", company, request, response),
            UNSET if token is None else await call("get_session_token", token, request, response),
            UNSET if metadata is None else await call("get_metadata", metadata, request, response),
            UNSET if campaign is None else await call("get_campaign", campaign, request, response),
        )

    # -- calling hooks -------------------------------------------------------------------

    def _raised(self, name: str, exc: Exception) -> _FailedType:
        self._hook_error(name, "raised", f"raised {_describe(exc)}")
        return FAILED

    async def _acall(self, name: str, hook: Hook, request: Any, response: Any) -> Any:
        try:
            result = hook(request, response)
            if (
                result is not None
                and type(result) not in _PLAIN_SCALARS
                and inspect.isawaitable(result)
            ):
                result = await result
            return result
        except Exception as exc:
            return self._raised(name, exc)

    def _hook_error(self, name: str, kind: str, detail: str) -> None:
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
        report("invalid", what, kind, detail, self._secret)

    def _internal_error(self, exc: Exception) -> None:
        report(
            "internal_errors",
            "capture",
            "internal error",
            f"failed: {_describe(exc)}",
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
                "skip", "wrong type", f"returned an object whose truth raised {_describe(exc)}"
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
                name, "wrong type", f"returned an id that failed to convert: {_describe(exc)}"
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

    def _to_metadata(self, result: object) -> dict[str, Any] | None:
        return self._checked_metadata(result)[0]

    def _checked_metadata(self, result: object) -> tuple[dict[str, Any] | None, bool]:
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
                self._wrong_type("get_metadata", result, "a dict or None")
                return None, False
            try:
                metadata, bound = check_json(result, "metadata")
            except ValidationError as exc:
                self._invalid(
                    "get_metadata", "not JSON", f"returned metadata that is not JSON: {exc}"
                )
                return None, False
        if bound > MAX_METADATA_LENGTH:
            # The estimate is generous; measure before dropping.
            size = len(json.dumps(metadata, separators=(",", ":"), ensure_ascii=False))
            if size > MAX_METADATA_LENGTH:
                self._invalid(
                    "get_metadata",
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
        """The server's user, else the framework's user, else (opt-in) the JWT claim."""
        user_id = view.user_id_default()
        if user_id is None:
            try:
                user_id = user_id_from_object(view.auth_user())
            except Exception as exc:  # the adapter's lazy user loader (e.g. a database error)
                self._hook_error(
                    "identify_user", "user loader", f"loading the user raised {_describe(exc)}"
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

    # -- the update ----------------------------------------------------------------------

    def _defer(
        self,
        view: RequestView,
        user_id: str,
        company: object,
        token: object,
        metadata: object,
        campaign: object,
    ) -> bool:
        """Hand the hooks' results and a snapshot of the request to the sender.

        The rest (:meth:`finish`) runs off the request path. Results that are not plain
        data are converted here first, in the request's own thread.
        """
        if type(company) not in _PLAIN_IDS:
            company = self._to_id("identify_company", company)
        if type(token) not in _PLAIN_IDS:
            token = self._to_token(token)
        if type(metadata) not in _PLAIN_METADATA:
            metadata = self._to_metadata(metadata)
        if campaign is not UNSET and campaign is not None and campaign is not FAILED:
            campaign = self._to_campaign(campaign)
        sender = self._sender
        if sender is None:
            sender = self.sender
        sender.defer(
            (
                self._finisher,
                USERS,
                user_id,
                company,
                token,
                metadata,
                campaign,
                view.snapshot(self._snapshot_spec),
                _now(),  # the update's moment, sent as its modified_time
            )
        )
        _count_handed()
        return True

    def finish(self, item: Deferred) -> Finished | None:
        """The user's update from a deferred capture (the sender runs this, off the request path).

        ``Finished.repeatable`` says whether an identical later capture may be skipped:
        only one made of plain data. ``None`` when nothing can be sent. Never raises.
        """
        try:
            return self._finish(item)
        except Exception as exc:
            self._internal_error(exc)
            return None

    def _finish(self, item: Deferred) -> Finished:
        _, _, user_id, company, token, metadata, campaign, snapshot, _ = item
        view = SnapshotView(self._snapshot_spec, snapshot)
        record: dict[str, Any] = {"user_id": user_id}
        if (
            type(company) is str
            and 0 < len(company) <= MAX_ID_LENGTH
            and company.isascii()
            and not company.isspace()
        ):
            record["company_id"] = company  # the common case of _to_id, inline
        elif company is not UNSET:
            company = self._to_id("identify_company", company)
            if company is not None and company is not FAILED:
                record["company_id"] = company
        header = view.header
        token = self._default_token(header) if token is UNSET else self._to_token(token)
        if token is not None:
            record["session_token"] = token
        ip = self._resolver.resolve(view.peer, header)
        if ip is not None:
            record["ip_address"] = ip
        agent = header("user-agent")
        if agent:
            if len(agent) > self._max_ua:
                agent = agent[: self._max_ua]
                self._invalid(
                    "user agent", "oversize", f"User-Agent cut to {self._max_ua} characters"
                )
            record["user_agent_string"] = agent
        if campaign is UNSET:
            campaign = self._default_campaign(view, header) if self._capture_campaign else None
        else:
            campaign = self._to_campaign(campaign)
        if campaign is not None:
            record["campaign"] = campaign
        plain = True
        if metadata is not UNSET:
            metadata, plain = self._checked_metadata(metadata)
            if metadata is not None:
                record["metadata"] = metadata
        return Finished(((USERS, record),), plain)


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


def _describe(exc: BaseException) -> str:
    message = str(exc)
    if len(message) > 300:
        message = message[:300] + "..."
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__
