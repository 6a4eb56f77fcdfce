"""Turn one finished request into a queued user update, and its company's (framework-neutral).

Order: ``skip`` -> user id (``identify_user``, or the defaults) -> ``identify_company``
-> session token -> ``get_metadata`` -> campaign -> ``get_company_domain`` ->
``get_company_metadata`` -> client IP -> user agent -> the sender. A request with a
company id also updates that company (unless ``update_companies`` is off): its session
token, client IP and campaign, and what the two company hooks return. A request without
a user id records nothing (its hooks after ``identify_user`` are not called). Nothing
here raises into the request: a hook that raises or returns the wrong type is counted
and logged at most once a minute (see :mod:`.hooks`), and only its field is lost (for
``identify_user``, the whole update). ``skip`` fails closed: when it raises, returns an
object whose truth raises, or returns a coroutine under a synchronous server, the
request is skipped (counted as ``skipped`` and as a hook error), since ``skip`` is how
applications keep requests out of profiles. A hook that is not configured leaves its
field to the default: the framework's user, the ``Authorization`` Bearer token or
``X-Api-Key``, the utm/Referer campaign.

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
(the user agent), and counted as ``invalid`` (see :mod:`.fields`).
"""

from __future__ import annotations

import inspect
import itertools
import time
from typing import Any

from .._delivery.kinds import USERS
from ..models import MAX_ID_LENGTH
from ..sender import Sender, drain_all, get_sender
from .client_ip import ClientIpResolver
from .config import HOOK_OPTIONS, CaptureConfig
from .fields import (
    FAILED,
    MAX_CAMPAIGN_VALUE_LENGTH,
    MAX_METADATA_LENGTH,
    UNSET,
    Marker,
    user_id_from_object,
)
from .finish import Deferred, Finish
from .hooks import Hook, count, counters, hook_label, is_async_hook
from .request_view import RequestView, SnapshotSpec

__all__ = [
    "FAILED",
    "MAX_CAMPAIGN_VALUE_LENGTH",
    "MAX_METADATA_LENGTH",
    "UNSET",
    "Capture",
    "Deferred",
    "capture_stats",
    "user_id_from_object",
]

_now = time.time
# Hook results that are certainly not awaitable (checked before the costlier test).
_PLAIN_SCALARS = frozenset({str, int, bool, type(None)})
# Hook results handed as they are to the second half of the capture, which runs in another
# thread: anything else is converted in the request's thread (converting a lazy object or
# a custom mapping may run the application's code, e.g. a database query).
_PLAIN_IDS = frozenset({str, type(None), Marker})
_PLAIN_METADATA = frozenset({dict, type(None), Marker})
# Captures handed to a sender: itertools.count's next() is atomic and costs ~20 ns.
_handed = itertools.count()
_count_handed = _handed.__next__


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


class Capture(Finish):
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
        self._update_companies = config.update_companies
        # A company id can only come from identify_company: without it there is no company.
        self._companies = config.update_companies and config.identify_company is not None
        self._get_company_domain = config.get_company_domain if self._companies else None
        self._get_company_metadata = config.get_company_metadata if self._companies else None
        self._token_headers = config.session_token_headers
        self._jwt_claim = config.jwt_user_id_claim
        self._capture_campaign = config.capture_campaign
        self._max_ua = config.max_user_agent_length
        self._default_id = config.default_user_id
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
        # (id, company, token, campaign, domain, snapshot) -> the records without metadata;
        # only the thread finishing captures (it holds the inbox lock) touches it.
        self._base_cache: dict[tuple[Any, ...], tuple[dict[str, Any], dict[str, Any] | None]] = {}
        self._reports = 0

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
            domain: Any = UNSET
            company_metadata: Any = UNSET
            if self._companies and company is not None and company is not FAILED:
                hook = self._get_company_domain
                if hook is not None:
                    try:
                        domain = hook(request, response)
                    except Exception as exc:
                        domain = self._raised("get_company_domain", exc)
                hook = self._get_company_metadata
                if hook is not None:
                    try:
                        company_metadata = hook(request, response)
                    except Exception as exc:
                        company_metadata = self._raised("get_company_metadata", exc)
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
            return self._defer(
                view, user_id, company, token, metadata, campaign, domain, company_metadata
            )
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
        hook = self._identify_company
        company = UNSET if hook is None else await call("identify_company", hook, request, response)
        domain: Any = UNSET
        company_metadata: Any = UNSET
        if self._companies and company is not None and company is not FAILED:
            hook = self._get_company_domain
            if hook is not None:
                domain = await call("get_company_domain", hook, request, response)
            hook = self._get_company_metadata
            if hook is not None:
                company_metadata = await call("get_company_metadata", hook, request, response)
        token, metadata, campaign = self._get_session_token, self._get_metadata, self._get_campaign
        return self._defer(
            view,
            user_id,
            company,
            UNSET if token is None else await call("get_session_token", token, request, response),
            UNSET if metadata is None else await call("get_metadata", metadata, request, response),
            UNSET if campaign is None else await call("get_campaign", campaign, request, response),
            domain,
            company_metadata,
        )

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

    # -- the update ----------------------------------------------------------------------

    def _defer(
        self,
        view: RequestView,
        user_id: str,
        company: object,
        token: object,
        metadata: object,
        campaign: object,
        domain: object,
        company_metadata: object,
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
        if type(domain) not in _PLAIN_IDS:
            domain = self._to_domain(domain)
        if type(company_metadata) not in _PLAIN_METADATA:
            company_metadata = self._to_metadata(company_metadata, "get_company_metadata")
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
                domain,
                company_metadata,
                view.snapshot(self._snapshot_spec),
                _now(),  # the update's moment, sent as its modified_time
            )
        )
        _count_handed()
        return True
