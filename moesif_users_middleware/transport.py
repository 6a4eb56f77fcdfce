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

This module holds the two clients; what they share lives in ``_transport/`` (the
requests they build in ``base.py``, bodies in ``body.py``, answers in ``response.py``,
timeouts in ``timeouts.py`` and ``deadline.py``, batch validation in ``records.py``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from types import TracebackType
from typing import Any

import httpx

from ._transport.base import (
    APPLICATION_ID_HEADER,
    BATCH_PATH,
    COMPANY_BATCH_PATH,
    COMPANY_PATH,
    USER_PATH,
    ClientBase,
)
from ._transport.body import GZIP_LEVEL, GZIP_MIN_BYTES, encode_body
from ._transport.body import compress as compress  # importable from here, as it was
from ._transport.deadline import BodyReader, Deadline, active_deadline, deadline_transport
from ._transport.records import normalize_companies, normalize_users
from ._transport.response import RawResponse, parse_retry_after, raise_for
from ._transport.timeouts import make_timeout
from .errors import ApiError, TransportError

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

DEFAULT_TIMEOUT = 10.0


class UsersClient(ClientBase):
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
        raise_for(self.post_body(*self._user_post(user)))

    def update_users_batch(self, users: Iterable[Any]) -> None:
        """Create or update a list of users in one request (an empty list sends nothing)."""
        post = self._batch_post(users)
        if post is not None:
            raise_for(self.post_body(*post))

    def update_company(self, company: Any) -> None:
        """Create or update one company (``Company`` or dict); raises ``ApiError`` on failure."""
        raise_for(self.post_body(*self._company_post(company)))

    def update_companies_batch(self, companies: Iterable[Any]) -> None:
        """Create or update a list of companies in one request (an empty list sends nothing)."""
        post = self._company_batch_post(companies)
        if post is not None:
            raise_for(self.post_body(*post))

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


class AsyncUsersClient(ClientBase):
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
        raise_for(await self.post_body(*self._user_post(user)))

    async def update_users_batch(self, users: Iterable[Any]) -> None:
        """Create or update a list of users in one request (an empty list sends nothing)."""
        post = self._batch_post(users)
        if post is not None:
            raise_for(await self.post_body(*post))

    async def update_company(self, company: Any) -> None:
        """Create or update one company (``Company`` or dict); raises ``ApiError`` on failure."""
        raise_for(await self.post_body(*self._company_post(company)))

    async def update_companies_batch(self, companies: Iterable[Any]) -> None:
        """Create or update a list of companies in one request (an empty list sends nothing)."""
        post = self._company_batch_post(companies)
        if post is not None:
            raise_for(await self.post_body(*post))

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
