"""The process around the senders: the registry, exit, fork and SIGTERM.

Nothing is registered at import. When the first sender is created, this module
registers, once per process, an ``atexit`` handler (every sender gets
``shutdown_timeout`` to deliver) and an at-fork handler (a forked child resets every
sender: it starts empty, with its own locks, thread and connection pool, and the parent
sends what it had); both before any fork a preloading server makes. When a sender's
worker starts on the main thread, it also installs the SIGTERM flush of :mod:`._sigterm`
(wrapping the server's own handler, which is in place by then).

After a SIGTERM, every later flush or shutdown of that exit (lifespan, atexit) shares
the one ``shutdown_timeout`` that started then, so a dead API delays the exit only once.
Senders are flushed side by side: each gets its chance within that budget.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
import threading
import time
import weakref
from typing import Any, Protocol

from ._sigterm import install_sigterm_flush

__all__ = [
    "drain_all",
    "flush_all",
    "flush_end",
    "registry",
    "registry_lock",
    "route_every_sender",
    "routed_transport",
    "sender_started",
    "shutdown_all",
    "track",
]

logger = logging.getLogger("moesif_users_middleware.sender")
_monotonic = time.monotonic


class _Sender(Protocol):
    options: Any

    def _flush_start(self) -> Any: ...
    def _flush_wait(self, ticket: Any, end: float | None) -> bool: ...
    def _begin_stop(self, deadline: float) -> None: ...
    def _finish_stop(self) -> None: ...
    def _after_fork(self) -> None: ...
    def _drain(self) -> None: ...
    def _start_empty(self) -> None: ...


registry: dict[tuple[str, str], Any] = {}  # (application id, base url) -> Sender
registry_lock = threading.Lock()
_every_sender: weakref.WeakSet[Any] = weakref.WeakSet()  # registered or not
_hooks_registered = False
_uwsgi_warned = False
_exit_budget_end: float | None = None
routed_transport: Any = None
"""While set, every sender connects through this httpx transport (see ``route_every_sender``)."""


def track(sender: _Sender) -> None:
    """A sender was created: reset it in a forked child; the exit and fork hooks are in place."""
    global _hooks_registered
    _every_sender.add(sender)
    if not _hooks_registered:
        _hooks_registered = True
        atexit.register(_at_exit)
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=_after_fork_in_child)


def sender_started() -> None:
    """A sender's worker thread started: the SIGTERM flush (main thread only)."""
    _warn_if_uwsgi_without_threads()
    install_sigterm_flush(_flush_on_sigterm, _sigterm_timeout)


def flush_end(timeout: float | None) -> float | None:
    """When a flush of ``timeout`` seconds ends (``None``: no limit), within the exit budget."""
    return _within_exit_budget(None if timeout is None else _monotonic() + max(0.0, timeout))


def flush_all(timeout: float | None = None) -> bool:
    """Flush every sender of this process at once; ``True`` if all delivered everything.

    Every sender's worker is woken before any is waited for, so they deliver side by
    side: one whose API is dead cannot use up the others' share of ``timeout``.
    """
    end = flush_end(timeout)
    flushes = [(sender, sender._flush_start()) for sender in list(registry.values())]
    delivered = True
    for sender, ticket in flushes:
        delivered = sender._flush_wait(ticket, end) and delivered
    return delivered


def drain_all() -> None:
    """Finish every sender's deferred captures now."""
    for sender in list(registry.values()):
        sender._drain()


def shutdown_all(timeout: float | None = None) -> None:
    """Stop every sender at once, each within ``timeout`` (default: its ``shutdown_timeout``)."""
    senders = list(registry.values())
    now = _monotonic()
    for sender in senders:
        seconds = sender.options.shutdown_timeout if timeout is None else timeout
        sender._begin_stop(_within_exit_budget(now + seconds) or 0.0)
    for sender in senders:
        sender._finish_stop()


def route_every_sender(transport: Any) -> None:
    """Send every sender's requests, existing senders' and later ones', through ``transport``
    (an httpx transport; ``None``: each sender's own again). For ``testing``.

    Each existing sender stops at once and starts empty (what it held is dropped, and it
    forgets what it delivered), so its next request takes the new route and nothing it
    saw before counts as "unchanged" after it.
    """
    global routed_transport
    routed_transport = transport
    for sender in list(_every_sender):
        sender._start_empty()


def forget_all() -> list[Any]:
    """Empty the registry (tests); the senders it held."""
    with registry_lock:
        senders = list(registry.values())
        registry.clear()
    return senders


def _within_exit_budget(end: float | None) -> float | None:
    budget = _exit_budget_end
    if budget is None:
        return end
    return budget if end is None or end > budget else end


def _sigterm_timeout() -> float:
    senders = list(registry.values())
    return max((sender.options.shutdown_timeout for sender in senders), default=0.0)


def _flush_on_sigterm() -> None:
    global _exit_budget_end
    timeout = _sigterm_timeout()
    _exit_budget_end = _monotonic() + timeout
    flush_all(timeout)


def _at_exit() -> None:
    if registry:
        shutdown_all()


def _after_fork_in_child() -> None:
    global registry_lock, _exit_budget_end
    registry_lock = threading.Lock()
    _exit_budget_end = None
    for sender in list(_every_sender):
        sender._after_fork()


def _warn_if_uwsgi_without_threads() -> None:
    global _uwsgi_warned
    uwsgi = sys.modules.get("uwsgi")
    if uwsgi is None or _uwsgi_warned:
        return
    _uwsgi_warned = True
    opt = getattr(uwsgi, "opt", {}) or {}
    if not (opt.get("enable-threads") or opt.get("threads")):
        logger.warning(
            "uWSGI runs without --enable-threads: the Moesif users sender thread cannot run, "
            "so queued user updates are only sent at exit. Start uWSGI with --enable-threads."
        )
