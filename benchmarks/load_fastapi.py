"""The FastAPI app ``load_soak.py`` serves under uvicorn (``--factory load_fastapi:create_app``)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from load_apps import STATS_PATH, company_of, metadata_of, options, sender_stats
from load_apps import user_from_authorization as user_from

from moesif_users_middleware.starlette import MoesifUsersMiddleware, ResponseView

__all__ = ["create_app"]


def identify_user(request: Request, response: ResponseView) -> str | None:
    return user_from(request.headers.get("authorization"))


def identify_company(request: Request, response: ResponseView) -> str | None:
    user_id = identify_user(request, response)
    return company_of(user_id) if user_id else None


def get_metadata(request: Request, response: ResponseView) -> dict[str, Any] | None:
    user_id = identify_user(request, response)
    return metadata_of(user_id) if user_id else None


def skip(request: Request, response: ResponseView) -> bool:
    return bool(request.scope["path"] == STATS_PATH)


def create_app() -> FastAPI:
    """One JSON route behind the pure ASGI middleware (``LOAD_MOESIF=off``: disabled)."""
    api = FastAPI()

    @api.get("/items")
    async def items(request: Request) -> dict[str, Any]:
        return {"items": [1, 2, 3], "user": user_from(request.headers.get("authorization"))}

    @api.get(STATS_PATH)
    async def stats() -> dict[str, int]:
        return sender_stats()

    api.add_middleware(
        MoesifUsersMiddleware,
        identify_user=identify_user,
        identify_company=identify_company,
        get_metadata=get_metadata,
        skip=skip,
        **options(),
    )
    return api
