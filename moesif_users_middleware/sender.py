"""The shared background sender: one per process and (application id, base url).

``get_sender(...)`` returns it; ``queue_user`` / ``queue_users`` (and ``queue_company``
/ ``queue_companies``) validate and return at once (``True`` if accepted, ``False`` if
dropped because the buffer is full). A daemon thread, started on first use, coalesces
pending updates per user (and per company), skips updates identical to the last one
delivered, and POSTs batches to ``/v1/users/batch`` (``/v1/companies/batch``) with
retries. Every record carries ``modified_time``: the moment of the newest update merged
into it. The work is done by the delivery engine (:mod:`._delivery`); this module is its
facade and the registry. See :mod:`._options` for the options.

Delivery rules:

- A batch answered 408, 429, 5xx or not at all is retried with backoff (``Retry-After``
  honoured, capped) until its deadline; then its records go back to the buffer *under*
  any newer update for the same users, and the next cycle tries again.
- 413 splits the batch in halves (a single record answered 413 is dropped); a 400 that
  names the refused record drops that one and sends the rest; any other 4xx drops the
  batch, counted as ``failed``, with one log line.
- At interpreter exit every sender gets ``shutdown_timeout`` seconds to deliver; a
  dead API never holds the process longer. A forked child starts empty (the parent
  sends what it had pending) with its own lock, thread and connection pool.

Adapters hand over captures with ``defer`` (a deque append on the request path); the
engine finishes them in order, and so does any ``flush``, ``stats`` or ``queue_user``
call first, so what a request captured is never overtaken by a later call.

Calling ``get_sender`` again for an existing (application id, base url) returns the
first sender and keeps its options (a debug log line says so).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable
from typing import Any

import httpx

from . import _lifecycle
from ._delivery import flushes
from ._delivery.engine import Engine
from ._delivery.kinds import COMPANIES, KINDS, USERS
from ._delivery.options import SENDER_OPTIONS, SenderOptions, validate_sender_options
from ._delivery.retry import DEFAULT_RETRY, RetryPolicy
from ._delivery.worker import Ticket
from ._lifecycle import drain_all, flush_all, shutdown_all
from ._options.endpoint import redact, resolve_application_id, resolve_base_url
from ._ratelimit import RateLimitedLog
from ._transport.records import normalize_companies, normalize_users
from .errors import ValidationError
from .models import normalize_company, normalize_user
from .transport import UsersClient

__all__ = [
    "SENDER_OPTIONS",
    "Sender",
    "SenderOptions",
    "drain_all",
    "flush_all",
    "get_sender",
    "shutdown_all",
]

_logger = logging.getLogger("moesif_users_middleware.sender")
_getpid = os.getpid
_monotonic = time.monotonic


class Sender:
    """Coalescing, batching, retrying background sender (create it with :func:`get_sender`)."""

    defer: Callable[[tuple[Any, ...]], None]
    """Hand over a deferred capture (the request path: a deque append; never raises)."""

    def __init__(
        self,
        application_id: str,
        base_url: str,
        options: SenderOptions | None = None,
        *,
        retry: RetryPolicy = DEFAULT_RETRY,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._application_id = application_id
        self.base_url = base_url
        self.options = options or SenderOptions()
        self._transport = transport
        self._warnings = RateLimitedLog(_logger)
        self._engine = Engine(
            self.options,
            retry,
            self._connect,
            self._warnings,
            _lifecycle.sender_started,
            application_id,
        )
        self.defer = self._engine.defer  # the engine keeps its identity across forks
        _lifecycle.track(self)

    # ----------------------------------------------------------------- public API

    def queue_user(self, user: Any) -> bool:
        """Validate one user (``User`` or dict) and queue it; ``False`` if dropped.

        Raises ``ValidationError`` naming the field for bad input; never raises or
        blocks for network trouble. Do not mutate the dict after queueing it.
        """
        engine = self._engine
        if engine.pid != _getpid():  # _check_fork, inline: this is the hot path
            self._after_fork()
        return engine.queue_direct(USERS, (normalize_user(user),))

    def queue_users(self, users: Iterable[Any]) -> bool:
        """Validate every user first (``users[3].user_id`` in errors), then queue them.

        Returns ``True`` if all were accepted.
        """
        self._check_fork()
        return self._engine.queue_direct(USERS, normalize_users(users))

    def queue_company(self, company: Any) -> bool:
        """Validate one company (``Company`` or dict) and queue it; ``False`` if dropped.

        Companies coalesce per ``company_id`` under the same rules as users and go to
        ``/v1/companies/batch`` in batches of their own.
        """
        self._check_fork()
        return self._engine.queue_direct(COMPANIES, (normalize_company(company),))

    def queue_companies(self, companies: Iterable[Any]) -> bool:
        """Validate every company first (``companies[3].company_id`` in errors), then queue them."""
        self._check_fork()
        return self._engine.queue_direct(COMPANIES, normalize_companies(companies))

    def flush(self, timeout: float | None = None) -> bool:
        """Send everything pending now; ``True`` once it was all delivered.

        With a ``timeout`` (seconds) keep trying until then; with ``None`` wait for one
        send attempt of everything pending (retries included) and report its outcome.
        Records rejected by the API (4xx) or too large to send make the result ``False``.
        """
        end = _lifecycle.flush_end(timeout)
        return self._flush_wait(self._flush_start(), end)

    async def aflush(self, timeout: float | None = None) -> bool:
        """``flush`` for coroutines: polls without blocking the event loop."""
        end = _lifecycle.flush_end(timeout)
        return await flushes.flush_wait_async(self._engine, self._flush_start(), end)

    def shutdown(self, timeout: float | None = None) -> None:
        """Deliver what is pending within ``timeout`` (default ``shutdown_timeout``), then stop.

        A later ``queue_user`` starts the sender again.
        """
        self._check_fork()
        seconds = self.options.shutdown_timeout if timeout is None else max(0.0, timeout)
        self._begin_stop(_lifecycle.flush_end(seconds) or 0.0)
        self._finish_stop()

    def stats(self, kind: str | None = None) -> dict[str, int]:
        """Counters since the sender started (in this process), for both kinds summed, or
        for one: ``stats("users")``, ``stats("companies")``."""
        self._check_fork()
        if kind is not None and kind not in KINDS:
            raise ValidationError("kind", f"must be one of {', '.join(KINDS)}, not {kind!r}")
        return self._engine.stats(kind)

    @property
    def pending(self) -> int:
        """Users and companies waiting to be sent or being sent (and captures not yet
        turned into updates)."""
        return self._engine.pending

    def __repr__(self) -> str:
        return (
            f"Sender(base_url={self.base_url!r}, pending={self.pending}, "
            f"application_id={redact(self._application_id)})"
        )

    # ------------------------------------------------- used by the process hooks

    def _flush_start(self) -> Ticket | None:
        """Finish deferred captures, then ask for a send; ``None``: nothing to wait for."""
        self._check_fork()
        return flushes.flush_start(self._engine)

    def _flush_wait(self, ticket: Ticket | None, end: float | None) -> bool:
        """Wait for the send asked for by ``_flush_start`` until ``end`` (``None``: its outcome)."""
        return flushes.flush_wait(self._engine, ticket, end)

    def _begin_stop(self, deadline: float) -> None:
        self._engine.worker.begin_stop(deadline)

    def _finish_stop(self) -> None:
        left = self._engine.worker.finish_stop()
        if left:
            _logger.warning(
                "Moesif users sender stopped with %d user and company updates not delivered "
                "(shutdown_timeout reached or API unavailable)",
                left,
            )

    def _drain(self) -> None:
        self._engine.drain()

    def _after_fork(self) -> None:
        """In a forked child: start empty, with a fresh lock, thread and connection pool."""
        if self._engine.pid == _getpid():
            return
        self._engine.reset()  # the parent's client is abandoned, never closed, here
        self._warnings.reset()

    def _start_empty(self) -> None:
        """Stop now, dropping what is pending, and start empty (a new route, see
        ``_lifecycle.route_every_sender``): the next connection takes the new route."""
        self._check_fork()
        worker = self._engine.worker
        worker.begin_stop(0.0)
        worker.finish_stop()
        thread = worker.thread
        if thread is not None:  # a request in flight: it ends within the request timeout
            thread.join(self.options.timeout)
        self._engine.reset()
        self._warnings.reset()

    def _check_fork(self) -> None:
        # The at-fork hook resets every sender first; this covers a fork without it.
        if self._engine.pid != _getpid():
            self._after_fork()

    def _connect(self) -> UsersClient:
        options = self.options
        return UsersClient(
            self._application_id,
            self.base_url,
            timeout=options.timeout,
            gzip=options.gzip,
            transport=_lifecycle.routed_transport or self._transport,
        )


_PRIVATE_OPTIONS = ("_retry", "_transport")


def get_sender(
    application_id: str | None = None, base_url: str | None = None, **options: Any
) -> Sender:
    """The process's one sender for (application id, base url), created on first call.

    ``application_id`` falls back to ``MOESIF_APPLICATION_ID``, ``base_url`` to
    ``MOESIF_BASE_URL`` then ``https://api.moesif.net``. ``options`` are the names in
    ``SENDER_OPTIONS``; an unknown name or a bad value raises ``ConfigurationError``.
    For an existing sender the options of its first creation are kept.
    """
    private = {name: options.pop(name) for name in _PRIVATE_OPTIONS if name in options}
    validated = validate_sender_options(options)
    app_id = resolve_application_id(application_id)
    url = resolve_base_url(base_url)
    key = (app_id, url)
    with _lifecycle.registry_lock:
        sender: Sender | None = _lifecycle.registry.get(key)
        if sender is None:
            sender = Sender(
                app_id,
                url,
                validated,
                retry=private.get("_retry", DEFAULT_RETRY),
                transport=private.get("_transport"),
            )
            _lifecycle.registry[key] = sender
        elif options and validated != sender.options:
            _logger.debug(
                "get_sender: a sender for %s at %s already exists; keeping its first options",
                redact(app_id),
                url,
            )
    return sender


def _reset_senders_for_tests() -> None:
    """Shut every sender down and forget them (test isolation)."""
    senders = _lifecycle.forget_all()
    now = _monotonic()
    for sender in senders:
        sender._begin_stop(now + sender.options.shutdown_timeout)
    for sender in senders:
        sender._finish_stop()
