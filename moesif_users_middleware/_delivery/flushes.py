"""Waiting for a flush: from a thread (blocking on the engine's condition) or from a
coroutine (polling, so the event loop is never blocked).

A flush first finishes the deferred captures, then takes a ticket from the worker
(:meth:`.worker.Worker.flush_begin`); the wait ends when the worker's verdict on that
ticket is known, or at ``end`` (a ``time.monotonic()`` moment; ``None``: the outcome of
one send attempt of everything pending, however long it takes).
"""

from __future__ import annotations

import asyncio
import time

from .engine import Engine
from .worker import Ticket

__all__ = ["flush_start", "flush_wait", "flush_wait_async"]

_monotonic = time.monotonic
_POLL_MAX = 0.05  # seconds between polls of a coroutine's wait, at most


def flush_start(engine: Engine) -> Ticket | None:
    """Finish deferred captures, then ask for a send; ``None``: nothing to wait for."""
    engine.drain()
    with engine.lock:
        return engine.worker.flush_begin()


def flush_wait(engine: Engine, ticket: Ticket | None, end: float | None) -> bool:
    """Block until the send asked for by :func:`flush_start` is decided, or until ``end``."""
    if ticket is None:
        return True
    worker = engine.worker
    with engine.lock:
        try:
            while True:
                verdict = worker.flush_verdict(ticket, until_done=end is None)
                if verdict is not None:
                    return verdict
                if end is None:
                    engine.cond.wait()
                    continue
                remaining = end - _monotonic()
                if remaining <= 0:
                    return False
                engine.cond.wait(remaining)
        finally:
            worker.flush_waiters -= 1


async def flush_wait_async(engine: Engine, ticket: Ticket | None, end: float | None) -> bool:
    """:func:`flush_wait` for coroutines: polls with a growing delay (1 ms to 50 ms)."""
    if ticket is None:
        return True
    worker = engine.worker
    delay = 0.001
    try:
        while True:
            with engine.lock:
                verdict = worker.flush_verdict(ticket, until_done=end is None)
            if verdict is not None:
                return verdict
            if end is not None and _monotonic() >= end:
                return False
            await asyncio.sleep(delay)
            delay = min(delay * 2, _POLL_MAX)
    finally:
        with engine.lock:
            worker.flush_waiters -= 1
