"""Direct calls to the Users and Companies APIs: ``UsersClient`` / ``AsyncUsersClient``.

``update_user`` posts one user to ``/v1/users``, ``update_users_batch`` a list to
``/v1/users/batch``; ``update_company`` and ``update_companies_batch`` do the same for
``/v1/companies`` and ``/v1/companies/batch``. All validate their input first
(``ValidationError`` naming the field, ``users[3].user_id`` for a batch) and raise
:class:`ApiError` for a non-2xx answer. Network failures (refused, reset, timed out)
raise :class:`TransportError`, an ``ApiError`` whose ``status_code`` is ``None``; the
original httpx exception is its ``__cause__``. ``timeout`` bounds the whole request
(connect, send and the complete answer), not only each socket operation, so a trickling
answer cannot hold a call: it fails with a ``TransportError`` saying the answer took
longer than the timeout. At most 64 KiB of an answer is read; the rest is dropped with
the connection.

Bodies are compact JSON, gzipped (level 3, chosen by `benchmarks/bench_gzip.py`) when
larger than 1 KiB. The application id is sent in ``X-Moesif-Application-Id`` and never
appears in reprs or exception messages.
"""

from __future__ import annotations

import asyncio
import json
import time
import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import Any, NamedTuple

import httpx

from ._options import redact, resolve_application_id, resolve_base_url
from ._transport.deadline import (
    BodyReader,
    Deadline,
    active_deadline,
    deadline_transport,
)
from .errors import ApiError, TransportError
from .models import ValidationError, normalize_company, normalize_user

__all__ = [
    "APPLICATION_ID_HEADER",
    "BATCH_PATH",
    "COMPANY_BATCH_PATH",
    "COMPANY_PATH",
    "DEFAULT_TIMEOUT",
    "GZIP_LEVEL",
    "GZIP_MIN_BYTES",
    "USER_PATH",
    "ApiError",
    "AsyncUsersClient",
    "RawResponse",
    "TransportError",
    "UsersClient",
    "encode_body",
    "make_timeout",
    "normalize_companies",
    "normalize_users",
    "parse_retry_after",
]

APPLICATION_ID_HEADER = "X-Moesif-Application-Id"
USER_PATH = "/v1/users"
BATCH_PATH = "/v1/users/batch"
COMPANY_PATH = "/v1/companies"
COMPANY_BATCH_PATH = "/v1/companies/batch"
DEFAULT_TIMEOUT = 10.0
GZIP_MIN_BYTES = 1024
GZIP_LEVEL = 3  # chosen by benchmarks/bench_gzip.py (BENCHMARKS.md)
_MAX_CONNECT_TIMEOUT = 5.0
_USER_AGENT = "moesif-users-middleware/0.1.0"
_ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=False)


@dataclass(frozen=True)
class RawResponse:
    """What the low-level batch POST returns: status, headers and body text (first 64 KiB)."""

    status_code: int
    headers: httpx.Headers
    text: str

    @property
    def retry_after(self) -> float | None:
        """The ``Retry-After`` delay in seconds, if the answer carried a valid one."""
        return parse_retry_after(self.headers.get("retry-after"))

    def error(self) -> ApiError:
        """An ``ApiError`` describing this (error) response."""
        return ApiError(self.status_code, self.text, self.retry_after)


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value (delta-seconds or HTTP-date), else ``None``."""
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        try:
            moment = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if moment.tzinfo is None:
            return None
        seconds = moment.timestamp() - (time.time() if now is None else now)
    if seconds != seconds or seconds in (float("inf"), float("-inf")):
        return None
    return max(0.0, seconds)


def make_timeout(timeout: float | httpx.Timeout) -> httpx.Timeout:
    """An explicit ``httpx.Timeout`` (connect capped at 5 s) from seconds or a Timeout.

    The clients also use its longest phase as the limit of a whole request.
    """
    if isinstance(timeout, httpx.Timeout):
        return timeout
    seconds = float(timeout)
    return httpx.Timeout(
        connect=min(seconds, _MAX_CONNECT_TIMEOUT), read=seconds, write=seconds, pool=seconds
    )


def encode_body(payload: Any, *, gzip: bool = True) -> tuple[bytes, str | None]:
    """Compact JSON bytes, gzipped when larger than 1 KiB; returns ``(body, content_encoding)``."""
    body = _ENCODER.encode(payload).encode("utf-8")
    return compress(body) if gzip else (body, None)


def compress(body: bytes) -> tuple[bytes, str | None]:
    """Gzip ``body`` (level ``GZIP_LEVEL``) when it is larger than ``GZIP_MIN_BYTES``."""
    if len(body) <= GZIP_MIN_BYTES:
        return body, None
    packer = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)
    return packer.compress(body) + packer.flush(), "gzip"


def normalize_users(users: Iterable[Any]) -> list[dict[str, Any]]:
    """Validate every user of a batch; errors name the index (``users[3].user_id``)."""
    return _normalize_all(users, "users", normalize_user)


def normalize_companies(companies: Iterable[Any]) -> list[dict[str, Any]]:
    """Validate every company of a batch; errors name the index (``companies[3].company_id``)."""
    return _normalize_all(companies, "companies", normalize_company)


def _normalize_all(
    records: Iterable[Any], name: str, normalize: Callable[[object, str], dict[str, Any]]
) -> list[dict[str, Any]]:
    if isinstance(records, (str, bytes, Mapping)) or not isinstance(records, Iterable):
        raise ValidationError(name, f"must be a list of {name}, not {type(records).__name__}")
    out: list[dict[str, Any]] = []
    prefix = f"{name}["
    for index, record in enumerate(records):
        try:
            out.append(normalize(record, f"{name}[{index}]"))
        except ValidationError as exc:
            field = exc.field if exc.field.startswith(prefix) else f"{name}[{index}].{exc.field}"
            raise ValidationError(field, exc.message) from None
    return out


class _Post(NamedTuple):
    """What ``update_user`` / ``update_users_batch`` hand to ``post_body``."""

    path: str
    body: bytes
    content_encoding: str | None


class _ClientBase:
    """Everything the two clients share; they differ only in how a request is awaited."""

    def __init__(
        self,
        application_id: str | None,
        base_url: str | None,
        timeout: float | httpx.Timeout,
        gzip: bool,
    ) -> None:
        self._application_id = resolve_application_id(application_id)
        self.base_url = resolve_base_url(base_url)
        self.timeout = make_timeout(timeout)
        self._total = _longest_phase(self.timeout)
        self.gzip = gzip
        self._headers = {
            APPLICATION_ID_HEADER: self._application_id,
            "Content-Type": "application/json",
            "Accept": "application/json",
            "User-Agent": _USER_AGENT,
        }

    def _client_options(self) -> dict[str, Any]:
        """The httpx client's options (its transport aside)."""
        return {
            "base_url": self.base_url,
            "headers": self._headers,
            "timeout": self.timeout,
            "follow_redirects": False,
        }

    def _user_post(self, user: Any) -> _Post:
        """The request ``update_user`` makes for ``user`` (validated first)."""
        return self._encode(USER_PATH, normalize_user(user))

    def _batch_post(self, users: Iterable[Any]) -> _Post | None:
        """The request ``update_users_batch`` makes (``None`` for no users: nothing to send)."""
        records = normalize_users(users)
        return self._encode(BATCH_PATH, records) if records else None

    def _company_post(self, company: Any) -> _Post:
        """The request ``update_company`` makes for ``company`` (validated first)."""
        return self._encode(COMPANY_PATH, normalize_company(company))

    def _company_batch_post(self, companies: Iterable[Any]) -> _Post | None:
        """The request ``update_companies_batch`` makes (``None``: nothing to send)."""
        records = normalize_companies(companies)
        return self._encode(COMPANY_BATCH_PATH, records) if records else None

    def _encode(self, path: str, payload: Any) -> _Post:
        body, encoding = encode_body(payload, gzip=self.gzip)
        return _Post(path, body, encoding)

    def _request_headers(self, encoding: str | None) -> dict[str, str] | None:
        return {"Content-Encoding": encoding} if encoding else None

    def _build(
        self,
        client: httpx.Client | httpx.AsyncClient,
        path: str,
        body: bytes,
        content_encoding: str | None,
        deadline: Deadline | None,
    ) -> httpx.Request:
        phases = self.timeout if deadline is None else self._per_request_timeout(deadline.seconds)
        return client.build_request(
            "POST",
            path,
            content=body,
            headers=self._request_headers(content_encoding),
            timeout=phases,
        )

    def _deadline(self, timeout: float | None) -> Deadline | None:
        """The limit of one request: ``timeout`` capped by the client's (``None``: none)."""
        seconds = self._total if timeout is None else max(0.001, timeout)
        if seconds is None:
            return None
        if self._total is not None:
            seconds = min(seconds, self._total)
        return Deadline.start(seconds)

    def _response(self, response: httpx.Response, body: bytes) -> RawResponse:
        text = body.decode("utf-8", "replace")
        return RawResponse(response.status_code, response.headers, self._scrub(text))

    def _transport_error(self, exc: httpx.HTTPError, deadline: Deadline | None) -> TransportError:
        name = type(exc).__name__
        detail = self._scrub(str(exc)) or name
        if deadline is not None and isinstance(exc, httpx.TimeoutException):
            late = deadline.message()
            if detail == late or deadline.passed():
                return TransportError(f"{late} ({name if detail == late else f'{name}: {detail}'})")
        return TransportError(f"Users API request failed ({name}): {detail}")

    def _scrub(self, text: str) -> str:
        return text.replace(self._application_id, redact(self._application_id))

    def _per_request_timeout(self, timeout: float | None) -> httpx.Timeout | None:
        if timeout is None:
            return None
        seconds = max(0.001, timeout)
        base = self.timeout
        return httpx.Timeout(
            connect=_min(base.connect, seconds),
            read=_min(base.read, seconds),
            write=_min(base.write, seconds),
            pool=_min(base.pool, seconds),
        )

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(base_url={self.base_url!r}, "
            f"application_id={redact(self._application_id)})"
        )


def _min(value: float | None, cap: float) -> float:
    return cap if value is None else min(value, cap)


def _longest_phase(timeout: httpx.Timeout) -> float | None:
    phases = [timeout.connect, timeout.read, timeout.write, timeout.pool]
    limits = [phase for phase in phases if phase is not None]
    return max(limits) if limits else None


def _raise_for(response: RawResponse) -> None:
    if not 200 <= response.status_code < 300:
        raise response.error()


class UsersClient(_ClientBase):
    """Synchronous Users API client with one reused connection pool.

    ``application_id`` falls back to ``MOESIF_APPLICATION_ID`` (``ConfigurationError``
    if neither is set), ``base_url`` to ``MOESIF_BASE_URL`` then ``https://api.moesif.net``.
    ``timeout`` (seconds or an ``httpx.Timeout``) bounds every phase of a request and,
    as a whole, each request: connect, send and the complete answer (for an
    ``httpx.Timeout``, its longest phase is that limit). ``transport`` replaces httpx's
    network transport (for tests); the total limit is then checked as the answer arrives.
    """

    def __init__(
        self,
        application_id: str | None = None,
        base_url: str | None = None,
        *,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        gzip: bool = True,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(application_id, base_url, timeout, gzip)
        if transport is None:
            # our own default transport, so every socket operation can end at the deadline
            transport = deadline_transport()
        self._client = httpx.Client(transport=transport, **self._client_options())

    def update_user(self, user: Any) -> None:
        """Create or update one user (``User`` or dict); raises ``ApiError`` on failure."""
        _raise_for(self.post_body(*self._user_post(user)))

    def update_users_batch(self, users: Iterable[Any]) -> None:
        """Create or update a list of users in one request (an empty list sends nothing)."""
        post = self._batch_post(users)
        if post is not None:
            _raise_for(self.post_body(*post))

    def update_company(self, company: Any) -> None:
        """Create or update one company (``Company`` or dict); raises ``ApiError`` on failure."""
        _raise_for(self.post_body(*self._company_post(company)))

    def update_companies_batch(self, companies: Iterable[Any]) -> None:
        """Create or update a list of companies in one request (an empty list sends nothing)."""
        post = self._company_batch_post(companies)
        if post is not None:
            _raise_for(self.post_body(*post))

    def post_body(
        self,
        path: str,
        body: bytes,
        content_encoding: str | None = None,
        *,
        timeout: float | None = None,
    ) -> RawResponse:
        """POST an already-encoded body; returns the response whatever its status.

        ``timeout`` (seconds) lowers the client's limit for this one request: the whole
        request, up to the last byte of the answer, must fit in it. Raises
        ``TransportError`` when no complete response arrives in time.
        """
        deadline = self._deadline(timeout)
        token = active_deadline.set(deadline)
        try:
            request = self._build(self._client, path, body, content_encoding, deadline)
            response = self._client.send(request, stream=True)
            try:
                data = BodyReader(deadline).read_all(response.iter_bytes())
            finally:
                response.close()
        except httpx.HTTPError as exc:
            raise self._transport_error(exc, deadline) from exc
        finally:
            active_deadline.reset(token)
        return self._response(response, data)

    def close(self) -> None:
        """Close the connection pool."""
        self._client.close()

    def __enter__(self) -> UsersClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class AsyncUsersClient(_ClientBase):
    """``UsersClient`` for asyncio: the same methods, awaited; close with ``aclose()``."""

    def __init__(
        self,
        application_id: str | None = None,
        base_url: str | None = None,
        *,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        gzip: bool = True,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(application_id, base_url, timeout, gzip)
        self._client = httpx.AsyncClient(transport=transport, **self._client_options())

    async def update_user(self, user: Any) -> None:
        """Create or update one user (``User`` or dict); raises ``ApiError`` on failure."""
        _raise_for(await self.post_body(*self._user_post(user)))

    async def update_users_batch(self, users: Iterable[Any]) -> None:
        """Create or update a list of users in one request (an empty list sends nothing)."""
        post = self._batch_post(users)
        if post is not None:
            _raise_for(await self.post_body(*post))

    async def update_company(self, company: Any) -> None:
        """Create or update one company (``Company`` or dict); raises ``ApiError`` on failure."""
        _raise_for(await self.post_body(*self._company_post(company)))

    async def update_companies_batch(self, companies: Iterable[Any]) -> None:
        """Create or update a list of companies in one request (an empty list sends nothing)."""
        post = self._company_batch_post(companies)
        if post is not None:
            _raise_for(await self.post_body(*post))

    async def post_body(
        self,
        path: str,
        body: bytes,
        content_encoding: str | None = None,
        *,
        timeout: float | None = None,
    ) -> RawResponse:
        """POST an already-encoded body; see ``UsersClient.post_body``."""
        deadline = self._deadline(timeout)
        try:
            request = self._build(self._client, path, body, content_encoding, deadline)
            exchange = self._exchange(request, deadline)
            if deadline is None:
                response, data = await exchange
            else:
                try:
                    response, data = await asyncio.wait_for(exchange, deadline.left())
                except asyncio.TimeoutError:
                    # asyncio cancelled the exchange mid-way; report it like an httpx timeout
                    raise httpx.TimeoutException(deadline.message(), request=request) from None
        except httpx.HTTPError as exc:
            raise self._transport_error(exc, deadline) from exc
        return self._response(response, data)

    async def _exchange(
        self, request: httpx.Request, deadline: Deadline | None
    ) -> tuple[httpx.Response, bytes]:
        response = await self._client.send(request, stream=True)
        try:
            data = await BodyReader(deadline).aread_all(response.aiter_bytes())
        finally:
            await response.aclose()
        return response, data

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._client.aclose()

    async def __aenter__(self) -> AsyncUsersClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
