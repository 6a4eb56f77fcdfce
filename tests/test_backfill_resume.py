"""Interrupted backfills resume from their checkpoint without re-sending what was confirmed.

Real interruptions against the real collector: a killed process, Ctrl-C, a collector
outage past the retry budget, and one within it. API answers the collector cannot give
(401, 503 with Retry-After, a 400 refusing one user) come from an httpx mock transport.
"""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

pytest.importorskip("starlette")

from conftest import CollectorHandle

from moesif_users_middleware._delivery.retry import RetryPolicy
from moesif_users_middleware.backfill.batching import Pacer
from moesif_users_middleware.backfill.checkpoint import Checkpoint
from moesif_users_middleware.backfill.readers import open_reader
from moesif_users_middleware.backfill.rejects import RejectsFile
from moesif_users_middleware.backfill.runner import Backfill, BackfillOptions
from moesif_users_middleware.cli import main
from moesif_users_middleware.collector.store import partition_key
from moesif_users_middleware.transport import UsersClient

ROOT = Path(__file__).resolve().parent.parent
USERS = 4000
INVALID_EVERY = 400  # lines 400, 800, ... are invalid: 10 rejects


def make_input(path: Path, users: int = USERS) -> Path:
    with path.open("w", encoding="utf-8") as file:
        for line in range(1, users + 1):
            if line % INVALID_EVERY == 0:
                file.write(json.dumps({"user_id": line}) + "\n")  # not a string
            else:
                record = {"user_id": f"u{line:05d}", "metadata": {"line": line}}
                file.write(json.dumps(record) + "\n")
    return path


def valid_before(position: int) -> int:
    """Valid records among the first ``position`` lines."""
    return position - position // INVALID_EVERY


def read_checkpoint(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def wait_for_position(path: Path, at_least: int, timeout: float = 60.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            position = int(read_checkpoint(path)["position"])
        except (FileNotFoundError, ValueError, KeyError):
            position = 0
        if position >= at_least:
            return position
        time.sleep(0.02)
    raise AssertionError(f"checkpoint never reached {at_least}")


def start_send(*argv: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-m", "moesif_users_middleware", "send", "--progress", "none", *argv],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def assert_rejects_once(path: Path) -> None:
    lines = [json.loads(line)["line"] for line in path.read_text().splitlines()]
    assert lines == list(range(INVALID_EVERY, USERS + 1, INVALID_EVERY))


def resume(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    status = main(["send", "--progress", "none", *argv])
    return status, capsys.readouterr().out


def run_into_an_outage(
    capsys: pytest.CaptureFixture[str], collector: Any, checkpoint: Path, argv: tuple[str, ...]
) -> tuple[int, str]:
    """Run ``send`` while the collector stops once 1,000 records are checkpointed."""

    def outage() -> None:
        wait_for_position(checkpoint, 1000)
        collector.stop()

    stopper = threading.Thread(target=outage)
    stopper.start()
    status, out = resume(
        capsys, *argv, "--batch-size", "100", "--max-rate", "2000", "--retry-timeout", "1"
    )
    stopper.join()
    return status, out


@pytest.mark.parametrize("how", ["SIGKILL", "SIGINT"])
def test_an_interrupted_process_resumes_from_its_checkpoint(
    how: str,
    collector: CollectorHandle,
    app_id: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = make_input(tmp_path / "users.jsonl")
    checkpoint = tmp_path / "users.jsonl.checkpoint"
    argv = (str(path), "--application-id", app_id, "--base-url", collector.url)
    process = start_send(*argv, "--batch-size", "100", "--max-rate", "1500")
    try:
        wait_for_position(checkpoint, 1000)
        process.send_signal(getattr(signal, how))
        out, err = process.communicate(timeout=30)
    finally:
        process.kill()
        process.wait()
    position = read_checkpoint(checkpoint)["position"]
    delivered_first = collector.stats(app_id)["records"]
    if how == "SIGINT":
        assert process.returncode == 130, err
        assert "INTERRUPTED" in out
        # A graceful stop settles the batch in flight: the checkpoint is exact.
        assert delivered_first == valid_before(position)
    else:
        assert process.returncode == -signal.SIGKILL
        # At most the one batch in flight was delivered without being checkpointed.
        assert valid_before(position) <= delivered_first <= valid_before(position) + 100
    assert position < USERS

    status, out = resume(capsys, *argv)
    assert status == 1, out  # 10 invalid records
    assert f"resumed after record {position:,}" in out
    # The resumed run sent exactly what the checkpoint had not confirmed.
    resent = collector.stats(app_id)["records"] - delivered_first
    assert resent == (USERS - USERS // INVALID_EVERY) - valid_before(position)
    assert collector.stats(app_id)["users"] == USERS - USERS // INVALID_EVERY
    assert_rejects_once(tmp_path / "users.jsonl.rejects.jsonl")
    final = read_checkpoint(checkpoint)
    assert (final["position"], final["complete"], final["invalid"]) == (USERS, True, 10)


def test_an_outage_past_the_retry_budget_stops_and_resumes(
    fresh_collector: Callable[..., Any],
    app_id: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    db = tmp_path / "collector.db"
    first = fresh_collector(db)
    port = first.port
    path = make_input(tmp_path / "users.jsonl")
    checkpoint = tmp_path / "users.jsonl.checkpoint"
    argv = (str(path), "--application-id", app_id, "--base-url", first.url)
    status, out = run_into_an_outage(capsys, first, checkpoint, argv)
    assert status == 3, out
    assert "STOPPED: not delivered after" in out
    assert "Run the same command again" in out
    position = read_checkpoint(checkpoint)["position"]
    delivered_first = first.app.state.store.stats(partition_key(app_id))["records"]
    assert valid_before(position) <= delivered_first <= valid_before(position) + 100

    second = fresh_collector(db, port=port)
    status, out = resume(capsys, *argv)
    assert status == 1, out
    store = second.app.state.store
    # Nothing the first run confirmed was sent again.
    assert store.stats(partition_key(app_id))["records"] == (
        USERS - USERS // INVALID_EVERY - valid_before(position)
    )
    assert store.stats(partition_key(app_id))["users"] == USERS - USERS // INVALID_EVERY
    assert_rejects_once(tmp_path / "users.jsonl.rejects.jsonl")


def test_a_resumed_run_exits_1_when_an_earlier_run_rejected_records(
    fresh_collector: Callable[..., Any],
    app_id: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    db = tmp_path / "collector.db"
    first = fresh_collector(db)
    port = first.port
    path = tmp_path / "users.jsonl"
    with path.open("w", encoding="utf-8") as file:  # the only invalid record is line 2
        for line in range(1, 3001):
            file.write(json.dumps({"user_id": line if line == 2 else f"u{line}"}) + "\n")
    checkpoint = tmp_path / "users.jsonl.checkpoint"
    argv = (str(path), "--application-id", app_id, "--base-url", first.url)
    status, out = run_into_an_outage(capsys, first, checkpoint, argv)
    assert status == 3, out
    assert "invalid: 1 " in out
    assert read_checkpoint(checkpoint)["invalid"] == 1

    fresh_collector(db, port=port)
    status, out = resume(capsys, *argv)
    assert "invalid: 0" in out  # this run rejected nothing...
    assert status == 1, out  # ...but the run it resumed did
    assert "all runs: 2,999 sent, 1 invalid, 0 failed" in out
    rejects = (tmp_path / "users.jsonl.rejects.jsonl").read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["line"] for line in rejects] == [2]


def test_an_outage_within_the_retry_budget_is_retried(
    fresh_collector: Callable[..., Any],
    app_id: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    db = tmp_path / "collector.db"
    first = fresh_collector(db)
    port, url = first.port, first.url
    first.stop()  # down when the run starts
    path = make_input(tmp_path / "users.jsonl", users=300)

    restarted: list[Any] = []

    def come_back() -> None:
        time.sleep(1.0)
        restarted.append(fresh_collector(db, port=port))

    thread = threading.Thread(target=come_back)
    thread.start()
    status, out = resume(
        capsys, str(path), "--application-id", app_id, "--base-url", url, "--retry-timeout", "30"
    )
    thread.join()
    assert status == 0, out
    assert "retries:" in out
    assert "failed:  0" in out
    assert restarted[0].app.state.store.stats(partition_key(app_id))["users"] == 300


# -- answers the collector cannot give: an httpx mock transport ------------------------------


def run_against(
    handler: Callable[[httpx.Request], httpx.Response],
    tmp_path: Path,
    records: list[Any],
    **options: Any,
) -> tuple[Any, Checkpoint, list[dict[str, Any]]]:
    path = tmp_path / "users.jsonl"
    path.write_text("".join(json.dumps(record) + "\n" for record in records), encoding="utf-8")
    client = UsersClient("app", "http://api.test", transport=httpx.MockTransport(handler))
    state = Checkpoint(str(path))
    rejects_path = tmp_path / "rejects.jsonl"
    retry = RetryPolicy(backoff_base=0.01, backoff_cap=0.02)
    with open_reader(str(path)) as reader:
        backfill = Backfill(
            reader,
            client=client,
            rejects=RejectsFile(rejects_path),
            state=state,
            checkpoint_path=tmp_path / "checkpoint",
            options=BackfillOptions(retry=retry, **options),
        )
        summary = backfill.run()
    client.close()
    rejects = (
        [json.loads(line) for line in rejects_path.read_text().splitlines()]
        if rejects_path.exists()
        else []
    )
    return summary, state, rejects


def users_in(request: httpx.Request) -> list[dict[str, Any]]:
    body = request.content
    if request.headers.get("content-encoding") == "gzip":
        body = gzip.decompress(body)
    users: list[dict[str, Any]] = json.loads(body)
    return users


def test_401_stops_the_run_at_once(tmp_path: Path) -> None:
    calls: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(len(users_in(request)))
        return httpx.Response(401, json={"error": "unauthorized"})

    summary, state, _ = run_against(
        handler, tmp_path, [{"user_id": f"u{i}"} for i in range(25)], batch_size=10
    )
    assert calls == [10]  # not retried, nothing after it sent
    assert summary.exit_status == 3
    assert "401" in (summary.stopped or "")
    assert (state.position, summary.sent, summary.failed) == (0, 0, 10)


def test_503_with_retry_after_is_retried_then_delivered(tmp_path: Path) -> None:
    answers = [503, 429, 201, 201]
    seen: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(len(users_in(request)))
        status = answers.pop(0)
        headers = {"Retry-After": "0"} if status != 201 else {}
        return httpx.Response(status, headers=headers, json={})

    summary, state, _ = run_against(
        handler, tmp_path, [{"user_id": f"u{i}"} for i in range(15)], batch_size=10
    )
    assert seen == [10, 10, 10, 5]
    assert (summary.exit_status, summary.sent, summary.retries) == (0, 15, 2)
    assert (state.position, state.complete) == (15, True)


def test_400_naming_a_user_rejects_it_and_sends_the_rest(tmp_path: Path) -> None:
    delivered: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        users = users_in(request)
        for index, user in enumerate(users):
            if user["user_id"].startswith("bad"):
                body = {"error": "invalid user", "field": "user_id", "index": index}
                return httpx.Response(400, json=body)
        delivered.extend(user["user_id"] for user in users)
        return httpx.Response(201, json={})

    records = [{"user_id": f"u{i}"} for i in range(6)]
    records[2] = {"user_id": "bad-2"}
    records[4] = {"user_id": "bad-4"}
    summary, state, rejects = run_against(handler, tmp_path, records)
    assert delivered == ["u0", "u1", "u3", "u5"]
    assert [(entry["line"], entry["field"]) for entry in rejects] == [
        (3, "user_id"),
        (5, "user_id"),
    ]
    assert rejects[0]["record"] == {"user_id": "bad-2"}
    assert (summary.exit_status, summary.sent, summary.failed, state.position) == (1, 4, 2, 6)


def test_400_without_an_index_is_bisected_to_the_refused_user(tmp_path: Path) -> None:
    delivered: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        users = users_in(request)
        if any(user["user_id"] == "u13" for user in users):
            return httpx.Response(400, text="Bad Request")
        delivered.extend(user["user_id"] for user in users)
        return httpx.Response(200)

    records = [{"user_id": f"u{i}"} for i in range(20)]
    summary, _, rejects = run_against(handler, tmp_path, records, batch_size=20)
    assert sorted(delivered) == sorted(f"u{i}" for i in range(20) if i != 13)
    assert [entry["line"] for entry in rejects] == [14]
    assert summary.failed == 1


def test_max_rate_holds_batches_back() -> None:
    pacer = Pacer(rate=200.0)
    stop = threading.Event()
    started = time.monotonic()
    for _ in range(5):
        pacer.wait(20, stop)  # 100 records at 200/s: the last batch is due after 0.4 s
    assert time.monotonic() - started >= 0.39
