"""Shared fixtures: the local collector over real loopback HTTP, fresh application ids."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from servers import CollectorHandle, ServerThread


def create_app(*args: Any, **kwargs: Any) -> Any:
    """The collector's ``create_app``; skips the test where starlette/uvicorn are missing.

    Imported on first use, so the tests that need no collector still run in an
    environment without any web framework (``nox -s core``).
    """
    pytest.importorskip("starlette", reason="the collector needs the [collector] extra")
    pytest.importorskip("uvicorn", reason="the collector needs the [collector] extra")
    from moesif_users_middleware.collector import create_app as create

    return create(*args, **kwargs)


@pytest.fixture(scope="session")
def collector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CollectorHandle]:
    """One collector for the whole session; isolate tests with the ``app_id`` fixture."""
    app = create_app(tmp_path_factory.mktemp("collector") / "users.db")
    server = ServerThread(app).start()
    handle = CollectorHandle(server)
    yield handle
    handle.close()
    server.stop()
    app.state.store.close()


@pytest.fixture
def app_id() -> str:
    """A fresh application id: its own partition in the shared collector."""
    return "test-app-" + uuid.uuid4().hex


@pytest.fixture
def fresh_collector(tmp_path: Path) -> Iterator[Callable[..., ServerThread]]:
    """``start_collector(db_path=None, port=0, *, max_body_bytes=None) -> ServerThread``.

    Starts a private collector (stopped at test end); reuse ``db_path`` and ``port`` to
    restart one after an outage. ``server.app.state.store`` is its store.
    """
    started: list[ServerThread] = []

    def start_collector(
        db_path: str | Path | None = None, port: int = 0, *, max_body_bytes: int | None = None
    ) -> ServerThread:
        path = db_path if db_path is not None else tmp_path / f"collector-{len(started)}.db"
        options = {} if max_body_bytes is None else {"max_body_bytes": max_body_bytes}
        server = ServerThread(create_app(path, **options), port=port)
        started.append(server)
        return server.start()

    yield start_collector
    for server in started:
        server.stop()
        server.app.state.store.close()


@pytest.fixture
def make(collector: CollectorHandle, app_id: str) -> Iterator[Callable[..., Any]]:
    """``make(**options) -> Capture`` sending to the shared collector under ``app_id``.

    Every sender is shut down and forgotten at test end.
    """
    from moesif_users_middleware._capture.config import build_config
    from moesif_users_middleware._capture.pipeline import Capture
    from moesif_users_middleware.sender import _reset_senders_for_tests

    def make_capture(**options: Any) -> Capture:
        config, _ = build_config({"application_id": app_id, "base_url": collector.url, **options})
        return Capture(config)

    yield make_capture
    _reset_senders_for_tests()


@pytest.fixture(scope="session")
def moesif_sink(collector: CollectorHandle) -> Iterator[Any]:
    """A loopback stand-in for Moesif's API for their middlewares (see ``moesif_peers``):
    it keeps their events and passes user and company requests on to the collector."""
    from moesif_peers import EventSink, stop_background_jobs

    sink = EventSink(collector.url)
    yield sink
    stop_background_jobs()
    sink.stop()
