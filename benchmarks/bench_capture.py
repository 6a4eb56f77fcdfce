"""Per-request cost of the capture core (target: <= 10 µs median).

A realistic request: four sync hooks (skip, identify_user, identify_company,
get_metadata), a Bearer session token, an X-Forwarded-For chain of two behind a trusted
peer, a browser User-Agent and a utm query. Users rotate over a pool, as many users'
requests interleave in a real flush window. The sender points at an unused loopback
port with a long flush interval, so nothing is sent while measuring.

A capture has two halves, measured apart and added up:

- the request half: build an ``EnvironView`` from a prepared WSGI environ and run
  ``Capture.capture`` (hooks, snapshot, hand-over to the sender); the sender's worker
  is held off meanwhile, so none of the second half runs inside this timing;
- the finish half: the sender finishing those captures (the engine's ``drain``: token,
  client IP, user agent, campaign, metadata checks, queueing into the buffer), once
  for captures that change every time (each request carries a new metadata value) and
  once for repeats (the user's last capture again, skipped after a comparison).

    python benchmarks/bench_capture.py [--repeats 41] [--number 2000] [--users 500]
    python benchmarks/bench_capture.py --collector   # sender thread delivering meanwhile

Two configurations are measured in the same run, one after the other: users only
(``update_companies=False``), and users with their companies' updates, the two company
hooks (``get_company_domain``, ``get_company_metadata``) configured; 500 users share 50
companies.

Prints the median (and best/worst) of the per-repeat mean cost per request, for the
whole capture and for building the view alone. With ``--collector`` the sender posts
to a local collector (its own process) every 0.2 s during the measurement, so the cost
includes sharing the interpreter with a working sender thread; the delivered users are
checked at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import logging
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from moesif_users_middleware._capture.config import build_config
from moesif_users_middleware._capture.pipeline import Capture
from moesif_users_middleware._capture.request_view import EnvironView
from moesif_users_middleware.sender import get_sender

UNUSED_URL = "http://127.0.0.1:9"
USER_AGENT = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36"
)


class User:
    def __init__(self, user_id: int) -> None:
        self.id = user_id
        self.company_id = f"company-{user_id % 50}"
        self.email = f"user{user_id}@example.com"
        self.name = f"User {user_id}"
        self.visits = 0
        self.is_authenticated = True


class Request:
    """What a framework's request looks like to the hooks."""

    def __init__(self, path: str, user: User) -> None:
        self.path = path
        self.user = user


def skip(request: Request, response: Any) -> bool:
    return request.path.startswith("/health")


def identify_user(request: Request, response: Any) -> str:
    return str(request.user.id)


def identify_company(request: Request, response: Any) -> str:
    return request.user.company_id


def get_metadata(request: Request, response: Any) -> dict[str, Any]:
    user = request.user
    return {
        "email": user.email,
        "name": user.name,
        "visits": user.visits,
        "plan": {"tier": "pro", "seats": 5, "trial": False},
    }


def get_company_domain(request: Request, response: Any) -> str:
    return request.user.company_id + ".example"


def get_company_metadata(request: Request, response: Any) -> dict[str, Any]:
    return {"plan_name": "pro", "mrr": 24000}


VARIANTS: dict[str, dict[str, Any]] = {
    "users only (update_companies=False)": {"update_companies": False},
    "users + companies (2 company hooks)": {
        "get_company_domain": get_company_domain,
        "get_company_metadata": get_company_metadata,
    },
}


def environ_for(path: str) -> dict[str, Any]:
    """A WSGI environ as gunicorn builds it for a proxied browser request."""
    return {
        "REQUEST_METHOD": "GET",
        "SCRIPT_NAME": "",
        "PATH_INFO": path,
        "QUERY_STRING": "utm_source=newsletter&utm_medium=email&utm_campaign=spring&page=2",
        "SERVER_NAME": "api.example.com",
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "10.0.0.3",
        "REMOTE_PORT": "51234",
        "HTTP_HOST": "api.example.com",
        "HTTP_USER_AGENT": USER_AGENT,
        "HTTP_ACCEPT": "application/json",
        "HTTP_ACCEPT_ENCODING": "gzip, deflate, br",
        "HTTP_ACCEPT_LANGUAGE": "en-US,en;q=0.9",
        "HTTP_AUTHORIZATION": "Bearer sk_live_4f9a2c7e1b8d4e3fa0c6",
        "HTTP_X_FORWARDED_FOR": "198.51.100.23, 10.0.0.2",
        "HTTP_X_FORWARDED_PROTO": "https",
        "HTTP_CONNECTION": "keep-alive",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": None,
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }


def measure(step: Callable[[int], object], repeats: int, number: int) -> list[float]:
    """Mean µs per call of ``step(i)`` for each repeat."""
    results = []
    for _ in range(repeats):
        gc.collect()
        start = time.perf_counter_ns()
        for i in range(number):
            step(i)
        results.append((time.perf_counter_ns() - start) / number / 1000)
    return results


def measure_halves(
    capture: Capture, step: Callable[[int], object], repeats: int, number: int
) -> tuple[list[float], list[float]]:
    """Mean µs per capture of each half (request, finish), for each repeat."""
    engine = capture.sender._engine
    requests, finishes = [], []
    for _ in range(repeats):
        gc.collect()
        with engine.inbox_lock:  # the worker waits: only the request half runs here
            start = time.perf_counter_ns()
            for i in range(number):
                step(i)
            requests.append((time.perf_counter_ns() - start) / number / 1000)
        start = time.perf_counter_ns()
        engine.drain()
        finishes.append((time.perf_counter_ns() - start) / number / 1000)
    return requests, finishes


@contextlib.contextmanager
def local_collector() -> Iterator[str]:
    """A collector in its own process on a free loopback port; yields its URL."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        command = [sys.executable, "-m", "moesif_users_middleware", "collector"]
        command += ["--host", "127.0.0.1", "--port", str(port), "--db", f"{tmp}/users.db"]
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 20
            while True:
                with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port)):
                    break
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the collector did not start")
                time.sleep(0.05)
            yield f"http://127.0.0.1:{port}"
        finally:
            process.terminate()
            process.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=41)
    parser.add_argument("--number", type=int, default=2000)
    parser.add_argument("--users", type=int, default=500)
    parser.add_argument("--collector", action="store_true", help="deliver to a local collector")
    args = parser.parse_args()
    if args.collector:
        with local_collector() as url:
            run(args, url, flush_interval=0.2)
    else:
        run(args, UNUSED_URL, flush_interval=3600)


def run(args: argparse.Namespace, base_url: str, flush_interval: float) -> None:
    number = min(args.number, 4000)  # under the inbox bound: no inline finishing
    print(f"python {sys.version.split()[0]}, {args.repeats} repeats x {number} requests")
    for index, (name, extra) in enumerate(VARIANTS.items()):
        print(f"\n{name}")
        run_variant(args, base_url, flush_interval, f"bench-application-id-{index}", extra)


def run_variant(
    args: argparse.Namespace,
    base_url: str,
    flush_interval: float,
    application_id: str,
    extra: dict[str, Any],
) -> None:
    config, _ = build_config(
        {
            "application_id": application_id,
            "base_url": base_url,
            "skip": skip,
            "identify_user": identify_user,
            "identify_company": identify_company,
            "get_metadata": get_metadata,
            "flush_interval": flush_interval,
            "shutdown_timeout": 0,
            **extra,
        }
    )
    capture = Capture(config)
    environ = environ_for("/v1/orders")
    requests = [Request("/v1/orders", User(i)) for i in range(args.users)]
    users = len(requests)

    def full(i: int) -> object:
        return capture.capture(EnvironView(environ, requests[i % users], None))

    serial = iter(range(1 << 62))

    def changing(i: int) -> object:  # the user's metadata differs on every request
        request = requests[i % users]
        request.user.visits = next(serial)
        return capture.capture(EnvironView(environ, request, None))

    def view_only(i: int) -> object:
        return EnvironView(environ, requests[i % users], None)

    def empty(i: int) -> object:
        return None

    assert full(0), "the benchmark request was not queued"
    number = min(args.number, 4000)
    measure_halves(capture, changing, 3, number)  # warm caches (IP verdicts, sender buffer)
    loop = statistics.median(measure(empty, args.repeats, number))
    changed_request, changed_finish = measure_halves(capture, changing, args.repeats, number)
    measure_halves(capture, full, 1, number)  # each user's last capture is now this one
    repeat_request, repeat_finish = measure_halves(capture, full, args.repeats, number)
    whole = [a + b for a, b in zip(changed_request, changed_finish, strict=True)]
    rows = [
        ("request half (view + hooks + snapshot)", [v - loop for v in changed_request]),
        ("finish half, a changed capture", changed_finish),
        ("whole capture, changed (the two added)", [v - loop for v in whole]),
        ("request half, a repeated capture", [v - loop for v in repeat_request]),
        ("finish half, a repeated capture", repeat_finish),
        ("view construction only", [v - loop for v in measure(view_only, args.repeats, number)]),
    ]
    print(f"(loop overhead {loop:.3f} µs per iteration subtracted from the request half)")
    for name, values in rows:
        print(
            f"{name:42s} median {statistics.median(values):6.2f} µs"
            f"   best {min(values):6.2f}   worst {max(values):6.2f}"
        )
    sender = capture.sender
    assert sender is get_sender(application_id=application_id, base_url=base_url)
    if base_url == UNUSED_URL:
        # Nothing listens there: the exit flush would only warn about undelivered users.
        logging.getLogger("moesif_users_middleware").setLevel(logging.CRITICAL)
    else:
        assert sender.flush(timeout=30), "the collector did not receive everything"
    for kind in ("users", "companies"):
        stats = sender.stats(kind)
        print(f"sender, {kind}: " + ", ".join(f"{key}={value}" for key, value in stats.items()))


if __name__ == "__main__":
    main()
