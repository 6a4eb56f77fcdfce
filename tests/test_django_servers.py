"""The Django example app under real servers, delivering to the real collector.

gunicorn (``--preload``, 2 sync workers: the middleware is built in the master, then
forked) and Django's ASGI handler under uvicorn (no lifespan support in Django). Ten
users make requests over real HTTP, the server gets SIGTERM, and once its process has
exited all ten profiles must be in the collector: nothing is flushed by the test.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

pytest.importorskip("django")

from servers import CollectorHandle, stop_process_group

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "django_app"  # its manage.py
PROJECT = "moesif_users_middleware._demo.django_app"
USERS = 10
ROUNDS = 3

pytestmark = pytest.mark.slow


# The master queues an update before forking, so its sender (with a running thread and a
# pending buffer) exists when the workers are forked: each must start a fresh one.
GUNICORN_CONF = """
import os

from moesif_users_middleware.sender import get_sender

# No control socket in $HOME shared with other gunicorns (older versions ignore this).
control_socket_disable = True


def when_ready(server):
    get_sender(
        application_id=os.environ["MOESIF_APPLICATION_ID"],
        base_url=os.environ["MOESIF_BASE_URL"],
    ).queue_user({"user_id": "gunicorn-master", "metadata": {"role": "master"}})
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture
def example_env(tmp_path: Path, app_id: str, collector: CollectorHandle) -> dict[str, str]:
    """The example's environment: its own database, pointed at the collector."""
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        "DJANGO_SETTINGS_MODULE": f"{PROJECT}.settings",
        "DJANGO_DEBUG": "0",
        "EXAMPLE_DB_PATH": str(tmp_path / "example.sqlite3"),
        "MOESIF_APPLICATION_ID": app_id,
        "MOESIF_BASE_URL": collector.url,
    }


@pytest.fixture
def demo_users(example_env: dict[str, str]) -> list[dict[str, Any]]:
    """Migrate the example's database and create its demo users (with their tokens)."""
    manage = [sys.executable, "manage.py"]
    for command in (["migrate", "--verbosity", "0"], ["seed_demo", "--users", str(USERS)]):
        result = subprocess.run(
            manage + command,
            cwd=EXAMPLE,
            env=example_env,
            capture_output=True,
            text=True,
            timeout=90,
            check=False,
        )
        assert result.returncode == 0, result.stderr
    users: list[dict[str, Any]] = json.loads(result.stdout)
    assert len(users) == USERS
    return users


class Server:
    """A server process in its own process group; the group is killed at test end."""

    def __init__(self, argv: list[str], env: dict[str, str], log: Path, port: int) -> None:
        self.log = log
        self.url = f"http://127.0.0.1:{port}"
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                argv, cwd=EXAMPLE, env=env, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"server exited early:\n{self.log.read_text()}")
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        pytest.fail(f"server not ready in {timeout} s:\n{self.log.read_text()}")

    def terminate(self, timeout: float = 60.0) -> int:
        """SIGTERM, then wait for the process to exit; its exit code."""
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)

    def kill(self) -> None:
        """End whatever is left of the server's process group, workers included."""
        stop_process_group(self.process)


@pytest.fixture
def servers() -> Iterator[list[Server]]:
    started: list[Server] = []
    yield started
    for server in started:
        server.kill()


def drive(url: str, users: list[dict[str, Any]]) -> None:
    """Every user calls two endpoints, ROUNDS times, all users concurrently."""

    def one_user(user: dict[str, Any]) -> None:
        headers = {
            "Authorization": f"Bearer {user['token']}",
            "User-Agent": f"e2e-agent/{user['username']}",
        }
        with httpx.Client(base_url=url, headers=headers, timeout=30) as client:
            for _ in range(ROUNDS):
                me = client.get("/api/me", params={"utm_source": "e2e", "utm_campaign": "fork"})
                assert me.status_code == 200, me.text
                assert me.json()["id"] == user["id"]
                assert client.get("/api/company").status_code == 200

    with ThreadPoolExecutor(max_workers=len(users)) as pool:
        list(pool.map(one_user, users))


def assert_all_profiles_arrived(
    collector: CollectorHandle, app_id: str, users: list[dict[str, Any]]
) -> None:
    missing = []
    for user in users:
        profile = collector.get_user(app_id, str(user["id"]))
        if profile is None:
            missing.append(user["username"])
            continue
        assert profile["company_id"] == user["company"]
        assert profile["session_tokens"] == [user["token"]]
        assert profile["user_agent_string"] == f"e2e-agent/{user['username']}"
        assert profile["ip_address"] == "127.0.0.1"
        assert profile["campaign"]["utm_campaign"] == "fork"
        assert profile["metadata"]["email"] == f"{user['username']}@example.com"
        assert profile["metadata"]["plan"] in {"enterprise", "pro", "free"}
    assert missing == [], f"{len(missing)} of {len(users)} profiles never arrived"


def test_gunicorn_preload_two_workers_deliver_every_profile_after_sigterm(
    example_env: dict[str, str],
    demo_users: list[dict[str, Any]],
    servers: list[Server],
    collector: CollectorHandle,
    app_id: str,
    tmp_path: Path,
) -> None:
    port = free_port()
    access_log = tmp_path / "access.log"
    config = tmp_path / "gunicorn_conf.py"
    config.write_text(GUNICORN_CONF)
    argv = [
        sys.executable, "-m", "gunicorn", f"{PROJECT}.wsgi:application", "--config", str(config),
        "--preload", "--workers", "2", "--bind", f"127.0.0.1:{port}",
        "--graceful-timeout", "30", "--access-logfile", str(access_log),
        "--access-logformat", "%(p)s %(r)s %(s)s",
    ]  # fmt: skip
    server = Server(argv, example_env, tmp_path / "gunicorn.log", port)
    servers.append(server)
    server.wait_ready()

    drive(server.url, demo_users)
    assert server.terminate() == 0, server.log.read_text()

    assert_all_profiles_arrived(collector, app_id, demo_users)
    master = collector.get_user(app_id, "gunicorn-master")
    assert master is not None, "the master's own update was lost"
    assert master["metadata"]["role"] == "master"
    api_lines = [line for line in access_log.read_text().splitlines() if " /api/" in line]
    assert len(api_lines) == USERS * ROUNDS * 2
    workers = {line.split()[0] for line in api_lines}
    assert len(workers) == 2, f"one worker served everything: {workers}"  # both forks sent


# uvicorn re-raises SIGTERM after its shutdown and Django's ASGI handler has no lifespan:
# only the sender's SIGTERM flush (moesif_users_middleware._sigterm) can deliver here.
def test_django_asgi_handler_under_uvicorn_delivers_every_profile_after_sigterm(
    example_env: dict[str, str],
    demo_users: list[dict[str, Any]],
    servers: list[Server],
    collector: CollectorHandle,
    app_id: str,
    tmp_path: Path,
) -> None:
    port = free_port()
    argv = [
        sys.executable, "-m", "uvicorn", f"{PROJECT}.asgi:application",
        "--host", "127.0.0.1", "--port", str(port), "--no-access-log",
    ]  # fmt: skip
    server = Server(argv, example_env, tmp_path / "uvicorn.log", port)
    servers.append(server)
    server.wait_ready()

    drive(server.url, demo_users)
    time.sleep(0.5)  # the last responses' captures run just after their last byte went out
    # uvicorn re-raises SIGTERM once it has shut down: the process dies of the signal,
    # and atexit handlers do not run.
    assert server.terminate() in (0, -signal.SIGTERM), server.log.read_text()

    assert_all_profiles_arrived(collector, app_id, demo_users)
