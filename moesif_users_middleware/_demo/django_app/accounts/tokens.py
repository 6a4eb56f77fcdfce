"""Signed API tokens (``Authorization: Bearer <token>``) and the view decorator using them."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.contrib.auth import get_user_model
from django.core import signing
from django.http import HttpRequest, HttpResponse, JsonResponse

_SALT = "accounts.api-token"
_MAX_AGE = 30 * 24 * 3600


def issue_token(user: Any) -> str:
    """A token naming the user, signed with ``SECRET_KEY``."""
    return signing.dumps({"uid": user.pk}, salt=_SALT)


def user_for_token(token: str) -> Any:
    """The active user the token names, with profile and company loaded; else ``None``."""
    try:
        user_id = signing.loads(token, salt=_SALT, max_age=_MAX_AGE)["uid"]
    except (signing.BadSignature, KeyError, TypeError):
        return None
    return (
        get_user_model()
        .objects.select_related("profile__company")
        .filter(pk=user_id, is_active=True)
        .first()
    )


def token_required(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Authenticate with a Bearer token and set ``request.user`` (as DRF does), else 401."""

    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        scheme, _, token = request.META.get("HTTP_AUTHORIZATION", "").partition(" ")
        user = user_for_token(token.strip()) if scheme.lower() == "bearer" else None
        if user is None:
            return JsonResponse({"error": "a valid Bearer token is required"}, status=401)
        request.user = user
        return view(request, *args, **kwargs)

    return wrapper
