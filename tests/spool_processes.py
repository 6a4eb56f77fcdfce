"""Processes that spool records and die by SIGKILL (for the spool tests)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

__all__ = ["KILLED", "closed_port_url", "run_killed"]

ROOT = Path(__file__).resolve().parent.parent


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


# A process that queues, waits until its records are on disk, then dies by SIGKILL.
KILLED = """
import json, os, signal, sys, time
from moesif_users_middleware.sender import get_sender

app_id, url, spool, records = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
sender = get_sender(app_id, url, spool_dir=spool, flush_interval=1.0, timeout=1.0)
for record in records:  # users, and companies (records without a user_id)
    assert (sender.queue_user if "user_id" in record else sender.queue_company)(record)
deadline = time.monotonic() + 20
while not sender.pending == sender.stats()["spooled"] > 0:
    assert time.monotonic() < deadline, sender.stats()
    time.sleep(0.01)
os.kill(os.getpid(), signal.SIGKILL)
"""


def run_killed(
    app_id: str, spool: Path, users: list[dict[str, Any]], source: str = KILLED
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            textwrap.dedent(source),
            app_id,
            closed_port_url(),
            str(spool),
            json.dumps(users),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == -9, result.stderr
    return result
