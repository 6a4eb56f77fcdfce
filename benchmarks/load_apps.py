"""What the apps ``load_soak.py`` serves share: users from a bearer token, options, stats.

The apps (``load_fastapi.py``, ``load_flask.py``) have one JSON route. Requests carry ``Authorization: Bearer user-<n>``; the hooks turn that into the user id,
a company (``company-<n % 100>``) and metadata. ``LOAD_MOESIF=off`` builds the app with
``enabled=False`` (the bare baseline); the application id and URL come from
``MOESIF_APPLICATION_ID`` / ``MOESIF_BASE_URL``. ``GET /_sender`` (skipped by the
middleware) returns this process's sender counters.
"""

from __future__ import annotations

import os
from typing import Any

__all__ = [
    "STATS_PATH",
    "company_of",
    "metadata_of",
    "options",
    "sender_stats",
    "user_from_authorization",
]

STATS_PATH = "/_sender"


def user_from_authorization(value: str | None) -> str | None:
    """``user-<n>`` from ``Bearer user-<n>``, else ``None`` (nothing recorded)."""
    scheme, _, token = (value or "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token.startswith("user-"):
        return None
    return token


def company_of(user_id: str) -> str:
    return f"company-{int(user_id.removeprefix('user-')) % 100}"


def metadata_of(user_id: str) -> dict[str, Any]:
    number = int(user_id.removeprefix("user-"))
    return {"plan": "pro" if number % 3 == 0 else "free", "seats": number % 50}


def options() -> dict[str, Any]:
    """Adapter options shared by both apps."""
    return {"enabled": os.environ.get("LOAD_MOESIF", "on") != "off"}


def sender_stats() -> dict[str, int]:
    """This process's sender counters (empty when the middleware is disabled)."""
    from moesif_users_middleware.sender import get_sender

    if not options()["enabled"]:
        return {}
    sender = get_sender(
        application_id=os.environ["MOESIF_APPLICATION_ID"],
        base_url=os.environ["MOESIF_BASE_URL"],
    )
    return {**sender.stats(), "pending": sender.pending}
