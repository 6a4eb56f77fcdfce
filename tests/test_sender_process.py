"""Process-level behaviour in real subprocesses: fork, exit flush, exit with a dead API."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from faults import Blackhole, FaultServer
from servers import CollectorHandle

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")


def run_script(source: str, *args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("MOESIF_APPLICATION_ID", None)
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(source), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture
def blackhole() -> Iterator[FaultServer]:
    with FaultServer(mode=Blackhole()) as server:
        yield server


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


FORK_SCRIPT = """
import os, sys
from moesif_users_middleware.sender import get_sender

app_id, url = sys.argv[1], sys.argv[2]
sender = get_sender(app_id, url, flush_interval=60.0, timeout=5.0)
sender.queue_user({"user_id": "parent-user", "metadata": {"who": "parent"}})
pid = os.fork()
if pid == 0:
    child = get_sender(app_id, url)
    assert child is sender
    pending_in_child = child.pending
    child.queue_user({"user_id": "child-user", "metadata": {"who": "child"}})
    ok = child.flush(timeout=10)
    stats = child.stats()
    os._exit(0 if ok and pending_in_child == 0 and stats["sent"] == 1 else 3)
_, status = os.waitpid(pid, 0)
assert os.waitstatus_to_exitcode(status) == 0, status
assert sender.flush(timeout=10)
print(sender.stats()["sent"])
"""


def test_fork_child_delivers_its_own_updates_exactly_once(
    collector: CollectorHandle, app_id: str
) -> None:
    result = run_script(FORK_SCRIPT, app_id, collector.url)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "1"  # the parent sent only its own update
    profiles = {p["user_id"]: p["metadata"] for p in collector.list_users(app_id)}
    assert profiles == {"parent-user": {"who": "parent"}, "child-user": {"who": "child"}}
    assert collector.stats(app_id)["records"] == 2


FORK_CAPTURE_SCRIPT = """
import os, sys
from moesif_users_middleware._capture.pipeline import Capture
from moesif_users_middleware._capture.config import build_config
from moesif_users_middleware._capture.request_view import EnvironView

app_id, url = sys.argv[1], sys.argv[2]
config, _ = build_config({"application_id": app_id, "base_url": url, "flush_interval": 60.0})
capture = Capture(config)

def request(user):
    environ = {"REMOTE_ADDR": "203.0.113.7", "HTTP_USER_AGENT": user + "-agent"}
    return EnvironView(environ, None, None, auth_user=lambda: user)

assert capture.capture(request("parent-user"))  # deferred: still in the parent's inbox
pid = os.fork()
if pid == 0:
    inherited = capture.sender.pending
    assert capture.capture(request("child-user"))
    ok = capture.sender.flush(timeout=10)
    os._exit(0 if ok and inherited == 0 and capture.sender.stats()["sent"] == 1 else 3)
_, status = os.waitpid(pid, 0)
assert os.waitstatus_to_exitcode(status) == 0, status
assert capture.sender.flush(timeout=10)
print(capture.sender.stats()["sent"])
"""


def test_a_forked_child_finishes_only_its_own_deferred_captures(
    collector: CollectorHandle, app_id: str
) -> None:
    result = run_script(FORK_CAPTURE_SCRIPT, app_id, collector.url)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "1"
    agents = {p["user_id"]: p["user_agent_string"] for p in collector.list_users(app_id)}
    assert agents == {"parent-user": "parent-user-agent", "child-user": "child-user-agent"}
    assert collector.stats(app_id)["records"] == 2


EXIT_FLUSH_SCRIPT = """
import sys
from moesif_users_middleware.sender import get_sender

sender = get_sender(sys.argv[1], sys.argv[2], flush_interval=3600.0, shutdown_timeout=10.0)
for i in range(200):
    sender.queue_user({"user_id": f"exit-{i}", "metadata": {"i": i}})
print(sender.stats()["sent"])
"""


def test_exit_flush_delivers_everything_without_a_flush_call(
    collector: CollectorHandle, app_id: str
) -> None:
    result = run_script(EXIT_FLUSH_SCRIPT, app_id, collector.url)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "0"  # nothing was sent before exit
    assert len(collector.list_users(app_id)) == 200
    assert collector.stats(app_id)["records"] == 200


DEAD_API_SCRIPT = """
import json, sys, time
from moesif_users_middleware.sender import get_sender

sender = get_sender(
    "some-app", sys.argv[1], flush_interval=0.05, timeout=30.0, shutdown_timeout=1.0
)
for i in range(50):
    sender.queue_user({"user_id": f"u{i}"})
time.sleep(0.3)  # the worker is now inside a request or a retry wait
print(json.dumps({"exit_started": time.monotonic()}), flush=True)
"""


@pytest.mark.parametrize("api", ["blackhole", "refused"])
def test_exit_with_a_dead_api_is_bounded_by_shutdown_timeout(
    api: str, blackhole: FaultServer
) -> None:
    url = blackhole.url if api == "blackhole" else closed_port_url()
    result = run_script(DEAD_API_SCRIPT, url)
    ended = time.monotonic()
    assert result.returncode == 0, result.stderr
    started = json.loads(result.stdout.strip().splitlines()[-1])["exit_started"]
    assert ended - started <= 1.0 + 1.0
    assert "not delivered" in result.stderr
    if api == "blackhole":
        assert blackhole.received  # it really was stuck waiting for an answer


def test_importing_registers_no_process_hooks_and_the_first_sender_does() -> None:
    """Nothing happens at import; creating a sender registers the exit and fork hooks,
    before any fork a preloading server makes (its workers then reset every sender)."""
    script = textwrap.dedent(
        """
        import atexit, json, logging  # logging registers its own exit handler
        import httpx
        before = atexit._ncallbacks()
        import moesif_users_middleware
        from moesif_users_middleware import _lifecycle
        from moesif_users_middleware.sender import get_sender
        imported = (atexit._ncallbacks(), _lifecycle._hooks_registered)
        get_sender("hooks-app", "http://127.0.0.1:9")
        created = (atexit._ncallbacks(), _lifecycle._hooks_registered)
        print(json.dumps([before, imported, created]))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    before, (after_import, imported), (after_sender, created) = json.loads(out)
    assert (after_import, imported) == (before, False)
    assert (after_sender, created) == (before + 1, True)
