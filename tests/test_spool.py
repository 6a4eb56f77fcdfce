"""The durable spool (``spool_dir``): records on disk survive a killed process and outages.

Processes that must die for real (``kill -9``) are subprocesses; the process that comes
back is this one, delivering to the real collector over loopback.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import stat
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from faults import Accept, FaultServer, Reply
from samples import fast_retry
from servers import CollectorHandle
from spool_processes import KILLED, closed_port_url, run_killed

from moesif_users_middleware import ConfigurationError
from moesif_users_middleware._capture.config import build_config
from moesif_users_middleware._delivery.kinds import KINDS, RecordKind
from moesif_users_middleware._delivery.options import validate_sender_options
from moesif_users_middleware._delivery.spool_dir import app_tag, list_names
from moesif_users_middleware.sender import Sender, _reset_senders_for_tests, get_sender

ROOT = Path(__file__).resolve().parent.parent
FAST_RETRY = fast_retry(batch_deadline=1.0)

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs POSIX file locks")


@pytest.fixture(autouse=True)
def _no_leftover_senders() -> Iterator[None]:
    yield
    _reset_senders_for_tests()
    names = ("moesif-users-sender", "moesif-users-spool")
    wait_for(lambda: not [t for t in threading.enumerate() if t.name in names], timeout=5)


@pytest.fixture
def spool(tmp_path: Path) -> Path:
    return tmp_path / "spool"


def spool_sender(app_id: str, url: str, spool: Path, **options: Any) -> Sender:
    options.setdefault("flush_interval", 60.0)
    options.setdefault("timeout", 2.0)
    options.setdefault("shutdown_timeout", 1.0)
    return get_sender(app_id, url, _retry=FAST_RETRY, spool_dir=str(spool), **options)


def wait_for(condition: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.01)


def on_disk(sender: Sender, count: int) -> Callable[[], bool]:
    """Every pending record is on disk (none only in memory), and there are ``count``."""
    return lambda: sender.pending == sender.stats()["spooled"] == count


def spool_files(spool: Path) -> list[str]:
    return sorted(path.name for path in spool.iterdir()) if spool.exists() else []


def rounds_of(count: int, rounds: int) -> list[dict[str, Any]]:
    """``rounds`` updates of ``count`` users, in order; the last round's values win."""
    return [
        {
            "user_id": f"user-{index}",
            "session_token": f"token-{index}-{round_ % 2}",
            "metadata": {
                "round": round_,
                "plan": f"p{round_}",
                **({"first": True} if not round_ else {}),
            },
        }
        for round_ in range(rounds)
        for index in range(count)
    ]


# -- surviving a killed process ------------------------------------------------------------


def companies_of(count: int, rounds: int) -> list[dict[str, Any]]:
    return [
        {"company_id": f"company-{index}", "metadata": {"round": round_}}
        for round_ in range(rounds)
        for index in range(count)
    ]


def test_a_killed_process_loses_nothing(
    collector: CollectorHandle, app_id: str, spool: Path
) -> None:
    run_killed(app_id, spool, rounds_of(300, 3) + companies_of(50, 3))
    names = [name for name in spool_files(spool) if name.endswith(".db")]
    assert len(names) == 1
    for name in spool_files(spool):  # session tokens and personal data: this user only
        assert stat.S_IMODE((spool / name).stat().st_mode) == 0o600, name
    assert stat.S_IMODE(spool.stat().st_mode) == 0o700

    sender = spool_sender(app_id, collector.url, spool)
    assert sender.flush(timeout=10) is True  # adopts what the killed process left, sends it
    profiles = {p["user_id"]: p for p in collector.list_users(app_id)}
    assert len(profiles) == 300
    for index in range(300):
        profile = profiles[f"user-{index}"]
        assert profile["metadata"] == {"round": 2, "first": True, "plan": "p2"}
        assert sorted(profile["session_tokens"]) == [f"token-{index}-0", f"token-{index}-1"]
    companies = {c["company_id"]: c["metadata"] for c in collector.list_companies(app_id)}
    assert companies == {f"company-{index}": {"round": 2} for index in range(50)}
    assert sender.stats()["spooled"] == 0
    sender.shutdown()
    assert spool_files(spool) == []  # an empty spool leaves no file behind


def test_an_update_older_than_flush_interval_survives_kill_9(
    collector: CollectorHandle, app_id: str, spool: Path
) -> None:
    script = KILLED.replace(
        'deadline = time.monotonic() + 20\nwhile not sender.pending == sender.stats()["spooled"] > 0:\n'
        "    assert time.monotonic() < deadline, sender.stats()\n    time.sleep(0.01)\n",
        "time.sleep(1.0)  # flush_interval\n",
    )
    assert script != KILLED
    run_killed(app_id, spool, [{"user_id": "just-in-time", "metadata": {"v": 1}}], script)
    sender = spool_sender(app_id, collector.url, spool)
    assert sender.flush(timeout=10) is True
    profile = collector.get_user(app_id, "just-in-time")
    assert profile is not None
    assert profile["metadata"] == {"v": 1}


def test_spooled_records_merge_under_newer_ones_by_modified_time(
    collector: CollectorHandle, app_id: str, spool: Path
) -> None:
    later = (datetime.now(timezone.utc) + timedelta(hours=1)).isoformat()
    run_killed(
        app_id,
        spool,
        [
            {"user_id": "older", "metadata": {"plan": "spooled", "seats": 1}},
            {"user_id": "newer", "metadata": {"plan": "spooled"}, "modified_time": later},
        ],
    )
    sender = spool_sender(app_id, collector.url, spool)
    sender.queue_users(
        [
            {"user_id": "older", "metadata": {"plan": "live"}},
            {"user_id": "newer", "metadata": {"plan": "live", "seats": 9}},
        ]
    )
    wait_for(lambda: not [n for n in list_names(str(spool)) if n.pid != os.getpid()])
    assert sender.flush(timeout=10) is True
    older = collector.get_user(app_id, "older")
    newer = collector.get_user(app_id, "newer")
    assert older is not None
    assert newer is not None
    assert older["metadata"] == {"plan": "live", "seats": 1}
    assert newer["metadata"] == {"plan": "spooled", "seats": 9}


# -- what leaves the spool ----------------------------------------------------------------


def test_retryable_failures_stay_and_confirmed_records_leave(
    collector: CollectorHandle, app_id: str, spool: Path
) -> None:
    with FaultServer(forward_to=collector.url, mode=Reply(503)) as server:
        sender = spool_sender(app_id, server.url, spool)
        sender.queue_users([{"user_id": "a"}, {"user_id": "b", "metadata": {"k": 1}}])
        sender.queue_company({"company_id": "c"})
        assert sender.flush(timeout=1.5) is False
        assert sender.stats()["spooled"] == 3
        assert sender.stats("users")["spooled"] == 2
        assert sender.stats("companies")["spooled"] == 1
        assert sender.stats()["failed"] == 0
        server.mode = Accept()
        assert sender.flush(timeout=10) is True
        stats = sender.stats()
        assert (stats["spooled"], stats["sent"]) == (0, 3)
    assert {p["user_id"] for p in collector.list_users(app_id)} == {"a", "b"}
    assert collector.get_company(app_id, "c") is not None


def test_records_refused_for_good_leave_the_spool(
    collector: CollectorHandle, app_id: str, spool: Path
) -> None:
    with FaultServer(mode=Reply(422, {"message": "no"})) as server:
        sender = spool_sender(app_id, server.url, spool)
        sender.queue_users([{"user_id": "a"}, {"user_id": "b"}])
        assert sender.flush(timeout=5) is False
        stats = sender.stats()
        assert (stats["spooled"], stats["failed"]) == (0, 2)


@pytest.mark.parametrize("answer", [Accept(delay=0.8), Reply(503, delay=0.8)])
def test_updates_for_a_record_being_sent_are_kept(
    collector: CollectorHandle, app_id: str, spool: Path, answer: Accept | Reply
) -> None:
    with FaultServer(forward_to=collector.url) as server:
        server.script(answer)
        sender = spool_sender(app_id, server.url, spool)
        sender.queue_user({"user_id": "u", "session_token": "t1", "metadata": {"a": 1, "b": 1}})
        first = threading.Thread(target=sender.flush, kwargs={"timeout": 5})
        first.start()
        wait_for(lambda: len(server.received) == 1)  # in flight now
        sender.queue_user({"user_id": "u", "session_token": "t2", "metadata": {"b": 2}})
        wait_for(lambda: sender._engine.buffer.slots == 0)  # on disk beside the one in flight
        first.join()
        assert sender.stats()["spooled"] == 1
        assert sender.flush(timeout=10) is True
        assert sender.stats()["spooled"] == 0
    profile = collector.get_user(app_id, "u")
    assert profile is not None
    assert profile["metadata"] == {"a": 1, "b": 2}
    assert sorted(profile["session_tokens"]) == ["t1", "t2"]


def test_every_record_kind_is_spooled_and_sent_to_its_own_endpoint(
    app_id: str, spool: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    things = RecordKind("things", "thing_id", "/v1/things/batch", "thing")
    monkeypatch.setitem(KINDS, things.name, things)
    with FaultServer(mode=Reply(503)) as server:
        sender = spool_sender(app_id, server.url, spool)
        sender.queue_user({"user_id": "same-id", "metadata": {"a": 1}})
        engine = sender._engine
        engine.queue_direct(things, [{"thing_id": "same-id", "metadata": {"b": 1}}])
        engine.queue_direct(things, [{"thing_id": "same-id", "metadata": {"c": 1}}])
        assert sender.flush(timeout=1.5) is False
        assert sender.stats()["spooled"] == 2  # one per (kind, id)
        server.mode = Accept()
        assert sender.flush(timeout=10) is True
        sent = {
            request.path: request.records for request in server.received if request.status == 201
        }
    assert sent["/v1/users/batch"][0]["metadata"] == {"a": 1}
    assert sent["/v1/things/batch"][0]["metadata"] == {"b": 1, "c": 1}
    assert sender.stats()["spooled"] == 0


# -- bounds and faults --------------------------------------------------------------------------


def test_a_full_spool_drops_new_records_and_still_merges_spooled_ones(
    collector: CollectorHandle, app_id: str, spool: Path, caplog: pytest.LogCaptureFixture
) -> None:
    budget = 64 * 1024
    sender = spool_sender(app_id, closed_port_url(), spool, max_spool_bytes=budget)
    padding = "x" * 1000
    for index in range(100):  # ~100 KiB: more than the budget
        sender.queue_user({"user_id": f"big-{index}", "metadata": {"pad": padding, "v": 0}})
    wait_for(lambda: sender._engine.buffer.slots == 0)
    stats = sender.stats()
    assert 0 < stats["spooled"] < 100
    assert stats["dropped"] == 100 - stats["spooled"]
    assert "max_spool_bytes" in caplog.text
    database = next(name.db for name in list_names(str(spool)))
    data = sqlite3.connect(database).execute("SELECT sum(length(data)) FROM records").fetchone()
    assert data[0] <= budget

    kept = stats["spooled"]
    sender.queue_user({"user_id": "big-0", "metadata": {"v": 1}})  # already on disk: merged
    sender.queue_user({"user_id": "one-more", "metadata": {"pad": padding}})  # no room
    wait_for(lambda: sender._engine.buffer.slots == 0)
    assert sender.stats()["spooled"] == kept
    assert sender.stats()["dropped"] == 100 - kept + 1
    # Its worker gives up on the closed port at the shutdown's deadline; a cycle begun just
    # before it may still be reading the spool, so wait for the thread to end: a worker
    # that outlived the shutdown would keep the file open, and this process could not adopt it.
    sender.shutdown(timeout=1)
    worker = sender._engine.worker
    wait_for(lambda: worker.thread is None)

    sender = spool_sender(app_id + "-next", collector.url, spool)  # another app: not its files
    sender.shutdown()
    revived = spool_sender(app_id, collector.url, spool, max_spool_bytes=budget)
    assert revived.flush(timeout=10) is True
    profiles = {p["user_id"]: p for p in collector.list_users(app_id)}
    assert len(profiles) == kept
    assert profiles["big-0"]["metadata"] == {"pad": padding, "v": 1}


def test_a_corrupt_spool_file_is_moved_aside_with_one_error(
    collector: CollectorHandle, app_id: str, spool: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spool.mkdir(mode=0o700)
    stem = f"moesif-spool-{app_tag(app_id)}-4242-deadbeef"
    (spool / f"{stem}.db").write_bytes(b"this is not a database" * 100)
    (spool / f"{stem}.lock").write_bytes(b"")
    caplog.set_level(logging.ERROR, "moesif_users_middleware")
    sender = spool_sender(app_id, collector.url, spool)
    sender.queue_user({"user_id": "still-works"})  # the first use adopts what is there
    assert sender.flush(timeout=10) is True
    assert not (spool / f"{stem}.db").exists()
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert "moved aside" in errors[0].getMessage()
    assert [name for name in spool_files(spool) if ".corrupt-" in name]
    assert collector.get_user(app_id, "still-works") is not None


def test_unreadable_rows_are_dropped_and_the_rest_adopted(
    collector: CollectorHandle, app_id: str, spool: Path, caplog: pytest.LogCaptureFixture
) -> None:
    run_killed(app_id, spool, [{"user_id": f"row-{index}"} for index in range(10)])
    (orphan,) = list_names(str(spool))
    with sqlite3.connect(orphan.db) as connection:
        connection.execute("UPDATE records SET data = '{broken' WHERE id = 'row-3'")
    sender = spool_sender(app_id, collector.url, spool)
    assert sender.flush(timeout=10) is True
    assert not os.path.exists(orphan.db)
    assert len(collector.list_users(app_id)) == 9
    assert "1 unreadable records" in caplog.text


def test_a_directory_others_may_write_to_is_refused_and_memory_still_delivers(
    collector: CollectorHandle, app_id: str, spool: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spool.mkdir()
    spool.chmod(0o777)
    sender = spool_sender(app_id, collector.url, spool)
    sender.queue_user({"user_id": "in-memory"})
    assert sender.flush(timeout=10) is True
    assert collector.get_user(app_id, "in-memory") is not None
    assert spool_files(spool) == []
    assert "chmod 700" in caplog.text
    assert sender.stats()["spooled"] == 0


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give the directory away")
def test_a_directory_of_another_user_is_refused(
    collector: CollectorHandle, app_id: str, spool: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spool.mkdir(mode=0o700)
    os.chown(spool, 65534, 65534)
    sender = spool_sender(app_id, collector.url, spool)
    sender.queue_user({"user_id": "in-memory"})
    assert sender.flush(timeout=10) is True
    assert "belongs to another user" in caplog.text
    assert spool_files(spool) == []


# -- shutdown --------------------------------------------------------------------------------

EXIT_WITH_API_DOWN = """
import json, sys, time
from moesif_users_middleware.sender import get_sender

app_id, url, spool = sys.argv[1:4]
sender = get_sender(app_id, url, spool_dir=spool, flush_interval=60.0, shutdown_timeout=1.0)
for index in range(200):
    sender.queue_user({"user_id": f"kept-{index}"})
print(json.dumps({"exit_started": time.monotonic()}), flush=True)
"""


def test_exit_with_the_api_down_keeps_records_on_disk_within_shutdown_timeout(
    collector: CollectorHandle, app_id: str, spool: Path
) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            textwrap.dedent(EXIT_WITH_API_DOWN),
            app_id,
            closed_port_url(),
            str(spool),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    ended = time.monotonic()
    assert result.returncode == 0, result.stderr
    started = json.loads(result.stdout.strip().splitlines()[-1])["exit_started"]
    assert ended - started <= 1.0 + 1.0
    assert "200 records kept in the spool" in result.stderr
    assert "not delivered" not in result.stderr

    sender = spool_sender(app_id, collector.url, spool)
    assert sender.flush(timeout=10) is True
    assert len(collector.list_users(app_id)) == 200


# -- options ---------------------------------------------------------------------------------


def test_spool_options_from_every_entry_point(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assert validate_sender_options({}).spool_dir is None
    monkeypatch.setenv("MOESIF_USERS_SPOOL_DIR", "relative/spool")
    options = validate_sender_options({})
    assert options.spool_dir == os.path.abspath("relative/spool")
    assert validate_sender_options({"spool_dir": tmp_path}).spool_dir == str(tmp_path)
    assert validate_sender_options({"spool_dir": None}).spool_dir is None  # off, env or not
    config, _ = build_config(
        {"application_id": "a", "spool_dir": str(tmp_path), "max_spool_bytes": 1 << 20}
    )
    assert config.sender_options == {"spool_dir": str(tmp_path), "max_spool_bytes": 1 << 20}


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"spool_dir": ""}, "spool_dir must be a non-empty directory path"),
        ({"spool_dir": 3}, "spool_dir must be a directory path"),
        ({"max_spool_bytes": 1000}, "max_spool_bytes must be at least 65536"),
    ],
)
def test_bad_spool_options_are_named(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        validate_sender_options(options)
    with pytest.raises(ConfigurationError, match=r"settings.MOESIF_USERS\['"):
        build_config({"application_id": "a", **options}, source="settings.MOESIF_USERS")


def test_a_blank_environment_variable_leaves_the_spool_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MOESIF_USERS_SPOOL_DIR", "   ")
    assert validate_sender_options({}).spool_dir is None
