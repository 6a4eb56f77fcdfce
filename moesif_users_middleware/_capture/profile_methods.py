"""``update_user`` & co. on the middleware objects, as Moesif's middlewares have them.

Application code written for ``moesifdjango``, ``moesifwsgi`` or ``moesifasgi`` calls
``middleware.update_user(profile)``, ``update_users_batch(profiles)``,
``update_company(profile)`` and ``update_companies_batch(profiles)`` (in Django on
``MoesifMiddleware(None)``). Every adapter of this library has the same four methods
(:class:`ProfileMethods`): they queue the profiles on the adapter's shared sender and
return at once, never waiting for the network.

They accept what Moesif's accept: a dict, a JSON string, a ``moesifapi`` model
(``UserModel``, ``CompanyModel``: anything with ``to_dictionary()``), and this library's
:class:`~moesif_users_middleware.models.User` / ``Company``; an integer id is sent as a
string. Like Moesif's, they never raise: a profile that is not valid (the field at fault
is named), or capture being off, is logged (at most once a minute per method) and the
call returns ``False``; ``True`` means queued. (``get_sender().queue_user`` raises
``ValidationError`` instead, for code that wants it.)
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from .._ratelimit import RateLimitedLog
from ..errors import ConfigurationError, ValidationError
from ..models import Company, User
from ..sender import Sender
from .pipeline import Capture

__all__ = ["ProfileMethods"]

_log = RateLimitedLog(logging.getLogger("moesif_users_middleware"))


class ProfileMethods:
    """Moesif's ``update_user`` & co., queued through the adapter's shared sender."""

    def _profile_capture(self) -> Capture | None:
        """The adapter's capture (``None`` when capture is off); adapters may override it."""
        capture: Capture | None = getattr(self, "capture", None)
        return capture

    def update_user(self, user_profile: Any) -> bool:
        """Queue one user profile (``user_id`` required); ``False`` if it was not queued."""
        return self._queue_profiles("update_user", Sender.queue_user, user_profile, "user_id")

    def update_users_batch(self, user_profiles: Iterable[Any]) -> bool:
        """Queue several user profiles; ``False`` if any was invalid (then none is queued)."""
        return self._queue_profiles(
            "update_users_batch", Sender.queue_users, user_profiles, "user_id", batch=True
        )

    def update_company(self, company_profile: Any) -> bool:
        """Queue one company profile (``company_id`` required); ``False`` if not queued."""
        return self._queue_profiles(
            "update_company", Sender.queue_company, company_profile, "company_id"
        )

    def update_companies_batch(self, companies_profiles: Iterable[Any]) -> bool:
        """Queue several company profiles; ``False`` if any was invalid (then none is queued)."""
        return self._queue_profiles(
            "update_companies_batch",
            Sender.queue_companies,
            companies_profiles,
            "company_id",
            batch=True,
        )

    def _queue_profiles(
        self,
        method: str,
        queue: Callable[[Sender, Any], bool],
        given: Any,
        id_field: str,
        *,
        batch: bool = False,
    ) -> bool:
        capture = self._profile_capture()
        if capture is None or not capture.config.enabled:
            _log.warning(
                f"{method}:off",
                "moesif_users_middleware: %s: capture is off (see the configuration message "
                "logged at startup; a Flask extension on several apps needs an app context): "
                "the profile was not sent",
                method,
            )
            return False
        try:
            if batch:
                profiles = [
                    _plain(profile, id_field, f"profiles[{index}]")
                    for index, profile in enumerate(_listed(given))
                ]
                return queue(capture.sender, profiles)
            return queue(capture.sender, _plain(given, id_field))
        except (ValidationError, ConfigurationError) as exc:
            _log.log(
                logging.ERROR,
                method,
                "moesif_users_middleware: %s: the profile was not sent: %s",
                method,
                exc,
            )
            return False


def _listed(given: Any) -> list[Any]:
    if isinstance(given, (str, bytes)):
        given = _json(given, "profiles")  # Moesif's accept a JSON array too
    if isinstance(given, Mapping) or not isinstance(given, Iterable):
        raise ValidationError("profiles", f"must be a list, not {type(given).__name__}")
    return list(given)


def _json(text: str | bytes, field: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        raise ValidationError(field, "is a string that is not JSON") from None


def _plain(profile: Any, id_field: str, field: str = "profile") -> Any:
    """Moesif's input shapes as a dict (or this library's model, left as it is)."""
    if isinstance(profile, (User, Company)):
        return profile
    if isinstance(profile, (str, bytes)):
        profile = _json(profile, field)
    elif not isinstance(profile, Mapping) and callable(getattr(profile, "to_dictionary", None)):
        profile = profile.to_dictionary()  # a moesifapi model
    if isinstance(profile, Mapping):
        profile = dict(profile)
        value = profile.get(id_field)
        if isinstance(value, int) and not isinstance(value, bool):
            profile[id_field] = str(value)
    return profile
