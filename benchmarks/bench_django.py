"""Django: the per-request cost of MoesifUsersMiddleware beside Moesif's ``moesifdjango``.

A hello-world Django view behind three WSGI handlers built in one process: no
middleware, ``MoesifUsersMiddleware`` with four hooks (``IDENTIFY_USER``,
``IDENTIFY_COMPANY``, ``GET_METADATA``, ``SKIP``), and ``moesifdjango``'s middleware with
the same four hooks. Each handler is called directly with a prebuilt environ and a no-op
``start_response``, the way a WSGI server calls it; the three are measured in turn,
round after round, so they share the machine's noise. Both middlewares send to a local
HTTP sink that answers 200 at once.

    /work/venv/bin/python benchmarks/bench_django.py [--requests 5000] [--rounds 15]

``moesifdjango`` is only for this comparison (``pip install moesifdjango``); without it
the script measures ours alone and says so.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import io
import json
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import django
from django.conf import settings
from django.http import HttpResponse
from django.urls import path

OURS = "moesif_users_middleware.django.MoesifUsersMiddleware"
THEIRS = "moesifdjango.middleware.moesif_middleware"
USERS = 1000  # distinct users the traffic rotates through


# --- the app and the four hooks (the same functions for both middlewares) ------------------
def hello(request: Any) -> HttpResponse:
    return HttpResponse(b"Hello, world!")


def identify_user(request: Any, response: Any) -> str | None:
    value: str | None = request.META.get("HTTP_X_USER_ID")
    return value


def identify_company(request: Any, response: Any) -> str | None:
    value: str | None = request.META.get("HTTP_X_COMPANY_ID")
    return value


def get_metadata(request: Any, response: Any) -> dict[str, Any]:
    user_id = request.META.get("HTTP_X_USER_ID")
    return {"email": f"{user_id}@example.com", "plan": "pro", "status": response.status_code}


def skip(request: Any, response: Any) -> bool:
    return bool(request.path == "/health")


HOOKS = {
    "IDENTIFY_USER": identify_user,
    "IDENTIFY_COMPANY": identify_company,
    "GET_METADATA": get_metadata,
    "SKIP": skip,
}


# --- a loopback sink ---------------------------------------------------------------------------
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


# --- driving the handlers -------------------------------------------------------------------------
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
        "wsgi.input": io.BytesIO(b""),
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


def run(handler: Callable[..., Iterable[bytes]], envs: list[dict[str, Any]], count: int) -> float:
    """µs per request over ``count`` requests (a fresh environ copy each, as a server makes)."""
    n = len(envs)
    start = time.perf_counter_ns()
    for i in range(count):
        response = handler(dict(envs[i % n]), _start_response)
        for _ in response:
            pass
        response.close()  # type: ignore[attr-defined]
    return (time.perf_counter_ns() - start) / count / 1000


def build_handler(middleware: list[str]) -> Callable[..., Iterable[bytes]]:
    from django.core.handlers.wsgi import WSGIHandler

    settings.MIDDLEWARE = middleware  # read once, when the handler loads its middleware
    return WSGIHandler()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=5000, help="requests per measurement")
    parser.add_argument("--rounds", type=int, default=15, help="measurements per handler")
    parser.add_argument("--json", action="store_true", help="print the results as JSON too")
    args = parser.parse_args()

    sink, sink_url = start_sink()
    settings.configure(
        DEBUG=False,
        SECRET_KEY="benchmark",
        ALLOWED_HOSTS=["*"],
        ROOT_URLCONF=__name__,
        INSTALLED_APPS=[],
        MIDDLEWARE=[],
        USE_TZ=True,
        LOGGING_CONFIG=None,
        MOESIF_USERS={"APPLICATION_ID": "bench-application-id", "BASE_URL": sink_url, **HOOKS},
        MOESIF_MIDDLEWARE={
            "APPLICATION_ID": "bench-application-id",
            "BASE_URI": sink_url,
            "LOCAL_DEBUG": False,
            **HOOKS,
        },
    )
    django.setup()

    handlers: dict[str, Callable[..., Iterable[bytes]]] = {
        "bare": build_handler([]),
        "+ moesif_users_middleware": build_handler([OURS]),
    }
    have_theirs = importlib.util.find_spec("moesifdjango") is not None
    if have_theirs:
        handlers["+ moesifdjango"] = build_handler([THEIRS])
    else:
        print("moesifdjango is not installed: measuring ours only (pip install moesifdjango)")

    envs = environs()
    for handler in handlers.values():  # warm up: imports, caches, sender threads
        run(handler, envs, max(USERS, args.requests // 5))
    samples: dict[str, list[float]] = {name: [] for name in handlers}
    for _ in range(args.rounds):
        for name, handler in handlers.items():
            gc.collect()
            samples[name].append(run(handler, envs, args.requests))

    medians = {name: statistics.median(values) for name, values in samples.items()}
    bare = medians["bare"]
    print(f"Django {django.get_version()}, Python {sys.version.split()[0]}, ", end="")
    print(f"{args.rounds} rounds x {args.requests} requests, median µs/request")
    best = {name: min(values) for name, values in samples.items()}
    print(f"{'handler':<28}{'µs/request':>12}{'added µs':>12}{'(fastest round)':>18}")
    for name, value in medians.items():
        added = "" if name == "bare" else f"{value - bare:12.2f}"
        print(f"{name:<28}{value:12.2f}{added:>12}{best[name]:18.2f}")
    ours = medians["+ moesif_users_middleware"] - bare
    result: dict[str, Any] = {"median_us": medians, "ours_added_us": ours}
    if have_theirs:
        theirs = medians["+ moesifdjango"] - bare
        ratio = theirs / ours if ours > 0 else float("inf")
        print(f"moesifdjango adds {ratio:.1f}x what moesif_users_middleware adds")
        result.update(theirs_added_us=theirs, ratio=ratio)
    if args.json:
        print(json.dumps(result, indent=2))
    sink.shutdown()


urlpatterns = [path("hello", hello)]

if __name__ == "__main__":
    main()
