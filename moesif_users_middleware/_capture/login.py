"""Profiles at login (``update_on_login``): the user's whole profile, queued as they log in.

The adapters connect their framework's login signal (Django's ``user_logged_in``,
Flask-Login's) to :meth:`LoginCapture.record` with a neutral view of the login request.
The profile comes from the application's ``get_user_profile(user)`` (or the adapter's
default), and the login request adds what it knows: the client IP (trusted proxies
apply), the user agent and, unless a ``get_campaign`` hook decides campaigns, the
campaign its query string and ``Referer`` carry. A value the profile sets itself wins
(campaign keys merge). Nothing here raises into the login: a failing profile hook or an
invalid profile is counted and logged like a failing request hook.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .._merge import merge_update
from ..models import ValidationError, normalize_user
from .campaign import extract_campaign
from .client_ip import ClientIpResolver
from .fields import describe
from .hooks import report
from .pipeline import Capture
from .request_view import RequestView

__all__ = ["LoginCapture", "ProfileOf"]

ProfileOf = Callable[[Any], Any]
"""``profile_of(user)``: a dict or ``User`` (``user_id`` required), or ``None``: nothing."""

_LABEL = "update_on_login"


class LoginCapture:
    """Queues one profile per login to the adapter's sender; never raises."""

    def __init__(self, capture: Capture, profile_of: ProfileOf, label: str = _LABEL) -> None:
        config = capture.config
        self.capture = capture
        self.profile_of = profile_of
        self.label = label
        self._resolver = ClientIpResolver(config.trusted_proxies, config.client_ip_headers)
        self._max_ua = config.max_user_agent_length
        self._campaign = config.capture_campaign and config.get_campaign is None

    def record(self, view: RequestView, user: Any) -> bool:
        """Queue ``user``'s profile with what the login request adds; ``True`` if queued."""
        secret = self.capture.config.application_id
        try:
            profile = self.profile_of(user)
        except Exception as exc:
            report("hook_errors", self.label, "raised", f"raised {describe(exc)}", secret)
            return False
        if profile is None:
            return False
        try:
            record = merge_update(self.request_fields(view), normalize_user(profile))
            return self.capture.sender.queue_user(record)
        except ValidationError as exc:
            report("invalid", self.label, "invalid profile", f"invalid profile: {exc}", secret)
        except Exception as exc:  # the login must go on whatever happens here
            report("internal_errors", self.label, "internal error", describe(exc), secret)
        return False

    def request_fields(self, view: RequestView) -> dict[str, Any]:
        """The client IP, user agent and campaign of the login request, where present."""
        header = view.header
        fields: dict[str, Any] = {}
        ip = self._resolver.resolve(view.peer, header)
        if ip is not None:
            fields["ip_address"] = ip
        agent = header("user-agent")
        if agent:
            fields["user_agent_string"] = agent[: self._max_ua]
        if self._campaign:
            campaign = extract_campaign(view.query_string, header("referer"), header("host"))
            if campaign:
                fields["campaign"] = campaign
        return fields
