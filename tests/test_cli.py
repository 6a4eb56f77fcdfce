"""The ``moesif-users`` command: the demo end to end and the collector subcommand."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from importlib.util import find_spec
from pathlib import Path

import httpx
import pytest

from moesif_users_middleware.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]


def missing(*packages: str) -> pytest.MarkDecorator:
    """Skip where a package is not installed (``nox -s core`` installs no framework)."""
    absent = [name for name in packages if find_spec(name) is None]
    return pytest.mark.skipif(bool(absent), reason=f"needs {', '.join(absent)}")


def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("MOESIF_APPLICATION_ID", None)
    env.pop("MOESIF_BASE_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "moesif_users_middleware", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=ROOT,
    )


@pytest.mark.slow
@missing("django", "flask", "starlette", "fastapi", "uvicorn")
def test_demo_delivers_every_simulated_user() -> None:
    result = run_cli("demo", "--users", "8")
    assert result.returncode == 0, result.stdout + result.stderr
    match = re.search(r"sender flushed: True; (\d+) profiles stored", result.stdout)
    assert match, result.stdout
    # 2 Flask + 2 FastAPI + 2 Django users, and the Starlette example's 2 fixed accounts.
    assert int(match.group(1)) == 8
    assert "moesif-users demo --serve" in result.stdout  # how to keep the page open
    assert "Profiles page:" not in result.stdout  # no address of a stopped collector
    for column in ("user_id", "company", "ip_address", "campaign"):
        assert column in result.stdout
    assert "203.0.113." in result.stdout  # client IPs from behind the trusted proxy
    assert "newsletter/email" in result.stdout  # a campaign from a UTM link


@pytest.mark.slow
@missing("django", "flask", "starlette", "fastapi", "uvicorn")
def test_demo_serve_keeps_the_page_open_until_ctrl_c() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("MOESIF_APPLICATION_ID", None)
    env.pop("MOESIF_BASE_URL", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "moesif_users_middleware", "demo", "--serve", "--users", "4"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
    )
    lines: list[str] = []
    try:
        assert process.stdout is not None
        for line in process.stdout:  # ends at the page line: the demo then waits
            lines.append(line)
            if "Profiles page:" in line:
                break
        match = re.search(r"Profiles page: (http://127\.0\.0\.1:\d+/)  \(serving until Ctrl-C\)",
                          "".join(lines))  # fmt: skip
        assert match, "".join(lines)
        time.sleep(0.5)
        assert process.poll() is None  # still serving after the demo
        listing = httpx.get(match.group(1), timeout=10)
        assert listing.status_code == 200
        assert "4 profiles" in listing.text
        user = re.search(r'<a href="(/users/[^"]+)">', listing.text)
        assert user, listing.text
        assert (
            httpx.get(match.group(1) + user.group(1)[1:].replace("&amp;", "&")).status_code == 200
        )
    finally:
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert "Collector stopped." in out


def test_help_lists_the_subcommands() -> None:
    result = run_cli("--help")
    assert result.returncode == 0
    for command in ("collector", "demo", "send"):
        assert command in result.stdout


def test_parser_defaults_bind_loopback() -> None:
    args = build_parser().parse_args(["collector"])
    assert (args.host, args.port) == ("127.0.0.1", 8787)


@missing("starlette", "uvicorn")
def test_collector_subcommand_serves_the_users_api(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    db = tmp_path / "users.db"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "moesif_users_middleware",
            "collector",
            "--port",
            str(port),
            "--db",
            str(db),
            "--log-level",
            "warning",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        headers = {"X-Moesif-Application-Id": "cli-test"}
        deadline = time.monotonic() + 20
        while True:
            try:
                reply = httpx.post(f"{url}/v1/users", json={"user_id": "u1"}, headers=headers)
                break
            except httpx.ConnectError:
                assert process.poll() is None, process.communicate()
                assert time.monotonic() < deadline, "collector did not start"
                time.sleep(0.1)
        assert reply.status_code == 201
        assert httpx.get(f"{url}/v1/users/u1", headers=headers).json()["user_id"] == "u1"
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=20)
    assert db.exists()
