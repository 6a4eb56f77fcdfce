"""Deliver what was queued before a SIGTERM, even when the process then dies of it.

``atexit`` covers a normal exit (gunicorn workers, ``sys.exit``). Some servers end by
the signal itself: uvicorn (since 0.29) restores the default SIGTERM handler after its
graceful shutdown and raises the signal again, so a server without lifespan events —
Django's ASGI handler, or ``--lifespan off`` — never runs ``atexit``. So when the first
sender starts on the main thread, this module wraps whatever SIGTERM handler is
installed at that moment (the server's own): on SIGTERM it first flushes every sender,
bounded by the largest ``shutdown_timeout``, then hands the signal to that handler
unchanged (or, for the default action, re-raises it), so the server's shutdown
proceeds as before, only up to ``shutdown_timeout`` later.

The flush runs in a helper thread that the handler joins with a timeout: the signal
may arrive while the main thread holds a sender's lock, and a flush there would
deadlock. Set ``MOESIF_USERS_SIGTERM_FLUSH=0`` to leave SIGTERM alone.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable
from types import FrameType

__all__ = ["install_sigterm_flush"]

_logger = logging.getLogger("moesif_users_middleware.sender")
_SIGTERM = getattr(signal, "SIGTERM", None)

FlushAll = Callable[[], None]


class _Handler:
    """The installed SIGTERM handler: flush, then the previous handler."""

    def __init__(self, previous: object, flush_all: FlushAll, timeout: Callable[[], float]) -> None:
        self.previous = previous
        self.flush_all = flush_all
        self.timeout = timeout

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        try:
            worker = threading.Thread(target=self.flush_all, name="moesif-users-sigterm-flush")
            worker.daemon = True
            worker.start()
            worker.join(self.timeout())
        except Exception:  # never let our flush stand between a server and its signal
            _logger.debug("flush on SIGTERM failed", exc_info=True)
        previous = self.previous
        if callable(previous):
            previous(signum, frame)
        elif previous == signal.SIG_DFL:
            signal.signal(signum, signal.SIG_DFL)
            signal.raise_signal(signum)
        # SIG_IGN or None (installed from C): nothing more to do


def install_sigterm_flush(flush_all: FlushAll, timeout: Callable[[], float]) -> bool:
    """Wrap the current SIGTERM handler (main thread only); ``True`` if installed now."""
    if _SIGTERM is None or os.environ.get("MOESIF_USERS_SIGTERM_FLUSH", "1") == "0":
        return False
    if threading.current_thread() is not threading.main_thread():
        return False
    try:
        current = signal.getsignal(_SIGTERM)
        if isinstance(current, _Handler):
            return False
        signal.signal(_SIGTERM, _Handler(current, flush_all, timeout))
    except (ValueError, OSError):  # not the main interpreter, or an exotic platform
        return False
    return True
