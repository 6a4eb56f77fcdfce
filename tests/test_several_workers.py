"""Several worker processes, one user: the newest request's values win at the collector.

gunicorn ``-w 2`` and uvicorn ``--workers 2`` serve rounds of requests for ten users;
each round carries new values (user agent, client IP, campaign), and the users' requests
land on both workers. Each worker's sender posts every second and at exit, so the two
workers' updates for a user reach the collector in either order; the collector keeps the
one with the newest ``modified_time``. Without that ordering, some profiles end with an
older round's values.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from servers import CollectorHandle, free_port, stop_process_group, wait_for_two_workers

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
USERS = [f"worker-user-{index}" for index in range(10)]
ROUNDS = 12


def serve(kind: str, app_id: str, collector: CollectorHandle) -> tuple[subprocess.Popen[str], str]:
    port = free_port()
    if kind == "gunicorn":
        pytest.importorskip("flask")
        pytest.importorskip("gunicorn")
        command = [
            sys.executable, "-m", "gunicorn", "--workers", "2", "--bind", f"127.0.0.1:{port}",
            "--graceful-timeout", "20", "ordering_apps:flask_app()",
        ]  # fmt: skip
    else:
        pytest.importorskip("starlette")
        command = [
            sys.executable, "-m", "uvicorn", "ordering_apps:starlette", "--workers", "2",
            "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
        ]  # fmt: skip
    env = {
        **os.environ,
        "MOESIF_APPLICATION_ID": app_id,
        "MOESIF_BASE_URL": collector.url,
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")]),
    }
    process = subprocess.Popen(
        command,
        cwd=ROOT / "tests",
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    return process, f"http://127.0.0.1:{port}"


def request(client: httpx.Client, user: str, round_: int) -> int:
    response = client.get(
        f"/?utm_source=round-{round_}",
        headers={
            "X-User": user,
            "User-Agent": f"agent/round-{round_}",
            "X-Forwarded-For": f"203.0.113.{round_ + 1}",
        },
    )
    assert response.status_code == 200, response.text
    pid: int = response.json()["pid"]
    return pid


@pytest.fixture(params=["gunicorn", "uvicorn"])
def server(
    request: pytest.FixtureRequest, app_id: str, collector: CollectorHandle
) -> Iterator[tuple[subprocess.Popen[str], str]]:
    process, url = serve(request.param, app_id, collector)
    try:
        wait_for_two_workers(url, process)
        yield process, url
    finally:
        stop_process_group(process)
        if process.stderr is not None:
            process.stderr.close()


def test_the_last_request_wins_across_worker_processes(
    server: tuple[subprocess.Popen[str], str], app_id: str, collector: CollectorHandle
) -> None:
    process, url = server
    served: dict[str, list[int]] = {user: [] for user in USERS}

    def one_user(user: str, round_: int) -> None:
        with httpx.Client(base_url=url, timeout=10) as client:  # a new connection each time
            served[user].append(request(client, user, round_))

    with ThreadPoolExecutor(len(USERS)) as pool:
        for round_ in range(ROUNDS):  # a round's requests run side by side, rounds in order
            list(pool.map(one_user, USERS, [round_] * len(USERS)))
            time.sleep(0.03)

    # The rounds really alternated workers for the same users.
    switching = [user for user, pids in served.items() if len(set(pids[-4:])) == 2]
    assert len(switching) >= 3, served

    process.terminate()  # a graceful stop: each worker delivers at exit
    assert process.wait(30) == 0
    last = ROUNDS - 1
    for user in USERS:
        profile = collector.get_user(app_id, user)
        assert profile is not None, user
        got = (
            profile.get("user_agent_string"),
            profile.get("ip_address"),
            profile.get("campaign", {}).get("utm_source"),
        )
        assert got == (f"agent/round-{last}", f"203.0.113.{last + 1}", f"round-{last}"), (
            user,
            served[user],
            profile,
        )
        assert profile["created_time"] <= profile["modified_time"]
