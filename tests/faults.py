"""A real HTTP server on 127.0.0.1 whose answers are scripted per test (fault injection).

``FaultServer`` answers each request with the next scripted action, or with ``mode``
once the script is used up; it records every request in ``received``. Actions:

- ``Accept()``: ``201 {"records": n}`` (or, with ``forward_to``, the real collector's
  answer to the same request: the body is forwarded unchanged).
- ``Reply(status, body=..., headers=..., delay=0)``: any status, e.g. ``Reply(429,
  headers={"Retry-After": "1"})``; ``delay`` answers slowly.
- ``TooLarge(max_records)``: 413 for a batch of more than ``max_records``, else ``Accept``.
- ``Reset()``: close the connection with a TCP reset, no answer.
- ``Blackhole()``: read the request and never answer (until ``release()`` or the server
  stops; then the connection is closed without an answer).
- ``AcceptThenReset()``: forward the request (the collector stores it), then reset the
  connection: the client never learns that it was accepted.
- ``Truncate()``: a 201 status line and headers, part of the promised body, then close.
- ``Garbage(data)``: bytes that are not HTTP, then close.
- ``Drip(interval)``: a 201 answer whose body trickles in one byte per ``interval``.
- ``DripHeaders(interval)``: a 201 answer whose status line and headers trickle in.
- ``Cycle(*actions)``: the given actions in turn, one per request, round and round.

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
    "AcceptThenReset",
    "Action",
    "Blackhole",
    "Cycle",
    "Drip",
    "DripHeaders",
    "FaultServer",
    "Garbage",
    "Received",
    "Reply",
    "Reset",
    "TooLarge",
    "Truncate",
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
    forwarded: bool = False  # the body reached the real collector (whatever was answered)

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
        status, payload, headers = _forward(handler, request)
        handler.answer(request, status, payload, headers)


def _forward(handler: _Handler, request: Received) -> tuple[int, bytes, dict[str, str]]:
    """The real collector's answer to ``request`` (or a plain 201 without ``forward_to``)."""
    target = handler.fault_server.forward_to
    if target is None:
        return 201, json.dumps({"records": len(request.records)}).encode(), {}
    forwarded = {
        key: value
        for key, value in request.headers.items()
        if key in ("x-moesif-application-id", "content-type", "content-encoding")
    }
    response = handler.fault_server.http.post(
        target + request.path, content=request.raw_body, headers=forwarded
    )
    request.forwarded = True
    headers = {"Content-Type": response.headers.get("content-type", "application/json")}
    return response.status_code, response.content, headers


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
        _reset(handler)


def _reset(handler: _Handler) -> None:
    handler.close_connection = True
    connection = handler.connection
    connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    connection.close()


class Blackhole(Action):
    """Never answer; the connection is closed unanswered on ``release()`` or server stop."""

    def respond(self, handler: _Handler, request: Received) -> None:
        handler.fault_server.released.wait()
        handler.close_connection = True


class AcceptThenReset(Action):
    """Forward the request (it is stored), then reset the connection instead of answering."""

    def respond(self, handler: _Handler, request: Received) -> None:
        _forward(handler, request)
        _reset(handler)


class Truncate(Action):
    """Status line and headers of a 201, part of the promised body, then close."""

    def respond(self, handler: _Handler, request: Received) -> None:
        handler.close_connection = True
        handler.send_response(201)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", "100")
        handler.end_headers()
        handler.wfile.write(b'{"records": ')
        handler.wfile.flush()


@dataclass
class Garbage(Action):
    """Answer with bytes that are not HTTP, then close."""

    data: bytes = b"\x00\xffnot http at all\r\n\r\n"

    def respond(self, handler: _Handler, request: Received) -> None:
        handler.close_connection = True
        handler.wfile.write(self.data)
        handler.wfile.flush()


@dataclass
class Drip(Action):
    """A 201 whose ``size``-byte body arrives one byte per ``interval`` seconds (slowloris)."""

    interval: float
    size: int = 40

    def respond(self, handler: _Handler, request: Received) -> None:
        body = json.dumps({"records": len(request.records)}).encode().ljust(self.size)
        handler.send_response(201)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.flush()
        for index in range(len(body)):
            if handler.fault_server.stopped.wait(self.interval):
                handler.close_connection = True
                return
            handler.wfile.write(body[index : index + 1])
            handler.wfile.flush()
        request.status = 201


@dataclass
class DripHeaders(Action):
    """A 201 whose status line and headers arrive one byte per ``interval`` seconds."""

    interval: float

    def respond(self, handler: _Handler, request: Received) -> None:
        body = json.dumps({"records": len(request.records)}).encode()
        head = (
            "HTTP/1.1 201 Created\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        for index in range(len(head)):
            if handler.fault_server.stopped.wait(self.interval):
                handler.close_connection = True
                return
            handler.wfile.write(head[index : index + 1])
            handler.wfile.flush()
        handler.wfile.write(body)
        handler.wfile.flush()
        request.status = 201


class Cycle(Action):
    """The given actions in turn, one per request (thread-safe)."""

    def __init__(self, *actions: Action) -> None:
        if not actions:
            raise ValueError("Cycle needs at least one action")
        self.actions = actions
        self._next = 0
        self._lock = threading.Lock()

    def respond(self, handler: _Handler, request: Received) -> None:
        with self._lock:
            action = self.actions[self._next % len(self.actions)]
            self._next += 1
        action.respond(handler, request)


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
        self.released = threading.Event()  # set: blackholed requests are closed unanswered
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

    def release(self) -> None:
        """Close blackholed connections (current and future ones) without an answer."""
        self.released.set()

    def stop(self) -> None:
        self.stopped.set()
        self.released.set()
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
