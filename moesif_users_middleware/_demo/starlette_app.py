"""A small Starlette API (``AuthenticationMiddleware`` + API keys) with Moesif user profiles.

Run it (against the local collector, ``moesif-users collector``)::

    MOESIF_APPLICATION_ID=demo-app MOESIF_BASE_URL=http://127.0.0.1:8787 \
        uvicorn moesif_users_middleware._demo.starlette_app:app   # or examples.starlette_app:app

    curl -s -X POST localhost:8000/login -H 'content-type: application/json' \
        -d '{"email": "carol@initech.example", "password": "tps-report"}'
    curl -s localhost:8000/reports -H "x-api-key: $API_KEY"

Clients authenticate with an API key (``X-Api-Key`` or ``Authorization: Bearer``). The
authentication backend puts an :class:`AccountUser` on ``scope["user"]``; the Moesif
middleware's default user id is that user's ``identity``, so no ``identify_user`` hook is
needed. The company and metadata hooks read the account behind ``request.user``.
"""

from __future__ import annotations

from typing import Any

from starlette.applications import Starlette
from starlette.authentication import (
    AuthCredentials,
    AuthenticationBackend,
    BaseUser,
    requires,
)
from starlette.middleware import Middleware
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from moesif_users_middleware.starlette import MoesifUsersMiddleware, ResponseView

from .accounts import (
    Account,
    check_password,
    company_domain,
    company_metadata,
    sample_accounts,
)

__all__ = ["AccountUser", "app", "create_app"]

ACCOUNTS = sample_accounts(
    ("tps-report", Account("u-carol", "carol@initech.example", "Carol", "initech", "pro")),
    ("stapler", Account("u-dave", "dave@initrode.example", "Dave", "initrode")),
)
# API key -> account. A real app stores keys (hashed) beside its accounts.
BY_API_KEY = {f"key-{account.id.removeprefix('u-')}": account for _, account in ACCOUNTS.values()}
API_KEY_OF = {account.id: key for key, account in BY_API_KEY.items()}


class AccountUser(BaseUser):
    """The authenticated user Starlette keeps in ``scope["user"]``."""

    def __init__(self, account: Account) -> None:
        self.account = account

    @property
    def is_authenticated(self) -> bool:
        return True

    @property
    def display_name(self) -> str:
        return self.account.name

    @property
    def identity(self) -> str:
        return self.account.id


class ApiKeyBackend(AuthenticationBackend):
    """``X-Api-Key: <key>`` or ``Authorization: Bearer <key>``."""

    async def authenticate(self, conn: HTTPConnection) -> tuple[AuthCredentials, BaseUser] | None:
        key = conn.headers.get("x-api-key")
        if key is None:
            scheme, _, token = conn.headers.get("authorization", "").partition(" ")
            key = token.strip() if scheme.lower() == "bearer" else None
        account = BY_API_KEY.get(key) if key else None
        if account is None:
            return None
        return AuthCredentials(["authenticated"]), AccountUser(account)


# --- Moesif hooks (the user id comes from scope["user"] by default) ------------------------
def identify_company(request: Request, response: ResponseView) -> str | None:
    user = request.user
    return user.account.company_id if isinstance(user, AccountUser) else None


def get_metadata(request: Request, response: ResponseView) -> dict[str, Any] | None:
    user = request.user
    if not isinstance(user, AccountUser):
        return None
    return {"email": user.account.email, "name": user.account.name, "plan": user.account.plan}


def get_company_domain(request: Request, response: ResponseView) -> str | None:
    return company_domain(request.user.account.company_id)


def get_company_metadata(request: Request, response: ResponseView) -> dict[str, Any]:
    return company_metadata(request.user.account.company_id)


def skip(request: Request, response: ResponseView) -> bool:
    return bool(request.scope["path"] == "/health")


# --- The API -------------------------------------------------------------------------------
async def health(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


async def login(request: Request) -> JSONResponse:
    body = await request.json()
    account = check_password(ACCOUNTS, str(body.get("email", "")), str(body.get("password", "")))
    if account is None:
        return JSONResponse({"detail": "wrong email or password"}, status_code=401)
    return JSONResponse({"api_key": API_KEY_OF[account.id], "user_id": account.id})


@requires("authenticated", status_code=401)
async def me(request: Request) -> JSONResponse:
    account: Account = request.user.account
    return JSONResponse({"id": account.id, "email": account.email, "company": account.company_id})


@requires("authenticated", status_code=401)
async def reports(request: Request) -> JSONResponse:
    company = request.user.account.company_id
    return JSONResponse({"company": company, "reports": [f"{company}-q1", f"{company}-q2"]})


def create_app(
    application_id: str | None = None, base_url: str | None = None, **options: Any
) -> Starlette:
    """Build the app; Moesif options default to ``MOESIF_APPLICATION_ID``/``MOESIF_BASE_URL``."""
    return Starlette(
        routes=[
            Route("/health", health),
            Route("/login", login, methods=["POST"]),
            Route("/me", me),
            Route("/reports", reports),
        ],
        middleware=[
            Middleware(AuthenticationMiddleware, backend=ApiKeyBackend()),
            Middleware(
                MoesifUsersMiddleware,
                application_id=application_id,
                base_url=base_url,
                identify_company=identify_company,
                get_metadata=get_metadata,
                get_company_domain=get_company_domain,
                get_company_metadata=get_company_metadata,
                skip=skip,
                **options,
            ),
        ],
    )


# The middleware stack is built on the first event: importing needs no application id.
app = create_app()
