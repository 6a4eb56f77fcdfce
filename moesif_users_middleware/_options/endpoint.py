"""Where records go: the application id and the API's base URL, from the arguments or the
environment, and the stand-in that shows the id in logs and reprs."""

from __future__ import annotations

import os

from ..errors import ConfigurationError, MissingApplicationIdError

__all__ = ["DEFAULT_BASE_URL", "redact", "resolve_application_id", "resolve_base_url"]

DEFAULT_BASE_URL = "https://api.moesif.net"


def resolve_application_id(application_id: str | None) -> str:
    """The given id, else ``MOESIF_APPLICATION_ID``; a clear error when neither is set."""
    value = (
        application_id if application_id is not None else os.environ.get("MOESIF_APPLICATION_ID")
    )
    if not isinstance(value, str) or not value.strip():
        raise MissingApplicationIdError(
            "application_id is required: pass application_id=... or set MOESIF_APPLICATION_ID"
        )
    value = value.strip()
    # It travels as an HTTP header value: visible ASCII only (the message must not echo it).
    if not value.isascii() or not value.isprintable():
        raise ConfigurationError(
            "application_id must be printable ASCII (it is sent as an HTTP header); "
            "check MOESIF_APPLICATION_ID for stray characters"
        )
    return value


def resolve_base_url(base_url: str | None) -> str:
    """The given URL, else ``MOESIF_BASE_URL``, else ``https://api.moesif.net`` (no trailing /)."""
    value = base_url if base_url is not None else os.environ.get("MOESIF_BASE_URL")
    if value is None or not value.strip():
        return DEFAULT_BASE_URL
    value = value.strip().rstrip("/")
    if not value.startswith(("http://", "https://")):
        raise ConfigurationError(f"base_url must start with http:// or https://, got {value!r}")
    return value


def redact(application_id: str) -> str:
    """A stand-in safe for logs and reprs: never the id itself."""
    return f"<application id, {len(application_id)} chars>"
