"""A small FastAPI API whose users' Moesif profiles stay current.

Run it (against the local collector, ``moesif-users collector``)::

    MOESIF_APPLICATION_ID=demo-app MOESIF_BASE_URL=http://127.0.0.1:8787 \
        uvicorn moesif_users_middleware._demo.fastapi_app:app   # or examples.fastapi_app:app

    curl -s -X POST localhost:8000/login -H 'content-type: application/json' \
        -d '{"email": "alice@acme.example", "password": "wonderland"}'
    curl -s 'localhost:8000/projects?utm_source=newsletter' -H "authorization: Bearer $TOKEN"

Accounts sign in with a password and get a signed bearer token (an HMAC over the account
record, so any worker process can verify it). The ``current_account`` dependency puts the
account on ``request.state``, where the Moesif hooks read the user id, company and
metadata. The session token (the bearer token), IP, user agent and ``utm_*`` campaign are
picked up by the middleware's defaults.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
from dataclasses import asdict
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, HTTPException, Request
from pydantic import BaseModel

from moesif_users_middleware.starlette import MoesifUsersMiddleware, ResponseView

from .accounts import (
    Account,
    check_password,
    company_domain,
    company_metadata,
    sample_accounts,
)

__all__ = ["Account", "app", "create_app", "issue_token"]

SECRET_KEY = os.environ.get("EXAMPLE_SECRET_KEY", "example-secret-not-for-production").encode()

ACCOUNTS = sample_accounts(
    ("wonderland", Account("u-alice", "alice@acme.example", "Alice", "acme", "pro")),
    ("builder", Account("u-bob", "bob@globex.example", "Bob", "globex")),
)


def issue_token(account: Account) -> str:
    """A bearer token carrying the account record, signed with ``SECRET_KEY``."""
    payload = base64.urlsafe_b64encode(json.dumps(asdict(account)).encode()).decode().rstrip("=")
    signature = hmac.new(SECRET_KEY, payload.encode(), hashlib.sha256).hexdigest()
    return f"{payload}.{signature}"


def read_token(token: str) -> Account | None:
    """The account a token was issued for, or ``None`` for a forged or malformed one."""
    payload, _, signature = token.partition(".")
    expected = hmac.new(SECRET_KEY, payload.encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(signature, expected):
        return None
    try:
        record = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return Account(**record)
    except (ValueError, TypeError):
        return None


async def current_account(
    request: Request, authorization: Annotated[str | None, Header()] = None
) -> Account:
    """Dependency: the signed-in account (401 otherwise), also kept on ``request.state``."""
    scheme, _, token = (authorization or "").partition(" ")
    account = read_token(token.strip()) if scheme.lower() == "bearer" else None
    if account is None:
        raise HTTPException(401, "sign in first", headers={"WWW-Authenticate": "Bearer"})
    request.state.account = account
    return account


CurrentAccount = Annotated[Account, Depends(current_account)]


# --- Moesif hooks: read what the dependency stored; cheap, no I/O ------------------------
def identify_user(request: Request, response: ResponseView) -> str | None:
    account: Account | None = getattr(request.state, "account", None)
    return account.id if account else None


def identify_company(request: Request, response: ResponseView) -> str | None:
    account: Account | None = getattr(request.state, "account", None)
    return account.company_id if account else None


async def get_metadata(request: Request, response: ResponseView) -> dict[str, Any] | None:
    account: Account | None = getattr(request.state, "account", None)
    if account is None:
        return None
    return {"email": account.email, "name": account.name, "plan": account.plan}


def get_company_domain(request: Request, response: ResponseView) -> str | None:
    return company_domain(request.state.account.company_id)


def get_company_metadata(request: Request, response: ResponseView) -> dict[str, Any]:
    return company_metadata(request.state.account.company_id)


def skip(request: Request, response: ResponseView) -> bool:
    return bool(request.scope["path"] == "/health")


# --- The API -------------------------------------------------------------------------------
class Credentials(BaseModel):
    email: str
    password: str


class Signup(BaseModel):
    email: str
    password: str
    name: str
    company_id: str
    plan: str = "free"


class ProjectIn(BaseModel):
    name: str


def create_app(
    application_id: str | None = None, base_url: str | None = None, **options: Any
) -> FastAPI:
    """Build the app; Moesif options default to ``MOESIF_APPLICATION_ID``/``MOESIF_BASE_URL``."""
    api = FastAPI(title="Projects API (moesif_users_middleware example)")
    projects: dict[str, list[str]] = {}  # company id -> project names (per process)

    @api.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @api.post("/signup", status_code=201)
    async def signup(body: Signup) -> dict[str, str]:
        account = Account(
            f"u-{body.email.partition('@')[0]}", body.email, body.name, body.company_id, body.plan
        )
        ACCOUNTS[body.email] = (body.password, account)
        return {"token": issue_token(account), "user_id": account.id}

    @api.post("/login")
    async def login(body: Credentials) -> dict[str, str]:
        account = check_password(ACCOUNTS, body.email, body.password)
        if account is None:
            raise HTTPException(401, "wrong email or password")
        return {"token": issue_token(account), "user_id": account.id}

    @api.get("/me")
    async def me(account: CurrentAccount) -> dict[str, str]:
        return asdict(account)

    @api.get("/projects")
    async def list_projects(account: CurrentAccount) -> dict[str, list[str]]:
        return {"projects": projects.get(account.company_id, [])}

    @api.post("/projects", status_code=201)
    async def create_project(body: ProjectIn, account: CurrentAccount) -> dict[str, str]:
        projects.setdefault(account.company_id, []).append(body.name)
        return {"name": body.name, "company_id": account.company_id}

    api.add_middleware(
        MoesifUsersMiddleware,
        application_id=application_id,
        base_url=base_url,
        identify_user=identify_user,
        identify_company=identify_company,
        get_metadata=get_metadata,
        get_company_domain=get_company_domain,
        get_company_metadata=get_company_metadata,
        skip=skip,
        **options,
    )
    return api


# Starlette builds the middleware stack on the first event, so importing this module needs
# no application id. Serving it without one (no MOESIF_APPLICATION_ID) works too: capture
# is off and one warning says how to turn it on.
app = create_app()
