"""The clients' ``httpx.Timeout``: built from seconds, its longest phase, lowered per request."""

from __future__ import annotations

import httpx

__all__ = ["longest_phase", "make_timeout", "per_request_timeout"]

_MAX_CONNECT_TIMEOUT = 5.0


def make_timeout(timeout: float | httpx.Timeout) -> httpx.Timeout:
    """An explicit ``httpx.Timeout`` (connect capped at 5 s) from seconds or a Timeout.

    The clients also use its longest phase as the limit of a whole request.
    """
    if isinstance(timeout, httpx.Timeout):
        return timeout
    seconds = float(timeout)
    return httpx.Timeout(
        connect=min(seconds, _MAX_CONNECT_TIMEOUT), read=seconds, write=seconds, pool=seconds
    )


def longest_phase(timeout: httpx.Timeout) -> float | None:
    """The longest limit among the phases (``None`` when none has one)."""
    phases = [timeout.connect, timeout.read, timeout.write, timeout.pool]
    limits = [phase for phase in phases if phase is not None]
    return max(limits) if limits else None


def per_request_timeout(base: httpx.Timeout, timeout: float | None) -> httpx.Timeout | None:
    """``base`` with every phase capped at ``timeout`` seconds (``None``: no limit)."""
    if timeout is None:
        return None
    seconds = max(0.001, timeout)
    return httpx.Timeout(
        connect=_min(base.connect, seconds),
        read=_min(base.read, seconds),
        write=_min(base.write, seconds),
        pool=_min(base.pool, seconds),
    )


def _min(value: float | None, cap: float) -> float:
    return cap if value is None else min(value, cap)
