"""The FastAPI example app under FastAPI's TestClient, delivering to the real collector."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("fastapi")

from fastapi import Depends, FastAPI, Request
from fastapi.responses import StreamingResponse
from fastapi.testclient import TestClient
from servers import CollectorHandle

from moesif_users_middleware._demo import fastapi_app
from moesif_users_middleware.sender import _reset_senders_for_tests, get_sender
from moesif_users_middleware.starlette import MoesifUsersMiddleware, ResponseView


@pytest.fixture(autouse=True)
def _no_sender_left() -> Iterator[None]:
    yield
    _reset_senders_for_tests()


@pytest.fixture
def client(app_id: str, collector: CollectorHandle) -> Iterator[TestClient]:
    app = fastapi_app.create_app(application_id=app_id, base_url=collector.url, flush_interval=0.2)
    with TestClient(app, client=("198.51.100.23", 40000)) as test_client:
        yield test_client


def deliver(app_id: str, collector: CollectorHandle) -> None:
    assert get_sender(application_id=app_id, base_url=collector.url).flush(5)


def login(client: TestClient, email: str, password: str) -> str:
    response = client.post("/login", json={"email": email, "password": password})
    assert response.status_code == 200, response.text
    token: str = response.json()["token"]
    return token


def test_signed_in_user_profile(
    app_id: str, collector: CollectorHandle, client: TestClient
) -> None:
    token = login(client, "alice@acme.example", "wonderland")
    auth = {"authorization": f"Bearer {token}", "user-agent": "projects-web/3.4"}
    response = client.post(
        "/projects?utm_source=producthunt", json={"name": "apollo"}, headers=auth
    )
    assert response.status_code == 201
    assert client.get("/projects", headers=auth).json() == {"projects": ["apollo"]}
    deliver(app_id, collector)

    profile = collector.get_user(app_id, "u-alice")
    assert profile is not None
    assert profile["company_id"] == "acme"
    assert profile["session_tokens"] == [token]
    assert profile["ip_address"] == "198.51.100.23"
    assert profile["user_agent_string"] == "projects-web/3.4"
    assert profile["campaign"]["utm_source"] == "producthunt"
    assert profile["metadata"] == {"email": "alice@acme.example", "name": "Alice", "plan": "pro"}


def test_anonymous_rejected_and_health_record_nothing(
    app_id: str, collector: CollectorHandle, client: TestClient
) -> None:
    assert client.get("/me").status_code == 401
    assert client.get("/me", headers={"authorization": "Bearer forged.token"}).status_code == 401
    assert (
        client.post("/login", json={"email": "bob@globex.example", "password": "x"}).status_code
        == 401
    )
    token = login(client, "bob@globex.example", "builder")
    assert client.get("/health", headers={"authorization": f"Bearer {token}"}).status_code == 200
    deliver(app_id, collector)
    assert collector.list_users(app_id) == []  # /login has no account; /health is skipped

    assert client.get("/me", headers={"authorization": f"Bearer {token}"}).status_code == 200
    deliver(app_id, collector)
    assert [p["user_id"] for p in collector.list_users(app_id)] == ["u-bob"]


def test_signup_then_requests(app_id: str, collector: CollectorHandle, client: TestClient) -> None:
    response = client.post(
        "/signup",
        json={
            "email": "erin@hooli.example",
            "password": "pw",
            "name": "Erin",
            "company_id": "hooli",
            "plan": "team",
        },
    )
    assert response.status_code == 201
    me = client.get("/me", headers={"authorization": f"Bearer {response.json()['token']}"})
    assert me.json()["company_id"] == "hooli"
    deliver(app_id, collector)
    profile = collector.get_user(app_id, "u-erin")
    assert profile is not None
    assert profile["metadata"]["plan"] == "team"


# --- FastAPI specifics beyond the example ---------------------------------------------------
def test_dependency_user_async_hooks_and_streaming(app_id: str, collector: CollectorHandle) -> None:
    app = FastAPI()

    async def current_user(request: Request) -> str:
        user = request.headers["x-user"]
        request.state.user = user
        return user

    @app.get("/stream")
    async def stream(user: str = Depends(current_user)) -> StreamingResponse:
        async def body() -> Any:
            for n in range(3):
                yield f"{user}:{n}\n".encode()

        return StreamingResponse(body(), media_type="text/plain")

    async def identify_user(request: Request, response: ResponseView) -> str | None:
        return getattr(request.state, "user", None)

    async def get_metadata(request: Request, response: ResponseView) -> dict[str, Any]:
        return {"content_type": response.headers["content-type"]}

    app.add_middleware(
        MoesifUsersMiddleware,
        application_id=app_id,
        base_url=collector.url,
        identify_user=identify_user,
        get_metadata=get_metadata,
    )
    with TestClient(app) as client:
        response = client.get("/stream", headers={"x-user": "u-fast"})
        assert response.text == "u-fast:0\nu-fast:1\nu-fast:2\n"
        deliver(app_id, collector)
    profile = collector.get_user(app_id, "u-fast")
    assert profile is not None
    assert profile["metadata"] == {"content_type": "text/plain; charset=utf-8"}
