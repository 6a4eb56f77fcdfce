"""Run an ASGI app under uvicorn in a background thread on 127.0.0.1 (for tests)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx
import pytest

try:
    from moesif_users_middleware.collector.server_thread import ServerThread
except ModuleNotFoundError as missing:  # no uvicorn (``nox -s core``): tests needing it skip
    _MISSING = missing.name

    class ServerThread:  # type: ignore[no-redef]
        """Stands in for the real one where uvicorn is missing: using it skips the test."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            pytest.skip(f"needs {_MISSING} (the [collector] extra)")


__all__ = ["APP_ID_HEADER", "CollectorHandle", "ServerThread"]


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
