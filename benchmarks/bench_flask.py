"""Flask and plain WSGI: the per-request cost of ours beside Moesif's ``moesifwsgi``.

Six WSGI callables built in one process:

- a hello-world Flask app: bare, with ``MoesifUsers`` (four hooks: ``identify_user``,
  ``identify_company``, ``get_metadata``, ``skip``), and with ``moesifwsgi``'s
  ``MoesifMiddleware`` around ``app.wsgi_app`` (the same four hooks, in its signature);
- a hello-world plain WSGI function: bare, inside ``moesif_users_middleware.wsgi``'s
  ``MoesifUsersMiddleware`` (the same four hooks reading the WSGI environ, which is what
  that middleware hands hooks), and inside ``MoesifMiddleware``;
- with ``moesifwsgi`` installed, both again with ``MoesifUsersMiddleware(...,
  moesif_settings=...)`` reading moesifwsgi's settings dict (the drop-in path, its hooks
  in moesifwsgi's signature), and, in two more tables, ``moesifwsgi`` alone against
  ``moesifwsgi`` + ours reading the same dict: what ours adds side by side.

Each is called directly with a prebuilt environ (a fresh copy per request, as a server
makes) and a no-op ``start_response``; the body is iterated and closed, as a server
does. All six are measured in turn, round after round, so they share the machine's
noise. Both libraries send to a local HTTP sink that answers 200 at once. Traffic
rotates through 1,000 users:

- ``--traffic repeat`` (default): each user's requests are identical;
- ``--traffic changing``: every request carries ``X-Seq: <n>`` (a number never sent
  before, set by the driver for all six alike) and both libraries' ``get_metadata``
  return it, so every request is a new update and none can be skipped as a repeat.

Three clocks per batch: wall time (``perf_counter``; includes waiting for the GIL while
a background thread runs, and time the machine gives to other processes), the request
thread's CPU time (``thread_time``: the request path alone, steady on a busy machine),
and the whole process's CPU time (``process_time``: every thread, read once the batch's
background work is done). The last one matters because ours finishes each capture in
its sender thread (``Sender.defer`` then ``Capture.finish``): thread CPU shows what the
request pays, process CPU the total work, background sender threads of both libraries
and the in-process sink included. After each batch, before that clock stops, our
sender is flushed and moesifwsgi's queue waited out (its last partial batch leaves
after its 2 s batch timeout), then the process must be idle. Flushing after every batch
sends more often than ours would (every 2 s), so it coalesces less: an upper bound for
ours.

    python benchmarks/bench_flask.py [--requests 5000] [--rounds 15]
        [--traffic repeat|changing] [--json]

``moesifwsgi`` is only for this comparison (``pip install moesifwsgi``); without it the
script measures ours alone and says so.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Iterable
from importlib.metadata import version
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

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
from flask import Flask, Request, Response

from moesif_users_middleware.flask import MoesifUsers
from moesif_users_middleware.sender import get_sender
from moesif_users_middleware.wsgi import MoesifUsersMiddleware

Handler = Callable[..., Iterable[bytes]]
APPLICATION_ID = "bench-application-id"


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


def get_metadata_seq(request: Request, response: Response) -> dict[str, Any]:
    """``get_metadata`` for changing traffic: the request's ``X-Seq`` too."""
    user_id = request.headers.get("X-User-Id")
    return {
        "email": f"{user_id}@example.com",
        "plan": "pro",
        "status": response.status_code,
        "seq": request.headers.get("X-Seq"),
    }


def skip(request: Request, response: Response) -> bool:
    return request.path == "/health"


def our_hooks(traffic: str) -> dict[str, Any]:
    return {
        "identify_user": identify_user,
        "identify_company": identify_company,
        "get_metadata": get_metadata_seq if traffic == "changing" else get_metadata,
        "skip": skip,
    }


# --- the same four for the plain WSGI middleware: hook(environ, response) ------------------------
def environ_identify_user(request: dict[str, Any], response: Any) -> str | None:
    return request.get("HTTP_X_USER_ID")


def environ_identify_company(request: dict[str, Any], response: Any) -> str | None:
    return request.get("HTTP_X_COMPANY_ID")


def environ_get_metadata(request: dict[str, Any], response: Any) -> dict[str, Any]:
    user_id = request.get("HTTP_X_USER_ID")
    return {"email": f"{user_id}@example.com", "plan": "pro", "status": response.status_code}


def environ_get_metadata_seq(request: dict[str, Any], response: Any) -> dict[str, Any]:
    """``environ_get_metadata`` for changing traffic: the request's ``X-Seq`` too."""
    user_id = request.get("HTTP_X_USER_ID")
    return {
        "email": f"{user_id}@example.com",
        "plan": "pro",
        "status": response.status_code,
        "seq": request.get("HTTP_X_SEQ"),
    }


def environ_skip(request: dict[str, Any], response: Any) -> bool:
    return request.get("PATH_INFO") == "/health"


def environ_hooks(traffic: str) -> dict[str, Any]:
    return {
        "identify_user": environ_identify_user,
        "identify_company": environ_identify_company,
        "get_metadata": environ_get_metadata_seq if traffic == "changing" else environ_get_metadata,
        "skip": environ_skip,
    }


# --- the same four for moesifwsgi: hook(app, environ[, response_headers]) ----------------------
def their_identify_user(app: Any, environ: dict[str, Any], response_headers: Any = None) -> Any:
    return environ.get("HTTP_X_USER_ID")


def their_identify_company(app: Any, environ: dict[str, Any], response_headers: Any = None) -> Any:
    return environ.get("HTTP_X_COMPANY_ID")


def their_get_metadata(app: Any, environ: dict[str, Any]) -> dict[str, Any]:
    user_id = environ.get("HTTP_X_USER_ID")
    return {"email": f"{user_id}@example.com", "plan": "pro"}


def their_get_metadata_seq(app: Any, environ: dict[str, Any]) -> dict[str, Any]:
    """``their_get_metadata`` for changing traffic: the request's ``X-Seq`` too."""
    user_id = environ.get("HTTP_X_USER_ID")
    return {"email": f"{user_id}@example.com", "plan": "pro", "seq": environ.get("HTTP_X_SEQ")}


def their_skip(app: Any, environ: dict[str, Any]) -> bool:
    return bool(environ.get("PATH_INFO") == "/health")


def their_hooks(traffic: str) -> dict[str, Any]:
    return {
        "IDENTIFY_USER": their_identify_user,
        "IDENTIFY_COMPANY": their_identify_company,
        "GET_METADATA": their_get_metadata_seq if traffic == "changing" else their_get_metadata,
        "SKIP": their_skip,
    }


# --- the variants ------------------------------------------------------------------------------
def flusher(application_id: str, base_url: str) -> Callable[[], None]:
    """Our captures finish in the sender's thread: make that (and the send) happen now."""

    def flush() -> None:
        if not get_sender(application_id=application_id, base_url=base_url).flush(10):
            raise RuntimeError("our sender could not deliver to the sink")

    return flush


def drainer(middleware: Any) -> Callable[[], None]:
    """Wait until a ``moesifwsgi`` middleware has sent every event it was given.

    Its batcher thread hands a partial batch to its senders only once its batch timeout
    (2 s by default) has run out, so this waits that long after its queue empties.
    """
    pool = middleware.worker_pool

    def drain() -> None:
        deadline = time.monotonic() + 30
        while not pool.event_queue.empty() and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(pool.timeout + 0.05)
        while pool.batch_queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.005)

    return drain


def build_variants(sink_url: str, traffic: str) -> tuple[list[Variant], bool]:
    # Each of our two variants has its own sender (one per application id), as one app
    # would: sharing one, their captures of a user would never repeat each other.
    def ours(application_id: str, hooks: dict[str, Any]) -> dict[str, Any]:
        return {"application_id": application_id, "base_url": sink_url, **hooks}

    environs = wsgi_environs()

    def variant(
        name: str, role: Role, handler: Handler, settle: Callable[[], None] | None = None
    ) -> Variant:
        return Variant(name, name.split()[0], role, wsgi_runner(handler, environs, traffic), settle)

    with_ours = flask_app()
    MoesifUsers(with_ours, **ours("bench-flask", our_hooks(traffic)))
    variants = [
        variant("flask bare", "bare", flask_app()),
        variant("flask + MoesifUsers", "ours", with_ours, flusher("bench-flask", sink_url)),
    ]
    have_theirs = importlib.util.find_spec("moesifwsgi") is not None
    theirs: dict[str, Any] = {}
    if have_theirs:
        from moesifwsgi import MoesifMiddleware  # type: ignore[import-untyped]

        theirs = {"APPLICATION_ID": APPLICATION_ID, "BASE_URI": sink_url, **their_hooks(traffic)}
        with_theirs = flask_app()
        middleware = MoesifMiddleware(with_theirs.wsgi_app, theirs)
        with_theirs.wsgi_app = middleware  # type: ignore[method-assign]
        variants.append(variant("flask + moesifwsgi", "theirs", with_theirs, drainer(middleware)))
    variants.append(variant("wsgi bare", "bare", wsgi_hello))
    wrapped = MoesifUsersMiddleware(wsgi_hello, **ours("bench-wsgi", environ_hooks(traffic)))
    variants.append(
        variant("wsgi + MoesifUsersMiddleware", "ours", wrapped, flusher("bench-wsgi", sink_url))
    )
    if have_theirs:
        middleware = MoesifMiddleware(wsgi_hello, theirs)
        variants.append(variant("wsgi + moesifwsgi", "theirs", middleware, drainer(middleware)))
        variants += drop_in_variants(sink_url, traffic, variant)
    return variants, have_theirs


def drop_in_variants(sink_url: str, traffic: str, variant: Callable[..., Variant]) -> list[Variant]:
    """Ours reading moesifwsgi's settings: alone, and beside moesifwsgi (tables ``*-side``)."""
    from moesifwsgi import MoesifMiddleware

    def settings(application_id: str) -> dict[str, Any]:
        # One application id (so one sender of ours) per variant.
        return {"APPLICATION_ID": application_id, "BASE_URI": sink_url, **their_hooks(traffic)}

    def both(first: Callable[[], None], second: Callable[[], None]) -> Callable[[], None]:
        return lambda: (first(), second())[1]

    compat = flask_app()
    compat.wsgi_app = MoesifUsersMiddleware(  # type: ignore[method-assign]
        compat.wsgi_app, moesif_settings=settings("bench-flask-compat")
    )
    found = [
        variant(
            "flask + MoesifUsersMiddleware(moesif_settings=)",
            "reference",
            compat,
            flusher("bench-flask-compat", sink_url),
        ),
        variant(
            "wsgi + MoesifUsersMiddleware(moesif_settings=)",
            "reference",
            MoesifUsersMiddleware(wsgi_hello, moesif_settings=settings("bench-wsgi-compat")),
            flusher("bench-wsgi-compat", sink_url),
        ),
    ]
    environs = wsgi_environs()
    for group, make in (("flask", lambda: flask_app().wsgi_app), ("wsgi", lambda: wsgi_hello)):
        alone = MoesifMiddleware(make(), settings(f"bench-{group}-alone"))
        found.append(
            Variant(
                f"{group} + moesifwsgi alone",
                f"{group}-side",
                "bare",
                wsgi_runner(alone, environs, traffic),
                drainer(alone),
            )
        )
        side_id = f"bench-{group}-side"
        inner = MoesifUsersMiddleware(make(), moesif_settings=settings(side_id))
        outer = MoesifMiddleware(inner, settings(side_id))
        found.append(
            Variant(
                f"{group} + moesifwsgi + ours (moesif_settings=)",
                f"{group}-side",
                "ours",
                wsgi_runner(outer, environs, traffic),
                both(drainer(outer), flusher(side_id, sink_url)),
            )
        )
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--requests", type=int, default=5000, help="requests per measurement")
    parser.add_argument("--rounds", type=int, default=15, help="measurements per handler")
    parser.add_argument("--traffic", choices=TRAFFIC, default="repeat", help=TRAFFIC_HELP)
    parser.add_argument("--json", action="store_true", help="print the results as JSON too")
    args = parser.parse_args()

    # First, so moesifwsgi's own logging.basicConfig(level=INFO) changes nothing.
    logging.basicConfig(level=logging.WARNING)
    sink = start_sink()
    variants, have_theirs = build_variants(sink.url, args.traffic)
    if not have_theirs:
        print("moesifwsgi is not installed: measuring ours only (pip install moesifwsgi)")

    samples = measure(variants, args.requests, args.rounds)

    print(f"Flask {version('flask')}, Werkzeug {version('werkzeug')}, ", end="")
    if have_theirs:
        print(f"moesifwsgi {version('moesifwsgi')}, ", end="")
    print(f"Python {sys.version.split()[0]}")
    print(traffic_line(args.traffic, args.requests, args.rounds))
    summary = summarize(variants, samples)
    titles = {"flask": "Flask", "wsgi": "plain WSGI"}
    titles.update({f"{key}-side": f"{title}, side by side" for key, title in titles.items()})
    print_tables(summary, titles)
    print(sink.describe())
    if args.json:
        meta = {"traffic": args.traffic, "requests": args.requests, "rounds": args.rounds}
        print(json.dumps({**meta, "groups": summary}, indent=2))
    sink.stop()


if __name__ == "__main__":
    main()
    # moesifwsgi's scheduler threads would keep the process alive (and logging) forever.
    sys.stdout.flush()
    os._exit(0)
