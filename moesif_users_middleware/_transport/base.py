"""What ``UsersClient`` and ``AsyncUsersClient`` share: the API's paths and headers, the
requests they build, and the errors they raise; they differ only in how a request is
awaited."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, NamedTuple

import httpx

from .._options.endpoint import redact, resolve_application_id, resolve_base_url
from ..errors import TransportError
from ..models import normalize_company, normalize_user
from .body import encode_body
from .deadline import Deadline
from .records import normalize_companies, normalize_users
from .response import RawResponse
from .timeouts import longest_phase, make_timeout, per_request_timeout

__all__ = [
    "APPLICATION_ID_HEADER",
    "BATCH_PATH",
    "COMPANY_BATCH_PATH",
    "COMPANY_PATH",
    "USER_PATH",
    "ClientBase",
    "Post",
]

APPLICATION_ID_HEADER = "X-Moesif-Application-Id"
USER_PATH = "/v1/users"
BATCH_PATH = "/v1/users/batch"
COMPANY_PATH = "/v1/companies"
COMPANY_BATCH_PATH = "/v1/companies/batch"
_USER_AGENT = "moesif-users-middleware/0.1.0"


class Post(NamedTuple):
    """What ``update_user`` / ``update_users_batch`` hand to ``post_body``."""

    path: str
    body: bytes
    content_encoding: str | None


class ClientBase:
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
        self._total = longest_phase(self.timeout)
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

    def _user_post(self, user: Any) -> Post:
        """The request ``update_user`` makes for ``user`` (validated first)."""
        return self._encode(USER_PATH, normalize_user(user))

    def _batch_post(self, users: Iterable[Any]) -> Post | None:
        """The request ``update_users_batch`` makes (``None`` for no users: nothing to send)."""
        records = normalize_users(users)
        return self._encode(BATCH_PATH, records) if records else None

    def _company_post(self, company: Any) -> Post:
        """The request ``update_company`` makes for ``company`` (validated first)."""
        return self._encode(COMPANY_PATH, normalize_company(company))

    def _company_batch_post(self, companies: Iterable[Any]) -> Post | None:
        """The request ``update_companies_batch`` makes (``None``: nothing to send)."""
        records = normalize_companies(companies)
        return self._encode(COMPANY_BATCH_PATH, records) if records else None

    def _encode(self, path: str, payload: Any) -> Post:
        body, encoding = encode_body(payload, gzip=self.gzip)
        return Post(path, body, encoding)

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
        phases = (
            self.timeout
            if deadline is None
            else per_request_timeout(self.timeout, deadline.seconds)
        )
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

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(base_url={self.base_url!r}, "
            f"application_id={redact(self._application_id)})"
        )
