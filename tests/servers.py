"""Run an ASGI app under uvicorn in a background thread on 127.0.0.1 (for tests), and
clean up server subprocesses (with their workers) however a test ends."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
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


__all__ = [
    "APP_ID_HEADER",
    "CollectorHandle",
    "ServerThread",
    "free_port",
    "stop_process_group",
    "wait_for_two_workers",
]


APP_ID_HEADER = "X-Moesif-Application-Id"


class CollectorHandle:
    """A running collector, read through its HTTP API."""

    def __init__(self, server: ServerThread) -> None:
        self.server = server
        self.url = server.url
        self.client = httpx.Client(base_url=self.url, timeout=10.0)

    def get_user(self, application_id: str, user_id: str) -> dict[str, Any] | None:
        """The stored profile, or ``None`` when the collector answers 404."""
        return self._get("users", application_id, user_id)

    def get_company(self, application_id: str, company_id: str) -> dict[str, Any] | None:
        """The stored company profile, or ``None`` when the collector answers 404."""
        return self._get("companies", application_id, company_id)

    def list_users(self, application_id: str) -> list[dict[str, Any]]:
        """Every profile stored for ``application_id``, ordered by user id."""
        return self._list("users", application_id)

    def list_companies(self, application_id: str) -> list[dict[str, Any]]:
        """Every company stored for ``application_id``, ordered by company id."""
        return self._list("companies", application_id)

    def stats(self, application_id: str, kind: str = "users") -> dict[str, int]:
        """``{"requests", "batches", "rejected", "records", kind}`` for the id."""
        response = self.client.get(
            "/v1/_stats", params={"kind": kind}, headers={APP_ID_HEADER: application_id}
        )
        response.raise_for_status()
        stats: dict[str, int] = response.json()
        return stats

    def _get(self, kind: str, application_id: str, record_id: str) -> dict[str, Any] | None:
        # Encode "." too, or the client would resolve "." and ".." path segments.
        path = f"/v1/{kind}/" + quote(record_id, safe="").replace(".", "%2E")
        response = self.client.get(path, headers={APP_ID_HEADER: application_id})
        if response.status_code == 404:
            return None
        response.raise_for_status()
        profile: dict[str, Any] = response.json()
        return profile

    def _list(self, kind: str, application_id: str) -> list[dict[str, Any]]:
        profiles: list[dict[str, Any]] = []
        while True:
            response = self.client.get(
                f"/v1/{kind}",
                params={"limit": 1000, "offset": len(profiles)},
                headers={APP_ID_HEADER: application_id},
            )
            response.raise_for_status()
            page: list[dict[str, Any]] = response.json()
            profiles.extend(page)
            if len(page) < 1000:
                return profiles

    def close(self) -> None:
        self.client.close()


def free_port() -> int:
    """A loopback port nothing listens on (now)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_two_workers(url: str, process: subprocess.Popen[str]) -> set[int]:
    """Until both workers of a server answering ``{"pid": ...}`` have answered (a worker
    still booting answers nothing); their pids."""
    pids: set[int] = set()
    deadline = time.monotonic() + 30
    while len(pids) < 2 and time.monotonic() < deadline:
        assert process.poll() is None, "the server exited early"
        try:
            with ThreadPoolExecutor(4) as pool:
                answers = list(pool.map(lambda _: httpx.get(url, timeout=2.0), range(8)))
            pids.update(answer.json()["pid"] for answer in answers)
        except httpx.TransportError:
            time.sleep(0.1)
    assert len(pids) == 2, f"did not see two workers: {pids}"
    return pids


def stop_process_group(process: subprocess.Popen[Any], grace: float = 10.0) -> None:
    """End everything left in the group of ``process`` (started with ``start_new_session``).

    SIGTERM to the whole group, up to ``grace`` seconds for it to empty, then SIGKILL;
    the leader is reaped. Worker children are in the group too, so none outlives the
    test, even when the leader is already gone. Safe in any state, and more than once.
    """
    group = process.pid  # start_new_session: the leader's pid is the group id
    if process.poll() is None and os.getpgid(group) != group:
        raise ValueError("the process was not started with start_new_session=True")
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(group, sig)
        except ProcessLookupError:  # nothing left in the group
            break
        deadline = time.monotonic() + grace
        while _group_alive(group) and time.monotonic() < deadline:
            process.poll()  # reap the leader as soon as it exits
            time.sleep(0.05)
        if not _group_alive(group):
            break
    process.wait(10)


def _group_alive(group: int) -> bool:
    """Whether a live (not zombie) process is left in process group ``group``.

    Zombies count as gone: orphans are not always reaped (a container's PID 1 may
    never call wait), and a zombie runs nothing.
    """
    proc = Path("/proc")
    if not proc.is_dir():  # no procfs: ask the kernel (zombies then count as alive)
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return False
        return True
    for stat in proc.glob("[0-9]*/stat"):
        try:
            # "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses.
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:  # the process exited meanwhile
            continue
        if len(fields) > 2 and fields[2] == str(group) and fields[0] != "Z":
            return True
    return False
