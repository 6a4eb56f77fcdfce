"""End to end: the FastAPI example under a real uvicorn process, stopped with SIGTERM.

Ten users sign up and make requests over real HTTP; the server is stopped right after the
last request, and every profile must have reached the collector — through the lifespan
shutdown flush, or (with ``--lifespan off``) through the sender's exit hook.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

pytest.importorskip("fastapi")

from servers import CollectorHandle, stop_process_group

ROOT = Path(__file__).resolve().parents[1]
USERS = 10

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Uvicorn:
    """``python -m uvicorn examples.fastapi_app:app`` on a free loopback port.

    It runs in a session of its own, so that :meth:`kill` can end its workers too.
    """

    def __init__(self, app_id: str | None, base_url: str, *extra: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {
            **os.environ,
            "MOESIF_APPLICATION_ID": app_id or "",  # None: no application id at all
            "MOESIF_BASE_URL": base_url,
            "PYTHONPATH": str(ROOT),
        }
        if app_id is None:
            del env["MOESIF_APPLICATION_ID"]
        command = [
            sys.executable, "-m", "uvicorn", "examples.fastapi_app:app",
            "--host", "127.0.0.1", "--port", str(self.port), "--log-level", "warning",
            *extra,
        ]  # fmt: skip
        self.process = subprocess.Popen(
            command,
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"uvicorn exited early:\n{self.output()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=1.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"uvicorn did not start:\n{self.output()}")

    def terminate(self, timeout: float = 30.0) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def output(self) -> str:
        """Everything the server printed; ends the server (and its workers) first."""
        # Workers inherit the pipe: killing only the main process would leave it open.
        stop_process_group(self.process)
        out, _ = self.process.communicate(timeout=10)
        return out

    def kill(self) -> None:
        """End whatever is left of the server's process group, workers included."""
        stop_process_group(self.process)
        if self.process.stdout is not None:
            self.process.stdout.close()


def drive_ten_users(url: str) -> dict[str, str]:
    """Each user signs up, then reads and writes; returns user id -> token."""
    tokens: dict[str, str] = {}
    with httpx.Client(base_url=url, timeout=10.0) as client:
        for n in range(USERS):
            signup = client.post(
                "/signup",
                json={
                    "email": f"user{n}@co{n % 3}.example",
                    "password": "pw",
                    "name": f"User {n}",
                    "company_id": f"co{n % 3}",
                    "plan": "pro" if n % 2 else "free",
                },
            )
            assert signup.status_code == 201, signup.text
            tokens[signup.json()["user_id"]] = signup.json()["token"]
        for user_id, token in tokens.items():
            auth = {"authorization": f"Bearer {token}", "user-agent": f"e2e/{user_id}"}
            assert client.get("/me", headers=auth).status_code == 200
            created = client.post(
                f"/projects?utm_source=e2e&utm_campaign={user_id}",
                json={"name": f"p-{user_id}"},
                headers=auth,
            )
            assert created.status_code == 201
    return tokens


def assert_all_arrived(collector: CollectorHandle, app_id: str, tokens: dict[str, str]) -> None:
    profiles = {p["user_id"]: p for p in collector.list_users(app_id)}
    assert sorted(profiles) == sorted(tokens), f"missing: {sorted(set(tokens) - set(profiles))}"
    for user_id, token in tokens.items():
        profile = profiles[user_id]
        n = int(user_id.removeprefix("u-user"))
        assert profile["company_id"] == f"co{n % 3}"
        assert profile["session_tokens"] == [token]
        assert profile["ip_address"] == "127.0.0.1"
        assert profile["user_agent_string"] == f"e2e/{user_id}"
        assert profile["campaign"]["utm_campaign"] == user_id
        assert profile["metadata"]["email"] == f"user{n}@co{n % 3}.example"


# uvicorn >= 0.29 restores the default SIGTERM handler after its graceful shutdown and
# re-raises the signal, so the process dies by it and atexit handlers never run. With
# lifespan on, the middleware's shutdown flush delivers first; with it off, the sender's
# own SIGTERM flush does (moesif_users_middleware._sigterm).


@pytest.mark.parametrize(
    "extra",
    [
        pytest.param((), id="one-worker"),
        pytest.param(("--workers", "2"), id="two-workers"),
        pytest.param(("--lifespan", "off"), id="lifespan-off"),
    ],
)
def test_sigterm_delivers_every_profile(
    app_id: str, collector: CollectorHandle, extra: tuple[str, ...]
) -> None:
    server = Uvicorn(app_id, collector.url, *extra)
    try:
        server.wait_ready()
        tokens = drive_ten_users(server.url)
        # The middleware records a request just after its last byte went out, so the
        # client can see the response first: let the last captures finish, so that
        # everything was accepted before the stop (what the promise covers).
        time.sleep(0.5)
        # A graceful stop: uvicorn re-raises the SIGTERM it handled once it has shut down.
        assert server.terminate() in (0, -signal.SIGTERM), server.output()
        assert_all_arrived(collector, app_id, tokens)
    finally:
        server.kill()  # only cleanup: the checks above saw the server as it stopped


def test_no_application_id_serves_normally_with_one_warning(collector: CollectorHandle) -> None:
    """A missing id must not make every request answer 500 (Starlette builds lazily)."""
    server = Uvicorn(None, collector.url)
    try:
        server.wait_ready()
        with httpx.Client(base_url=server.url, timeout=10.0) as client:
            for n in range(3):
                signup = client.post(
                    "/signup",
                    json={
                        "email": f"noid{n}@co.example",
                        "password": "pw",
                        "name": "No Id",
                        "company_id": "co",
                        "plan": "free",
                    },
                )
                assert signup.status_code == 201, signup.text
                auth = {"authorization": f"Bearer {signup.json()['token']}"}
                assert client.get("/me", headers=auth).status_code == 200
        assert server.terminate() in (0, -signal.SIGTERM)
        output = server.output()
        warnings = [line for line in output.splitlines() if "MOESIF_APPLICATION_ID" in line]
        assert len(warnings) == 1, output  # once, at startup: not per request
        assert "user profiles are not recorded" in warnings[0]
        assert "Traceback" not in output
    finally:
        server.kill()
