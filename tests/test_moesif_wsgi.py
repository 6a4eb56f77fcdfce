"""Plain WSGI: MoesifUsersMiddleware beside the real ``moesifwsgi``, one settings dict.

A WSGI app wrapped by both middlewares (in either order), driven by werkzeug's test
client. Both read the same dict, hooks in moesifwsgi's shapes
(``IDENTIFY_USER(app, environ, response_headers)``...), and send to one loopback
``BASE_URI``; for the same requests, the user id on each of moesifwsgi's events equals
the id of the profile this library sent.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator
from typing import Any

import pytest

pytest.importorskip("werkzeug")
pytest.importorskip("moesifwsgi")

from moesif_peers import EventSink, loopback_only
from moesif_tokens import basic, bearer_jwt
from moesifwsgi import MoesifMiddleware
from servers import CollectorHandle
from werkzeug.test import Client

from moesif_users_middleware.sender import _reset_senders_for_tests, get_sender
from moesif_users_middleware.wsgi import MoesifUsersMiddleware

PEER = {"REMOTE_ADDR": "127.0.0.1"}  # werkzeug's test client leaves it out


@pytest.fixture(scope="module", autouse=True)
def _loopback() -> Iterator[None]:
    with loopback_only():
        yield


@pytest.fixture(autouse=True)
def _no_sender_left() -> Iterator[None]:
    yield
    _reset_senders_for_tests()


def hello(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    start_response("201 Created", [("Content-Type", "text/plain"), ("X-Company", "acme")])
    return [b"hello"]


# Hooks in moesifwsgi's shapes.
def identify_user(app: Any, environ: dict[str, Any], response_headers: Any = None) -> Any:
    return environ.get("HTTP_X_USER")


def identify_company(app: Any, environ: dict[str, Any], response_headers: Any = None) -> Any:
    return (response_headers or {}).get("X-Company")


def get_metadata(app: Any, environ: dict[str, Any]) -> dict[str, Any]:
    return {"path": environ["PATH_INFO"]}


def skip(app: Any, environ: dict[str, Any]) -> bool:
    return bool(environ["PATH_INFO"] == "/health")


def settings_for(app_id: str, sink: EventSink, **extra: Any) -> dict[str, Any]:
    return {
        "APPLICATION_ID": app_id,
        "BASE_URI": sink.url,
        "DEBUG": False,
        "LOG_BODY": True,
        "EVENT_BATCH_TIMEOUT": 0.2,
        "IDENTIFY_USER": identify_user,
        "IDENTIFY_COMPANY": identify_company,
        "GET_METADATA": get_metadata,
        "SKIP": skip,
        **extra,
    }


def both(order: str, settings: dict[str, Any]) -> Any:
    if order == "ours-outside":
        app = MoesifUsersMiddleware(MoesifMiddleware(hello, settings), moesif_settings=settings)
    else:
        app = MoesifMiddleware(MoesifUsersMiddleware(hello, moesif_settings=settings), settings)
    return app


def get(client: Client, path: str, **kwargs: Any) -> Any:
    """GET as a server would run it: the peer address set, the response closed."""
    return client.get(path, environ_base=PEER, buffered=True, **kwargs)


@pytest.mark.parametrize("order", ["ours-outside", "theirs-outside"])
def test_ids_agree_side_by_side(
    order: str, app_id: str, moesif_sink: EventSink, collector: CollectorHandle
) -> None:
    marker = uuid.uuid4().hex[:12]
    settings = settings_for(app_id, moesif_sink)
    client = Client(both(order, settings))
    requests: dict[str, dict[str, Any]] = {
        "0": {},
        "1": {"headers": {"Authorization": basic(f"basic-{marker}", "s3cret-pw")}},
        "2": {"headers": {"Authorization": bearer_jwt(sub=f"jwt{marker}")}},
        "3": {"headers": {"X-User": f"hook-{marker}", "Authorization": bearer_jwt(sub="no")}},
        # moesifwsgi reads HTTP_CGI_AUTHORIZATION as Authorization
        "4": {"environ_overrides": {"HTTP_CGI_AUTHORIZATION": bearer_jwt(sub=f"cgi{marker}")}},
        "5": {"headers": {"Authorization": "Bearer not.a-jwt.at-all"}},
    }
    for number, kwargs in requests.items():
        response = get(client, f"/hello?m={marker}&n={number}", **kwargs)
        assert response.status_code == 201
        assert response.get_data() == b"hello"
    assert get(client, "/health", headers={"X-User": f"skipped-{marker}"}).status_code == 201

    events = moesif_sink.events_for(marker, len(requests))
    ids = {event["request"]["uri"].rpartition("n=")[2]: event.get("user_id") for event in events}
    expected = {
        "0": None,
        "1": f"basic-{marker}",
        "2": f"jwt{marker}",
        "3": f"hook-{marker}",
        "4": f"cgi{marker}",
        "5": None,
    }
    assert ids == expected
    assert {event.get("company_id") for event in events} == {"acme"}
    assert get_sender(application_id=app_id, base_url=moesif_sink.url).flush(10)
    profiles = {profile["user_id"]: profile for profile in collector.list_users(app_id)}
    assert set(profiles) == {user_id for user_id in expected.values() if user_id}
    assert {profile.get("company_id") for profile in profiles.values()} == {"acme"}
    assert profiles[f"hook-{marker}"]["metadata"] == {"path": "/hello"}
    assert "s3cret-pw" not in str(profiles)


def test_update_user_on_the_middleware(
    app_id: str, moesif_sink: EventSink, collector: CollectorHandle
) -> None:
    """``app.wsgi_app.update_user(...)`` keeps working after the swap."""
    wrapped = MoesifUsersMiddleware(hello, moesif_settings=settings_for(app_id, moesif_sink))
    assert wrapped.update_user({"user_id": "u-1", "metadata": {"plan": "free"}})
    assert wrapped.update_users_batch([{"user_id": "u-2"}, {"user_id": "u-3"}])
    assert wrapped.update_company({"company_id": "c-1"})
    assert wrapped.update_companies_batch([{"company_id": "c-2"}, {"company_id": "c-3"}])
    assert get_sender(application_id=app_id, base_url=moesif_sink.url).flush(10)
    assert {profile["user_id"] for profile in collector.list_users(app_id)} == {
        "u-1",
        "u-2",
        "u-3",
    }
    assert {"c-1", "c-2", "c-3"} <= {company["company_id"] for company in moesif_sink.companies}
