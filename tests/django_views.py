"""URLs, views and hooks of the small Django site the Django adapter tests drive.

Users come from a session login (``whoami`` reads ``request.user``) or from a signed
Bearer token that the view itself checks and then assigns to ``request.user``, the way
DRF's authentication does.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

from django.contrib.auth import get_user_model
from django.core import signing
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.urls import path

_TOKEN_SALT = "django-adapter-tests.token"


def issue_token(user: Any) -> str:
    return signing.dumps(user.pk, salt=_TOKEN_SALT)


def _token_user_pk(request: HttpRequest) -> Any:
    scheme, _, token = request.META.get("HTTP_AUTHORIZATION", "").partition(" ")
    if scheme != "Bearer":
        return None
    try:
        return signing.loads(token, salt=_TOKEN_SALT)
    except signing.BadSignature:
        return None


# --- views -----------------------------------------------------------------------------------
def hello(request: HttpRequest) -> HttpResponse:
    """Never touches ``request.user``."""
    return HttpResponse(b"hello", status=201, headers={"X-App": "1", "Cache-Control": "no-store"})


def whoami(request: HttpRequest) -> JsonResponse:
    user: Any = request.user
    return JsonResponse({"user": user.pk if user.is_authenticated else None})


async def awhoami(request: HttpRequest) -> JsonResponse:
    user: Any = await request.auser()
    return JsonResponse({"user": user.pk if user.is_authenticated else None})


def token_whoami(request: HttpRequest) -> JsonResponse:
    pk = _token_user_pk(request)
    if pk is None:
        return JsonResponse({"error": "token required"}, status=401)
    request.user = get_user_model().objects.get(pk=pk)
    return JsonResponse({"user": pk})


async def atoken_whoami(request: HttpRequest) -> JsonResponse:
    pk = _token_user_pk(request)
    if pk is None:
        return JsonResponse({"error": "token required"}, status=401)
    request.user = await get_user_model().objects.aget(pk=pk)
    return JsonResponse({"user": pk})


def stream(request: HttpRequest) -> StreamingHttpResponse:
    """Loads the user, then streams three chunks, noting each as it is produced."""
    user: Any = request.user
    assert user.is_authenticated
    produced: list[int] = []
    request.produced = produced  # type: ignore[attr-defined]

    def chunks() -> Iterator[bytes]:
        for number in range(3):
            produced.append(number)
            yield f"chunk{number}\n".encode()

    return StreamingHttpResponse(chunks(), content_type="text/plain")


async def astream(request: HttpRequest) -> StreamingHttpResponse:
    user: Any = await request.auser()
    assert user.is_authenticated
    produced: list[int] = []
    request.produced = produced  # type: ignore[attr-defined]

    async def chunks() -> AsyncIterator[bytes]:
        for number in range(3):
            produced.append(number)
            yield f"chunk{number}\n".encode()

    return StreamingHttpResponse(chunks(), content_type="text/plain")


urlpatterns = [
    path("hello", hello),
    path("health", hello),
    path("whoami", whoami),
    path("awhoami", awhoami),
    path("token/whoami", token_whoami),
    path("token/awhoami", atoken_whoami),
    path("stream", stream),
    path("astream", astream),
]


# --- hooks (configured by dotted path) ---------------------------------------------------
def company_from_user(request: HttpRequest, response: HttpResponse) -> str:
    """The user's email domain stands for the company."""
    user: Any = request.user
    return str(user.email.partition("@")[2])


def metadata_from_user(request: HttpRequest, response: HttpResponse) -> dict[str, Any]:
    user: Any = request.user
    return {"email": user.email, "first_name": user.first_name, "status": response.status_code}


async def acompany_from_user(request: HttpRequest, response: HttpResponse) -> str:
    await asyncio.sleep(0)
    user: Any = request.user  # set by the token view: a plain object, no query
    return "async-" + str(user.email.partition("@")[2])


async def ametadata_from_user(request: HttpRequest, response: HttpResponse) -> dict[str, Any]:
    await asyncio.sleep(0)
    user: Any = request.user
    return {"email": user.email, "async_hook": True}


def stream_metadata(request: HttpRequest, response: HttpResponse) -> dict[str, Any]:
    """How many chunks the view had produced when the capture ran."""
    return {"chunks_before_capture": len(request.produced), "streaming": response.streaming}  # type: ignore[attr-defined]


def skip_health(request: HttpRequest, response: HttpResponse) -> bool:
    return request.path == "/health"


def explode(request: HttpRequest, response: HttpResponse) -> Any:
    raise RuntimeError("this hook always fails")


def header_user(request: HttpRequest, response: HttpResponse) -> str | None:
    value = request.META.get("HTTP_X_USER")
    return value if isinstance(value, str) else None


def company_domain_from_user(request: HttpRequest, response: HttpResponse) -> str:
    user: Any = request.user
    return "www." + str(user.email.partition("@")[2])


async def acompany_metadata(request: HttpRequest, response: HttpResponse) -> dict[str, Any]:
    await asyncio.sleep(0)
    return {"plan": "enterprise", "seats": 12}
