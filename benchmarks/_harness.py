"""What the adapter benchmarks share (``bench_flask``, ``bench_django``, ``bench_asgi``).

- :func:`start_sink`: a loopback HTTP sink both libraries send to, in a process of its
  own (so the process CPU clock counts only the app); it answers 200 at once and counts
  what arrives, by path.
- :func:`wsgi_environs` / :func:`asgi_scopes`: one request template per user (``USERS``
  of them); :func:`wsgi_runner` / :func:`asgi_runner` replay them in rotation, calling
  the app directly as a server would. In ``changing`` traffic they add ``X-Seq: <n>``,
  a number never used before, to every request, for every variant alike, so a hook that
  reads it makes each request's update new (nothing can be skipped as a repeat).
- :func:`measure`: variants interleaved round by round (so they share the machine's
  noise), each batch read on three clocks (:func:`measure_batch`).
- :func:`summarize` and :func:`print_tables`: medians, the paired added cost, and the
  ratio of Moesif's added cost to ours, per clock.
"""

from __future__ import annotations

import asyncio
import gc
import io
import json
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal

USERS = 1000  # distinct users the traffic rotates through
TRAFFIC = ("repeat", "changing")
TRAFFIC_HELP = (
    "repeat: each user's requests are identical; "
    "changing: every request carries a new X-Seq that get_metadata returns"
)
CLOCKS = ("wall", "thread", "process")
CLOCK_TITLES = {"wall": "wall", "thread": "thread CPU", "process": "process CPU"}

Role = Literal["bare", "ours", "theirs", "reference"]
Runner = Callable[[int, int], None]  # run(count, first_seq): ``count`` requests


# --- the sink ------------------------------------------------------------------------------------
_COUNTS_PATH = "/__sink/counts"


class _SinkHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _SinkServer

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        path = self.path.split("?", 1)[0]
        if path == _COUNTS_PATH:
            body = json.dumps(self.server.counts).encode()
        else:
            self.server.count(path, length)
            body = b"{}"
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _SinkServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _SinkHandler)
        self.counts: dict[str, list[int]] = {}  # path -> [requests, body bytes]
        self._lock = threading.Lock()

    def count(self, path: str, size: int) -> None:
        with self._lock:
            entry = self.counts.setdefault(path, [0, 0])
            entry[0] += 1
            entry[1] += size


def _serve_sink() -> None:
    """The sink process: print the port, then serve until terminated or orphaned."""
    server = _SinkServer()
    print(server.server_address[1], flush=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    sys.stdin.read()  # returns when the benchmark's end of the pipe closes, even if it died


class Sink:
    """A loopback HTTP server in a child process, answering 200 ``{}`` to everything and
    counting what arrives. It runs in its own process so that the benchmark process's
    CPU clock counts the app and the libraries only, not the server they send to."""

    def __init__(self) -> None:
        here = str(Path(__file__).resolve().parent)
        code = f"import sys; sys.path.insert(0, {here!r}); import _harness; _harness._serve_sink()"
        self._process = subprocess.Popen(
            [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        assert self._process.stdout is not None
        port = self._process.stdout.readline().strip()
        if not port:
            raise RuntimeError("the sink process did not start")
        self.url = f"http://127.0.0.1:{int(port)}"

    def describe(self) -> str:
        """What arrived so far, by path."""
        direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback
        with direct.open(self.url + _COUNTS_PATH, timeout=10) as answer:
            counts: dict[str, list[int]] = json.loads(answer.read())
        parts = [
            f"{path}: {n} requests, {size / 1024:.0f} KiB"
            for path, (n, size) in sorted(counts.items())
        ]
        return "sink received: " + ("; ".join(parts) or "nothing")

    def stop(self) -> None:
        self._process.terminate()
        self._process.wait(10)


def start_sink() -> Sink:
    """Start a :class:`Sink` (its own process); ``stop()`` stops it."""
    return Sink()


# --- request templates ---------------------------------------------------------------------------
def wsgi_environs(users: int = USERS) -> list[dict[str, Any]]:
    """One WSGI environ per user: GET /hello with user, company and Bearer token headers."""
    base = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": "/hello",
        "QUERY_STRING": "",
        "SCRIPT_NAME": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "CONTENT_LENGTH": "",
        "HTTP_HOST": "127.0.0.1:8000",
        "HTTP_USER_AGENT": "bench-client/1.0",
        "HTTP_ACCEPT": "*/*",
        "HTTP_X_FORWARDED_FOR": "198.51.100.23",
        "wsgi.errors": sys.stderr,
        "wsgi.url_scheme": "http",
        "wsgi.version": (1, 0),
        "wsgi.multithread": False,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }
    return [
        {
            **base,
            "HTTP_X_USER_ID": f"user-{number}",
            "HTTP_X_COMPANY_ID": f"company-{number % 50}",
            "HTTP_AUTHORIZATION": f"Bearer token-{number}",
        }
        for number in range(users)
    ]


def asgi_scopes(users: int = USERS) -> list[dict[str, Any]]:
    """One ASGI HTTP scope per user: GET /hello with user id and Bearer token headers."""
    return [
        {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.4"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": "/hello",
            "raw_path": b"/hello",
            "query_string": b"",
            "root_path": "",
            "headers": [
                (b"host", b"api.example.com"),
                (b"user-agent", b"bench-client/1.0"),
                (b"accept", b"*/*"),
                (b"authorization", f"Bearer token-{number}".encode()),
                (b"x-user-id", f"user-{number}".encode()),
            ],
            "client": ("203.0.113.7", 50000 + number),
            "server": ("127.0.0.1", 8000),
        }
        for number in range(users)
    ]


# --- replaying them ------------------------------------------------------------------------------
def wsgi_runner(
    handler: Callable[..., Iterable[bytes]], environs: Sequence[dict[str, Any]], traffic: str
) -> Runner:
    """Call a WSGI app as a server does: a fresh environ copy and input, body read and closed."""
    n = len(environs)
    changing = traffic == "changing"
    status = [""]

    def start_response(line: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        status[0] = line

    def run(count: int, seq: int) -> None:
        for i in range(count):
            environ = dict(environs[i % n])
            environ["wsgi.input"] = io.BytesIO(b"")
            if changing:
                environ["HTTP_X_SEQ"] = str(seq + i)
            body = handler(environ, start_response)
            for _ in body:
                pass
            close = getattr(body, "close", None)
            if close is not None:
                close()
        if not status[0].startswith("200"):
            raise RuntimeError(f"unexpected status {status[0]!r}")

    return run


_REQUEST = {"type": "http.request", "body": b"", "more_body": False}
_DISCONNECT = {"type": "http.disconnect"}


def _receive() -> Callable[[], Awaitable[dict[str, Any]]]:
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            return _DISCONNECT
        sent = True
        return _REQUEST

    return receive


def asgi_runner(
    app: Callable[..., Awaitable[None]],
    scopes: Sequence[dict[str, Any]],
    traffic: str,
    loop: asyncio.AbstractEventLoop,
) -> Runner:
    """Await an ASGI app in ``loop`` with a fresh scope copy and a minimal receive/send."""
    n = len(scopes)
    changing = traffic == "changing"
    status = [0]

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            status[0] = message["status"]

    async def drive(count: int, seq: int) -> None:
        for i in range(count):
            scope = dict(scopes[i % n])
            scope["state"] = {}
            if changing:
                scope["headers"] = [*scope["headers"], (b"x-seq", str(seq + i).encode())]
            await app(scope, _receive(), send)

    def run(count: int, seq: int) -> None:
        loop.run_until_complete(drive(count, seq))
        if status[0] != 200:
            raise RuntimeError(f"unexpected status {status[0]}")

    return run


# --- measuring -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Sample:
    """µs per request over one batch, on each clock."""

    wall: float
    thread: float
    process: float

    def clock(self, name: str) -> float:
        value: float = getattr(self, name)
        return value


@dataclass
class Variant:
    """One app configuration: a row of the table ``group``, measured by ``run``.

    ``settle`` (optional) makes the background work the batch left behind happen now,
    e.g. our sender's ``flush``; it runs on the process clock only.
    """

    name: str
    group: str
    role: Role
    run: Runner
    settle: Callable[[], None] | None = None


_IDLE_WINDOW_S = 0.01
_IDLE_CPU_NS = 500_000  # under 5 % of one core over the window counts as idle
_IDLE_MAX_S = 3.0


def wait_idle() -> None:
    """Sleep until this process's threads use (almost) no CPU, or ``_IDLE_MAX_S`` passed.

    On a busy machine a background thread waiting for a core looks idle too: run the
    benchmarks on a quiet one.
    """
    deadline = time.perf_counter() + _IDLE_MAX_S
    while time.perf_counter() < deadline:
        before = time.process_time_ns()
        time.sleep(_IDLE_WINDOW_S)
        if time.process_time_ns() - before < _IDLE_CPU_NS:
            return


def measure_batch(variant: Variant, count: int, seq: int) -> Sample:
    """Send ``count`` requests through ``variant`` and read the three clocks.

    Wall (``perf_counter_ns``) and the request thread's CPU (``thread_time_ns``) stop
    after the last request. The process's CPU (``process_time_ns``: every thread, so the
    libraries' sender threads) stops once the work the batch
    left behind is done: ``variant.settle()``, then :func:`wait_idle`. (The sink runs in a
    process of its own, so its work is not counted.)
    """
    process = time.process_time_ns()
    wall = time.perf_counter_ns()
    thread = time.thread_time_ns()
    variant.run(count, seq)
    thread = time.thread_time_ns() - thread
    wall = time.perf_counter_ns() - wall
    if variant.settle is not None:
        variant.settle()
    wait_idle()
    process = time.process_time_ns() - process
    return Sample(wall / count / 1e3, thread / count / 1e3, process / count / 1e3)


def measure(
    variants: Sequence[Variant], requests: int, rounds: int, warmup: int | None = None
) -> dict[str, list[Sample]]:
    """Warm every variant up, then ``rounds`` rounds of one batch per variant, in turn.

    Sequence numbers (``X-Seq`` in changing traffic) run on across batches and variants,
    so no request repeats an earlier one.
    """
    warmup = max(USERS, requests // 5) if warmup is None else warmup
    seq = 0
    for variant in variants:  # imports, caches, sender threads, the first update per user
        measure_batch(variant, warmup, seq)
        seq += warmup
    samples: dict[str, list[Sample]] = {variant.name: [] for variant in variants}
    for _ in range(rounds):
        for variant in variants:
            gc.collect()
            samples[variant.name].append(measure_batch(variant, requests, seq))
            seq += requests
    return samples


# --- reporting -----------------------------------------------------------------------------------
def summarize(
    variants: Sequence[Variant], samples: dict[str, list[Sample]]
) -> dict[str, dict[str, Any]]:
    """Per group: each variant's median µs/request and added µs per clock, and the ratios.

    "Added" is the median over rounds of (variant - bare) in the same round, so a slow
    phase of the machine cancels out; the ratio is Moesif's added cost over ours.
    """
    result: dict[str, dict[str, Any]] = {}
    for group in dict.fromkeys(v.group for v in variants):
        members = [v for v in variants if v.group == group]
        bare = next(v for v in members if v.role == "bare")
        rows: dict[str, dict[str, dict[str, float | None]]] = {}
        added: dict[str, dict[str, float]] = {}
        for variant in members:
            runs = samples[variant.name]
            row: dict[str, dict[str, float | None]] = {}
            for clock in CLOCKS:
                median = statistics.median(s.clock(clock) for s in runs)
                extra = None
                if variant is not bare:
                    extra = statistics.median(
                        s.clock(clock) - b.clock(clock)
                        for s, b in zip(runs, samples[bare.name], strict=True)
                    )
                    added.setdefault(variant.role, {})[clock] = extra
                row[clock] = {"median_us": median, "added_us": extra}
            rows[variant.name] = row
        ratio: dict[str, float | None] = {}
        if "ours" in added and "theirs" in added:
            for clock in CLOCKS:
                ours = added["ours"][clock]  # None: ours added nothing measurable
                ratio[clock] = added["theirs"][clock] / ours if ours > 0 else None
        result[group] = {"variants": rows, "theirs_over_ours": ratio}
    return result


def print_tables(summary: dict[str, dict[str, Any]], titles: dict[str, str]) -> None:
    """One table per group: µs/request and added µs per clock, then theirs/ours per clock."""
    width = max(len(name) for group in summary.values() for name in group["variants"]) + 2
    for group, data in summary.items():
        print(f"\n{titles.get(group, group)}")
        print(" " * width + "".join(f"{CLOCK_TITLES[c]:>18}" for c in CLOCKS))
        print(f"{'variant':<{width}}" + f"{'µs/req':>10}{'added':>8}" * len(CLOCKS))
        for name, row in data["variants"].items():
            cells = ""
            for clock in CLOCKS:
                extra = row[clock]["added_us"]
                cells += f"{row[clock]['median_us']:10.2f}"
                cells += f"{'-':>8}" if extra is None else f"{extra:8.2f}"
            print(f"{name:<{width}}{cells}")
        ratio = data["theirs_over_ours"]
        if ratio:
            label = "added: theirs / ours"
            cells = "".join(
                f"{'n/a':>18}" if ratio[c] is None else f"{ratio[c]:17.1f}x" for c in CLOCKS
            )
            print(f"{label:<{width}}{cells}")


def traffic_line(traffic: str, requests: int, rounds: int) -> str:
    what = {
        "repeat": "each user's requests identical",
        "changing": "a new X-Seq in every request, returned by get_metadata",
    }[traffic]
    return (
        f"{traffic} traffic ({USERS} users rotating; {what}); "
        f"{rounds} rounds x {requests} requests, medians"
    )
