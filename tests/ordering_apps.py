"""Apps for the several-workers ordering test (served by gunicorn and uvicorn).

Each answers with the pid of the worker that served it; the user is named by the
``X-User`` header. Everything else (user agent, client IP through ``X-Forwarded-For``
from the trusted loopback proxy, campaign) comes from the library's defaults. The sender
posts every second, far less often than a round of requests, so both workers' updates for one user are in
flight at once, in either order.
"""

from __future__ import annotations

import os
from typing import Any

FLUSH_INTERVAL = 1.0


def flask_app() -> Any:
    from flask import Flask, jsonify, request

    from moesif_users_middleware.flask import MoesifUsers

    app = Flask(__name__)
    MoesifUsers(
        app,
        identify_user=lambda req, resp: req.headers.get("X-User"),
        flush_interval=FLUSH_INTERVAL,
    )

    @app.get("/")
    def index() -> Any:
        return jsonify(pid=os.getpid(), user=request.headers.get("X-User"))

    return app


def starlette_app() -> Any:
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from moesif_users_middleware.starlette import MoesifUsersMiddleware

    async def index(request: Request) -> JSONResponse:
        return JSONResponse({"pid": os.getpid(), "user": request.headers.get("x-user")})

    return Starlette(
        routes=[Route("/", index)],
        middleware=[
            Middleware(
                MoesifUsersMiddleware,
                identify_user=lambda req, resp: req.headers.get("x-user"),
                flush_interval=FLUSH_INTERVAL,
            )
        ],
    )


starlette = starlette_app()
