"""Per-request cost of the Starlette/FastAPI middleware, next to Moesif's own ``moesifasgi``.

Hello-world Starlette and FastAPI apps are called directly as ASGI apps in one event loop
with a minimal ``receive``/``send`` (no test client, no sockets), in four variants:

- ``bare``: the app alone;
- ``ours``: + ``MoesifUsersMiddleware`` with four hooks (identify_user, identify_company,
  get_metadata, skip) and the defaults for token, IP, user agent and campaign;
- ``moesifasgi``: + Moesif's ``MoesifMiddleware`` with the same four hooks (skipped with a
  message when the package is not installed; it is not a dependency of this project);
- ``basehttp``: + a no-op ``BaseHTTPMiddleware`` (a reference point).

Both libraries send to a loopback sink that answers at once, so their background threads
run as in production. Variants are interleaved round by round; the added cost is the
median over rounds of (variant - bare). Each framework runs in its own child process.
Run::

    python benchmarks/bench_asgi.py [--requests 300] [--rounds 100]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib
import importlib.util
import logging
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from moesif_users_middleware.sender import get_sender
from moesif_users_middleware.starlette import MoesifUsersMiddleware

APPLICATION_ID = "bench-application-id"
USERS = 100  # distinct users the requests rotate through
TARGET_ADDED_US = 15.0
TARGET_RATIO = 10.0


# --- the sink both libraries send to --------------------------------------------------------
class _Sink(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _answer(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        if length:
            self.rfile.read(length)
        body = b"{}"
        self.send_response(201 if self.command == "POST" else 200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, format: str, *args: Any) -> None:
        return None


def start_sink() -> tuple[ThreadingHTTPServer, str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Sink)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="sink", daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


# --- the app and the four hooks --------------------------------------------------------------
async def hello(request: Request) -> Response:
    return PlainTextResponse("Hello, world!")


def starlette_app() -> Starlette:
    return Starlette(routes=[Route("/hello", hello)])


def fastapi_app() -> FastAPI:
    app = FastAPI()

    @app.get("/hello")
    async def fastapi_hello() -> PlainTextResponse:
        return PlainTextResponse("Hello, world!")

    return app


def identify_user(request: Request, response: Any) -> str | None:
    return request.headers.get("x-user-id")


def identify_company(request: Request, response: Any) -> str | None:
    return "acme"


def get_metadata(request: Request, response: Any) -> dict[str, Any]:
    return {"plan": "pro", "seats": 5}


def skip(request: Request, response: Any) -> bool:
    return bool(request.scope["path"] == "/health")


class NoOp(BaseHTTPMiddleware):
    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        return await call_next(request)


def build_variants(
    make_app: Callable[[], Starlette], sink: str, with_peer: bool
) -> dict[str, ASGIApp]:
    variants: dict[str, ASGIApp] = {"bare": make_app()}

    ours = make_app()
    ours.add_middleware(
        MoesifUsersMiddleware,
        application_id=APPLICATION_ID,
        base_url=sink,
        identify_user=identify_user,
        identify_company=identify_company,
        get_metadata=get_metadata,
        skip=skip,
    )
    variants["ours"] = ours

    if with_peer:
        # Not a dependency of this project (and untyped): imported only when measured.
        moesif_middleware = importlib.import_module("moesifasgi").MoesifMiddleware
        theirs = make_app()
        theirs.add_middleware(
            moesif_middleware,
            settings={
                "APPLICATION_ID": APPLICATION_ID,
                "BASE_URI": sink,
                "IDENTIFY_USER": identify_user,
                "IDENTIFY_COMPANY": identify_company,
                "GET_METADATA": get_metadata,
                "SKIP": skip,
            },
        )
        variants["moesifasgi"] = theirs

    basehttp = make_app()
    basehttp.add_middleware(NoOp)
    variants["basehttp"] = basehttp
    return variants


# --- driving an ASGI app directly ------------------------------------------------------------
def scope_templates() -> list[dict[str, Any]]:
    templates = []
    for n in range(USERS):
        headers = [
            (b"host", b"api.example.com"),
            (b"user-agent", b"bench-client/1.0"),
            (b"accept", b"*/*"),
            (b"authorization", f"Bearer token-{n}".encode()),
            (b"x-user-id", f"user-{n}".encode()),
        ]
        templates.append(
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
                "headers": headers,
                "client": ("203.0.113.7", 50000 + n),
                "server": ("127.0.0.1", 8000),
                "state": {},
            }
        )
    return templates


_REQUEST = {"type": "http.request", "body": b"", "more_body": False}
_DISCONNECT = {"type": "http.disconnect"}


def make_receive() -> Callable[[], Awaitable[Message]]:
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if sent:
            return _DISCONNECT
        sent = True
        return _REQUEST

    return receive


class Checker:
    """A ``send`` that keeps the last status (to check each variant answers 200)."""

    status = 0

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]


async def time_batch(
    app: ASGIApp, templates: list[dict[str, Any]], requests: int
) -> tuple[float, float]:
    """(wall, CPU) microseconds per request over ``requests`` sequential calls.

    CPU is this thread's CPU time: it leaves out time the machine gave to other processes
    (and to background threads), so it is steadier than wall time on a shared machine.
    """
    send = Checker()
    count = len(templates)
    wall = time.perf_counter_ns()
    cpu = time.thread_time_ns()
    for i in range(requests):
        await app(dict(templates[i % count]), make_receive(), send)
    cpu = time.thread_time_ns() - cpu
    wall = time.perf_counter_ns() - wall
    if send.status != 200:
        raise RuntimeError(f"unexpected status {send.status}")
    return wall / requests / 1e3, cpu / requests / 1e3


async def measure(
    variants: dict[str, ASGIApp], requests: int, rounds: int
) -> dict[str, list[tuple[float, float]]]:
    templates = scope_templates()
    for app in variants.values():  # warm up: builds middleware stacks, starts threads
        await time_batch(app, templates, max(200, requests // 10))
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, app in variants.items():
            gc.collect()
            results[name].append(await time_batch(app, templates, requests))
    return results


LABELS = {
    "bare": "bare app",
    "ours": "+ moesif_users_middleware (4 hooks)",
    "moesifasgi": "+ moesifasgi (4 hooks)",
    "basehttp": "+ no-op BaseHTTPMiddleware",
}


def report(framework: str, results: dict[str, list[tuple[float, float]]]) -> dict[str, float]:
    """Print the table; return the added CPU µs per variant."""
    bare = results["bare"]
    print(f"\n{framework}: median µs/request over {len(bare)} rounds (wall time | CPU time)")
    print(f"  {'variant':<37}{'wall':>8}{'added':>8}{'CPU':>10}{'added':>8}")
    added_cpu: dict[str, float] = {}
    for name, per_round in results.items():
        wall = statistics.median(w for w, _ in per_round)
        cpu = statistics.median(c for _, c in per_round)
        if name == "bare":
            print(f"  {LABELS[name]:<37}{wall:>8.1f}{'-':>8}{cpu:>10.1f}{'-':>8}")
            continue
        # Paired by round, so slow phases of the machine cancel out.
        added_wall = statistics.median(v[0] - b[0] for v, b in zip(per_round, bare, strict=True))
        added_cpu[name] = statistics.median(
            v[1] - b[1] for v, b in zip(per_round, bare, strict=True)
        )
        print(
            f"  {LABELS[name]:<37}{wall:>8.1f}{added_wall:>8.1f}{cpu:>10.1f}{added_cpu[name]:>8.1f}"
        )
    ours = added_cpu["ours"]
    verdict = "PASS" if ours <= TARGET_ADDED_US else "FAIL"
    print(f"  ours adds {ours:.1f} µs CPU (target ≤ {TARGET_ADDED_US:.0f} µs): {verdict}")
    if "moesifasgi" in added_cpu:
        ratio = added_cpu["moesifasgi"] / ours if ours > 0 else float("inf")
        verdict = "PASS" if ratio >= TARGET_RATIO else "FAIL"
        print(
            f"  moesifasgi adds {ratio:.0f}x what ours adds (target ≥ {TARGET_RATIO:.0f}x): "
            f"{verdict}"
        )
    return added_cpu


FRAMEWORKS: dict[str, Callable[[], Starlette]] = {
    "starlette": starlette_app,
    "fastapi": fastapi_app,
}


def run_framework(name: str, requests: int, rounds: int) -> bool:
    """Measure one framework in this process; True if our middleware met its target."""
    with_peer = importlib.util.find_spec("moesifasgi") is not None
    if not with_peer:
        print("moesifasgi is not installed: measuring without it (pip install moesifasgi)")
    # moesifasgi configures the root logger at INFO on construction; keep the output readable.
    logging.disable(logging.WARNING)
    sink, sink_url = start_sink()
    try:
        variants = build_variants(FRAMEWORKS[name], sink_url, with_peer)
        results = asyncio.run(measure(variants, requests, rounds))
        added = report({"starlette": "Starlette", "fastapi": "FastAPI"}[name], results)
        sender = get_sender(application_id=APPLICATION_ID, base_url=sink_url)
        sender.flush(5)
        print(f"  our sender: {sender.stats()}")
        sender.shutdown()
    finally:
        sink.shutdown()
    return added["ours"] <= TARGET_ADDED_US


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=300, help="requests per round")
    parser.add_argument("--rounds", type=int, default=100, help="rounds (variants interleaved)")
    parser.add_argument(
        "--framework",
        choices=sorted(FRAMEWORKS),
        help="measure only this one, in this process (default: each in a fresh child process)",
    )
    args = parser.parse_args(argv)
    if args.framework:
        return 0 if run_framework(args.framework, args.requests, args.rounds) else 1
    # One child per framework: what one framework's run leaves in memory (moesifasgi keeps
    # every event it has not sent yet) does not slow the other one's garbage collections.
    print(
        f"Python {sys.version.split()[0]}, {args.requests} requests x {args.rounds} rounds, "
        f"{USERS} users"
    )
    failed = False
    for name in FRAMEWORKS:
        command = [sys.executable, __file__, "--framework", name]
        command += ["--requests", str(args.requests), "--rounds", str(args.rounds)]
        failed |= subprocess.run(command, check=False).returncode != 0
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
