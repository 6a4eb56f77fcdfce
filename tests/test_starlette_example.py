"""The Starlette example (AuthenticationMiddleware + API keys) under Starlette's TestClient."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

pytest.importorskip("starlette")

from servers import CollectorHandle
from starlette.testclient import TestClient

from moesif_users_middleware._demo import starlette_app
from moesif_users_middleware.sender import _reset_senders_for_tests, get_sender


@pytest.fixture(autouse=True)
def _no_sender_left() -> Iterator[None]:
    yield
    _reset_senders_for_tests()


def test_default_user_id_from_authentication_middleware(
    app_id: str, collector: CollectorHandle
) -> None:
    app = starlette_app.create_app(application_id=app_id, base_url=collector.url)
    with TestClient(app, client=("192.0.2.44", 1234)) as client:
        response = client.post(
            "/login", json={"email": "carol@initech.example", "password": "tps-report"}
        )
        api_key = response.json()["api_key"]
        assert client.get("/reports").status_code == 401  # anonymous
        reports = client.get(
            "/reports?utm_source=podcast&utm_campaign=launch",
            headers={"x-api-key": api_key, "user-agent": "initech-sync/1.0"},
        )
        assert reports.json()["company"] == "initech"
        assert client.get("/health", headers={"x-api-key": api_key}).status_code == 200
        assert get_sender(application_id=app_id, base_url=collector.url).flush(5)

    assert [p["user_id"] for p in collector.list_users(app_id)] == ["u-carol"]
    profile = collector.get_user(app_id, "u-carol")
    assert profile is not None
    assert profile["company_id"] == "initech"
    assert profile["session_tokens"] == ["key-carol"]
    assert profile["ip_address"] == "192.0.2.44"
    assert profile["user_agent_string"] == "initech-sync/1.0"
    assert profile["campaign"]["utm_source"] == "podcast"
    assert profile["campaign"]["utm_campaign"] == "launch"
    assert profile["metadata"] == {"email": "carol@initech.example", "name": "Carol", "plan": "pro"}


def test_bearer_api_key_and_lifespan_flush(app_id: str, collector: CollectorHandle) -> None:
    app = starlette_app.create_app(
        application_id=app_id, base_url=collector.url, flush_interval=60.0
    )
    with TestClient(app) as client:
        me = client.get("/me", headers={"authorization": "Bearer key-dave"})
        assert me.json()["company"] == "initrode"
    # No explicit flush: the lifespan shutdown delivered it.
    profile = collector.get_user(app_id, "u-dave")
    assert profile is not None
    assert profile["session_tokens"] == ["key-dave"]
