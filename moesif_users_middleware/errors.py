"""Every exception type the library raises, in one leaf module (it imports nothing of the package).

The modules that raise them import them from here and keep them importable from where
they always were (``models.ValidationError``, ``config.ConfigurationError``,
``transport.ApiError``, ...).

- :class:`ValidationError`: an invalid user, campaign or metadata value; ``field`` names it.
- :class:`ConfigurationError`: an invalid option, raised at construction, never per request;
  :class:`MissingApplicationIdError` (no application id) and :class:`UnknownOptionError`
  (a sender option name that does not exist) are kinds of it.
- :class:`HookError`: a hook option that cannot be used (the configuration wraps it).
- :class:`ApiError`: the Users API answered with an error status;
  :class:`TransportError`: it did not answer at all.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ApiError",
    "ConfigurationError",
    "HookError",
    "MissingApplicationIdError",
    "TransportError",
    "UnknownOptionError",
    "ValidationError",
]

_MESSAGE_BODY = 300  # characters of the response body quoted in an ApiError's message


class ValidationError(ValueError):
    """An invalid user or campaign; ``field`` names the offending field (dotted path)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class ConfigurationError(ValueError):
    """Invalid or missing configuration, raised at construction time, never per request."""


class MissingApplicationIdError(ConfigurationError):
    """No application id and no ``MOESIF_APPLICATION_ID``.

    Adapters turn capture off with one warning (unless ``strict``), like an
    error-reporting SDK without a DSN.
    """


class UnknownOptionError(ConfigurationError, TypeError):
    """An option name the sender does not know (a ``ConfigurationError`` and a ``TypeError``)."""


class HookError(ValueError):
    """A hook option that cannot be used (the configuration wraps it)."""


class ApiError(Exception):
    """The Users API answered with an error status (or, as ``TransportError``, not at all).

    ``status_code`` is the HTTP status (``None`` for a network failure), ``body`` the
    response text (its first 64 KiB), ``retry_after`` the ``Retry-After`` delay in seconds.
    """

    def __init__(
        self,
        status_code: int | None,
        body: str = "",
        retry_after: float | None = None,
        message: str | None = None,
    ) -> None:
        if message is None:
            snippet = body[:_MESSAGE_BODY] + ("..." if len(body) > _MESSAGE_BODY else "")
            message = f"Users API answered {status_code}" + (f": {snippet}" if snippet else "")
        super().__init__(message)
        self.status_code = status_code
        self.body = body
        self.retry_after = retry_after

    @property
    def retryable(self) -> bool:
        """Whether a retry may succeed: network errors, 408, 429 and 5xx."""
        code = self.status_code
        return code is None or code in (408, 429) or code >= 500

    def __reduce__(self) -> tuple[Any, ...]:
        return (ApiError, (self.status_code, self.body, self.retry_after, str(self)))


class TransportError(ApiError):
    """The request did not complete: connection refused or reset, timeout (including an
    answer not complete within the request's ``timeout``), protocol error."""

    def __init__(self, message: str) -> None:
        super().__init__(None, "", None, message)

    def __reduce__(self) -> tuple[Any, ...]:
        return (TransportError, (str(self),))
