"""The sender's SIGTERM flush: deliver first, then the server's own handling, unchanged."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from servers import CollectorHandle

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGTERM"), reason="needs SIGTERM")

SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    from moesif_users_middleware import get_sender

    previous = sys.argv[3]
    if previous == "python":
        def handler(signum, frame):
            print("previous handler called", flush=True)
            raise SystemExit(7)
        signal.signal(signal.SIGTERM, handler)
    elif previous == "ignore":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    sender = get_sender(application_id=sys.argv[1], base_url=sys.argv[2], flush_interval=600)
    for number in range(5):
        sender.queue_user({"user_id": f"user-{number}", "metadata": {"n": number}})
    sender.queue_company({"company_id": "company-0", "metadata": {"n": 0}})
    os.kill(os.getpid(), signal.SIGTERM)
    print("still running", flush=True)
    os._exit(3)  # skip atexit: only the SIGTERM flush may deliver
    """
)


def run(app_id: str, url: str, previous: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", SCRIPT, app_id, url, previous],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, **env},
    )


def delivered(collector: CollectorHandle, app_id: str) -> int:
    """Users delivered; the one company must have arrived with them."""
    users = len(collector.list_users(app_id))
    company = collector.client.get(
        "/v1/companies/company-0", headers={"X-Moesif-Application-Id": app_id}
    )
    return users if users == 0 or company.status_code == 200 else -1


def test_default_action_still_kills_after_delivering(
    collector: CollectorHandle, app_id: str
) -> None:
    result = run(app_id, collector.url, "default")
    assert result.returncode == -signal.SIGTERM, result.stderr
    assert "still running" not in result.stdout
    assert delivered(collector, app_id) == 5


def test_previous_python_handler_runs_after_delivering(
    collector: CollectorHandle, app_id: str
) -> None:
    result = run(app_id, collector.url, "python")
    assert result.returncode == 7, result.stderr
    assert "previous handler called" in result.stdout
    assert delivered(collector, app_id) == 5


def test_ignored_sigterm_stays_ignored(collector: CollectorHandle, app_id: str) -> None:
    result = run(app_id, collector.url, "ignore")
    assert result.returncode == 3, result.stderr
    assert "still running" in result.stdout
    assert delivered(collector, app_id) == 5


def test_opt_out_leaves_sigterm_alone(collector: CollectorHandle, app_id: str) -> None:
    result = run(app_id, collector.url, "default", MOESIF_USERS_SIGTERM_FLUSH="0")
    assert result.returncode == -signal.SIGTERM
    assert delivered(collector, app_id) == 0


def test_dead_api_bounds_the_delay(unused_url: str, app_id: str) -> None:
    started = time.monotonic()
    result = run(app_id, unused_url, "default")
    elapsed = time.monotonic() - started
    assert result.returncode == -signal.SIGTERM
    # shutdown_timeout is 3 s; the rest is interpreter start-up (generous on a busy machine).
    assert elapsed < 3 + 7, f"SIGTERM flush held the process {elapsed:.1f} s"


@pytest.fixture
def unused_url() -> str:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"
