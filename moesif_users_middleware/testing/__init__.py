"""Record what the senders would send, in memory, for your tests: no network, no waiting.

With pytest the ``moesif_users`` fixture does it for one test (the plugin is registered
when the package is installed, and does nothing unless a test asks for the fixture)::

    def test_profile(client, moesif_users):
        client.get("/me")
        assert moesif_users.users["42"]["company_id"] == "acme"

Anywhere else (``unittest``, Django's ``TestCase``), :func:`recording` does the same::

    with recording() as moesif_users:
        self.client.get("/me")
        assert moesif_users.users["42"]["company_id"] == "acme"

While recording, every sender of the process (those that exist and those created
meanwhile, whatever their base URL) posts to an in-memory API instead of the network.
Senders start empty when recording starts and again when it ends, so what one test
queued never shows in another. Reading :attr:`Recorder.users`, ``.companies`` or
``.batches`` first finishes every pending capture and flushes every sender
(synchronously: the answer never depends on the sender's timing). Profiles are merged
the way the API merges updates; ``enabled=False`` still turns an adapter's capture off.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from .._lifecycle import flush_all, route_every_sender
from .recorder import RecordedBatch, RecordingTransport, merge_record

__all__ = [
    "DEFAULT_APPLICATION_ID",
    "RecordedBatch",
    "Recorder",
    "merge_record",
    "recording",
]

DEFAULT_APPLICATION_ID = "moesif-users-test-application"
"""Set as ``MOESIF_APPLICATION_ID`` while recording when the environment has none."""
_FLUSH_TIMEOUT = 10.0


class Recorder:
    """What the senders sent while recording: merged profiles by kind, and the raw requests."""

    def __init__(self, flush_timeout: float = _FLUSH_TIMEOUT) -> None:
        self.transport = RecordingTransport()
        self.flush_timeout = flush_timeout

    @property
    def users(self) -> dict[str, dict[str, Any]]:
        """User profiles by ``user_id``, merged as the API merges them (flushes first)."""
        return self.profiles("users")

    @property
    def companies(self) -> dict[str, dict[str, Any]]:
        """Company profiles by ``company_id``, merged as the API merges them (flushes first)."""
        return self.profiles("companies")

    @property
    def batches(self) -> list[RecordedBatch]:
        """Every request the senders made, oldest first (flushes first)."""
        self.flush()
        return self.transport.batches()

    def profiles(self, kind: str) -> dict[str, dict[str, Any]]:
        """The merged profiles of ``kind`` (``"users"``, ``"companies"``) by id (flushes first)."""
        self.flush()
        return self.transport.profiles(kind)

    def flush(self) -> None:
        """Finish every pending capture and deliver it to the recorder now.

        Raises ``AssertionError`` when a sender could not deliver everything within
        ``flush_timeout`` seconds (a record the recorder refused, or a hung sender).
        """
        if not flush_all(self.flush_timeout):
            raise AssertionError(
                f"the Moesif senders did not deliver everything within {self.flush_timeout} s"
            )

    def clear(self) -> None:
        """Deliver what is pending, then forget everything recorded so far."""
        self.flush()
        self.transport.clear()

    def __repr__(self) -> str:
        return f"<Recorder of Moesif API requests: {len(self.transport.batches())} recorded>"


@contextmanager
def recording(*, flush_timeout: float = _FLUSH_TIMEOUT) -> Iterator[Recorder]:
    """Route every sender to a new :class:`Recorder` until the block ends.

    When neither the adapters' options nor the environment name an application id,
    capture would be off; so ``MOESIF_APPLICATION_ID`` is set to
    :data:`DEFAULT_APPLICATION_ID` for the block when the environment has none.
    At the end, what is still pending is delivered to the recorder, then every sender
    starts empty and sends through its own route again.
    """
    recorder = Recorder(flush_timeout)
    set_id = not os.environ.get("MOESIF_APPLICATION_ID")
    if set_id:
        os.environ["MOESIF_APPLICATION_ID"] = DEFAULT_APPLICATION_ID
    route_every_sender(recorder.transport)
    try:
        yield recorder
    finally:
        try:
            flush_all(flush_timeout)
        finally:
            route_every_sender(None)
            if set_id:
                os.environ.pop("MOESIF_APPLICATION_ID", None)
