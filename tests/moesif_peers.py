"""Moesif's own middlewares (moesifdjango, moesifwsgi, moesifasgi) in tests: a loopback
sink for their events and a guard that keeps every connection on this machine.

- :class:`EventSink`: a loopback HTTP server standing in for Moesif's API. It answers
  ``{}`` to their configuration and rules requests, keeps every event posted to
  ``/v1/events`` or ``/v1/events/batch`` (gzip or not), so a test reads the user id each
  middleware put on the event of a request, and passes user requests on to the real
  collector: both middlewares read one ``BASE_URI``, so this library's profiles (and
  Moesif's ``update_user`` calls) land in the collector through it. Companies posted to
  ``/v1/companies`` or ``/v1/companies/batch`` are kept here (``companies``).
- :func:`loopback_only`: while active, resolving or connecting to any address that is not
  loopback raises, in every thread (their background jobs included), so nothing of
  theirs can reach the internet whatever their defaults.
- :func:`point_at`: sets ``moesifapi``'s process-wide base URI to the sink, so their
  background jobs started by earlier tests talk to a sink too.
- :func:`stop_background_jobs`: stops the schedulers their middlewares started, which
  would otherwise keep firing (and logging errors) while the interpreter exits.
"""

from __future__ import annotations

import gc
import gzip
import ipaddress
import json
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import httpx

__all__ = ["EventSink", "loopback_only", "point_at", "stop_background_jobs"]


_FORWARDED = ("/v1/users",)
_COMPANIES = ("/v1/companies", "/v1/companies/batch")
_FORWARDED_HEADERS = ("Content-Type", "Content-Encoding", "X-Moesif-Application-Id")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: EventSink

    def do_GET(self) -> None:
        if self.path.startswith(_FORWARDED):
            self._forward(b"")
        else:
            self._answer(b"{}")

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if self.path.startswith(_FORWARDED):
            self._forward(raw)
            return
        body = gzip.decompress(raw) if self.headers.get("Content-Encoding") == "gzip" else raw
        path = urlsplit(self.path).path
        if path in ("/v1/events", "/v1/events/batch", *_COMPANIES) and body:
            payload = json.loads(body)
            records = payload if isinstance(payload, list) else [payload]
            if path in _COMPANIES:
                self.server.companies.extend(records)
            else:
                self.server.add(records)
        self._answer(b"{}")

    def _forward(self, body: bytes) -> None:
        headers = {name: self.headers[name] for name in _FORWARDED_HEADERS if self.headers[name]}
        answer = httpx.request(
            self.command, self.server.collector_url + self.path, content=body, headers=headers
        )
        self._answer(answer.content, answer.status_code)

    def _answer(self, body: bytes, status: int = 200) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class EventSink(ThreadingHTTPServer):
    """A stand-in for Moesif's API on 127.0.0.1 that keeps the events it receives."""

    daemon_threads = True

    def __init__(self, collector_url: str) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        self.collector_url = collector_url
        self.companies: list[dict[str, Any]] = []
        self._events: list[dict[str, Any]] = []
        self._cond = threading.Condition()
        threading.Thread(target=self.serve_forever, name="event-sink", daemon=True).start()

    def add(self, events: list[dict[str, Any]]) -> None:
        with self._cond:
            self._events.extend(events)
            self._cond.notify_all()

    def events_for(self, marker: str, count: int, timeout: float = 15.0) -> list[dict[str, Any]]:
        """The events whose request URI contains ``marker``, once ``count`` have arrived."""
        deadline = time.monotonic() + timeout

        def found() -> list[dict[str, Any]]:
            return [e for e in self._events if marker in e.get("request", {}).get("uri", "")]

        with self._cond:
            while len(found()) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(
                        f"{len(found())} of {count} events for {marker!r} reached the sink"
                    )
                self._cond.wait(remaining)
            return found()

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


def point_at(url: str) -> None:
    """Point ``moesifapi``'s process-wide base URI at ``url`` (their jobs read it)."""
    from moesifapi.configuration import Configuration

    Configuration.BASE_URI = url


def stop_background_jobs() -> None:
    """Shut down every running APScheduler scheduler (theirs start several, never stopped)."""
    module = sys.modules.get("apscheduler.schedulers.base")
    if module is None:
        return
    for candidate in gc.get_objects():
        # type(), not isinstance(): the latter would evaluate Django's lazy objects.
        if issubclass(type(candidate), module.BaseScheduler) and candidate.running:
            candidate.remove_all_jobs()  # first, so none is submitted while it shuts down
            candidate.shutdown(wait=False)


def _loopback(host: object) -> bool:
    if not isinstance(host, str):
        return False
    if host in ("localhost", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


@contextmanager
def loopback_only() -> Iterator[None]:
    """Refuse (in every thread) name lookups and connections to non-loopback hosts."""
    real_getaddrinfo = socket.getaddrinfo
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host is not None and not _loopback(host):
            raise OSError(f"tests stay on loopback: lookup of {host!r} refused")
        return real_getaddrinfo(host, *args, **kwargs)

    def guarded(real: Callable[..., Any]) -> Callable[..., Any]:
        def connect(self: socket.socket, address: Any) -> Any:
            if self.family in (socket.AF_INET, socket.AF_INET6) and not _loopback(address[0]):
                raise OSError(f"tests stay on loopback: connection to {address!r} refused")
            return real(self, address)

        return connect

    socket.getaddrinfo = getaddrinfo  # type: ignore[assignment]
    socket.socket.connect = guarded(real_connect)  # type: ignore[method-assign]
    socket.socket.connect_ex = guarded(real_connect_ex)  # type: ignore[method-assign]
    try:
        yield
    finally:
        socket.getaddrinfo = real_getaddrinfo  # type: ignore[assignment]
        socket.socket.connect = real_connect  # type: ignore[method-assign]
        socket.socket.connect_ex = real_connect_ex  # type: ignore[method-assign]
