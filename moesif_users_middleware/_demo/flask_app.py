"""A small Flask API (Flask-Login with API tokens) whose users' Moesif profiles stay current.

Run it (against the local collector, ``moesif-users collector``)::

    export MOESIF_APPLICATION_ID=demo-app MOESIF_BASE_URL=http://127.0.0.1:8787
    flask --app moesif_users_middleware._demo.flask_app run
    gunicorn --preload -w 2 'moesif_users_middleware._demo.flask_app:create_app()'
    # or, from a checkout: flask --app examples.flask_app run

    curl -s -X POST localhost:5000/login -H 'content-type: application/json' \
        -d '{"email": "alice@acme.example", "password": "wonderland"}'
    curl -s 'localhost:5000/projects?utm_source=newsletter' -H "Authorization: Bearer $TOKEN"

Accounts sign in (or sign up) with a password and get an API token: the account record
signed with the app's secret key (``itsdangerous``, which Flask ships with), so any
worker process can verify it. Clients send it as ``Authorization: Bearer <token>`` or
``X-Api-Key``. Flask-Login's ``request_loader`` turns the token into the user, so the
extension's default user id is ``current_user``'s: no ``identify_user`` hook is needed.
The company and metadata hooks read the account behind ``current_user`` (and what the
view left on ``g``); the session token (the API token), IP, user agent and ``utm_*``
campaign are picked up by the extension's defaults.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import asdict
from typing import Any, TypeVar, cast

import flask_login
from flask import Flask, Request, Response, abort, g, jsonify, request
from flask_login import LoginManager, UserMixin, current_user
from itsdangerous import BadSignature, URLSafeSerializer

from moesif_users_middleware.flask import MoesifUsers

from . import accounts
from .accounts import check_password, company_domain, company_metadata, sample_accounts

__all__ = ["Account", "create_app", "issue_token", "moesif"]

SECRET_KEY = os.environ.get("EXAMPLE_SECRET_KEY", "example-secret-not-for-production")
_tokens = URLSafeSerializer(SECRET_KEY, salt="api-token")


class Account(accounts.Account, UserMixin):  # type: ignore[misc]
    """The account record, as Flask-Login's ``current_user``."""


ACCOUNTS = sample_accounts(
    ("wonderland", Account("u-alice", "alice@acme.example", "Alice", "acme", "pro")),
    ("builder", Account("u-bob", "bob@globex.example", "Bob", "globex")),
)


def issue_token(account: accounts.Account) -> str:
    """An API token carrying the account record, signed with ``SECRET_KEY``."""
    return _tokens.dumps(asdict(account))


def read_token(token: str) -> Account | None:
    """The account a token was issued for, or ``None`` for a forged or malformed one."""
    try:
        return Account(**_tokens.loads(token))
    except (BadSignature, TypeError, ValueError):
        return None


View = TypeVar("View", bound=Callable[..., Any])


def login_required(view: View) -> View:
    """Flask-Login's ``login_required`` (Flask-Login ships no type hints)."""
    return cast(View, flask_login.login_required(view))


def load_user_from_token(req: Request) -> Account | None:
    token = req.headers.get("X-Api-Key")
    if token is None:
        scheme, _, value = req.headers.get("Authorization", "").partition(" ")
        token = value.strip() if scheme.lower() == "bearer" else None
    return read_token(token) if token else None


def unauthorized() -> tuple[Response, int]:
    return jsonify(detail="sign in first"), 401


login_manager = LoginManager()
login_manager.request_loader(load_user_from_token)
login_manager.unauthorized_handler(unauthorized)


# --- Moesif hooks (user id: Flask-Login's current_user, by default); cheap, no I/O ---------
def identify_company(request: Request, response: Response) -> str | None:
    return current_user.company_id if current_user.is_authenticated else None


def get_metadata(request: Request, response: Response) -> dict[str, Any] | None:
    if not current_user.is_authenticated:
        return None
    metadata = {"email": current_user.email, "name": current_user.name, "plan": current_user.plan}
    if "project" in g:  # left by the view that served this request
        metadata["last_project"] = g.project
    return metadata


def get_company_domain(request: Request, response: Response) -> str | None:
    return company_domain(current_user.company_id)


def get_company_metadata(request: Request, response: Response) -> dict[str, Any]:
    return company_metadata(current_user.company_id)


def skip(request: Request, response: Response) -> bool:
    return request.path == "/health"


moesif = MoesifUsers(
    identify_company=identify_company,
    get_metadata=get_metadata,
    get_company_domain=get_company_domain,
    get_company_metadata=get_company_metadata,
    skip=skip,
)


# --- The API -------------------------------------------------------------------------------
def create_app(
    application_id: str | None = None, base_url: str | None = None, **options: Any
) -> Flask:
    """Build the app; Moesif options default to ``MOESIF_APPLICATION_ID``/``MOESIF_BASE_URL``.

    ``options`` are passed to ``MoesifUsers.init_app`` (e.g. ``flush_interval=0.5``).
    """
    app = Flask(__name__)
    app.config["SECRET_KEY"] = SECRET_KEY
    if application_id is not None:
        app.config["MOESIF_USERS_APPLICATION_ID"] = application_id
    if base_url is not None:
        app.config["MOESIF_USERS_BASE_URL"] = base_url
    login_manager.init_app(app)
    moesif.init_app(app, **options)
    add_account_routes(app)
    add_project_routes(app)
    return app


def add_account_routes(app: Flask) -> None:
    """Health, sign-up and login (both answer an API token), and the signed-in account."""

    @app.get("/health")
    def health() -> Response:
        return jsonify(status="ok")

    @app.post("/signup")
    def signup() -> tuple[Response, int]:
        body = request.get_json(silent=True) or {}
        try:
            email, password = str(body["email"]), str(body["password"])
            account = Account(
                f"u-{email.partition('@')[0]}",
                email,
                str(body["name"]),
                str(body["company_id"]),
                str(body.get("plan", "free")),
            )
        except KeyError as exc:
            return jsonify(detail=f"missing field {exc.args[0]}"), 400
        ACCOUNTS[email] = (password, account)
        return jsonify(token=issue_token(account), user_id=account.id), 201

    @app.post("/login")
    def login() -> Response | tuple[Response, int]:
        body = request.get_json(silent=True) or {}
        account = check_password(
            ACCOUNTS, str(body.get("email", "")), str(body.get("password", ""))
        )
        if account is None:
            return jsonify(detail="wrong email or password"), 401
        return jsonify(token=issue_token(account), user_id=account.id)

    @app.get("/me")
    @login_required
    def me() -> Response:
        return jsonify(asdict(current_user._get_current_object()))


def add_project_routes(app: Flask) -> None:
    """The signed-in account's company projects: listed, and created (left on ``g``)."""
    projects: dict[str, list[str]] = {}  # company id -> project names (per process)

    @app.get("/projects")
    @login_required
    def list_projects() -> Response:
        return jsonify(projects=projects.get(current_user.company_id, []))

    @app.post("/projects")
    @login_required
    def create_project() -> tuple[Response, int]:
        name = str((request.get_json(silent=True) or {}).get("name", "")).strip()
        if not name:
            abort(400)
        projects.setdefault(current_user.company_id, []).append(name)
        g.project = name
        return jsonify(name=name, company_id=current_user.company_id), 201
