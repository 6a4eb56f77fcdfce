"""Configuration: environment fallbacks, option validation, the resolved per-adapter config."""

from __future__ import annotations

import os

__all__ = [
    "DEFAULT_BASE_URL",
    "ConfigurationError",
    "redact",
    "resolve_application_id",
    "resolve_base_url",
]

DEFAULT_BASE_URL = "https://api.moesif.net"


class ConfigurationError(ValueError):
    """Invalid or missing configuration, raised at construction time, never per request."""


def resolve_application_id(application_id: str | None) -> str:
    """The given id, else ``MOESIF_APPLICATION_ID``; a clear error when neither is set."""
    value = application_id if application_id is not None else os.environ.get("MOESIF_APPLICATION_ID")
    if not isinstance(value, str) or not value.strip():
        raise ConfigurationError(
            "application_id is required: pass application_id=... or set MOESIF_APPLICATION_ID"
        )
    return value.strip()


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
