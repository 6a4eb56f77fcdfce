"""Durable spool benchmarks: request-path cost, persist rate, and recovery after ``kill -9``.

    python benchmarks/bench_spool.py [hot|persist|kill9|all] [options]

- ``hot``: median us per ``queue_user`` call, side by side (alternating rounds, one
  process) for a sender with ``spool_dir`` and one without, both posting to a loopback
  sink; after each round (untimed) both flush, so no send overlaps a timed round. The
  spool is written by the sender's threads, so the two should match.
- ``persist``: how fast the spool's thread moves coalesced records from memory to disk,
  with the API down (nothing listening): a burst of ``--persist-users`` distinct users
  (the reference user's fields, a distinct id, email and token each) is queued while
  the spool is held, then written; then the same users again (merges into records on
  disk). Timed from inside (each persist: drain, merge, write, commit), records per
  second of persisting.
- ``kill9``: ``--kill-users`` distinct users (default 100,000) accepted during an outage,
  each updated three times (the last values win), by a process that waits until they
  are on disk and then dies by SIGKILL. A new process started with the same
  ``spool_dir``, the local collector up, delivers them: how long that takes, how many
  profiles the collector holds, and whether every one has its newest values.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_sender import REFERENCE_USER, Sink, free_port, start_collector  # noqa: E402

from moesif_users_middleware._delivery.spool import Spool  # noqa: E402
from moesif_users_middleware._delivery.spool_store import SpoolStore  # noqa: E402
from moesif_users_middleware.sender import _reset_senders_for_tests, get_sender  # noqa: E402


def user(index: int, round_: int = 0) -> dict[str, Any]:
    """The reference user with its own id, email, token, and the round's values."""
    return {
        **REFERENCE_USER,
        "user_id": f"user-{index:07d}",
        "session_token": f"tok-{index}",
        "metadata": {**REFERENCE_USER["metadata"], "email": f"u{index}@acme.com", "round": round_},
    }


# ------------------------------------------------------------------ hot path


def bench_hot(rounds: int, calls: int) -> None:
    sink = Sink()
    with tempfile.TemporaryDirectory() as tmp:
        room = {"max_queue_size": 10 * calls}  # a round never fills the buffer
        plain = get_sender("bench-" + uuid.uuid4().hex, sink.url, **room)
        spooled = get_sender(
            "bench-" + uuid.uuid4().hex, sink.url, spool_dir=tmp + "/spool", **room
        )
        distinct = [user(i) for i in range(calls)]

        def repeated(sender: Any) -> None:
            queue_user = sender.queue_user
            for _ in range(calls):
                queue_user(REFERENCE_USER)

        def different(sender: Any) -> None:
            queue_user = sender.queue_user
            for item in distinct:
                queue_user(item)

        cases = {
            "queue_user, reference user repeated, no spool": (repeated, plain),
            "queue_user, reference user repeated, spool_dir": (repeated, spooled),
            "queue_user, distinct users, no spool": (different, plain),
            "queue_user, distinct users, spool_dir": (different, spooled),
        }
        timings: dict[str, list[float]] = {name: [] for name in cases}
        for case, sender in cases.values():  # warm-up
            case(sender)
            sender.flush(60)
        for _ in range(rounds):
            for name, (case, sender) in cases.items():
                started = time.perf_counter()
                case(sender)
                timings[name].append((time.perf_counter() - started) / calls * 1e6)
                sender.flush(60)  # untimed: nothing is sent or written during a timed round
        _reset_senders_for_tests()
    sink.stop()
    print(f"hot path: {rounds} alternating rounds x {calls:,} calls, median us per call")
    for name, values in timings.items():
        spread = f"min {min(values):.2f}, max {max(values):.2f}"
        print(f"  {name:48s} {statistics.median(values):7.2f} us  ({spread})")


# ------------------------------------------------------------------ persist rate


def bench_persist(users: int) -> None:
    spent = [0.0]
    written = [0]
    persist, write = Spool._persist_locked, SpoolStore.write

    def timed_persist(self: Spool) -> None:
        started = time.perf_counter()
        persist(self)
        spent[0] += time.perf_counter() - started

    def counted_write(self: SpoolStore, entries: Any, **options: Any) -> Any:
        written[0] += len(entries)
        return write(self, entries, **options)

    Spool._persist_locked = timed_persist  # type: ignore[method-assign]
    SpoolStore.write = counted_write  # type: ignore[method-assign]
    dead = f"http://127.0.0.1:{free_port()}"
    print(f"persist: {users:,} distinct users queued with the API down, then again (merges)")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            sender = get_sender(
                "bench-" + uuid.uuid4().hex,
                dead,
                spool_dir=tmp + "/spool",
                max_queue_size=users,
                max_queue_bytes=users * 4096,
                flush_interval=60.0,
            )
            spool = sender._engine.spool
            assert spool is not None
            for round_, label in ((0, "new records"), (1, "merges into records on disk")):
                spent[0], written[0] = 0.0, 0
                started = time.perf_counter()
                with spool.lock:  # held: the burst is in memory before any of it is written
                    for index in range(users):
                        sender.queue_user(user(index, round_))
                queued = time.perf_counter() - started
                while sender.pending != sender.stats()["spooled"]:  # all on disk
                    time.sleep(0.01)
                on_disk = time.perf_counter() - started
                with spool.lock:  # the last persist has returned (and been timed)
                    pass
                size = sum(f.stat().st_size for f in Path(tmp, "spool").iterdir())
                print(
                    f"  {label:28s} {written[0]:,} records in {spent[0]:.2f} s of persisting: "
                    f"{written[0] / spent[0]:,.0f} records/s (queued in {queued:.2f} s, all on "
                    f"disk after {on_disk:.2f} s; files {size / 2**20:.1f} MiB)"
                )
            stats = sender.stats()
            print(f"  spooled {stats['spooled']:,}, dropped {stats['dropped']}")
            sender.shutdown(timeout=0)
            _reset_senders_for_tests()
    finally:
        Spool._persist_locked = persist  # type: ignore[method-assign]
        SpoolStore.write = write  # type: ignore[method-assign]


# ------------------------------------------------------------------ kill -9 and back

FILL = """
import json, os, signal, sys, time
sys.path.insert(0, sys.argv[5])
from bench_spool import user
from moesif_users_middleware.sender import get_sender

app_id, url, spool, users = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
# The memory bound sized for the burst: every update is accepted (none dropped).
sender = get_sender(app_id, url, spool_dir=spool, max_queue_size=users,
                    max_queue_bytes=users * 4096)
started = time.perf_counter()
accepted = all(sender.queue_user(user(i, r)) for r in range(3) for i in range(users))
queued = time.perf_counter() - started
while not sender.pending == sender.stats()["spooled"] == users:
    time.sleep(0.01)
print(json.dumps({"accepted": accepted, "queued": queued,
                  "on_disk": time.perf_counter() - started}), flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""

DELIVER = """
import json, sys, time
from moesif_users_middleware.sender import get_sender

app_id, url, spool = sys.argv[1], sys.argv[2], sys.argv[3]
started = time.perf_counter()
sender = get_sender(app_id, url, spool_dir=spool)
delivered = sender.flush(timeout=600)
print(json.dumps({"delivered": delivered, "seconds": time.perf_counter() - started,
                  "stats": sender.stats()}), flush=True)
"""


def bench_kill9(users: int) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    app_id = "bench-" + uuid.uuid4().hex
    with tempfile.TemporaryDirectory() as tmp:
        spool = tmp + "/spool"
        port = free_port()
        url = f"http://127.0.0.1:{port}"  # nothing listens yet: the outage
        fill = subprocess.run(
            [
                sys.executable,
                "-c",
                textwrap.dedent(FILL),
                app_id,
                url,
                spool,
                str(users),
                str(ROOT / "benchmarks"),
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        if fill.returncode != -9:
            raise RuntimeError(f"the filling process did not die by SIGKILL: {fill.stderr}")
        filled = json.loads(fill.stdout.strip().splitlines()[-1])
        size = sum(f.stat().st_size for f in Path(spool).iterdir())
        collector = start_collector(Path(tmp) / "collector.db", port)
        try:
            deliver = subprocess.run(
                [sys.executable, "-c", textwrap.dedent(DELIVER), app_id, url, spool],
                env=env,
                capture_output=True,
                text=True,
                timeout=900,
                check=True,
            )
            result = json.loads(deliver.stdout.strip().splitlines()[-1])
            stale, count = check_profiles(url, app_id)
        finally:
            collector.terminate()
            collector.wait(10)
    print(f"kill -9: {users:,} distinct users x 3 updates during an outage, SIGKILL, restart")
    print(
        f"  accepted every update: {filled['accepted']}; queued in {filled['queued']:.2f} s, "
        f"all on disk after {filled['on_disk']:.2f} s; spool files {size / 2**20:.1f} MiB"
    )
    print(
        f"  restarted process: adopted and delivered in {result['seconds']:.2f} s "
        f"(delivered={result['delivered']}, sent {result['stats']['sent']:,})"
    )
    missing = users - count
    verdict = "every user arrived" if missing == 0 else f"MISSING {missing:,} users"
    print(f"  collector holds {count:,} profiles; {verdict}; {stale:,} without their newest values")


def check_profiles(url: str, app_id: str) -> tuple[int, int]:
    """(profiles without the last round's values, profiles) at the collector."""
    stale = count = 0
    with httpx.Client(base_url=url, headers={"X-Moesif-Application-Id": app_id}) as client:
        while True:
            page = client.get("/v1/users", params={"limit": 10_000, "offset": count}).json()
            for profile in page:
                index = int(profile["user_id"].split("-")[1])
                if profile["metadata"] != user(index, 2)["metadata"]:
                    stale += 1
            count += len(page)
            if len(page) < 10_000:
                return stale, count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "which", nargs="?", default="all", choices=["hot", "persist", "kill9", "all"]
    )
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--persist-users", type=int, default=100_000)
    parser.add_argument("--kill-users", type=int, default=100_000)
    args = parser.parse_args()
    if args.which in ("hot", "all"):
        bench_hot(args.rounds, args.calls)
    if args.which in ("persist", "all"):
        bench_persist(args.persist_users)
    if args.which in ("kill9", "all"):
        bench_kill9(args.kill_users)


if __name__ == "__main__":
    main()
