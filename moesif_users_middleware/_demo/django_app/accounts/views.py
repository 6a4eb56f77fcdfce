"""The example API: a token login, the user's own record and their company."""

from __future__ import annotations

import json
from typing import Any

from django.contrib import auth
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from .tokens import issue_token, token_required


def _authenticate(request: HttpRequest) -> Any:
    """The user the JSON body's ``username`` and ``password`` name, else ``None``."""
    try:
        body = json.loads(request.body or b"{}")
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    username, password = str(body.get("username", "")), str(body.get("password", ""))
    return auth.authenticate(request, username=username, password=password)


def _invalid_credentials() -> JsonResponse:
    return JsonResponse({"error": "invalid credentials"}, status=401)


def _user_json(user: Any) -> dict[str, Any]:
    profile = getattr(user, "profile", None)
    return {
        "id": user.pk,
        "username": user.username,
        "email": user.email,
        "company": profile.company.slug if profile is not None else None,
    }


@require_GET
def health(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


@csrf_exempt
@require_POST
def login(request: HttpRequest) -> JsonResponse:
    """``{"username", "password"}`` -> ``{"token"}`` for ``Authorization: Bearer``."""
    user = _authenticate(request)
    if user is None:
        return _invalid_credentials()
    return JsonResponse({"token": issue_token(user)})


@require_GET
@token_required
def me(request: HttpRequest) -> JsonResponse:
    return JsonResponse(_user_json(request.user))


@require_GET
@token_required
def company(request: HttpRequest) -> JsonResponse:
    profile = getattr(request.user, "profile", None)
    if profile is None:
        return JsonResponse({"error": "no company"}, status=404)
    members = profile.company.members.select_related("user").order_by("user__username")
    return JsonResponse(
        {
            "slug": profile.company.slug,
            "name": profile.company.name,
            "plan": profile.company.plan,
            "members": [member.user.username for member in members],
        }
    )


@csrf_exempt
@require_POST
def session_login(request: HttpRequest) -> JsonResponse:
    """Log in with a session cookie (what a browser front end would use)."""
    user = _authenticate(request)
    if user is None:
        return _invalid_credentials()
    auth.login(request, user)
    return JsonResponse(_user_json(user))


@require_GET
def session_me(request: HttpRequest) -> JsonResponse:
    user: Any = request.user
    if not user.is_authenticated:
        return JsonResponse({"error": "not logged in"}, status=401)
    return JsonResponse(_user_json(user))
