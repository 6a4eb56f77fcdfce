"""A total time limit for one HTTP request (connect, send and the whole answer).

httpx timeouts bound each socket operation, not the request: an answer trickling one
byte per 0.1 s never trips a 10 s read timeout. ``Deadline`` is the limit of one
request. ``BodyReader`` keeps at most ``MAX_BODY`` bytes of an answer and fails once
the deadline has passed. For the transport the client builds itself,
:class:`DeadlineTransport` also caps every socket read and write at the time left, so a
trickle of headers, or one read blocked at the deadline, ends on time too.
"""

from __future__ import annotations

import contextlib
import ssl
import time
import typing
from collections.abc import AsyncIterable, Iterable
from contextvars import ContextVar
from dataclasses import dataclass

import httpcore
import httpx

__all__ = [
    "MAX_BODY",
    "BodyReader",
    "Deadline",
    "DeadlineTransport",
    "active_deadline",
    "deadline_transport",
]

MAX_BODY = 64 * 1024
# A socket timeout capped at the time left fires at (not after) the deadline; the clock
# read just afterwards may still be a hair early.
_SLACK = 0.005


@dataclass(frozen=True)
class Deadline:
    """The end of one request, ``seconds`` after it started (monotonic clock)."""

    seconds: float
    at: float

    @classmethod
    def start(cls, seconds: float) -> Deadline:
        """A deadline ``seconds`` from now."""
        return cls(seconds, time.monotonic() + seconds)

    def left(self) -> float:
        """Seconds until the deadline (negative once it has passed)."""
        return self.at - time.monotonic()

    def passed(self) -> bool:
        """Whether the deadline has (about) passed."""
        return self.left() <= _SLACK

    def message(self) -> str:
        """Why the request was abandoned (says nothing about the request's content)."""
        return f"Users API answer took longer than {_seconds(self.seconds)} s"


active_deadline: ContextVar[Deadline | None] = ContextVar(
    "moesif_users_request_deadline", default=None
)
"""The deadline of the request running in this thread or task (``None``: no limit)."""


def _seconds(value: float) -> str:
    return f"{value:.3f}".rstrip("0").rstrip(".")


class BodyReader:
    """Collects the first ``MAX_BODY`` bytes of an answer, checking ``deadline`` per chunk."""

    def __init__(self, deadline: Deadline | None) -> None:
        self.deadline = deadline
        self._parts: list[bytes] = []
        self._size = 0

    def feed(self, chunk: bytes) -> bool:
        """Keep ``chunk``; ``False`` once enough was read (stop reading, drop the rest).

        Raises ``httpx.ReadTimeout`` when the chunk came after the deadline.
        """
        if self.deadline is not None and self.deadline.passed():
            raise httpx.ReadTimeout(self.deadline.message())
        self._parts.append(chunk)
        self._size += len(chunk)
        return self._size < MAX_BODY

    def read_all(self, chunks: Iterable[bytes]) -> bytes:
        """Feed ``chunks`` until they end or enough was read; the collected body."""
        for chunk in chunks:
            if not self.feed(chunk):
                break
        return self.body()

    async def aread_all(self, chunks: AsyncIterable[bytes]) -> bytes:
        """``read_all`` for an async stream of chunks."""
        async for chunk in chunks:
            if not self.feed(chunk):
                break
        return self.body()

    def body(self) -> bytes:
        """The bytes kept so far (at most ``MAX_BODY``)."""
        return b"".join(self._parts)[:MAX_BODY]


def _until_deadline(timeout: float | None, error: type[httpcore.TimeoutException]) -> float | None:
    """``timeout`` capped at the time left before the active deadline."""
    deadline = active_deadline.get()
    if deadline is None:
        return timeout
    left = deadline.left()
    if left <= 0:
        raise error(deadline.message())
    return left if timeout is None else min(timeout, left)


# The two wrappers below follow httpcore's NetworkStream / NetworkBackend interfaces by
# duck typing: those base classes are not public in every httpcore that httpx>=0.24 allows.
class _DeadlineStream:
    """A connection whose every read and write ends by the active deadline."""

    def __init__(self, stream: typing.Any) -> None:
        self._stream = stream

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        data: bytes = self._stream.read(max_bytes, _until_deadline(timeout, httpcore.ReadTimeout))
        return data

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, _until_deadline(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._stream.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> _DeadlineStream:
        limit = _until_deadline(timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(self._stream.start_tls(ssl_context, server_hostname, limit))

    def get_extra_info(self, info: str) -> typing.Any:
        return self._stream.get_extra_info(info)


class _DeadlineBackend:
    """Opens ``_DeadlineStream`` connections through another backend."""

    def __init__(self, backend: typing.Any) -> None:
        self._backend = backend

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: typing.Iterable[typing.Any] | None = None,
    ) -> _DeadlineStream:
        limit = _until_deadline(timeout, httpcore.ConnectTimeout)
        stream = self._backend.connect_tcp(host, port, limit, local_address, socket_options)
        return _DeadlineStream(stream)

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: typing.Iterable[typing.Any] | None = None,
    ) -> _DeadlineStream:
        limit = _until_deadline(timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(self._backend.connect_unix_socket(path, limit, socket_options))

    def sleep(self, seconds: float) -> None:
        self._backend.sleep(seconds)


class DeadlineTransport(httpx.BaseTransport):
    """httpx's network transport, built on public parts only, honouring ``active_deadline``.

    An ``httpcore.ConnectionPool`` whose network backend caps every connect, read and
    write at the time left (``ConnectionPool(network_backend=...)`` and
    ``httpx.BaseTransport`` are both public API), so a trickle of headers, or one read
    blocked at the deadline, ends on time. Requests and answers are translated the way
    ``httpx.HTTPTransport`` translates them, httpcore's errors into httpx's.
    """

    def __init__(self, max_connections: int = 10) -> None:
        self._pool = httpcore.ConnectionPool(
            ssl_context=httpx.create_ssl_context(),
            max_connections=max_connections,
            max_keepalive_connections=max_connections,
            network_backend=typing.cast(
                "httpcore.NetworkBackend", _DeadlineBackend(httpcore.SyncBackend())
            ),
        )

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        core_request = httpcore.Request(
            method=request.method,
            url=httpcore.URL(
                scheme=url.raw_scheme, host=url.raw_host, port=url.port, target=url.raw_path
            ),
            headers=request.headers.raw,
            content=request.stream,
            extensions=request.extensions,
        )
        with _httpx_errors():
            answer = self._pool.handle_request(core_request)
        assert isinstance(answer.stream, Iterable)
        return httpx.Response(
            status_code=answer.status,
            headers=answer.headers,
            stream=_AnswerStream(answer.stream),
            extensions=answer.extensions,
        )

    def close(self) -> None:
        self._pool.close()


class _AnswerStream(httpx.SyncByteStream):
    def __init__(self, stream: Iterable[bytes]) -> None:
        self._stream = stream

    def __iter__(self) -> typing.Iterator[bytes]:
        with _httpx_errors():
            yield from self._stream

    def close(self) -> None:
        close = getattr(self._stream, "close", None)
        if close is not None:
            close()


# httpcore's error -> httpx's, most specific first (as httpx.HTTPTransport maps them).
_ERRORS: tuple[tuple[type[Exception], type[httpx.HTTPError]], ...] = (
    (httpcore.ConnectTimeout, httpx.ConnectTimeout),
    (httpcore.ReadTimeout, httpx.ReadTimeout),
    (httpcore.WriteTimeout, httpx.WriteTimeout),
    (httpcore.PoolTimeout, httpx.PoolTimeout),
    (httpcore.TimeoutException, httpx.TimeoutException),
    (httpcore.ConnectError, httpx.ConnectError),
    (httpcore.ReadError, httpx.ReadError),
    (httpcore.WriteError, httpx.WriteError),
    (httpcore.NetworkError, httpx.NetworkError),
    (httpcore.UnsupportedProtocol, httpx.UnsupportedProtocol),
    (httpcore.LocalProtocolError, httpx.LocalProtocolError),
    (httpcore.RemoteProtocolError, httpx.RemoteProtocolError),
    (httpcore.ProtocolError, httpx.ProtocolError),
)


@contextlib.contextmanager
def _httpx_errors() -> typing.Iterator[None]:
    try:
        yield
    except Exception as exc:
        for core_error, httpx_error in _ERRORS:
            if isinstance(exc, core_error):
                raise httpx_error(str(exc)) from exc
        raise


def deadline_transport() -> httpx.BaseTransport:
    """The transport for a client's own connections: a :class:`DeadlineTransport`, or,
    where this httpcore lacks the public parts it needs, httpx's (then only the
    per-chunk check of ``BodyReader`` bounds a request)."""
    if hasattr(httpcore, "SyncBackend") and hasattr(httpx, "create_ssl_context"):
        return DeadlineTransport()
    return httpx.HTTPTransport()
