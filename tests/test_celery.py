"""Celery: a real worker (prefork pool, two children) on kombu's filesystem broker.

Tasks queue users with a sender whose timer would not fire before the end
(``flush_interval=60``); the worker gets SIGTERM (warm shutdown) once every task ran.
With ``moesif_users_middleware.celery.setup()`` every user reaches the collector; without
it the pool children end through ``os._exit`` and take their users with them.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

pytest.importorskip("celery")

from servers import CollectorHandle, stop_process_group

TASKS = 8

APP = textwrap.dedent(
    """
    import os
    import time

    from celery import Celery

    import moesif_users_middleware.celery
    from moesif_users_middleware import get_sender

    folder = os.environ["BROKER_FOLDER"]
    app = Celery("tasks_app", broker="filesystem://")
    app.conf.update(
        broker_transport_options={
            "data_folder_in": folder, "data_folder_out": folder, "store_processed": False,
            "polling_interval": 0.1,
        },
        broker_connection_retry_on_startup=True,
        task_ignore_result=True,
        worker_prefetch_multiplier=1,
        worker_hijack_root_logger=False,
    )
    if os.environ.get("MOESIF_CELERY_SETUP") == "1":
        moesif_users_middleware.celery.setup(timeout=5)


    @app.task
    def remember(user_id):
        sender = get_sender(os.environ["APP_ID"], os.environ["COLLECTOR_URL"], flush_interval=60)
        sender.queue_user({"user_id": user_id, "metadata": {"pid": os.getpid()}})
        time.sleep(0.3)  # keep both children busy
    """
)


def enqueue(folder: Path, env: dict[str, str], count: int) -> None:
    """Send ``count`` tasks through the filesystem broker (from another process)."""
    script = (
        "from tasks_app import remember\n"
        f"for n in range({count}):\n"
        "    remember.delay(f'celery-user-{n}')\n"
    )
    subprocess.run([sys.executable, "-c", script], cwd=folder, env=env, check=True, timeout=60)


def run_worker(tmp_path: Path, collector: CollectorHandle, app_id: str, setup: bool) -> str:
    """Start a worker, wait until every task ran, SIGTERM it; its log."""
    (tmp_path / "tasks_app.py").write_text(APP)
    broker = tmp_path / "broker"
    broker.mkdir()
    env = {
        **os.environ,
        "BROKER_FOLDER": str(broker),
        "APP_ID": app_id,
        "COLLECTOR_URL": collector.url,
        "MOESIF_CELERY_SETUP": "1" if setup else "0",
        "PYTHONPATH": str(tmp_path),
    }
    enqueue(tmp_path, env, TASKS)
    log = tmp_path / "worker.log"
    with log.open("w") as output:
        worker = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "tasks_app", "worker", "-P", "prefork",
             "-c", "2", "--loglevel=INFO", "--without-heartbeat", "--without-mingle",
             "--without-gossip"],
            cwd=tmp_path, env=env, stdout=output, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while log.read_text().count("succeeded in") < TASKS:
            assert worker.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        worker.send_signal(signal.SIGTERM)  # warm shutdown
        assert worker.wait(timeout=30) == 0, log.read_text()
    finally:
        stop_process_group(worker)
    return log.read_text()


def pids_of(collector: CollectorHandle, app_id: str) -> dict[str, int]:
    return {user["user_id"]: user["metadata"]["pid"] for user in collector.list_users(app_id)}


def test_every_user_a_task_queued_arrives_after_sigterm(
    tmp_path: Path, collector: CollectorHandle, app_id: str
) -> None:
    log = run_worker(tmp_path, collector, app_id, setup=True)
    users = pids_of(collector, app_id)
    assert sorted(users) == sorted(f"celery-user-{n}" for n in range(TASKS)), log
    assert len(set(users.values())) == 2, json.dumps(users)  # both children delivered


def test_without_setup_the_children_take_their_users_with_them(
    tmp_path: Path, collector: CollectorHandle, app_id: str
) -> None:
    run_worker(tmp_path, collector, app_id, setup=False)
    assert pids_of(collector, app_id) == {}


def test_setup_connects_once_delivers_on_the_signal_and_teardown_disconnects(
    collector: CollectorHandle, app_id: str
) -> None:
    from celery import signals

    import moesif_users_middleware.celery as moesif_celery
    from moesif_users_middleware import get_sender
    from moesif_users_middleware.sender import _reset_senders_for_tests

    receivers = signals.worker_process_shutdown.receivers
    before = len(receivers)
    moesif_celery.setup()
    moesif_celery.setup(timeout=5)  # replaces the first
    try:
        assert len(signals.worker_process_shutdown.receivers) == before + 1
        get_sender(app_id, collector.url, flush_interval=60).queue_user({"user_id": "sig"})
        signals.worker_process_shutdown.send(sender="host", pid=os.getpid(), exitcode=0)
        assert collector.get_user(app_id, "sig") is not None
    finally:
        moesif_celery.teardown()
        _reset_senders_for_tests()
    assert len(signals.worker_process_shutdown.receivers) == before
    with pytest.raises(ValueError, match="zero or more"):
        moesif_celery.setup(timeout=-1)
