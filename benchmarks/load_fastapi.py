"""The FastAPI app ``load_soak.py`` serves under uvicorn (``--factory load_fastapi:create_app``).

Like a real app, it authenticates each request once, in its own middleware (as
Starlette's ``AuthenticationMiddleware`` does), and puts the user id in
``scope["user"]``; the route and the hooks read it from there, in the bare variant too.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from load_apps import STATS_PATH, company_of, metadata_of, options, sender_stats
from load_apps import user_from_authorization as user_from
from starlette.types import ASGIApp, Receive, Scope, Send

from moesif_users_middleware.starlette import MoesifUsersMiddleware, ResponseView

__all__ = ["create_app"]


class BearerAuth:
    """The app's authentication: ``scope["user"]`` from ``Authorization: Bearer <id>``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            value = None
            for name, raw in scope["headers"]:
                if name == b"authorization":
                    value = raw.decode("latin-1")
                    break
            scope["user"] = user_from(value)
        await self.app(scope, receive, send)


def identify_user(request: Request, response: ResponseView) -> str | None:
    user_id: str | None = request.scope.get("user")
    return user_id


def identify_company(request: Request, response: ResponseView) -> str | None:
    user_id = request.scope.get("user")
    return company_of(user_id) if user_id else None


def get_metadata(request: Request, response: ResponseView) -> dict[str, Any] | None:
    user_id = request.scope.get("user")
    return metadata_of(user_id) if user_id else None


def skip(request: Request, response: ResponseView) -> bool:
    return bool(request.scope["path"] == STATS_PATH)


def create_app() -> FastAPI:
    """One JSON route behind the pure ASGI middleware (``LOAD_MOESIF=off``: disabled)."""
    api = FastAPI()

    @api.get("/items")
    async def items(request: Request) -> dict[str, Any]:
        return {"items": [1, 2, 3], "user": request.scope.get("user")}

    @api.get(STATS_PATH)
    async def stats() -> dict[str, int]:
        return sender_stats()

    api.add_middleware(BearerAuth)  # inside the Moesif middleware, which sees its result
    api.add_middleware(
        MoesifUsersMiddleware,
        identify_user=identify_user,
        identify_company=identify_company,
        get_metadata=get_metadata,
        skip=skip,
        **options(),
    )
    return api
