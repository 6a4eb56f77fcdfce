"""The Django app ``load_soak.py`` serves under gunicorn (``load_django:application``).

Settings are made here (no project folder): one JSON view, no database, and the
``MoesifUsersMiddleware`` entry (``LOAD_MOESIF=off``: ``ENABLED`` false). Like a real app,
it authenticates each request once, in its own middleware before Moesif's (as Django's
``AuthenticationMiddleware`` does), and keeps the user id in ``request.user_id``; the
view and the hooks read it from there, in the bare variant too.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import django
from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import path
from load_apps import STATS_PATH, company_of, metadata_of, options, sender_stats
from load_apps import user_from_authorization as user_from

__all__ = ["application"]


def bearer_auth(get_response: Callable[[HttpRequest], HttpResponse]) -> Any:
    """The app's authentication: ``request.user_id`` from ``Authorization: Bearer <id>``."""

    def middleware(request: HttpRequest) -> HttpResponse:
        request.user_id = user_from(request.META.get("HTTP_AUTHORIZATION"))  # type: ignore[attr-defined]
        return get_response(request)

    return middleware


def identify_user(request: HttpRequest, response: HttpResponse) -> str | None:
    user_id: str | None = getattr(request, "user_id", None)
    return user_id


def identify_company(request: HttpRequest, response: HttpResponse) -> str | None:
    user_id = getattr(request, "user_id", None)
    return company_of(user_id) if user_id else None


def get_metadata(request: HttpRequest, response: HttpResponse) -> dict[str, Any] | None:
    user_id = getattr(request, "user_id", None)
    return metadata_of(user_id) if user_id else None


def skip(request: HttpRequest, response: HttpResponse) -> bool:
    return request.path == STATS_PATH


def items(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"items": [1, 2, 3], "user": getattr(request, "user_id", None)})


def stats(request: HttpRequest) -> JsonResponse:
    return JsonResponse(sender_stats())


urlpatterns = [path("items", items), path(STATS_PATH.lstrip("/"), stats)]

settings.configure(
    DEBUG=False,
    SECRET_KEY="load-soak-only",
    ALLOWED_HOSTS=["127.0.0.1", "localhost"],
    ROOT_URLCONF=__name__,
    INSTALLED_APPS=[],
    DATABASES={},
    MIDDLEWARE=[
        "load_django.bearer_auth",
        "moesif_users_middleware.django.MoesifUsersMiddleware",
    ],
    MOESIF_USERS={
        "IDENTIFY_USER": identify_user,
        "IDENTIFY_COMPANY": identify_company,
        "GET_METADATA": get_metadata,
        "SKIP": skip,
        "ENABLED": options()["enabled"],
    },
    USE_TZ=True,
)
django.setup()

from django.core.wsgi import get_wsgi_application  # noqa: E402  (after settings)

application = get_wsgi_application()
