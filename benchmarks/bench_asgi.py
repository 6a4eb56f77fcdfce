"""Per-request cost of the Starlette/FastAPI middleware, next to Moesif's own ``moesifasgi``.

Hello-world Starlette and FastAPI apps are called directly as ASGI apps in one event loop
with a minimal ``receive``/``send`` (no test client, no sockets), in four variants:

- ``bare``: the app alone;
- ``ours``: + ``MoesifUsersMiddleware`` with four hooks (identify_user, identify_company,
  get_metadata, skip) and the defaults for token, IP, user agent and campaign;
- ``moesifasgi``: + Moesif's ``MoesifMiddleware`` with the same four hooks (skipped with a
  message when the package is not installed; it is not a dependency of this project);
- ``basehttp``: + a no-op ``BaseHTTPMiddleware`` (a reference point);
- ``moesif_settings``: + ``MoesifUsersMiddleware(moesif_settings=...)`` reading
  moesifasgi's settings dict (the same four hooks): the drop-in path, alone;

and, in a second table, moesifasgi alone against moesifasgi + ours reading its settings
(``moesif_settings=``): what ours adds side by side with Moesif's middleware. A
yardstick in both tables, the same fixed plain-Python work after each response, shows
how much slower any code runs right after moesifasgi's ~400 µs of work (cold caches).

Both libraries send to a loopback sink that answers at once, so their background threads
run as in production. Variants are interleaved round by round; the added cost is the
median over rounds of (variant - bare). Each framework runs in its own child process.
Traffic rotates through 1,000 users:

- ``--traffic repeat`` (default): each user's requests are identical;
- ``--traffic changing``: every request carries ``x-seq: <n>`` (a number never sent
  before, added to the scope by the driver for all four alike) and ``get_metadata``
  returns it, so every request is a new update and none can be skipped as a repeat.

Three clocks per batch: wall time (``perf_counter``), this thread's CPU time
(``thread_time``: the request path alone, steady on a shared machine; the targets are
checked on it) and the whole process's CPU time (``process_time``: every thread, read
once the batch's background work is done: our sender flushed, the process idle). The
last one matters because ours finishes each capture in its sender thread
(``Sender.defer`` then ``Capture.finish``): thread CPU shows what the request pays,
process CPU the total work, the libraries' background threads and the in-process sink
included. Flushing after every batch sends more often than ours would (every 2 s), so
it coalesces less: an upper bound for ours. ``moesifasgi`` sends on a timer whatever
the traffic (100 events a second, the rest stays queued); that job lands in whichever
batch runs then, and medians leave it out. Run::

    python benchmarks/bench_asgi.py [--requests 300] [--rounds 100]
        [--traffic repeat|changing] [--json] [--framework starlette|fastapi]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import importlib.util
import json
import logging
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _harness import (
    TRAFFIC,
    TRAFFIC_HELP,
    Role,
    Variant,
    asgi_runner,
    asgi_scopes,
    measure,
    print_tables,
    start_sink,
    summarize,
    traffic_line,
)
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from moesif_users_middleware.sender import get_sender
from moesif_users_middleware.starlette import MoesifUsersMiddleware

APPLICATION_ID = "bench-application-id"
# Each drop-in variant has its own sender (one per application id), as one app would.
COMPAT_ID = "bench-compat"
SIDE_ID = "bench-side-by-side"
TARGET_ADDED_US = 15.0
TARGET_RATIO = 10.0


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


def get_metadata_seq(request: Request, response: Any) -> dict[str, Any]:
    """``get_metadata`` for changing traffic: the request's ``x-seq`` too."""
    return {"plan": "pro", "seats": 5, "seq": request.headers.get("x-seq")}


def skip(request: Request, response: Any) -> bool:
    return bool(request.scope["path"] == "/health")


class NoOp(BaseHTTPMiddleware):
    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        return await call_next(request)


class PassThrough:
    """A pure ASGI middleware that wraps ``send`` and does nothing else."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_wrapper(message: Message) -> None:
            await send(message)

        await self.app(scope, receive, send_wrapper)


class FixedWork(PassThrough):
    """After each response, the same plain Python work (dicts, tuples, hashing) every time.

    A yardstick: what it adds alone and what it adds beside moesifasgi tell how much
    slower any code runs right after moesifasgi's work (caches it left cold).
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)
        if scope["type"] == "http":
            headers = {name.decode(): value.decode() for name, value in scope["headers"]}
            shapes = [(name.upper(), len(value)) for name, value in headers.items()]
            total = 0
            for number in range(60):
                total += hash((number, shapes[number % len(shapes)]))
            scope["state"]["fixed_work"] = total


# Variant name -> (its role, the app, whether it is in the side-by-side table, the
# application id of our sender in it, to flush, or None).
Apps = dict[str, tuple[Role, Starlette, bool, str | None]]


def build_apps(make_app: Callable[[], Starlette], sink: str, traffic: str, with_peer: bool) -> Apps:
    """The variants of one framework."""
    metadata = get_metadata_seq if traffic == "changing" else get_metadata
    apps: Apps = {"bare app": ("bare", make_app(), False, None)}

    ours = make_app()
    ours.add_middleware(
        MoesifUsersMiddleware,
        application_id=APPLICATION_ID,
        base_url=sink,
        identify_user=identify_user,
        identify_company=identify_company,
        get_metadata=metadata,
        skip=skip,
    )
    apps["+ moesif_users_middleware (4 hooks)"] = ("ours", ours, False, APPLICATION_ID)

    if with_peer:
        # Not a dependency of this project (and untyped): imported only when measured.
        moesif_middleware = importlib.import_module("moesifasgi").MoesifMiddleware

        def settings(application_id: str) -> dict[str, Any]:
            return {
                "APPLICATION_ID": application_id,
                "BASE_URI": sink,
                "IDENTIFY_USER": identify_user,
                "IDENTIFY_COMPANY": identify_company,
                "GET_METADATA": metadata,
                "SKIP": skip,
            }

        theirs = make_app()
        theirs.add_middleware(moesif_middleware, settings=settings(APPLICATION_ID))
        apps["+ moesifasgi (4 hooks)"] = ("theirs", theirs, False, None)
        compat = make_app()
        compat.add_middleware(MoesifUsersMiddleware, moesif_settings=settings(COMPAT_ID))
        apps["+ ours (moesif_settings=, 4 hooks)"] = ("reference", compat, False, COMPAT_ID)
        # The second table: moesifasgi alone, then with ours beside it, one dict for both.
        alone = make_app()
        alone.add_middleware(moesif_middleware, settings=settings(SIDE_ID))
        apps["moesifasgi alone"] = ("bare", alone, True, None)
        both = make_app()
        both.add_middleware(MoesifUsersMiddleware, moesif_settings=settings(SIDE_ID))
        both.add_middleware(moesif_middleware, settings=settings(SIDE_ID))
        apps["moesifasgi + ours (moesif_settings=)"] = ("ours", both, True, SIDE_ID)
        # The floor there: any pure ASGI layer under BaseHTTPMiddleware costs this much.
        floor = make_app()
        floor.add_middleware(PassThrough)
        floor.add_middleware(moesif_middleware, settings=settings(SIDE_ID))
        apps["moesifasgi + no-op pure ASGI middleware"] = ("reference", floor, True, None)
        fixed = make_app()
        fixed.add_middleware(FixedWork)
        apps["+ fixed Python work (yardstick)"] = ("reference", fixed, False, None)
        fixed = make_app()
        fixed.add_middleware(FixedWork)
        fixed.add_middleware(moesif_middleware, settings=settings(SIDE_ID))
        apps["moesifasgi + fixed Python work (yardstick)"] = ("reference", fixed, True, None)

    basehttp = make_app()
    basehttp.add_middleware(NoOp)
    apps["+ no-op BaseHTTPMiddleware"] = ("reference", basehttp, False, None)
    return apps


def flush_ours(sink_url: str, application_id: str) -> Callable[[], None]:
    """Our captures finish in the sender's thread: make that (and the send) happen now."""

    def flush() -> None:
        if not get_sender(application_id=application_id, base_url=sink_url).flush(10):
            raise RuntimeError("our sender could not deliver to the sink")

    return flush


def verdicts(ratio: dict[str, float | None], added_ours: float) -> bool:
    """Print the targets' verdicts (on thread CPU); True if ours met its own."""
    met = added_ours <= TARGET_ADDED_US
    print(
        f"  ours adds {added_ours:.1f} µs thread CPU (target ≤ {TARGET_ADDED_US:.0f} µs): "
        f"{'PASS' if met else 'FAIL'}"
    )
    if ratio:
        thread = ratio["thread"]
        verdict = "PASS" if thread is None or thread >= TARGET_RATIO else "FAIL"
        shown = "n/a" if thread is None else f"{thread:.0f}x"
        print(
            f"  moesifasgi adds {shown} what ours adds in thread CPU "
            f"(target ≥ {TARGET_RATIO:.0f}x): {verdict}"
        )
    return met


FRAMEWORKS: dict[str, Callable[[], Starlette]] = {
    "starlette": starlette_app,
    "fastapi": fastapi_app,
}
TITLES = {"starlette": "Starlette", "fastapi": "FastAPI"}


def run_framework(name: str, requests: int, rounds: int, traffic: str, as_json: bool) -> bool:
    """Measure one framework in this process; True if our middleware met its target."""
    with_peer = importlib.util.find_spec("moesifasgi") is not None
    if not with_peer:
        print("moesifasgi is not installed: measuring without it (pip install moesifasgi)")
    # moesifasgi configures the root logger at INFO on construction; keep the output readable.
    logging.disable(logging.WARNING)
    sink = start_sink()
    loop = asyncio.new_event_loop()
    try:
        scopes = asgi_scopes()
        variants = []
        apps = build_apps(FRAMEWORKS[name], sink.url, traffic, with_peer)
        for label, (role, app, side, application_id) in apps.items():
            group = f"{name}-side" if side else name
            settle = None if application_id is None else flush_ours(sink.url, application_id)
            runner = asgi_runner(app, scopes, traffic, loop)
            variants.append(Variant(label, group, role, runner, settle))
        samples = measure(variants, requests, rounds)
        summary = summarize(variants, samples)
        titles = {name: TITLES[name], f"{name}-side": f"{TITLES[name]}, side by side"}
        print_tables(summary, titles)
        group = summary[name]
        ours = next(v for v in variants if v.role == "ours").name
        met = verdicts(group["theirs_over_ours"], group["variants"][ours]["thread"]["added_us"])
        if with_peer:
            side = summary[f"{name}-side"]["variants"]["moesifasgi + ours (moesif_settings=)"]
            added = side["thread"]["added_us"]
            met &= added <= TARGET_ADDED_US
            print(
                f"  ours beside moesifasgi (moesif_settings=) adds {added:.1f} µs thread CPU "
                f"(target ≤ {TARGET_ADDED_US:.0f} µs): "
                f"{'PASS' if added <= TARGET_ADDED_US else 'FAIL'}"
            )
        sender = get_sender(application_id=APPLICATION_ID, base_url=sink.url)
        print(f"  our sender: {sender.stats()}")
        print(f"  {sink.describe()}")
        if as_json:
            meta = {"traffic": traffic, "requests": requests, "rounds": rounds}
            print(json.dumps({**meta, "groups": summary}, indent=2))
        sender.shutdown()
    finally:
        loop.close()
        sink.stop()
    return met


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=300, help="requests per round")
    parser.add_argument("--rounds", type=int, default=100, help="rounds (variants interleaved)")
    parser.add_argument("--traffic", choices=TRAFFIC, default="repeat", help=TRAFFIC_HELP)
    parser.add_argument("--json", action="store_true", help="print the results as JSON too")
    parser.add_argument(
        "--framework",
        choices=sorted(FRAMEWORKS),
        help="measure only this one, in this process (default: each in a fresh child process)",
    )
    args = parser.parse_args(argv)
    if args.framework:
        met = run_framework(args.framework, args.requests, args.rounds, args.traffic, args.json)
        return 0 if met else 1
    # One child per framework: what one framework's run leaves in memory (moesifasgi keeps
    # every event it has not sent yet) does not slow the other one's garbage collections.
    print(f"Python {sys.version.split()[0]}")
    print(traffic_line(args.traffic, args.requests, args.rounds))
    failed = False
    for name in FRAMEWORKS:
        command = [sys.executable, __file__, "--framework", name, "--traffic", args.traffic]
        command += ["--requests", str(args.requests), "--rounds", str(args.rounds)]
        if args.json:
            command.append("--json")
        sys.stdout.flush()
        failed |= subprocess.run(command, check=False).returncode != 0
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
