"""The Flask app ``load_soak.py`` serves under gunicorn (``'load_flask:create_app()'``).

Like a real app, it authenticates each request once (a ``before_request`` function) and
keeps the user id in ``g.user_id``; the route and the hooks read it from there, in the
bare variant too.
"""

from __future__ import annotations

from typing import Any

from flask import Flask, Request, Response, g, jsonify, request
from load_apps import STATS_PATH, company_of, metadata_of, options, sender_stats
from load_apps import user_from_authorization as user_from

from moesif_users_middleware.flask import MoesifUsers

__all__ = ["create_app"]


def authenticate() -> None:
    """The app's authentication: ``g.user_id`` from ``Authorization: Bearer <id>``."""
    g.user_id = user_from(request.headers.get("Authorization"))


def identify_user(req: Request, response: Response) -> str | None:
    user_id: str | None = g.get("user_id")
    return user_id


def identify_company(req: Request, response: Response) -> str | None:
    user_id = g.get("user_id")
    return company_of(user_id) if user_id else None


def get_metadata(req: Request, response: Response) -> dict[str, Any] | None:
    user_id = g.get("user_id")
    return metadata_of(user_id) if user_id else None


def skip(req: Request, response: Response) -> bool:
    return req.path == STATS_PATH


def create_app() -> Flask:
    """One JSON route with the ``MoesifUsers`` extension (``LOAD_MOESIF=off``: disabled)."""
    app = Flask(__name__)
    app.before_request(authenticate)

    @app.get("/items")
    def items() -> Response:
        return jsonify(items=[1, 2, 3], user=g.user_id)

    @app.get(STATS_PATH)
    def stats() -> Response:
        return jsonify(sender_stats())

    MoesifUsers(
        app,
        identify_user=identify_user,
        identify_company=identify_company,
        get_metadata=get_metadata,
        skip=skip,
        **options(),
    )
    return app
