"""Concurrency: many writers updating the same users at once, through senders and directly.

Every writer owns some metadata keys and session tokens and shares others whose final
value does not depend on order. After everything settled, each stored profile must be
the recursive merge of everything sent: every key, every token exactly once (in each
writer's order), nothing lost, nothing applied twice.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from faults import Accept, Cycle, FaultServer, Reply, Reset
from servers import APP_ID_HEADER, CollectorHandle

from moesif_users_middleware._delivery.retry import RetryPolicy
from moesif_users_middleware.sender import _reset_senders_for_tests, get_sender

ROOT = Path(__file__).resolve().parent.parent
USERS = 50
ROUNDS = 3
PROCESSES = 3
THREADS = 4
DIRECT_WRITERS = 3


@pytest.fixture(autouse=True)
def _no_leftover_senders() -> Iterator[None]:
    yield
    _reset_senders_for_tests()


def writer_update(writer: str, user: int, round_: int) -> dict[str, Any]:
    """What writer ``writer`` sends for ``user`` in round ``round_`` (also in the script)."""
    return {
        "user_id": f"hot-{user}",
        "company_id": "acme",
        "session_token": f"{writer}-u{user}-r{round_}",
        "metadata": {
            "shared": {"plan": "pro", "tags": ["a", "b"]},
            writer: {"last": round_, f"r{round_}": True},
            "writers": {writer: round_},
        },
    }


def expected_profile(writers: list[str], user: int) -> dict[str, Any]:
    metadata: dict[str, Any] = {"shared": {"plan": "pro", "tags": ["a", "b"]}, "writers": {}}
    for writer in writers:
        metadata[writer] = {"last": ROUNDS - 1, **{f"r{r}": True for r in range(ROUNDS)}}
        metadata["writers"][writer] = ROUNDS - 1
    return {"user_id": f"hot-{user}", "company_id": "acme", "metadata": metadata}


def assert_merged(collector: CollectorHandle, app_id: str, writers: list[str]) -> None:
    profiles = {p["user_id"]: p for p in collector.list_users(app_id)}
    assert len(profiles) == USERS
    for user in range(USERS):
        profile = profiles[f"hot-{user}"]
        tokens = profile["session_tokens"]
        assert len(tokens) == len(set(tokens)), "a session token was stored twice"
        assert sorted(tokens) == sorted(
            f"{w}-u{user}-r{r}" for w in writers for r in range(ROUNDS)
        ), "a session token was lost"
        for writer in writers:  # each writer's tokens arrive in the order it sent them
            mine = [t for t in tokens if t.startswith(f"{writer}-u{user}-")]
            assert mine == [f"{writer}-u{user}-r{r}" for r in range(ROUNDS)]
        want = expected_profile(writers, user)
        assert profile["company_id"] == want["company_id"]
        assert profile["metadata"] == want["metadata"]


SCRIPT = """
import json, sys, threading, time
from moesif_users_middleware.sender import get_sender

app_id, url, process, users, rounds, threads = sys.argv[1:7]
users, rounds, threads = int(users), int(rounds), int(threads)
sender = get_sender(app_id, url, flush_interval=0.02, batch_size=16, shutdown_timeout=10.0)
start = threading.Barrier(threads)

def update(writer, user, round_):
    return {
        "user_id": f"hot-{user}",
        "company_id": "acme",
        "session_token": f"{writer}-u{user}-r{round_}",
        "metadata": {
            "shared": {"plan": "pro", "tags": ["a", "b"]},
            writer: {"last": round_, f"r{round_}": True},
            "writers": {writer: round_},
        },
    }

def write(thread):
    writer = f"p{process}t{thread}"
    start.wait()
    for round_ in range(rounds):
        for user in range(users):
            assert sender.queue_user(update(writer, user, round_))
        time.sleep(0.03)  # let rounds meet batches in flight

workers = [threading.Thread(target=write, args=(t,)) for t in range(threads)]
for worker in workers:
    worker.start()
for worker in workers:
    worker.join()
delivered = sender.flush(timeout=30)
print(json.dumps({"delivered": delivered, **sender.stats()}))
"""


def direct_writer(url: str, app_id: str, writer: str, errors: list[BaseException]) -> None:
    """POST every round as one batch per round, straight to the collector."""
    try:
        with httpx.Client(base_url=url, timeout=30) as client:
            for round_ in range(ROUNDS):
                batch = [writer_update(writer, user, round_) for user in range(USERS)]
                response = client.post(
                    "/v1/users/batch", json=batch, headers={APP_ID_HEADER: app_id}
                )
                assert response.status_code == 201, response.text
    except BaseException as exc:
        errors.append(exc)


def test_processes_threads_and_direct_posts_merge_without_losing_anything(
    collector: CollectorHandle, app_id: str
) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("MOESIF_APPLICATION_ID", None)
    args = [app_id, collector.url]
    sizes = [str(USERS), str(ROUNDS), str(THREADS)]
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(SCRIPT), *args, str(p), *sizes],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for p in range(PROCESSES)
    ]
    errors: list[BaseException] = []
    direct = [
        threading.Thread(target=direct_writer, args=(collector.url, app_id, f"d{k}", errors))
        for k in range(DIRECT_WRITERS)
    ]
    for thread in direct:
        thread.start()
    outputs = []
    for process in processes:
        out, err = process.communicate(timeout=60)
        assert process.returncode == 0, err
        outputs.append(json.loads(out.strip().splitlines()[-1]))
    for thread in direct:
        thread.join(60)
    assert not errors, errors

    for stats in outputs:
        assert stats["delivered"] is True
        assert stats["queued"] == THREADS * ROUNDS * USERS
        assert (stats["failed"], stats["dropped"]) == (0, 0)
    writers = [f"p{p}t{t}" for p in range(PROCESSES) for t in range(THREADS)]
    writers += [f"d{k}" for k in range(DIRECT_WRITERS)]
    assert_merged(collector, app_id, writers)
    # every record each sender delivered, and every direct one, was applied exactly once
    sent = sum(stats["sent"] for stats in outputs)
    assert collector.stats(app_id)["records"] == sent + DIRECT_WRITERS * ROUNDS * USERS


# A deadline long enough that every attempt gets the full timeout: a cut-short attempt
# could be stored by the API and then repeated (see test_hardening_faults).
FLAPPING_RETRY = RetryPolicy(
    backoff_base=0.01,
    backoff_cap=0.05,
    batch_deadline=3.0,
    retry_after_cap=0.1,
    cycle_backoff_base=0.01,
    cycle_backoff_cap=0.05,
)


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.01)


def test_threads_against_a_flapping_api_lose_nothing_and_repeat_nothing(
    collector: CollectorHandle, app_id: str
) -> None:
    threads = 6
    with FaultServer(forward_to=collector.url) as faults:
        faults.mode = Cycle(
            Reply(503), Accept(), Reset(), Reply(429, headers={"Retry-After": "0.01"}), Accept()
        )
        sender = get_sender(
            app_id,
            faults.url,
            flush_interval=0.01,
            batch_size=32,
            timeout=2.0,
            shutdown_timeout=1.0,
            _retry=FLAPPING_RETRY,
        )
        start = threading.Barrier(threads)
        errors: list[BaseException] = []

        def write(writer: str) -> None:
            try:
                start.wait()
                for round_ in range(ROUNDS):
                    for user in range(USERS):
                        assert sender.queue_user(writer_update(writer, user, round_))
                    time.sleep(0.02)  # let some rounds meet failures in flight
            except BaseException as exc:
                errors.append(exc)

        writers = [f"w{t}" for t in range(threads)]
        workers = [threading.Thread(target=write, args=(writer,)) for writer in writers]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(30)
        assert not errors, errors
        assert sender.flush(timeout=30) is True  # the API keeps flapping meanwhile

        stats = sender.stats()
        assert stats["retries"] > 0  # the API really did fail under the writers
        assert (stats["failed"], stats["dropped"]) == (0, 0)
        assert_merged(collector, app_id, writers)
        records = faults.accepted_records()
        assert collector.stats(app_id)["records"] == len(records) == stats["sent"]
        repeats = [json.dumps(r, sort_keys=True) for r in records]
        assert len(repeats) == len(set(repeats)), "a record was delivered twice"
