"""Record times: seconds since the epoch inside the process, ISO 8601 text on the wire.

Every record the sender posts carries ``modified_time``, the moment of the newest capture
or call merged into it (``2026-12-02T23:51:48.123Z``: UTC, milliseconds, ``Z``). Receivers
that order by it (the local collector does) keep the newest value even when several
processes send updates for the same user. The text of a moment is computed only when a
record is sent; the request path takes a float (``time.time()``).
"""

from __future__ import annotations

import time
from datetime import datetime, timezone

__all__ = ["seconds_of", "utc_text"]

_gmtime = time.gmtime
# (second, text up to the milliseconds) of the last moment formatted: records sent
# together share it. One tuple, replaced whole, so threads never see half an update.
_cache: tuple[int, str] = (-1, "")


def utc_text(seconds: float) -> str:
    """``seconds`` since the epoch as ``YYYY-MM-DDTHH:MM:SS.mmmZ`` (milliseconds truncated)."""
    global _cache
    whole = int(seconds)
    millis = int((seconds - whole) * 1000)
    cached_second, prefix = _cache
    if whole != cached_second:
        year, month, day, hour, minute, second = _gmtime(whole)[:6]
        prefix = f"{year:04d}-{month:02d}-{day:02d}T{hour:02d}:{minute:02d}:{second:02d}."
        _cache = (whole, prefix)
    return f"{prefix}{millis:03d}Z"


def seconds_of(text: str) -> float:
    """The moment of a canonical timestamp (as ``models.parse_timestamp`` returns it)."""
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()
