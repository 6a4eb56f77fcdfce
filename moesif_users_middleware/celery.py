"""Celery (and its prefork pool): deliver what tasks queued when a worker process ends.

A prefork pool child ends through ``os._exit`` (after its last task, on a warm shutdown,
or when ``max_tasks_per_child`` recycles it), so Python's ``atexit`` never runs there and
the sender's pending users would be lost with the process. One call, next to your
Celery app, connects Celery's own shutdown signals to a bounded flush::

    # proj/celery.py
    from celery import Celery
    import moesif_users_middleware.celery

    app = Celery("proj")
    moesif_users_middleware.celery.setup()

- ``worker_process_shutdown``: each pool child, just before it exits, delivers what its
  tasks queued (Celery sends it from the child's exit path, before ``os._exit``);
- ``worker_shutdown``: the worker's main process (``-P solo`` or ``threads``, or code
  that queues there) delivers at warm shutdown (SIGTERM) too.

Each sender gets its ``shutdown_timeout`` (or ``timeout`` seconds, if given), all side by
side, so a dead API delays a process's exit by that much at most. Calling ``setup``
again replaces the earlier connection. Importing this module imports Celery; nothing
else in the package does.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import signals

from ._lifecycle import shutdown_all

__all__ = ["setup", "teardown"]

_logger = logging.getLogger("moesif_users_middleware.celery")
_UID = "moesif_users_middleware.celery"
_SIGNALS = (signals.worker_process_shutdown, signals.worker_shutdown)


class _Deliver:
    """The receiver: deliver every sender's pending records within ``timeout``."""

    def __init__(self, timeout: float | None) -> None:
        self.timeout = timeout

    def __call__(self, sender: Any = None, **kwargs: Any) -> None:
        try:
            shutdown_all(self.timeout)
        except Exception:  # never stand between Celery and its shutdown
            _logger.debug("delivering at worker shutdown failed", exc_info=True)


def setup(*, timeout: float | None = None) -> None:
    """Deliver pending users and companies when a pool process or the worker shuts down.

    ``timeout`` (seconds) bounds the delivery per process; ``None``: each sender's
    ``shutdown_timeout``.
    """
    if timeout is not None and timeout < 0:
        raise ValueError("timeout must be zero or more seconds")
    teardown()
    receiver = _Deliver(timeout)
    for signal in _SIGNALS:
        signal.connect(receiver, weak=False, dispatch_uid=_UID)


def teardown() -> None:
    """Disconnect what :func:`setup` connected."""
    for signal in _SIGNALS:
        signal.disconnect(dispatch_uid=_UID)
