"""Flask and plain WSGI: the per-request cost of ours beside Moesif's ``moesifwsgi``.

Six WSGI callables built in one process:

- a hello-world Flask app: bare, with ``MoesifUsers`` (four hooks: ``identify_user``,
  ``identify_company``, ``get_metadata``, ``skip``), and with ``moesifwsgi``'s
  ``MoesifMiddleware`` around ``app.wsgi_app`` (the same four hooks, in its signature);
- a hello-world plain WSGI function: bare, inside ``moesif_users_middleware.wsgi``'s
  ``MoesifUsersMiddleware`` (four hooks), and inside ``MoesifMiddleware``.

Each is called directly with a prebuilt environ (a fresh copy per request, as a server
makes) and a no-op ``start_response``; the body is iterated and closed, as a server
does. All six are measured in turn, round after round, so they share the machine's
noise. Both libraries send to a local HTTP sink that answers 200 at once. Traffic
rotates through 1,000 users.

Two clocks are read around every measurement: wall time (``perf_counter``; includes
waiting for the GIL while a background sender thread runs, and any time the machine
gives to other processes) and the request thread's CPU time (``thread_time``; what the
request path itself costs, steady on a busy machine). Both are reported.

    /work/venv/bin/python benchmarks/bench_flask.py [--requests 5000] [--rounds 15]

``moesifwsgi`` is only for this comparison (``pip install moesifwsgi``); without it the
script measures ours alone and says so.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import io
import json
import logging
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib.metadata import version
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from flask import Flask, Request, Response

from moesif_users_middleware.flask import MoesifUsers
from moesif_users_middleware.wsgi import MoesifUsersMiddleware

Handler = Callable[..., Iterable[bytes]]
APPLICATION_ID = "bench-application-id"
USERS = 1000  # distinct users the traffic rotates through


# --- the apps ---------------------------------------------------------------------------------
def flask_app() -> Flask:
    app = Flask(__name__)

    @app.get("/hello")
    def hello() -> str:
        return "Hello, world!"

    return app


def wsgi_hello(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "13")])
    return [b"Hello, world!"]


# --- our four hooks: hook(request, response), the request being werkzeug's/Flask's ---------
def identify_user(request: Request, response: Response) -> str | None:
    return request.headers.get("X-User-Id")


def identify_company(request: Request, response: Response) -> str | None:
    return request.headers.get("X-Company-Id")


def get_metadata(request: Request, response: Response) -> dict[str, Any]:
    user_id = request.headers.get("X-User-Id")
    return {"email": f"{user_id}@example.com", "plan": "pro", "status": response.status_code}


def skip(request: Request, response: Response) -> bool:
    return request.path == "/health"


OUR_HOOKS = {
    "identify_user": identify_user,
    "identify_company": identify_company,
    "get_metadata": get_metadata,
    "skip": skip,
}


# --- the same four for moesifwsgi: hook(app, environ[, response_headers]) ----------------------
def their_identify_user(app: Any, environ: dict[str, Any], response_headers: Any = None) -> Any:
    return environ.get("HTTP_X_USER_ID")


def their_identify_company(app: Any, environ: dict[str, Any], response_headers: Any = None) -> Any:
    return environ.get("HTTP_X_COMPANY_ID")


def their_get_metadata(app: Any, environ: dict[str, Any]) -> dict[str, Any]:
    user_id = environ.get("HTTP_X_USER_ID")
    return {"email": f"{user_id}@example.com", "plan": "pro"}


def their_skip(app: Any, environ: dict[str, Any]) -> bool:
    return bool(environ.get("PATH_INFO") == "/health")


THEIR_HOOKS = {
    "IDENTIFY_USER": their_identify_user,
    "IDENTIFY_COMPANY": their_identify_company,
    "GET_METADATA": their_get_metadata,
    "SKIP": their_skip,
}


# --- a loopback sink ----------------------------------------------------------------------------
class _Sink(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        body = b"{}"
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, format: str, *args: Any) -> None:
        pass


def start_sink() -> tuple[ThreadingHTTPServer, str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Sink)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="sink", daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


# --- driving the handlers ------------------------------------------------------------------------
def environs() -> list[dict[str, Any]]:
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
        for number in range(USERS)
    ]


def _start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
    return None


def run(handler: Handler, envs: list[dict[str, Any]], count: int) -> tuple[float, float]:
    """(wall, thread CPU) µs per request over ``count`` requests, as a server calls the app."""
    n = len(envs)
    empty = b""
    start_cpu = time.thread_time_ns()
    start = time.perf_counter_ns()
    for i in range(count):
        environ = dict(envs[i % n])
        environ["wsgi.input"] = io.BytesIO(empty)
        response = handler(environ, _start_response)
        for _ in response:
            pass
        close = getattr(response, "close", None)
        if close is not None:
            close()
    wall = time.perf_counter_ns() - start
    cpu = time.thread_time_ns() - start_cpu
    return wall / count / 1000, cpu / count / 1000


def build_handlers(sink_url: str) -> tuple[dict[str, Handler], bool]:
    ours = {"application_id": APPLICATION_ID, "base_url": sink_url, **OUR_HOOKS}
    bare = flask_app()
    with_ours = flask_app()
    MoesifUsers(with_ours, **ours)
    handlers: dict[str, Handler] = {
        "flask bare": bare,
        "flask + MoesifUsers": with_ours,
    }
    have_theirs = importlib.util.find_spec("moesifwsgi") is not None
    theirs: dict[str, Any] = {}
    if have_theirs:
        from moesifwsgi import MoesifMiddleware  # type: ignore[import-untyped]

        theirs = {"APPLICATION_ID": APPLICATION_ID, "BASE_URI": sink_url, **THEIR_HOOKS}
        with_theirs = flask_app()
        with_theirs.wsgi_app = MoesifMiddleware(with_theirs.wsgi_app, theirs)  # type: ignore[method-assign]
        handlers["flask + moesifwsgi"] = with_theirs
    handlers["wsgi bare"] = wsgi_hello
    handlers["wsgi + MoesifUsersMiddleware"] = MoesifUsersMiddleware(wsgi_hello, **ours)
    if have_theirs:
        handlers["wsgi + moesifwsgi"] = MoesifMiddleware(wsgi_hello, theirs)
    return handlers, have_theirs


def report(clock: str, medians: dict[str, float], have_theirs: bool) -> dict[str, Any]:
    """Print one clock's table; return its numbers."""
    print(f"\n{clock} time, median µs/request")
    print(f"{'handler':<32}{'µs/request':>12}{'added µs':>10}")
    result: dict[str, Any] = {"median_us": medians}
    for family in ("flask", "wsgi"):
        bare = medians[f"{family} bare"]
        for name, value in medians.items():
            if name.startswith(family + " "):
                added = "" if name.endswith(" bare") else f"{value - bare:10.2f}"
                print(f"{name:<32}{value:12.2f}{added}")
        ours_name = "flask + MoesifUsers" if family == "flask" else "wsgi + MoesifUsersMiddleware"
        ours = medians[ours_name] - bare
        result[f"{family}_ours_added_us"] = ours
        if have_theirs:
            theirs = medians[f"{family} + moesifwsgi"] - bare
            ratio = theirs / ours if ours > 0 else float("inf")
            print(f"  {family}: moesifwsgi adds {ratio:.1f}x what ours adds")
            result[f"{family}_theirs_added_us"] = theirs
            result[f"{family}_ratio"] = ratio
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--requests", type=int, default=5000, help="requests per measurement")
    parser.add_argument("--rounds", type=int, default=15, help="measurements per handler")
    parser.add_argument("--json", action="store_true", help="print the results as JSON too")
    args = parser.parse_args()

    # First, so moesifwsgi's own logging.basicConfig(level=INFO) changes nothing.
    logging.basicConfig(level=logging.WARNING)
    sink, sink_url = start_sink()
    handlers, have_theirs = build_handlers(sink_url)
    if not have_theirs:
        print("moesifwsgi is not installed: measuring ours only (pip install moesifwsgi)")

    envs = environs()
    for handler in handlers.values():  # warm up: imports, caches, sender threads
        run(handler, envs, max(USERS, args.requests // 5))
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in handlers}
    for _ in range(args.rounds):
        for name, handler in handlers.items():
            gc.collect()
            samples[name].append(run(handler, envs, args.requests))

    print(f"Flask {version('flask')}, Werkzeug {version('werkzeug')}, ", end="")
    if have_theirs:
        print(f"moesifwsgi {version('moesifwsgi')}, ", end="")
    print(f"Python {sys.version.split()[0]}; {args.rounds} rounds x {args.requests} requests")
    result: dict[str, Any] = {}
    for clock, index in (("wall", 0), ("thread CPU", 1)):
        medians = {
            name: statistics.median(s[index] for s in runs) for name, runs in samples.items()
        }
        result[clock] = report(clock, medians, have_theirs)
    if args.json:
        print(json.dumps(result, indent=2))
    sink.shutdown()


if __name__ == "__main__":
    main()
    # moesifwsgi's scheduler threads would keep the process alive (and logging) forever.
    sys.stdout.flush()
    os._exit(0)
