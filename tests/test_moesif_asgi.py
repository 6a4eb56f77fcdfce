"""Starlette: MoesifUsersMiddleware beside the real ``moesifasgi``, one settings dict.

A Starlette app with both middlewares added (in either order) and Starlette's test
client. Both read the same dict, with moesifasgi's hooks as they are (``(request,
response)``, plain or ``async def``), and send to one loopback ``BASE_URI``; for the same
requests, the user id on each of moesifasgi's events equals the id of the profile this
library sent.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("starlette")
pytest.importorskip("moesifasgi")

from moesif_peers import EventSink, loopback_only
from moesif_tokens import basic, bearer_jwt
from moesifasgi import MoesifMiddleware
from servers import CollectorHandle
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from moesif_users_middleware.sender import _reset_senders_for_tests, get_sender
from moesif_users_middleware.starlette import MoesifUsersMiddleware


@pytest.fixture(scope="module", autouse=True)
def _loopback() -> Iterator[None]:
    with loopback_only():
        yield


@pytest.fixture(autouse=True)
def _no_sender_left() -> Iterator[None]:
    yield
    _reset_senders_for_tests()


async def hello(request: Request) -> PlainTextResponse:
    return PlainTextResponse("hello", status_code=201, headers={"X-Company": "acme"})


# Hooks in moesifasgi's shapes: (request, response), plain or async.
def identify_user(request: Any, response: Any) -> Any:
    return request.headers.get("x-user")


async def aidentify_user(request: Any, response: Any) -> Any:
    return request.headers.get("x-user")


def identify_company(request: Any, response: Any) -> Any:
    return response.headers.get("x-company")


async def get_metadata(request: Any, response: Any) -> dict[str, Any]:
    return {"path": request.url.path, "status": response.status_code}


def skip(request: Any, response: Any) -> bool:
    return bool(request.url.path == "/health")


def build(order: str, settings: dict[str, Any]) -> Starlette:
    app = Starlette(routes=[Route("/hello", hello), Route("/health", hello)])
    # The middleware added last is the outermost.
    if order == "ours-outside":
        app.add_middleware(MoesifMiddleware, settings=settings)
        app.add_middleware(MoesifUsersMiddleware, moesif_settings=settings)
    else:
        app.add_middleware(MoesifUsersMiddleware, moesif_settings=settings)
        app.add_middleware(MoesifMiddleware, settings=settings)
    return app


@pytest.mark.parametrize("hook", [identify_user, aidentify_user], ids=["sync-hook", "async-hook"])
@pytest.mark.parametrize("order", ["ours-outside", "theirs-outside"])
def test_ids_agree_side_by_side(
    order: str, hook: Any, app_id: str, moesif_sink: EventSink, collector: CollectorHandle
) -> None:
    marker = uuid.uuid4().hex[:12]
    settings = {
        "APPLICATION_ID": app_id,
        "BASE_URI": moesif_sink.url,
        "DEBUG": False,
        "LOG_BODY": True,
        "EVENT_BATCH_TIMEOUT": 0.2,
        "IDENTIFY_USER": hook,
        "IDENTIFY_COMPANY": identify_company,
        "GET_METADATA": get_metadata,
        "SKIP": skip,
    }
    requests: dict[str, dict[str, str]] = {
        "0": {},
        "1": {"Authorization": basic(f"basic-{marker}", "s3cret-pw")},
        "2": {"Authorization": bearer_jwt(sub=f"jwt{marker}")},
        "3": {"X-User": f"hook-{marker}", "Authorization": bearer_jwt(sub="not-this")},
        "4": {"Authorization": "Bearer not.a-jwt.at-all"},
    }
    with TestClient(build(order, settings)) as client:
        for number, headers in requests.items():
            response = client.get(f"/hello?m={marker}&n={number}", headers=headers)
            assert response.status_code == 201
            assert response.text == "hello"
        assert client.get("/health", headers={"X-User": "skipped"}).status_code == 201

    events = moesif_sink.events_for(marker, len(requests))
    ids = {event["request"]["uri"].rpartition("n=")[2]: event.get("user_id") for event in events}
    expected = {
        "0": None,
        "1": f"basic-{marker}",
        "2": f"jwt{marker}",
        "3": f"hook-{marker}",
        "4": None,
    }
    assert ids == expected
    assert {event.get("company_id") for event in events} == {"acme"}
    assert get_sender(application_id=app_id, base_url=moesif_sink.url).flush(10)
    profiles = {profile["user_id"]: profile for profile in collector.list_users(app_id)}
    assert set(profiles) == {user_id for user_id in expected.values() if user_id}
    assert {profile.get("company_id") for profile in profiles.values()} == {"acme"}
    assert profiles[f"jwt{marker}"]["metadata"] == {"path": "/hello", "status": 201}
    assert "s3cret-pw" not in str(profiles)


def test_update_user_on_the_middleware(
    app_id: str, moesif_sink: EventSink, collector: CollectorHandle
) -> None:
    settings = {"APPLICATION_ID": app_id, "BASE_URI": moesif_sink.url}
    middleware = MoesifUsersMiddleware(hello, moesif_settings=settings)
    assert middleware.update_user({"user_id": "a-1"})
    assert middleware.update_users_batch([{"user_id": "a-2"}])
    assert middleware.update_company({"company_id": "ac-1"})
    assert middleware.update_companies_batch([{"company_id": "ac-2"}])
    assert get_sender(application_id=app_id, base_url=moesif_sink.url).flush(10)
    assert {profile["user_id"] for profile in collector.list_users(app_id)} == {"a-1", "a-2"}
    assert {"ac-1", "ac-2"} <= {company["company_id"] for company in moesif_sink.companies}
