"""The collector's Starlette app: Moesif's Users and Companies APIs over :class:`Store`.

Routes (``/v1`` routes need ``X-Moesif-Application-Id`` and see only that id's
partition); ``{kind}`` is ``users`` or ``companies``, ``{id}`` a user or company id:

- ``POST /v1/{kind}`` (one record) and ``POST /v1/{kind}/batch`` (an array, applied in
  one transaction): ``201 {"records": n}``.
- ``GET /v1/{kind}/{id}``: the stored profile; ``GET /v1/{kind}?limit=&offset=``: a list
  of profiles ordered by id; ``GET /v1/_stats`` (``?kind=companies``): request counters.
- ``GET /`` (users) and ``GET /companies``: an HTML page of every partition's profiles,
  newest first (``?q=`` id prefix, or company id / domain prefix; ``?partition=``
  partition key or prefix; ``?page=``, ``?limit=``); ``POST`` to either (form field
  ``app``, an application id) or ``GET ?app=`` redirects to the page filtered by that
  id's partition, so the id itself never stays in an address or a page.
- ``GET /users/{id}`` and ``GET /companies/{id}`` (``?partition=``; a company's also
  ``?page=`` of its users): an HTML page with the profile and its history, and for a
  company the users whose ``company_id`` it is; 404 page for an unknown id.

Every API error is JSON: ``{"error": ..., "message": ...}`` plus details such as
``index`` and ``field`` for an invalid record. Client input never causes a 500.
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

from .body import parse_records, read_body
from .errors import ClientError, json_response
from .html import (
    CompanySection,
    ListView,
    list_path,
    render_company,
    render_not_found,
    render_page,
    render_user,
)
from .kinds import COMPANIES, KINDS, USERS, Kind
from .partition import PARTITION_KEY_LENGTH, partition_key
from .store import Store

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
    store = Store(db_path)
    routes = [Route("/v1/_stats", _Stats(store).answer, methods=["GET"])]
    for kind in KINDS.values():
        api = _Api(store, kind, max_body_bytes)
        pages = _Pages(store, kind)
        routes += [
            Route(list_path(kind), pages.listing, methods=["GET", "POST"]),
            Route(f"/{kind.name}/{{record_id:path}}", pages.profile, methods=["GET"]),
            Route(f"/v1/{kind.name}", api.records, methods=["GET", "POST"]),
            Route(f"/v1/{kind.name}/batch", api.post_batch, methods=["POST"]),
            Route(f"/v1/{kind.name}/{{record_id:path}}", api.get_one, methods=["GET"]),
        ]
    app = Starlette(
        routes=routes,
        exception_handlers={
            ClientError: _client_error,
            HTTPException: _http_error,
            Exception: _server_error,
        },
    )
    app.state.store = store
    app.state.max_body_bytes = max_body_bytes
    return app


class _Api:
    """The ``/v1`` routes of one record kind."""

    def __init__(self, store: Store, kind: Kind, max_body_bytes: int) -> None:
        self.store = store
        self.kind = kind
        self.max_body_bytes = max_body_bytes

    async def records(self, request: Request) -> Response:
        if request.method == "POST":
            return await self._post(request, batch=False)
        return await self.list_profiles(request)

    async def post_batch(self, request: Request) -> Response:
        return await self._post(request, batch=True)

    async def _post(self, request: Request, *, batch: bool) -> Response:
        partition = _partition(request)
        kind = self.kind
        try:
            body = await read_body(request, self.max_body_bytes)
            records = await run_in_threadpool(self._ingest, partition, body, batch)
        except ClientError:
            self.store.count_request(partition, batch=batch, rejected=True, kind=kind)
            raise
        self.store.count_request(partition, batch=batch, rejected=False, kind=kind)
        return json_response({"records": records}, 201)

    def _ingest(self, partition: str, body: bytes, batch: bool) -> int:
        records = parse_records(body, self.kind, batch=batch)
        if records:
            self.store.apply(partition, records, _now(), self.kind)
        return len(records)

    async def get_one(self, request: Request) -> Response:
        partition = _partition(request)
        record_id: str = request.path_params["record_id"]
        profile = await run_in_threadpool(self.store.get, partition, record_id, self.kind)
        if profile is None:
            noun, field = self.kind.noun, self.kind.id_field
            raise ClientError(404, "not found", f"no {noun} with this {field}")
        return json_response(profile)

    async def list_profiles(self, request: Request) -> Response:
        partition = _partition(request)
        limit = _int_param(request, "limit", DEFAULT_LIST_LIMIT, 1, MAX_LIST_LIMIT)
        offset = _int_param(request, "offset", 0, 0, 2**62)
        profiles = await run_in_threadpool(
            lambda: self.store.list_profiles(partition, limit=limit, offset=offset, kind=self.kind)
        )
        return json_response(profiles)


class _Stats:
    """``GET /v1/_stats``: the partition's counters of one kind (``?kind=``, users by default)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def answer(self, request: Request) -> Response:
        partition = _partition(request)
        kind = KINDS.get(request.query_params.get("kind") or USERS.name)
        if kind is None:
            raise ClientError(
                400,
                "invalid parameter",
                f"kind must be one of {', '.join(KINDS)}",
                parameter="kind",
            )
        return json_response(await run_in_threadpool(self.store.stats, partition, kind))


class _Pages:
    """The HTML pages of one record kind: the list, and a page per profile."""

    def __init__(self, store: Store, kind: Kind) -> None:
        self.store = store
        self.kind = kind

    async def listing(self, request: Request) -> Response:
        path = list_path(self.kind)
        if request.method == "POST":
            form = await _read_form(request)
            return _filter_redirect(path, form.get("app", ""), form.get("q", ""))
        params = request.query_params
        if "app" in params:  # an application id typed into the address: hash, then forget
            return _filter_redirect(path, params["app"], params.get("q", ""))
        partition = _partition_param(request)
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
        kind = self.kind

        def load() -> ListView:
            store = self.store
            total = store.count_all(kind=kind)
            matching = (
                store.count_all(prefix=partition, search=search, kind=kind)
                if partition or search
                else total
            )
            rows = store.list_all(
                prefix=partition, search=search, limit=limit, offset=(page - 1) * limit, kind=kind
            )
            return ListView(rows, total, matching, page, limit, search, partition, kind)

        try:
            view = await run_in_threadpool(load)
        except UnicodeEncodeError:  # a lone surrogate escaped into the query
            raise ClientError(400, "invalid parameter", "q is not valid text") from None
        return _html(render_page(view))

    async def profile(self, request: Request) -> Response:
        record_id: str = request.path_params["record_id"] or request.query_params.get("id", "")
        partition = _partition_param(request)
        if self.kind is COMPANIES:
            page = _int_param(request, "page", 1, 1, MAX_PAGE)
            return await self._company(record_id, partition, page)
        return await self._user(record_id, partition)

    async def _user(self, user_id: str, partition: str) -> Response:
        store = self.store

        def load() -> list[tuple[str, dict[str, Any], list[dict[str, Any]]]]:
            found = store.find(user_id, partition, USERS) if user_id else []
            return [(key, profile, store.history(key, user_id, USERS)) for key, profile in found]

        try:
            found = await run_in_threadpool(load)
        except UnicodeEncodeError:
            found = []
        if not found:
            return _html(render_not_found(user_id, USERS), 404)
        return _html(render_user(user_id, found))

    async def _company(self, company_id: str, partition: str, page: int) -> Response:
        store = self.store
        limit = DEFAULT_PAGE_LIMIT

        def section(key: str, profile: dict[str, Any] | None) -> CompanySection:
            return CompanySection(
                key,
                profile,
                store.history(key, company_id, COMPANIES) if profile else [],
                [
                    user
                    for _, user in store.list_all(
                        prefix=key,
                        label=company_id,
                        limit=limit,
                        offset=(page - 1) * limit,
                        kind=USERS,
                    )
                ],
                store.count_all(prefix=key, label=company_id, kind=USERS),
                page,
                limit,
            )

        def load() -> list[CompanySection]:
            if not company_id:
                return []
            stored = dict(store.find(company_id, partition, COMPANIES))
            named = store.partitions_with_label(company_id, partition, USERS)
            return [section(key, stored.get(key)) for key in sorted({*stored, *named})]

        try:
            found = await run_in_threadpool(load)
        except UnicodeEncodeError:
            found = []
        if not found:
            return _html(render_not_found(company_id, COMPANIES), 404)
        return _html(render_company(company_id, found))


def _html(page: str, status: int = 200) -> Response:
    return HTMLResponse(page.encode("utf-8", "replace"), status, headers=_PAGE_HEADERS)


def _filter_redirect(path: str, application_id: str, search: str) -> Response:
    """303 to the list page at ``path`` filtered by the partition of ``application_id``."""
    query: dict[str, str] = {}
    if search.strip():
        query["q"] = search.strip()[:MAX_SEARCH]
    if application_id.strip():
        query["partition"] = partition_key(application_id.strip())
    return RedirectResponse(path + "?" + urlencode(query) if query else path, 303)


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


def _partition_param(request: Request) -> str:
    """The page's ``?partition=``: a hex partition key or a prefix of one."""
    partition = request.query_params.get("partition", "").strip().lower()
    if not _HEX_PREFIX.fullmatch(partition):
        raise ClientError(
            400,
            "invalid parameter",
            "partition must be a hex partition key or prefix",
            parameter="partition",
        )
    return partition


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
    if exc.status_code == 404:
        for kind in KINDS.values():
            if path.startswith(f"/{kind.name}/"):
                # An id the route cannot match (a line break in it): the page's own 404.
                return _html(render_not_found(path.removeprefix(f"/{kind.name}/"), kind), 404)
    phrase = HTTPStatus(exc.status_code).phrase if exc.status_code in _STATUSES else "error"
    body: dict[str, Any] = {"error": phrase.lower(), "message": exc.detail}
    return json_response(body, exc.status_code, exc.headers)


def _server_error(request: Request, exc: Exception) -> Response:
    # Starlette re-raises the exception after this response, so the server logs it.
    return json_response({"error": "internal server error", "message": "server fault"}, 500)


_STATUSES = frozenset(status.value for status in HTTPStatus)
