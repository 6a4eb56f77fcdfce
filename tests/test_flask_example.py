"""The Flask example app under Flask's test client, delivering to the real collector."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

pytest.importorskip("flask")

from conftest import CollectorHandle
from flask.testing import FlaskClient

from moesif_users_middleware._demo import flask_app
from moesif_users_middleware.sender import _reset_senders_for_tests, get_sender


@pytest.fixture(autouse=True)
def _no_sender_left() -> Iterator[None]:
    yield
    _reset_senders_for_tests()


@pytest.fixture
def client(app_id: str, collector: CollectorHandle) -> FlaskClient:
    app = flask_app.create_app(application_id=app_id, base_url=collector.url, flush_interval=0.2)
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = "198.51.100.23"
    return client


def deliver(app_id: str, collector: CollectorHandle) -> None:
    assert get_sender(application_id=app_id, base_url=collector.url).flush(5)


def login(client: FlaskClient, email: str, password: str) -> str:
    response = client.post("/login", json={"email": email, "password": password}, buffered=True)
    assert response.status_code == 200, response.text
    token: str = response.json["token"]  # type: ignore[index]
    return token


def test_signed_in_user_profile(
    app_id: str, collector: CollectorHandle, client: FlaskClient
) -> None:
    token = login(client, "alice@acme.example", "wonderland")
    auth = {"Authorization": f"Bearer {token}", "User-Agent": "projects-web/3.4"}
    response = client.post(
        "/projects?utm_source=producthunt", json={"name": "apollo"}, headers=auth, buffered=True
    )
    assert response.status_code == 201
    assert client.get("/projects", headers=auth, buffered=True).json == {"projects": ["apollo"]}
    deliver(app_id, collector)

    profile = collector.get_user(app_id, "u-alice")
    assert profile is not None
    assert profile["company_id"] == "acme"
    assert profile["session_tokens"] == [token]
    assert profile["ip_address"] == "198.51.100.23"
    assert profile["user_agent_string"] == "projects-web/3.4"
    assert profile["campaign"]["utm_source"] == "producthunt"
    assert profile["metadata"] == {
        "email": "alice@acme.example",
        "name": "Alice",
        "plan": "pro",
        "last_project": "apollo",  # left on g by the view, read by the hook
    }


def test_api_key_header_signup_and_what_is_not_recorded(
    app_id: str, collector: CollectorHandle, client: FlaskClient
) -> None:
    assert client.get("/me", buffered=True).status_code == 401
    assert client.get("/me", headers={"X-Api-Key": "forged"}, buffered=True).status_code == 401
    bad = client.post(
        "/login", json={"email": "bob@globex.example", "password": "x"}, buffered=True
    )
    assert bad.status_code == 401
    signup = client.post(
        "/signup",
        json={"email": "eve@initech.example", "password": "pw", "name": "Eve", "company_id": "ini"},
        buffered=True,
    )
    assert signup.status_code == 201
    token = signup.json["token"]  # type: ignore[index]
    assert client.get("/health", headers={"X-Api-Key": token}, buffered=True).status_code == 200
    deliver(app_id, collector)
    assert collector.list_users(app_id) == []  # anonymous, failed, signup, /health: nothing

    me = client.get("/me", headers={"X-Api-Key": token}, buffered=True)
    assert me.json == {
        "id": "u-eve",
        "email": "eve@initech.example",
        "name": "Eve",
        "company_id": "ini",
        "plan": "free",
    }
    deliver(app_id, collector)
    profile = collector.get_user(app_id, "u-eve")
    assert profile is not None
    assert profile["company_id"] == "ini"
    assert profile["session_tokens"] == [token]
    assert "last_project" not in profile["metadata"]
