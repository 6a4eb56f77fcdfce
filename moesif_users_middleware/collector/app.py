"""The collector's Starlette app: Moesif's Users API over :class:`Store`.

Routes (``/v1`` routes need ``X-Moesif-Application-Id`` and see only that id's partition):

- ``POST /v1/users`` (one user) and ``POST /v1/users/batch`` (an array, applied in one
  transaction): ``201 {"records": n}``.
- ``GET /v1/users/{user_id}``: the stored profile; ``GET /v1/users?limit=&offset=``:
  a list of profiles ordered by user id; ``GET /v1/_stats``: request counters.
- ``GET /``: an HTML page of every partition's profiles, newest first
  (``?q=`` user or company id prefix, ``?partition=`` partition key or prefix,
  ``?page=``, ``?limit=``); ``POST /`` (form field ``app``, an application id) or
  ``GET /?app=`` redirects to the page filtered by that id's partition, so the id
  itself never stays in an address or a page.
- ``GET /users/{user_id}`` (``?partition=``): an HTML page with the profile and its
  history; 404 page for an unknown id.

Every API error is JSON: ``{"error": ..., "message": ...}`` plus details such as
``index`` and ``field`` for an invalid user. Client input never causes a 500.
"""

from __future__ import annotations

import os
import re
from datetime import datetime, timezone
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qsl, urlencode

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from .body import parse_users, read_body
from .errors import ClientError, json_response
from .html import ListView, render_not_found, render_page, render_user
from .store import PARTITION_KEY_LENGTH, Store, partition_key

__all__ = ["APPLICATION_ID_HEADER", "DEFAULT_MAX_BODY_BYTES", "create_app"]

APPLICATION_ID_HEADER = "X-Moesif-Application-Id"
DEFAULT_MAX_BODY_BYTES = 10 * 1024 * 1024
DEFAULT_LIST_LIMIT = 1000
MAX_LIST_LIMIT = 10_000
DEFAULT_PAGE_LIMIT = 100
MAX_PAGE_LIMIT = 1000
MAX_PAGE = 10**9
MAX_SEARCH = 200  # characters of a search prefix
MAX_FORM_BYTES = 16 * 1024

_HEX_PREFIX = re.compile(rf"[0-9a-f]{{0,{PARTITION_KEY_LENGTH}}}")
_PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def create_app(
    db_path: str | os.PathLike[str] = ":memory:",
    *,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
) -> Starlette:
    """The collector as an ASGI app over the SQLite database at ``db_path``.

    ``max_body_bytes`` caps request bodies, both as received and after gunzip (413).
    The store is ``app.state.store``; close it with ``app.state.store.close()``.
    """
    if max_body_bytes < 1:
        raise ValueError("max_body_bytes must be positive")
    collector = _Collector(Store(db_path), max_body_bytes)
    app = Starlette(
        routes=[
            Route("/", collector.page, methods=["GET", "POST"]),
            Route("/users/{user_id:path}", collector.user_page, methods=["GET"]),
            Route("/v1/users", collector.users, methods=["GET", "POST"]),
            Route("/v1/users/batch", collector.post_batch, methods=["POST"]),
            Route("/v1/_stats", collector.stats, methods=["GET"]),
            Route("/v1/users/{user_id:path}", collector.get_user, methods=["GET"]),
        ],
        exception_handlers={
            ClientError: _client_error,
            HTTPException: _http_error,
            Exception: _server_error,
        },
    )
    app.state.store = collector.store
    app.state.max_body_bytes = max_body_bytes
    return app


class _Collector:
    def __init__(self, store: Store, max_body_bytes: int) -> None:
        self.store = store
        self.max_body_bytes = max_body_bytes

    async def users(self, request: Request) -> Response:
        if request.method == "POST":
            return await self._post(request, batch=False)
        return await self.list_users(request)

    async def post_batch(self, request: Request) -> Response:
        return await self._post(request, batch=True)

    async def _post(self, request: Request, *, batch: bool) -> Response:
        partition = _partition(request)
        try:
            body = await read_body(request, self.max_body_bytes)
            records = await run_in_threadpool(self._ingest, partition, body, batch)
        except ClientError:
            self.store.count_request(partition, batch=batch, rejected=True)
            raise
        self.store.count_request(partition, batch=batch, rejected=False)
        return json_response({"records": records}, 201)

    def _ingest(self, partition: str, body: bytes, batch: bool) -> int:
        users = parse_users(body, batch=batch)
        if users:
            self.store.apply(partition, users, _now())
        return len(users)

    async def get_user(self, request: Request) -> Response:
        partition = _partition(request)
        user_id: str = request.path_params["user_id"]
        profile = await run_in_threadpool(self.store.get, partition, user_id)
        if profile is None:
            raise ClientError(404, "not found", "no user with this user_id")
        return json_response(profile)

    async def list_users(self, request: Request) -> Response:
        partition = _partition(request)
        limit = _int_param(request, "limit", DEFAULT_LIST_LIMIT, 1, MAX_LIST_LIMIT)
        offset = _int_param(request, "offset", 0, 0, 2**62)
        profiles = await run_in_threadpool(
            lambda: self.store.list_users(partition, limit=limit, offset=offset)
        )
        return json_response(profiles)

    async def stats(self, request: Request) -> Response:
        partition = _partition(request)
        return json_response(await run_in_threadpool(self.store.stats, partition))

    async def page(self, request: Request) -> Response:
        if request.method == "POST":
            form = await _read_form(request)
            return _filter_redirect(form.get("app", ""), form.get("q", ""))
        params = request.query_params
        if "app" in params:  # an application id typed into the address: hash, then forget
            return _filter_redirect(params["app"], params.get("q", ""))
        partition = params.get("partition", "").strip().lower()
        if not _HEX_PREFIX.fullmatch(partition):
            raise ClientError(
                400,
                "invalid parameter",
                "partition must be a hex partition key or prefix",
                parameter="partition",
            )
        search = params.get("q", "").strip()
        if len(search) > MAX_SEARCH:
            raise ClientError(
                400,
                "invalid parameter",
                f"q must be at most {MAX_SEARCH} characters",
                parameter="q",
            )
        limit = _int_param(request, "limit", DEFAULT_PAGE_LIMIT, 1, MAX_PAGE_LIMIT)
        page = _int_param(request, "page", 1, 1, MAX_PAGE)

        def load() -> ListView:
            store = self.store
            total = store.count_all_users()
            matching = (
                store.count_all_users(prefix=partition, search=search)
                if partition or search
                else total
            )
            rows = store.list_all_users(
                prefix=partition, search=search, limit=limit, offset=(page - 1) * limit
            )
            return ListView(rows, total, matching, page, limit, search, partition)

        try:
            view = await run_in_threadpool(load)
        except UnicodeEncodeError:  # a lone surrogate escaped into the query
            raise ClientError(400, "invalid parameter", "q is not valid text") from None
        return _html(render_page(view))

    async def user_page(self, request: Request) -> Response:
        user_id: str = request.path_params["user_id"] or request.query_params.get("id", "")
        partition = request.query_params.get("partition", "").strip().lower()
        if not _HEX_PREFIX.fullmatch(partition):
            raise ClientError(
                400, "invalid parameter", "partition must be a hex key", parameter="partition"
            )

        def load() -> list[tuple[str, dict[str, Any], list[dict[str, Any]]]]:
            found = self.store.find_user(user_id, partition) if user_id else []
            return [(key, profile, self.store.history(key, user_id)) for key, profile in found]

        try:
            found = await run_in_threadpool(load)
        except UnicodeEncodeError:
            found = []
        if not found:
            return _html(render_not_found(user_id), 404)
        return _html(render_user(user_id, found))


def _html(page: str, status: int = 200) -> Response:
    return HTMLResponse(page.encode("utf-8", "replace"), status, headers=_PAGE_HEADERS)


def _filter_redirect(application_id: str, search: str) -> Response:
    """303 to the list page filtered by the partition of ``application_id`` (if any)."""
    query: dict[str, str] = {}
    if search.strip():
        query["q"] = search.strip()[:MAX_SEARCH]
    if application_id.strip():
        query["partition"] = partition_key(application_id.strip())
    return RedirectResponse("/?" + urlencode(query) if query else "/", 303)


async def _read_form(request: Request) -> dict[str, str]:
    """A small ``application/x-www-form-urlencoded`` body (last value wins)."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        raise ClientError(415, "unsupported media type", "expected a form")
    body = await read_body(request, MAX_FORM_BYTES)
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True)
    except (UnicodeDecodeError, ValueError):
        raise ClientError(400, "invalid body", "form is not valid UTF-8") from None
    return dict(pairs)


def _partition(request: Request) -> str:
    application_id = request.headers.get(APPLICATION_ID_HEADER, "").strip()
    if not application_id:
        raise ClientError(401, "unauthorized", f"missing {APPLICATION_ID_HEADER} header")
    return partition_key(application_id)


def _int_param(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 19 and low <= int(raw) <= high):
        raise ClientError(
            400,
            "invalid parameter",
            f"{name} must be an integer from {low} to {high}",
            parameter=name,
        )
    return int(raw)


def _now() -> str:
    moment = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
    return moment.replace("+00:00", "Z")


def _client_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ClientError)
    return exc.response()


def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    path = request.url.path
    if exc.status_code == 404 and path.startswith("/users/"):
        # An id the route cannot match (a line break in it): still the page's own 404.
        return _html(render_not_found(path.removeprefix("/users/")), 404)
    phrase = HTTPStatus(exc.status_code).phrase if exc.status_code in _STATUSES else "error"
    body: dict[str, Any] = {"error": phrase.lower(), "message": exc.detail}
    return json_response(body, exc.status_code, exc.headers)


def _server_error(request: Request, exc: Exception) -> Response:
    # Starlette re-raises the exception after this response, so the server logs it.
    return json_response({"error": "internal server error", "message": "server fault"}, 500)


_STATUSES = frozenset(status.value for status in HTTPStatus)
