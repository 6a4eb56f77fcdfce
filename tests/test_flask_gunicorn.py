"""End to end: the Flask example under gunicorn (--preload, 2 workers), real HTTP, SIGTERM.

The flush interval is far longer than the test, so every profile that arrives was
delivered by an exit flush. The master queues one user before forking, so its sender
thread is running when the workers are forked: they must each get a working sender of
their own (fork safety), and the master delivers its own user when it exits.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

pytest.importorskip("flask")


if TYPE_CHECKING:  # gunicorn imports this module too: keep its imports light
    from flask import Flask
    from servers import CollectorHandle

ROOT = Path(__file__).resolve().parents[1]
APP_HEADER = "X-Moesif-Application-Id"
USERS = [f"user{index}" for index in range(10)]
LISTENING = re.compile(r"Listening at: http://127\.0\.0\.1:(\d+)")
MASTER_USER = "preloaded-in-master"
MASTER_COMPANY = "company-of-the-master"


def preloaded_app() -> Flask:
    """The example app (gunicorn's app factory), its sender started in the master."""
    from moesif_users_middleware._demo.flask_app import create_app

    app = create_app(flush_interval=600)
    state = app.extensions["moesif_users"]
    sender = state.capture.sender
    sender.queue_user({"user_id": MASTER_USER, "metadata": {"pid": os.getpid()}})
    sender.queue_company({"company_id": MASTER_COMPANY, "metadata": {"pid": os.getpid()}})
    return app


class Gunicorn:
    """A gunicorn master in a subprocess (a session of its own, shared with its workers);
    its log is collected by a thread."""

    def __init__(self, app_spec: str, env: dict[str, str]) -> None:
        self.log: list[str] = []
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "--preload",
                "--workers",
                "2",
                "--bind",
                "127.0.0.1:0",
                "--graceful-timeout",
                "20",
                app_spec,
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.log.append(line)

    def port(self, timeout: float = 30.0) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.log):
                match = LISTENING.search(line)
                if match:
                    return int(match.group(1))
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError("gunicorn did not start:\n" + "".join(self.log))

    def wait_for_workers(self, count: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if sum("Booting worker" in line for line in list(self.log)) >= count:
                return
            time.sleep(0.05)
        raise AssertionError("workers did not boot:\n" + "".join(self.log))

    def stop(self, timeout: float = 40.0) -> int:
        """Gunicorn's graceful stop: SIGTERM to the master; its exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout)
        self._reader.join(5)  # the whole log, for the test's messages
        return code

    def close(self) -> None:
        """End whatever is left of the master's process group, workers included (teardown)."""
        from servers import stop_process_group  # not at the top: gunicorn imports this module

        stop_process_group(self.process)
        self._reader.join(5)
        if not self._reader.is_alive() and self.process.stderr is not None:
            self.process.stderr.close()


@pytest.fixture
def gunicorn_env(app_id: str, collector: CollectorHandle) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        MOESIF_APPLICATION_ID=app_id,
        MOESIF_BASE_URL=collector.url,
        PYTHONPATH=os.pathsep.join(
            filter(None, [str(ROOT), str(ROOT / "tests"), env.get("PYTHONPATH")])
        ),
    )
    return env


@pytest.fixture
def server(gunicorn_env: dict[str, str]) -> Iterator[Gunicorn]:
    master = Gunicorn(f"{Path(__file__).stem}:preloaded_app()", gunicorn_env)
    yield master
    master.close()


@pytest.mark.slow
def test_ten_users_arrive_after_sigterm(
    app_id: str, collector: CollectorHandle, server: Gunicorn
) -> None:
    base = f"http://127.0.0.1:{server.port()}"
    server.wait_for_workers(2)
    tokens: dict[str, str] = {}
    with httpx.Client(base_url=base, timeout=10) as client:
        for user in USERS:
            signup = client.post(
                "/signup",
                json={
                    "email": f"{user}@co{user[-1]}.example",
                    "password": "pw",
                    "name": user.title(),
                    "company_id": f"co{user[-1]}",
                },
            )
            assert signup.status_code == 201, signup.text
            tokens[user] = signup.json()["token"]
        for round_ in range(3):
            for user in USERS:
                response = client.get(
                    f"/projects?utm_source=e2e&round={round_}",
                    headers={
                        "Authorization": f"Bearer {tokens[user]}",
                        "User-Agent": f"e2e-agent/{user}",
                    },
                )
                assert response.status_code == 200, response.text
        assert client.get("/health").status_code == 200

    assert server.stop() == 0, "".join(server.log)
    for user in USERS:
        profile = collector.get_user(app_id, f"u-{user}")
        assert profile is not None, f"u-{user} did not arrive; gunicorn log:\n" + "".join(
            server.log
        )
        assert profile["company_id"] == f"co{user[-1]}"
        assert profile["session_tokens"] == [tokens[user]]
        assert profile["user_agent_string"] == f"e2e-agent/{user}"
        assert profile["ip_address"] == "127.0.0.1"
        assert profile["campaign"]["utm_source"] == "e2e"
        assert profile["metadata"]["email"] == f"{user}@co{user[-1]}.example"
    assert collector.get_user(app_id, MASTER_USER) is not None  # the master's own exit flush
    assert len(collector.list_users(app_id)) == len(USERS) + 1
    companies = collector.client.get("/v1/companies", headers={APP_HEADER: app_id}).json()
    by_id = {company["company_id"]: company for company in companies}
    assert set(by_id) == {MASTER_COMPANY} | {f"co{user[-1]}" for user in USERS}
    for user in USERS:
        company = by_id[f"co{user[-1]}"]
        assert company["session_tokens"] == [tokens[user]]
        assert company["campaign"]["utm_source"] == "e2e"
        assert company["metadata"]["org_name"] == f"co{user[-1]}"
