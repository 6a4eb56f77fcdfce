"""A real HTTP server on 127.0.0.1 whose answers are scripted per test (fault injection).

``FaultServer`` answers each request with the next scripted action, or with ``mode``
once the script is used up; it records every request in ``received``. Actions:

- ``Accept()``: ``201 {"records": n}`` (or, with ``forward_to``, the real collector's
  answer to the same request: the body is forwarded unchanged).
- ``Reply(status, body=..., headers=..., delay=0)``: any status, e.g. ``Reply(429,
  headers={"Retry-After": "1"})``; ``delay`` answers slowly.
- ``TooLarge(max_records)``: 413 for a batch of more than ``max_records``, else ``Accept``.
- ``Reset()``: close the connection with a TCP reset, no answer.
- ``Blackhole()``: read the request and never answer (until the server stops).

Usage::

    with FaultServer(forward_to=collector.url) as server:
        server.script(Reply(500), Reply(429, headers={"Retry-After": "0.2"}))
        ... point the code under test at server.url ...
        assert [r.status for r in server.received] == [500, 429, 201]
"""

from __future__ import annotations

import gzip
import json
import socket
import struct
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

import httpx

__all__ = [
    "Accept",
    "Action",
    "Blackhole",
    "FaultServer",
    "Received",
    "Reply",
    "Reset",
    "TooLarge",
]


@dataclass
class Received:
    """One request as the server saw it; ``status`` is what it answered (``None``: nothing)."""

    method: str
    path: str
    headers: dict[str, str]
    raw_body: bytes
    time: float
    status: int | None = None

    @property
    def body(self) -> bytes:
        """The body, gunzipped when it was sent gzipped."""
        if self.headers.get("content-encoding", "").lower() == "gzip":
            return gzip.decompress(self.raw_body)
        return self.raw_body

    @property
    def json(self) -> Any:
        """The body parsed as JSON."""
        return json.loads(self.body)

    @property
    def records(self) -> list[dict[str, Any]]:
        """The users in the body (a batch array, or the one user of ``/v1/users``)."""
        payload = self.json
        return payload if isinstance(payload, list) else [payload]


class Action:
    """How to answer one request."""

    def respond(self, handler: _Handler, request: Received) -> None:
        raise NotImplementedError


@dataclass
class Reply(Action):
    """Answer ``status`` with ``body`` (JSON-encoded unless bytes) after ``delay`` seconds."""

    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0

    def respond(self, handler: _Handler, request: Received) -> None:
        if self.delay and handler.fault_server.stopped.wait(self.delay):
            return
        if isinstance(self.body, bytes):
            payload = self.body
        else:
            default = {"error": "fault", "message": f"scripted {self.status}"}
            payload = json.dumps(default if self.body is None else self.body).encode()
        handler.answer(request, self.status, payload, self.headers)


@dataclass
class Accept(Action):
    """Accept the request (forwarding it to the real collector when configured)."""

    delay: float = 0.0

    def respond(self, handler: _Handler, request: Received) -> None:
        if self.delay and handler.fault_server.stopped.wait(self.delay):
            return
        target = handler.fault_server.forward_to
        if target is None:
            count = len(request.records)
            handler.answer(request, 201, json.dumps({"records": count}).encode(), {})
            return
        forwarded = {
            key: value
            for key, value in request.headers.items()
            if key in ("x-moesif-application-id", "content-type", "content-encoding")
        }
        response = handler.fault_server.http.post(
            target + request.path, content=request.raw_body, headers=forwarded
        )
        headers = {"Content-Type": response.headers.get("content-type", "application/json")}
        handler.answer(request, response.status_code, response.content, headers)


@dataclass
class TooLarge(Action):
    """413 for batches of more than ``max_records`` users, otherwise ``Accept``."""

    max_records: int

    def respond(self, handler: _Handler, request: Received) -> None:
        if len(request.records) > self.max_records:
            Reply(413, {"error": "payload too large"}).respond(handler, request)
        else:
            Accept().respond(handler, request)


class Reset(Action):
    """Drop the connection with a TCP RST instead of answering."""

    def respond(self, handler: _Handler, request: Received) -> None:
        handler.close_connection = True
        connection = handler.connection
        connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        connection.close()


class Blackhole(Action):
    """Never answer (the connection stays open until the server stops)."""

    def respond(self, handler: _Handler, request: Received) -> None:
        handler.fault_server.stopped.wait()
        handler.close_connection = True


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    @property
    def fault_server(self) -> FaultServer:
        return self.server.fault_server

    def do_POST(self) -> None:
        self._handle()

    def do_GET(self) -> None:
        self._handle()

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        request = Received(
            method=self.command,
            path=self.path,
            headers={key.lower(): value for key, value in self.headers.items()},
            raw_body=raw,
            time=time.monotonic(),
        )
        action = self.fault_server.next_action(request)
        action.respond(self, request)

    def answer(
        self, request: Received, status: int, payload: bytes, headers: dict[str, str]
    ) -> None:
        request.status = status
        self.send_response(status)
        sent = {key.lower() for key in headers}
        for key, value in headers.items():
            self.send_header(key, value)
        if "content-type" not in sent:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    fault_server: FaultServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # resets and client timeouts are expected here


class FaultServer:
    """Scripted HTTP server; see the module docstring."""

    def __init__(self, *, forward_to: str | None = None, mode: Action | None = None) -> None:
        self.forward_to = forward_to.rstrip("/") if forward_to else None
        self.mode: Action = mode or Accept()
        self.received: list[Received] = []
        self.stopped = threading.Event()
        self.http = httpx.Client(timeout=10.0)
        self._script: deque[Action] = deque()
        self._lock = threading.Lock()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.fault_server = self
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def script(self, *actions: Action) -> FaultServer:
        """Queue actions for the next requests, in order."""
        with self._lock:
            self._script.extend(actions)
        return self

    def next_action(self, request: Received) -> Action:
        with self._lock:
            self.received.append(request)
            return self._script.popleft() if self._script else self.mode

    @property
    def accepted(self) -> list[Received]:
        """Requests answered 2xx."""
        return [r for r in self.received if r.status is not None and 200 <= r.status < 300]

    def accepted_records(self) -> list[dict[str, Any]]:
        """Every user record in requests answered 2xx, in arrival order."""
        return [record for request in self.accepted for record in request.records]

    def start(self) -> FaultServer:
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stopped.set()
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(5)
        self.http.close()

    def __enter__(self) -> FaultServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
