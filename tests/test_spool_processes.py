"""The spool under real servers and real signals: nothing accepted is lost to ``kill -9``.

gunicorn (2 workers, ``--preload``) and uvicorn (2 workers) serve rounds of requests
while the collector is down (its port closed); a worker is killed with SIGKILL midway,
then the master and every process left, also with SIGKILL. The server starts again on
the same ``spool_dir`` with the collector up: every user arrives with its last round's
values. Two processes racing to adopt one orphaned file deliver its records once. The
``moesif-users spool`` command lists a spool and delivers it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from servers import CollectorHandle, ServerThread, free_port, stop_process_group
from servers import wait_for_two_workers as two_workers
from spool_processes import KILLED, closed_port_url, run_killed

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not hasattr(os, "fork"), reason="needs POSIX processes and signals"),
]

ROOT = Path(__file__).resolve().parents[1]
USERS = [f"spool-user-{index}" for index in range(12)]
ROUNDS = 6
KILL_WORKER_AFTER = 2


def serve(kind: str, app_id: str, base_url: str, spool: Path) -> tuple[subprocess.Popen[str], str]:
    """The ordering apps (``flush_interval`` 1 s), with the spool from the environment."""
    port = free_port()
    if kind == "gunicorn":
        pytest.importorskip("flask")
        pytest.importorskip("gunicorn")
        command = [
            sys.executable, "-m", "gunicorn", "--workers", "2", "--preload", "--timeout", "4",
            "--bind", f"127.0.0.1:{port}", "ordering_apps:flask_app()",
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
        "MOESIF_BASE_URL": base_url,
        "MOESIF_USERS_SPOOL_DIR": str(spool),
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")]),
    }
    process = subprocess.Popen(
        command,
        cwd=ROOT / "tests",
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    return process, f"http://127.0.0.1:{port}"


def request(url: str, user: str, round_: int) -> int:
    """One request of ``user`` in ``round_`` (retried while a worker restarts); its pid."""
    deadline = time.monotonic() + 20
    while True:
        try:
            response = httpx.get(
                f"{url}/?utm_source=round-{round_}",
                headers={
                    "X-User": user,
                    "User-Agent": f"agent/round-{round_}",
                    "X-Forwarded-For": f"203.0.113.{round_ + 1}",
                },
                timeout=5,
            )
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
            continue
        assert response.status_code == 200, response.text
        pid: int = response.json()["pid"]
        return pid


def kill_group(process: subprocess.Popen[str]) -> None:
    """SIGKILL the master, then every process left in its group: no graceful exit anywhere."""
    os.kill(process.pid, signal.SIGKILL)
    process.wait(10)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    stop_process_group(process)  # waits until the group is empty


def wait_until(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


@pytest.fixture
def servers() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for process in started:
        stop_process_group(process)


@pytest.mark.parametrize("kind", ["gunicorn", "uvicorn"])
def test_kill_9_of_a_worker_and_of_the_master_loses_no_user(
    kind: str,
    app_id: str,
    tmp_path: Path,
    fresh_collector: Callable[..., ServerThread],
    servers: list[subprocess.Popen[str]],
) -> None:
    port = free_port()  # the collector's, closed until the restart
    base_url = f"http://127.0.0.1:{port}"
    spool = tmp_path / "spool"
    process, url = serve(kind, app_id, base_url, spool)
    servers.append(process)
    pids = two_workers(url, process)

    with ThreadPoolExecutor(len(USERS)) as pool:
        for round_ in range(ROUNDS):
            if round_ == KILL_WORKER_AFTER:
                os.kill(min(pids), signal.SIGKILL)  # a worker dies mid-traffic
            list(pool.map(lambda user, r=round_: request(url, user, r), USERS))
    time.sleep(1.5)  # flush_interval (1 s) and more since the last request
    kill_group(process)
    files = [name for name in os.listdir(spool) if name.endswith(".db")]
    assert len(files) >= 2, files  # at least the killed worker's and a later one's

    server = fresh_collector(tmp_path / "collector.db", port=port)
    collector = CollectorHandle(server)
    process, url = serve(kind, app_id, base_url, spool)
    servers.append(process)
    request(url, "after-restart", ROUNDS)  # the first request starts a worker's sender
    last = ROUNDS - 1
    expected = dict.fromkeys(
        USERS, (f"agent/round-{last}", f"203.0.113.{last + 1}", f"round-{last}")
    )

    def arrived() -> dict[str, Any]:
        profiles = {p["user_id"]: p for p in collector.list_users(app_id)}
        return {
            user: (
                profile.get("user_agent_string"),
                profile.get("ip_address"),
                profile.get("campaign", {}).get("utm_source"),
            )
            for user, profile in profiles.items()
            if user in expected
        }

    try:
        assert wait_until(lambda: arrived() == expected, 30), arrived()
    finally:
        collector.close()


# -- two processes, one orphan -------------------------------------------------------------

RACER = """
import json, sys, time
from moesif_users_middleware.sender import get_sender

app_id, url, spool, start_at = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
while time.time() < start_at:
    pass
sender = get_sender(app_id, url, spool_dir=spool, flush_interval=60.0)
delivered = sender.flush(timeout=20)
print(json.dumps({"delivered": delivered, "sent": sender.stats()["sent"]}))
"""


def test_two_processes_racing_for_one_orphan_deliver_it_once(
    collector: CollectorHandle, app_id: str, tmp_path: Path
) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    total = 0
    for race in range(3):
        spool = tmp_path / f"spool-{race}"
        run_killed(app_id, spool, [{"user_id": f"race-{race}-{i}"} for i in range(1500)])
        start_at = time.time() + 1.5  # both interpreters are up by then
        racers = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    textwrap.dedent(RACER),
                    app_id,
                    collector.url,
                    str(spool),
                    str(start_at),
                ],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(2)
        ]
        results = []
        for racer in racers:
            out, err = racer.communicate(timeout=60)
            assert racer.returncode == 0, err
            results.append(json.loads(out.strip().splitlines()[-1]))
        assert all(result["delivered"] for result in results)
        assert sorted(result["sent"] for result in results) == [0, 1500], results
        assert os.listdir(spool) == []
        total += 1500
    assert collector.stats(app_id)["records"] == total  # each record posted exactly once
    assert len(collector.list_users(app_id)) == total


# -- the command line ---------------------------------------------------------------------------


def moesif_users(*args: str, app_id: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("MOESIF_APPLICATION_ID", None)
    if app_id is not None:
        env["MOESIF_APPLICATION_ID"] = app_id
    return subprocess.run(
        [sys.executable, "-m", "moesif_users_middleware", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_spool_command_shows_a_spool_and_sends_it(
    collector: CollectorHandle, app_id: str, tmp_path: Path
) -> None:
    spool = tmp_path / "spool"
    run_killed(app_id, spool, [{"user_id": f"cli-{i}", "metadata": {"i": i}} for i in range(40)])
    run_killed(app_id + "-other", spool, [{"user_id": "someone-else"}])

    shown = moesif_users("spool", str(spool))
    assert shown.returncode == 0, shown.stderr
    assert "2 files, 41 records (users 41)" in shown.stdout
    assert shown.stdout.count(" gone ") == 2
    assert "oldest record: users " in shown.stdout
    assert len(os.listdir(spool)) == 2 * 4  # nothing changed (db, -wal, -shm, lock each)

    down = moesif_users("spool", str(spool), "--send", "--base-url", closed_port_url())
    assert down.returncode == 2  # no application id
    assert "application_id" in down.stderr

    stopped = moesif_users(
        "spool", str(spool), "--send", "--base-url", closed_port_url(), "--timeout", "1",
        app_id=app_id,
    )  # fmt: skip
    assert stopped.returncode == 3, stopped.stderr
    assert "40 records left in the spool" in stopped.stdout

    sent = moesif_users("spool", str(spool), "--send", "--base-url", collector.url, app_id=app_id)
    assert sent.returncode == 0, sent.stderr
    assert "sent 40 records" in sent.stdout
    assert "(1 file of other applications not shown)" in sent.stdout
    assert len(collector.list_users(app_id)) == 40
    remaining = moesif_users("spool", str(spool), "--application-id", app_id)
    assert "0 files, 0 records" in remaining.stdout


def test_the_spool_command_leaves_a_running_process_alone(
    collector: CollectorHandle, app_id: str, tmp_path: Path
) -> None:
    spool = tmp_path / "spool"
    holder = KILLED.replace(
        "os.kill(os.getpid(), signal.SIGKILL)", "print('ready', flush=True)\ntime.sleep(60)"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    users = json.dumps([{"user_id": "held"}])
    running = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(holder),
            app_id,
            closed_port_url(),
            str(spool),
            users,
        ],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert running.stdout is not None
        assert running.stdout.readline().strip() == "ready"
        shown = moesif_users("spool", str(spool))
        assert f"process {running.pid} running" in shown.stdout
        sent = moesif_users(
            "spool", str(spool), "--send", "--base-url", collector.url, app_id=app_id
        )
        assert sent.returncode == 0, sent.stderr
        assert "sent 0 records" in sent.stdout
        assert "1 file of running processes left to them" in sent.stdout
        assert collector.get_user(app_id, "held") is None
    finally:
        running.kill()
        running.wait(10)
