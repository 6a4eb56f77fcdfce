"""Sender benchmarks: hot-path cost vs Segment, coalescing, memory under outage, end to end.

    python benchmarks/bench_sender.py [hot|coalesce|memory|e2e|all] [options]

- ``hot``: median us per ``queue_user`` call with the reference's example user, side by
  side (alternating rounds, one process) with ``segment-analytics-python``'s
  ``Client.identify``; after each round (untimed) both flush, so no library's background
  upload runs during another's timed round. Segment runs with its defaults and ``host=`` pointed at a loopback
  sink answering 200 (so its consumer thread really uploads); it is also shown with
  ``send=False`` (message built and validated, never queued) as its lower bound.
- ``coalesce``: 1,000,000 updates (each different) over 1,000 users into a loopback sink;
  records and POSTs per flush window (per send cycle of the sender, timed from inside).
  Then 1,000,000 requests through the capture pipeline (``Capture.capture``, the hooks
  ``identify_user``, ``identify_company``, ``get_metadata`` with a new value on each
  request, ``get_company_domain`` and ``get_company_metadata``) over the same 1,000
  users in 100 companies: user and company records per flush window.
- ``memory``: in a subprocess, 1,000,000 distinct users (fresh nested dicts each) queued
  with the API down (nothing listening) and default options; peak RSS growth
  (``ru_maxrss``, and Linux ``VmHWM``, which a big parent process cannot inflate) and the
  drop count.
- ``e2e``: 100,000 distinct users queued then flushed to the local collector (started
  with ``moesif_users_middleware.collector.serve`` in a subprocess); wall time until
  ``flush`` returns and what the collector stored.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import logging
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from moesif_users_middleware._delivery import worker as worker_module  # noqa: E402
from moesif_users_middleware.sender import _reset_senders_for_tests, get_sender  # noqa: E402

REFERENCE_USER: dict[str, Any] = {
    "user_id": "12345",
    "company_id": "67890",
    "session_token": "XXXXXXXXXX",
    "campaign": {
        "utm_source": "google",
        "utm_medium": "cpc",
        "utm_campaign": "adwords",
        "utm_term": "api+tooling",
        "utm_content": "landing",
    },
    "metadata": {
        "email": "john@acmeinc.com",
        "first_name": "John",
        "last_name": "Doe",
        "title": "Software Engineer",
        "sales_info": {
            "stage": "Customer",
            "lifetime_value": 24000,
            "account_owner": "mary@contoso.com",
        },
    },
}


# ---------------------------------------------------------------------- the sink


class Sink:
    """Loopback HTTP sink: answers 200 to every POST, logs (time, records, path) per POST."""

    def __init__(self) -> None:
        self.posts: list[tuple[float, int, str]] = []
        self.lock = threading.Lock()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                try:
                    payload = json.loads(body)
                    count = len(payload) if isinstance(payload, list) else 1
                except ValueError:
                    count = 0
                with sink.lock:
                    sink.posts.append((time.monotonic(), count, self.path))
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# ------------------------------------------------------------------ hot path


def bench_hot(rounds: int, calls: int) -> None:
    from segment.analytics import Client as SegmentClient  # type: ignore[import-untyped]

    logging.getLogger("segment").setLevel(logging.CRITICAL)
    sink = Sink()
    sender = get_sender("bench-" + uuid.uuid4().hex, sink.url)
    distinct = get_sender("bench-" + uuid.uuid4().hex, sink.url, max_queue_size=10_000_000)
    segment = SegmentClient("write-key", host=sink.url, max_queue_size=10_000_000)
    segment_nosend = SegmentClient("write-key", host=sink.url, send=False)
    user = REFERENCE_USER
    traits = user["metadata"]
    context = {"campaign": user["campaign"], "groupId": user["company_id"]}
    distinct_users = [{**user, "user_id": f"user-{i}"} for i in range((rounds + 1) * calls)]
    offset = [0]

    def ours_same() -> None:
        queue_user = sender.queue_user
        for _ in range(calls):
            queue_user(user)

    def ours_distinct() -> None:
        queue_user = distinct.queue_user
        start = offset[0]
        offset[0] += calls
        for item in distinct_users[start : start + calls]:
            queue_user(item)

    def segment_identify() -> None:
        identify = segment.identify
        for _ in range(calls):
            identify("12345", dict(traits), context=dict(context))

    def segment_identify_nosend() -> None:
        identify = segment_nosend.identify
        for _ in range(calls):
            identify("12345", dict(traits), context=dict(context))

    # Each case: (timed calls, untimed settling so no background upload overlaps a round).
    cases = {
        "moesif queue_user (reference user, repeated)": (ours_same, lambda: sender.flush(30)),
        "moesif queue_user (distinct users)": (ours_distinct, lambda: distinct.flush(60)),
        "segment identify (send=True, loopback sink)": (segment_identify, segment.flush),
        "segment identify (send=False, no queue)": (segment_identify_nosend, lambda: None),
    }
    timings: dict[str, list[float]] = {name: [] for name in cases}
    for case, settle in cases.values():  # warm-up
        case()
        settle()
    for _ in range(rounds):
        for name, (case, settle) in cases.items():
            started = time.perf_counter()
            case()
            timings[name].append((time.perf_counter() - started) / calls * 1e6)
            settle()
    medians = {name: statistics.median(values) for name, values in timings.items()}
    print(f"hot path: {rounds} alternating rounds x {calls:,} calls, median us per call")
    for name, value in medians.items():
        spread = f"min {min(timings[name]):.2f}, max {max(timings[name]):.2f}"
        print(f"  {name:48s} {value:7.2f} us  ({spread})")
    ours = medians["moesif queue_user (reference user, repeated)"]
    theirs = medians["segment identify (send=True, loopback sink)"]
    print(f"  speed-up vs segment identify (send=True):  {theirs / ours:.1f}x")
    print(
        "  speed-up of distinct users vs segment:     "
        f"{theirs / medians['moesif queue_user (distinct users)']:.1f}x"
    )
    segment.shutdown()
    _reset_senders_for_tests()
    sink.stop()


# ------------------------------------------------------------------ coalescing


@contextlib.contextmanager
def timed_cycles() -> Iterator[list[tuple[float, float]]]:
    """Each send cycle's (start, end): the flush windows, timed from inside the worker."""
    cycles: list[tuple[float, float]] = []
    run_cycle = worker_module.run_cycle

    def timed(engine: Any, worker: Any) -> None:
        started = time.monotonic()
        run_cycle(engine, worker)
        cycles.append((started, time.monotonic()))

    worker_module.run_cycle = timed  # type: ignore[assignment]
    try:
        yield cycles
    finally:
        worker_module.run_cycle = run_cycle


def report_windows(sink: Sink, cycles: list[tuple[float, float]], path: str, noun: str) -> None:
    posts = [(moment, count) for moment, count, where in sink.posts if where == path]
    windows = [
        [count for moment, count in posts if start <= moment <= end] for start, end in cycles
    ]
    windows = [window for window in windows if window]
    print(
        f"  {noun}: {len(windows)} flush windows; records per window max "
        f"{max(sum(w) for w in windows):,}; POSTs per window max {max(len(w) for w in windows)}; "
        f"total {sum(c for _, c in posts):,} records in {len(posts)} POSTs"
    )


def bench_coalesce(updates: int, users: int, companies: int) -> None:
    sink = Sink()
    sender = get_sender("bench-" + uuid.uuid4().hex, sink.url)
    base = REFERENCE_USER
    with timed_cycles() as cycles:
        started = time.perf_counter()
        queue_user = sender.queue_user
        for i in range(updates):
            queue_user(
                {
                    "user_id": f"user-{i % users}",
                    "company_id": base["company_id"],
                    "ip_address": f"10.0.{i % 250}.{i % 199}",
                    "metadata": {"email": base["metadata"]["email"], "requests": i},
                }
            )
        queued = time.perf_counter() - started
        delivered = sender.flush(timeout=60)
    stats = sender.stats()
    print(f"coalescing: {updates:,} updates over {users:,} users (flush_interval 2 s, defaults)")
    print(f"  queueing took {queued:.2f} s ({queued / updates * 1e6:.2f} us per update)")
    report_windows(sink, cycles, "/v1/users/batch", "users")
    print(f"  delivered={delivered}; coalesced={stats['coalesced']:,}")
    bench_coalesce_requests(sink, updates, users, companies)
    _reset_senders_for_tests()
    sink.stop()


def bench_coalesce_requests(sink: Sink, requests: int, users: int, companies: int) -> None:
    from bench_capture import Request, User, environ_for

    from moesif_users_middleware._capture.config import build_config
    from moesif_users_middleware._capture.pipeline import Capture
    from moesif_users_middleware._capture.request_view import EnvironView

    def metadata(request: Any, response: Any) -> dict[str, Any]:
        return {"email": request.user.email, "requests": request.user.visits}

    config, _ = build_config(
        {
            "application_id": "bench-" + uuid.uuid4().hex,
            "base_url": sink.url,
            "identify_user": lambda request, response: str(request.user.id),
            "identify_company": lambda request, response: f"company-{request.user.id % companies}",
            "get_metadata": metadata,
            "get_company_domain": lambda request, response: "example.com",
            "get_company_metadata": lambda request, response: {"plan_name": "pro"},
        }
    )
    capture = Capture(config)
    environ = environ_for("/v1/orders")
    pool = [Request("/v1/orders", User(i)) for i in range(users)]
    sink.posts.clear()
    with timed_cycles() as cycles:
        started = time.perf_counter()
        for i in range(requests):
            request = pool[i % users]
            request.user.visits = i
            capture.capture(EnvironView(environ, request, None))
        elapsed = time.perf_counter() - started
        delivered = capture.sender.flush(timeout=60)
    print(
        f"requests: {requests:,} over {users:,} users in {companies:,} companies, "
        f"each with a new metadata value ({elapsed / requests * 1e6:.2f} us per request, wall time, the sender working meanwhile)"
    )
    report_windows(sink, cycles, "/v1/users/batch", "users")
    report_windows(sink, cycles, "/v1/companies/batch", "companies")
    print(f"  delivered={delivered}")


# -------------------------------------------------------------------- memory


MEMORY_SCRIPT = """
import gc, json, resource, sys, time
from moesif_users_middleware.sender import get_sender

def vm_hwm_kb():
    # this process's own peak RSS; ru_maxrss also includes the parent's RSS at fork time
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0

users = int(sys.argv[2])
sender = get_sender("bench-memory", sys.argv[1])
text = sys.argv[3]
gc.collect()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
before_hwm = vm_hwm_kb()
started = time.perf_counter()
accepted = 0
for i in range(users):
    user = json.loads(text)  # fresh nested objects per user, like a real request
    user["user_id"] = f"user-{i}"
    user["metadata"]["email"] = f"user{i}@acmeinc.com"
    accepted += sender.queue_user(user)
elapsed = time.perf_counter() - started
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
after_hwm = vm_hwm_kb()
stats = sender.stats()
print(json.dumps({"before_kb": before, "after_kb": after, "accepted": accepted,
                  "before_hwm": before_hwm, "after_hwm": after_hwm,
                  "elapsed": elapsed, "stats": stats, "pending": sender.pending}))
import os
os._exit(0)  # skip the exit flush against the dead API
"""


def bench_memory(users: int) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            textwrap.dedent(MEMORY_SCRIPT),
            url,
            str(users),
            json.dumps(REFERENCE_USER),
        ],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    report = json.loads(result.stdout.strip().splitlines()[-1])
    stats = report["stats"]
    growth_mb = (report["after_kb"] - report["before_kb"]) / 1024
    print(f"memory: {users:,} distinct users queued with the API down (defaults)")
    hwm_mb = (report["after_hwm"] - report["before_hwm"]) / 1024
    print(
        f"  peak RSS growth: {growth_mb:.1f} MB (ru_maxrss {report['before_kb'] / 1024:.1f} -> "
        f"{report['after_kb'] / 1024:.1f} MB); VmHWM growth {hwm_mb:.1f} MB"
    )
    print(
        f"  accepted {report['accepted']:,}, dropped {stats['dropped']:,} "
        f"(accepted + dropped = {report['accepted'] + stats['dropped']:,}); "
        f"pending {report['pending']:,}; {report['elapsed'] / users * 1e6:.2f} us per call"
    )


# ------------------------------------------------------------------- end to end


def start_collector(db_path: Path, port: int) -> subprocess.Popen[bytes]:
    code = (
        "from moesif_users_middleware.collector import serve; "
        f"serve('127.0.0.1', {port}, {str(db_path)!r})"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen([sys.executable, "-c", code], env=env)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/v1/_stats", timeout=1)
            return process
        except httpx.TransportError:
            if process.poll() is not None:
                raise RuntimeError("collector exited during startup") from None
            time.sleep(0.05)
    process.terminate()
    raise RuntimeError("collector did not start")


def bench_e2e(users: int, batch_size: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        process = start_collector(Path(tmp) / "bench.db", port)
        url = f"http://127.0.0.1:{port}"
        app_id = "bench-" + uuid.uuid4().hex
        try:
            # Both bounds sized for every user at once (about 0.6 KB each serialized): the
            # default byte bound (16 MiB) would otherwise drop some while the rest is sent.
            sender = get_sender(
                app_id,
                url,
                max_queue_size=users,
                max_queue_bytes=users * 2048,
                batch_size=batch_size,
            )
            started = time.perf_counter()
            for i in range(users):
                sender.queue_user(
                    {
                        **REFERENCE_USER,
                        "user_id": f"user-{i:07d}",
                        "session_token": f"tok-{i}",
                        "metadata": {**REFERENCE_USER["metadata"], "email": f"u{i}@acme.com"},
                    }
                )
            queued = time.perf_counter() - started
            delivered = sender.flush(timeout=300)
            elapsed = time.perf_counter() - started
            stats = sender.stats()
            _reset_senders_for_tests()
            stored = httpx.get(
                f"{url}/v1/_stats", headers={"X-Moesif-Application-Id": app_id}, timeout=30
            ).json()
        finally:
            process.terminate()
            process.wait(10)
    print(
        f"end to end: {users:,} distinct users -> local collector "
        f"(batch_size {batch_size}, max_queue_size {users:,}, max_queue_bytes {users * 2048:,})"
    )
    print(
        f"  queued in {queued:.2f} s; delivered={delivered} after {elapsed:.2f} s "
        f"({users / elapsed:,.0f} users/s)"
    )
    print(
        f"  collector stored {stored['users']:,} users from {stored['records']:,} records "
        f"in {stored['requests']:,} POSTs; sender sent {stats['sent']:,}, "
        f"retries {stats['retries']}, failed {stats['failed']}, dropped {stats['dropped']}"
    )
    missing = users - stored["users"]
    print(f"  {'every user arrived' if missing == 0 else f'MISSING {missing:,} users'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "which", nargs="?", default="all", choices=["hot", "coalesce", "memory", "e2e", "all"]
    )
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--updates", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=1_000)
    parser.add_argument("--companies", type=int, default=100)
    parser.add_argument("--memory-users", type=int, default=1_000_000)
    parser.add_argument("--e2e-users", type=int, default=100_000)
    parser.add_argument("--batch-size", type=int, default=100)
    args = parser.parse_args()
    if args.which in ("memory", "all"):  # first: ru_maxrss counts this process's RSS too
        bench_memory(args.memory_users)
    if args.which in ("hot", "all"):
        bench_hot(args.rounds, args.calls)
    if args.which in ("coalesce", "all"):
        bench_coalesce(args.updates, args.users, args.companies)
    if args.which in ("e2e", "all"):
        bench_e2e(args.e2e_users, args.batch_size)


if __name__ == "__main__":
    main()
