"""What an answer says: :class:`RawResponse`, its ``Retry-After``, and its error."""

from __future__ import annotations

import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

import httpx

from ..errors import ApiError

__all__ = ["RawResponse", "parse_retry_after", "raise_for"]


@dataclass(frozen=True)
class RawResponse:
    """What the low-level batch POST returns: status, headers and body text (first 64 KiB)."""

    status_code: int
    headers: httpx.Headers
    text: str

    @property
    def retry_after(self) -> float | None:
        """The ``Retry-After`` delay in seconds, if the answer carried a valid one."""
        return parse_retry_after(self.headers.get("retry-after"))

    def error(self) -> ApiError:
        """An ``ApiError`` describing this (error) response."""
        return ApiError(self.status_code, self.text, self.retry_after)


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value (delta-seconds or HTTP-date), else ``None``."""
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        try:
            moment = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if moment.tzinfo is None:
            return None
        seconds = moment.timestamp() - (time.time() if now is None else now)
    if seconds != seconds or seconds in (float("inf"), float("-inf")):
        return None
    return max(0.0, seconds)


def raise_for(response: RawResponse) -> None:
    """Raise the response's ``ApiError`` unless it is a 2xx."""
    if not 200 <= response.status_code < 300:
        raise response.error()
