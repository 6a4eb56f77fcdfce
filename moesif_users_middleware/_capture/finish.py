"""The second half of a capture: from a deferred capture to the records to queue.

The sender runs :meth:`Finish.finish` off the request path, in order, under its inbox
lock (one thread at a time): the session token, client IP, user agent and campaign from
the hooks' results and the header snapshot, the metadata checks, then the user's record
and, with a company id, the company's. See :mod:`.pipeline` for the first half and the
hand-over, :mod:`.fields` for the checks and conversions both halves share.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .._delivery.engine import Finished
from .._delivery.kinds import COMPANIES, USERS, RecordKind
from ..models import MAX_ID_LENGTH
from .fields import UNSET, Fields
from .request_view import SnapshotSpec, SnapshotView

__all__ = ["Deferred", "Finish"]

# What a request hands to the sender: (finish, kind, id, company, token, metadata,
# campaign, company domain, company metadata, header snapshot, moment); the kind is
# USERS. A plain tuple, not a NamedTuple: building one costs 0.06 us on the request path, a
# NamedTuple 0.4 us. The sender reads only the first three and the last (see
# ``_delivery.engine``); the rest is this module's, read in ``_finish``.
Deferred = tuple[
    Callable[[Any], "Finished | None"], RecordKind, str, Any, Any, Any, Any, Any, Any, Any, float
]


# Records without metadata kept for reuse (see Finish._bases): enough for the users
# active within a flush window of a busy worker; cleared whole when full.
_BASE_CACHE_SIZE = 4096
# What a company's update takes from its user's, from the same request.
_SHARED_FIELDS = ("session_token", "ip_address", "campaign")


class Finish(Fields):
    """Finishing deferred captures; the attributes are set by :class:`~.pipeline.Capture`."""

    _snapshot_spec: SnapshotSpec
    _update_companies: bool
    _capture_campaign: bool
    # (id, company, token, campaign, domain, snapshot) -> the records without metadata
    _base_cache: dict[tuple[Any, ...], tuple[dict[str, Any], dict[str, Any] | None]]

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
        user_base, company_base = self._bases(item)
        user, plain = self._with_metadata(user_base, item[5], "get_metadata")
        records: list[tuple[RecordKind, dict[str, Any]]] = [(USERS, user)]
        if company_base is not None:
            company, company_plain = self._with_metadata(
                company_base, item[8], "get_company_metadata"
            )
            records.append((COMPANIES, company))
            plain = plain and company_plain
        return Finished(records, plain)

    def _with_metadata(
        self, base: dict[str, Any], metadata: object, name: str
    ) -> tuple[dict[str, Any], bool]:
        """A new record: ``base`` plus the hook's checked metadata; and whether it was plain."""
        record = dict(base)
        if metadata is UNSET:
            return record, True
        checked, plain = self._checked_metadata(metadata, name)
        if checked is not None:
            record["metadata"] = checked
        return record, plain

    def _bases(self, item: Deferred) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """The user's and the company's records without their metadata.

        They depend only on the ids, the token, campaign and domain results and the header
        snapshot, which stay the same over a user's requests while the metadata changes
        (a visit counter, a "last seen"): the last ones built for such a key are reused,
        unless building them reported a problem (it is then reported on every capture).
        ``tests/test_fast_paths.py`` checks a reused result equals a fresh one.
        """
        key = (item[2], item[3], item[4], item[6], item[7], item[9])  # all but the metadata
        cache = self._base_cache
        try:
            bases = cache.get(key)
        except TypeError:  # an unhashable hook result (a campaign dict): never reused
            return self._build_bases(item)
        if bases is None:
            reports = self._reports
            bases = self._build_bases(item)
            if self._reports == reports:
                if len(cache) >= _BASE_CACHE_SIZE:
                    cache.clear()
                cache[key] = bases
        return bases

    def _build_bases(self, item: Deferred) -> tuple[dict[str, Any], dict[str, Any] | None]:
        (_, _, record_id, company, token, _, campaign, domain) = item[:8]
        view = SnapshotView(self._snapshot_spec, item[9])
        if (
            type(company) is str
            and 0 < len(company) <= MAX_ID_LENGTH
            and company.isascii()
            and not company.isspace()
        ):
            company_id: str | None = company  # the common case of _to_id, inline
        elif company is not UNSET:
            company = self._to_id("identify_company", company)
            company_id = company if type(company) is str else None
        else:
            company_id = None
        header = view.header
        token = self._default_token(header) if token is UNSET else self._to_token(token)
        ip = self._resolver.resolve(view.peer, header)
        if campaign is UNSET:
            campaign = self._default_campaign(view, header) if self._capture_campaign else None
        else:
            campaign = self._to_campaign(campaign)
        user = self._user_record(record_id, company_id, token, ip, header, campaign)
        if company_id is None or not self._update_companies:
            return user, None
        return user, self._company_record(company_id, user, domain)

    def _user_record(
        self,
        user_id: str,
        company_id: str | None,
        token: str | None,
        ip: str | None,
        header: Callable[[str], str | None],
        campaign: dict[str, str] | None,
    ) -> dict[str, Any]:
        record: dict[str, Any] = {"user_id": user_id}
        if company_id is not None:
            record["company_id"] = company_id
        if token is not None:
            record["session_token"] = token
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
        if campaign is not None:
            record["campaign"] = campaign
        return record

    def _company_record(
        self, company_id: str, user: dict[str, Any], domain: object
    ) -> dict[str, Any]:
        """The company's update from the same request: the request's token, IP and campaign
        as the user's record has them, and the domain (its metadata is added by the caller)."""
        record: dict[str, Any] = {"company_id": company_id}
        for field in _SHARED_FIELDS:
            value = user.get(field)
            if value is not None:
                record[field] = value
        domain = self._to_domain(domain)
        if domain is not None:
            record["company_domain"] = domain
        return record
