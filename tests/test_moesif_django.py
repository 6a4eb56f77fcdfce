"""Django: MoesifUsersMiddleware beside the real ``moesifdjango``, one ``MOESIF_MIDDLEWARE``.

Both middlewares read the same settings dict and send to one loopback ``BASE_URI`` (a
sink that keeps moesifdjango's events and passes profiles on to the real collector).
For the same requests, the user id on each event equals the id of the profile this
library sent: session users, JWT users, Basic users, hook users, in either middleware
order, under the WSGI and the ASGI handler.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import django_settings
import pytest

pytest.importorskip("django")
pytest.importorskip("moesifdjango")

from moesif_peers import EventSink, loopback_only
from moesif_tokens import basic, bearer_jwt
from servers import CollectorHandle

django_settings.configure()

from django.contrib.auth.models import User  # noqa: E402
from django.test import AsyncClient, Client, override_settings  # noqa: E402
from django_settings import AUTH, OURS, SESSION  # noqa: E402

from moesif_users_middleware.django import MoesifUsersMiddleware  # noqa: E402
from moesif_users_middleware.sender import _reset_senders_for_tests, get_sender  # noqa: E402

THEIRS = "moesifdjango.middleware.moesif_middleware"
PASSWORD = "correct horse battery staple"


@pytest.fixture(scope="module", autouse=True)
def _loopback() -> Iterator[None]:
    with loopback_only():
        yield


@pytest.fixture(autouse=True)
def _no_sender_left() -> Iterator[None]:
    yield
    _reset_senders_for_tests()


def header_user(request: Any, response: Any) -> str | None:
    """An IDENTIFY_USER hook: ``X-User`` when sent, else nothing (the default id)."""
    value = request.META.get("HTTP_X_USER")
    return value if isinstance(value, str) else None


def moesif_settings(app_id: str, sink: EventSink, **extra: Any) -> dict[str, Any]:
    return {
        "APPLICATION_ID": app_id,
        "BASE_URI": sink.url,
        "LOCAL_DEBUG": False,
        "LOG_BODY": True,
        "CAPTURE_OUTGOING_REQUESTS": False,
        "REQUEST_HEADER_MASKS": ["x-secret"],
        "BATCH_SIZE": 50,
        **extra,
    }


def get(client: Client | AsyncClient, path: str, **headers: str) -> int:
    """GET ``path`` with ``headers`` (``X_User="..."`` sends ``X-User``)."""
    sent = {name.replace("_", "-"): value for name, value in headers.items()}
    if isinstance(client, AsyncClient):
        response = asyncio.run(client.get(path, headers=sent))
    else:
        response = client.get(path, headers=sent)
    return int(response.status_code)


def event_ids(sink: EventSink, marker: str, count: int) -> dict[str, Any]:
    """Request number (the ``n`` query parameter) -> the user id on moesifdjango's event."""
    events = sink.events_for(marker, count)
    return {event["request"]["uri"].rpartition("n=")[2]: event.get("user_id") for event in events}


def profile_ids(collector: CollectorHandle, app_id: str, sink: EventSink) -> set[str]:
    assert get_sender(application_id=app_id, base_url=sink.url).flush(10)
    return {profile["user_id"] for profile in collector.list_users(app_id)}


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("order", ["ours-first", "theirs-first"])
def test_ids_agree_side_by_side(
    mode: str, order: str, app_id: str, moesif_sink: EventSink, collector: CollectorHandle
) -> None:
    marker = uuid.uuid4().hex[:12]
    alice = User.objects.create_user(f"alice-{marker}", password=PASSWORD)
    pair = [OURS, THEIRS] if order == "ours-first" else [THEIRS, OURS]
    settings = moesif_settings(app_id, moesif_sink, IDENTIFY_USER=header_user)
    with override_settings(
        MOESIF_USERS=None, MOESIF_MIDDLEWARE=settings, MIDDLEWARE=[SESSION, AUTH, *pair]
    ):
        client: Client | AsyncClient = Client() if mode == "sync" else AsyncClient()
        base = f"/hello?m={marker}&n="
        requests = {
            "0": {},  # anonymous: no id on either side
            "1": {"Authorization": basic(f"basic-{marker}", "s3cret-pw")},
            "2": {"Authorization": bearer_jwt(sub=f"jwt{marker}", name="J")},
            "3": {"X_User": f"hook-{marker}"},
            "4": {"Authorization": "Bearer not-a-jwt"},  # no id either
        }
        for number, headers in requests.items():
            assert get(client, base + number, **headers) == 201
        assert client.login(username=alice.username, password=PASSWORD)
        assert get(client, f"/whoami?m={marker}&n=5") == 200  # the session user
        jwt = bearer_jwt(sub=f"other{marker}")
        assert get(client, f"/hello?m={marker}&n=6", Authorization=jwt) == 201

    events = event_ids(moesif_sink, marker, 7)
    expected = {
        "0": None,
        "1": f"basic-{marker}",
        "2": f"jwt{marker}",
        "3": f"hook-{marker}",
        "4": None,
        "5": alice.username,
        "6": alice.username,  # the session user wins over the header, in both
    }
    assert events == expected
    profiles = profile_ids(collector, app_id, moesif_sink)
    assert profiles == {user_id for user_id in expected.values() if user_id}
    stored = str(collector.list_users(app_id))
    assert "s3cret-pw" not in stored  # a Basic password is never sent


def test_custom_header_and_claim(
    app_id: str, moesif_sink: EventSink, collector: CollectorHandle
) -> None:
    """AUTHORIZATION_HEADER_NAME / AUTHORIZATION_USER_ID_FIELD and a masked header."""
    marker = uuid.uuid4().hex[:12]
    settings = moesif_settings(
        app_id,
        moesif_sink,
        AUTHORIZATION_HEADER_NAME="X-Secret, X-Token",
        AUTHORIZATION_USER_ID_FIELD="UserId",
    )
    with override_settings(
        MOESIF_USERS=None, MOESIF_MIDDLEWARE=settings, MIDDLEWARE=[SESSION, AUTH, THEIRS, OURS]
    ):
        client = Client()
        token = bearer_jwt(userid=f"claim{marker}").removeprefix("Bearer ")
        masked = bearer_jwt(userid=f"masked{marker}").removeprefix("Bearer ")
        assert get(client, f"/hello?m={marker}&n=0", X_Token=token) == 201
        # X-Secret is masked: moesifdjango never sees it, so X-Token decides.
        assert get(client, f"/hello?m={marker}&n=1", X_Secret=masked) == 201
        assert get(client, f"/hello?m={marker}&n=2", Authorization=bearer_jwt(sub="x")) == 201

    assert event_ids(moesif_sink, marker, 3) == {"0": f"claim{marker}", "1": None, "2": None}
    assert profile_ids(collector, app_id, moesif_sink) == {f"claim{marker}"}


def test_update_user_and_company_like_moesifdjango(
    app_id: str, moesif_sink: EventSink, collector: CollectorHandle
) -> None:
    """``MoesifUsersMiddleware(None).update_user(...)``, as moesifdjango's README calls it."""
    settings = moesif_settings(app_id, moesif_sink)
    with override_settings(MOESIF_USERS=None, MOESIF_MIDDLEWARE=settings):
        middleware = MoesifUsersMiddleware(None)
        assert middleware.update_user({"user_id": "12345", "metadata": {"plan": "pro"}})
        assert middleware.update_users_batch([{"user_id": 678}, '{"user_id": "910"}'])
        assert middleware.update_company({"company_id": "67890", "company_domain": "acme.com"})
        assert middleware.update_companies_batch([{"company_id": "c2"}])
        assert not middleware.update_user({"metadata": {}})  # no user_id: logged, not raised
    assert profile_ids(collector, app_id, moesif_sink) == {"12345", "678", "910"}
    assert collector.get_user(app_id, "12345")["metadata"] == {"plan": "pro"}  # type: ignore[index]
    companies = {company["company_id"]: company for company in moesif_sink.companies}
    assert companies["67890"]["company_domain"] == "acme.com"
    assert "c2" in companies
