"""AWS Lambda: deliver what an invocation queued before its handler returns.

Lambda freezes the execution environment as soon as the handler returns, the sender's
thread with it, and may never thaw it. Wrap the handler, whatever adapter sits inside
(Mangum for an ASGI app, apig-wsgi or Zappa for a WSGI app, or a plain function)::

    from mangum import Mangum
    from moesif_users_middleware.aws_lambda import flush_after

    handler = flush_after(Mangum(app), timeout=2)

    @flush_after(timeout=2)  # or as a decorator
    def handler(event, context): ...

After each invocation (also one that raised) every sender finishes its pending
captures and delivers what is pending, for at most ``timeout`` seconds and never past
the invocation's own deadline (``context.get_remaining_time_in_millis()`` less
``reserve`` seconds, so the function still returns in time). What could not be
delivered in that time stays queued and goes with the next invocation of this warm
environment. This module imports nothing beyond the package's core.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, TypeVar, overload

from ._lifecycle import flush_all
from ._ratelimit import RateLimitedLog

__all__ = ["DEFAULT_RESERVE", "DEFAULT_TIMEOUT", "flush_after", "flush_budget"]

_logger = logging.getLogger("moesif_users_middleware.aws_lambda")
_warnings = RateLimitedLog(_logger)

DEFAULT_TIMEOUT = 2.0
DEFAULT_RESERVE = 0.1  # seconds kept for the function to return after the flush

R = TypeVar("R")
Handler = Callable[[Any, Any], R]


@overload
def flush_after(
    handler: Handler[R], *, timeout: float = ..., reserve: float = ...
) -> Handler[R]: ...


@overload
def flush_after(
    handler: None = None, *, timeout: float = ..., reserve: float = ...
) -> Callable[[Handler[R]], Handler[R]]: ...


def flush_after(
    handler: Handler[R] | None = None,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    reserve: float = DEFAULT_RESERVE,
) -> Handler[R] | Callable[[Handler[R]], Handler[R]]:
    """``handler(event, context)`` that flushes every sender before returning (see module).

    Use it as ``flush_after(handler, timeout=2)``, ``@flush_after`` or
    ``@flush_after(timeout=2)``.
    """
    if timeout < 0 or reserve < 0:
        raise ValueError("flush_after: timeout and reserve must be zero or more seconds")

    def wrap(inner: Handler[R]) -> Handler[R]:
        @functools.wraps(inner)
        def handle(event: Any, context: Any) -> R:
            try:
                return inner(event, context)
            finally:
                _flush(flush_budget(context, timeout, reserve))

        return handle

    return wrap if handler is None else wrap(handler)


def flush_budget(context: Any, timeout: float, reserve: float = DEFAULT_RESERVE) -> float:
    """Seconds the flush may take: ``timeout``, cut to the invocation's remaining time
    less ``reserve`` (when ``context`` tells it)."""
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    if remaining is None:
        return timeout
    try:
        left = float(remaining()) / 1000.0 - reserve
    except Exception:  # a context we do not understand: the timeout alone bounds the flush
        return timeout
    return max(0.0, min(timeout, left))


def _flush(seconds: float) -> None:
    try:
        delivered = flush_all(seconds)
    except Exception:  # never let delivery stand between the function and its answer
        _logger.debug("flush after the invocation failed", exc_info=True)
        return
    if not delivered:
        _warnings.warning(
            "lambda-flush",
            "Moesif: not everything queued was delivered within %.2f s of the invocation's "
            "end; the rest goes with the next invocation",
            seconds,
        )
