"""Django: the per-request cost of MoesifUsersMiddleware beside Moesif's ``moesifdjango``.

A hello-world Django view behind three WSGI handlers built in one process: no
middleware, ``MoesifUsersMiddleware`` with four hooks (``IDENTIFY_USER``,
``IDENTIFY_COMPANY``, ``GET_METADATA``, ``SKIP``), and ``moesifdjango``'s middleware with
the same four hooks; with ``moesifdjango`` installed, also ``MoesifUsersMiddleware`` reading
``MOESIF_MIDDLEWARE`` (no ``MOESIF_USERS``: the drop-in path) and, in a second table,
``moesifdjango`` alone against ``moesifdjango`` + ours reading the same
``MOESIF_MIDDLEWARE``: what ours adds side by side. Each handler is called directly with a prebuilt environ (a fresh
copy per request) and a no-op ``start_response``, the way a WSGI server calls it; the
three are measured in turn, round after round, so they share the machine's noise. Both
middlewares send to a local HTTP sink that answers 200 at once. Traffic rotates through
1,000 users:

- ``--traffic repeat`` (default): each user's requests are identical;
- ``--traffic changing``: every request carries ``X-Seq: <n>`` (a number never sent
  before, set by the driver for all three alike) and ``GET_METADATA`` returns it, so
  every request is a new update and none can be skipped as a repeat.

Three clocks per batch: wall time (``perf_counter``), the request thread's CPU time
(``thread_time``: the request path alone, steady on a busy machine) and the whole
process's CPU time (``process_time``: every thread, read once the batch's background
work is done: our sender flushed, the process idle). The last one matters because ours
finishes each capture in its sender thread (``Sender.defer`` then ``Capture.finish``):
thread CPU shows what the request pays, process CPU the total work, the libraries'
background threads and the in-process sink included. Flushing after every batch sends
more often than ours would (every 2 s), so it coalesces less: an upper bound for ours.
``moesifdjango`` sends on a timer whatever the traffic (25 events every 2 s, the rest
stays queued); that job lands in whichever batch runs then, and medians leave it out.

    python benchmarks/bench_django.py [--requests 5000] [--rounds 15]
        [--traffic repeat|changing] [--json]

``moesifdjango`` is only for this comparison (``pip install moesifdjango``); without it
the script measures ours alone and says so.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from collections.abc import Callable, Iterable
from importlib.metadata import version
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import django
from _harness import (
    TRAFFIC,
    TRAFFIC_HELP,
    Role,
    Variant,
    measure,
    print_tables,
    start_sink,
    summarize,
    traffic_line,
    wsgi_environs,
    wsgi_runner,
)
from django.conf import settings
from django.http import HttpResponse
from django.urls import path

from moesif_users_middleware.sender import get_sender

APPLICATION_ID = "bench-application-id"
OURS = "moesif_users_middleware.django.MoesifUsersMiddleware"
THEIRS = "moesifdjango.middleware.moesif_middleware"


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


def get_metadata_seq(request: Any, response: Any) -> dict[str, Any]:
    """``get_metadata`` for changing traffic: the request's ``X-Seq`` too."""
    meta = request.META
    return {
        "email": f"{meta.get('HTTP_X_USER_ID')}@example.com",
        "plan": "pro",
        "status": response.status_code,
        "seq": meta.get("HTTP_X_SEQ"),
    }


def skip(request: Any, response: Any) -> bool:
    return bool(request.path == "/health")


def hooks(traffic: str) -> dict[str, Any]:
    return {
        "IDENTIFY_USER": identify_user,
        "IDENTIFY_COMPANY": identify_company,
        "GET_METADATA": get_metadata_seq if traffic == "changing" else get_metadata,
        "SKIP": skip,
    }


# --- the handlers ------------------------------------------------------------------------------
def build_handler(
    middleware: list[str], moesif_middleware_id: str | None = None
) -> Callable[..., Iterable[bytes]]:
    """A WSGI handler with ``middleware``; with ``moesif_middleware_id``, ours reads
    ``MOESIF_MIDDLEWARE`` (with that application id) instead of ``MOESIF_USERS``."""
    from django.core.handlers.wsgi import WSGIHandler

    # Read once, when the handler loads its middleware.
    settings.MIDDLEWARE = middleware
    if moesif_middleware_id is None:
        return WSGIHandler()
    ours, theirs = settings.MOESIF_USERS, settings.MOESIF_MIDDLEWARE
    settings.MOESIF_USERS = None
    settings.MOESIF_MIDDLEWARE = {**theirs, "APPLICATION_ID": moesif_middleware_id}
    try:
        return WSGIHandler()
    finally:
        settings.MOESIF_USERS, settings.MOESIF_MIDDLEWARE = ours, theirs


def flush_ours(sink_url: str, application_id: str = APPLICATION_ID) -> Callable[[], None]:
    """Our captures finish in the sender's thread: make that (and the send) happen now."""

    def flush() -> None:
        if not get_sender(application_id=application_id, base_url=sink_url).flush(10):
            raise RuntimeError("our sender could not deliver to the sink")

    return flush


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--requests", type=int, default=5000, help="requests per measurement")
    parser.add_argument("--rounds", type=int, default=15, help="measurements per handler")
    parser.add_argument("--traffic", choices=TRAFFIC, default="repeat", help=TRAFFIC_HELP)
    parser.add_argument("--json", action="store_true", help="print the results as JSON too")
    args = parser.parse_args()

    sink = start_sink()
    settings.configure(
        DEBUG=False,
        SECRET_KEY="benchmark",
        ALLOWED_HOSTS=["*"],
        ROOT_URLCONF=__name__,
        INSTALLED_APPS=[],
        MIDDLEWARE=[],
        USE_TZ=True,
        LOGGING_CONFIG=None,
        MOESIF_USERS={
            "APPLICATION_ID": APPLICATION_ID,
            "BASE_URL": sink.url,
            **hooks(args.traffic),
        },
        MOESIF_MIDDLEWARE={
            "APPLICATION_ID": APPLICATION_ID,
            "BASE_URI": sink.url,
            "LOCAL_DEBUG": False,
            **hooks(args.traffic),
        },
    )
    django.setup()

    environs = wsgi_environs()

    def variant(name: str, role: Role, middleware: list[str]) -> Variant:
        run = wsgi_runner(build_handler(middleware), environs, args.traffic)
        return Variant(name, "django", role, run, flush_ours(sink.url) if role == "ours" else None)

    variants = [
        variant("bare", "bare", []),
        variant("+ moesif_users_middleware", "ours", [OURS]),
    ]
    have_theirs = importlib.util.find_spec("moesifdjango") is not None
    if have_theirs:
        variants.append(variant("+ moesifdjango", "theirs", [THEIRS]))
        # The drop-in path, alone and beside moesifdjango (one sender of ours each).
        compat = build_handler([OURS], "bench-compat")
        variants.append(
            Variant(
                "+ ours (MOESIF_MIDDLEWARE)",
                "django",
                "reference",
                wsgi_runner(compat, environs, args.traffic),
                flush_ours(sink.url, "bench-compat"),
            )
        )
        alone = build_handler([THEIRS], "bench-side")
        both = build_handler([THEIRS, OURS], "bench-side")
        variants += [
            Variant(
                "moesifdjango alone",
                "django-side",
                "bare",
                wsgi_runner(alone, environs, args.traffic),
            ),
            Variant(
                "moesifdjango + ours (MOESIF_MIDDLEWARE)",
                "django-side",
                "ours",
                wsgi_runner(both, environs, args.traffic),
                flush_ours(sink.url, "bench-side"),
            ),
        ]
    else:
        print("moesifdjango is not installed: measuring ours only (pip install moesifdjango)")

    samples = measure(variants, args.requests, args.rounds)

    print(f"Django {django.get_version()}, ", end="")
    if have_theirs:
        print(f"moesifdjango {version('moesifdjango')}, ", end="")
    print(f"Python {sys.version.split()[0]}")
    print(traffic_line(args.traffic, args.requests, args.rounds))
    summary = summarize(variants, samples)
    print_tables(summary, {"django": "Django", "django-side": "Django, side by side"})
    print(sink.describe())
    if args.json:
        meta = {"traffic": args.traffic, "requests": args.requests, "rounds": args.rounds}
        print(json.dumps({**meta, "groups": summary}, indent=2))
    sink.stop()


urlpatterns = [path("hello", hello)]

if __name__ == "__main__":
    main()
