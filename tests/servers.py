"""Run an ASGI app under uvicorn in a background thread on 127.0.0.1 (for tests)."""

from __future__ import annotations

import threading
import time
from types import TracebackType
from typing import Any
from urllib.parse import quote

import httpx
import uvicorn

__all__ = ["APP_ID_HEADER", "CollectorHandle", "ServerThread"]


class ServerThread:
    """``uvicorn.Server`` for ``app`` in a daemon thread; ``port=0`` picks a free port.

    Use ``start()``/``stop()`` or ``with ServerThread(app) as server: server.url``.
    """

    def __init__(self, app: Any, *, port: int = 0, **config: Any) -> None:
        options: dict[str, Any] = {
            "lifespan": "off",
            "log_level": "warning",
            "access_log": False,
            "timeout_graceful_shutdown": 5,
            **config,
        }
        self.app = app
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, **options))
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self.port = 0

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:54321`` (valid once started)."""
        if not self.port:
            raise RuntimeError("server not started")
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 10.0) -> ServerThread:
        """Start serving; returns once the socket accepts connections."""
        if self._thread is not None:
            raise RuntimeError("already started")
        self._thread = threading.Thread(target=self._run, name="uvicorn-test-server", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self._thread.is_alive():
                raise RuntimeError(f"server failed to start: {self._error!r}")
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError("server did not start in time")
            time.sleep(0.005)
        self.port = self.server.servers[0].sockets[0].getsockname()[1]
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Ask the server to exit and wait for its thread (idempotent)."""
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                self.server.force_exit = True
                self._thread.join(timeout)

    @property
    def running(self) -> bool:
        """Whether the server thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        try:
            self.server.run()
        except BaseException as exc:  # SystemExit on bind failure included
            self._error = exc

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


APP_ID_HEADER = "X-Moesif-Application-Id"


class CollectorHandle:
    """A running collector, read through its HTTP API."""

    def __init__(self, server: ServerThread) -> None:
        self.server = server
        self.url = server.url
        self.client = httpx.Client(base_url=self.url, timeout=10.0)

    def get_user(self, application_id: str, user_id: str) -> dict[str, Any] | None:
        """The stored profile, or ``None`` when the collector answers 404."""
        # Encode "." too, or the client would resolve "." and ".." path segments.
        path = "/v1/users/" + quote(user_id, safe="").replace(".", "%2E")
        response = self.client.get(path, headers={APP_ID_HEADER: application_id})
        if response.status_code == 404:
            return None
        response.raise_for_status()
        profile: dict[str, Any] = response.json()
        return profile

    def list_users(self, application_id: str) -> list[dict[str, Any]]:
        """Every profile stored for ``application_id``, ordered by user id."""
        profiles: list[dict[str, Any]] = []
        while True:
            response = self.client.get(
                "/v1/users",
                params={"limit": 1000, "offset": len(profiles)},
                headers={APP_ID_HEADER: application_id},
            )
            response.raise_for_status()
            page: list[dict[str, Any]] = response.json()
            profiles.extend(page)
            if len(page) < 1000:
                return profiles

    def stats(self, application_id: str) -> dict[str, int]:
        """``{"requests", "batches", "rejected", "records", "users"}`` for the id."""
        response = self.client.get("/v1/_stats", headers={APP_ID_HEADER: application_id})
        response.raise_for_status()
        stats: dict[str, int] = response.json()
        return stats

    def close(self) -> None:
        self.client.close()
