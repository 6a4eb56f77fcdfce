"""The ``moesif_users`` pytest plugin, as an application's own test suite uses it.

``pytester`` runs a fresh pytest (a subprocess: the plugin must come in through its
``pytest11`` entry point) over a small project with a Django, a Flask and a Starlette
app and direct ``queue_user`` calls; the recorder is also used here directly.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from importlib.util import find_spec

import pytest
from conftest import CollectorHandle

from moesif_users_middleware import _lifecycle
from moesif_users_middleware.sender import _reset_senders_for_tests, get_sender
from moesif_users_middleware.testing import Recorder, merge_record, recording

pytest_plugins = ["pytester"]

FRAMEWORKS = ("django", "flask", "flask_login", "starlette", "httpx")

# The application under test: one view, /me, in each framework; ``X-User`` names the user.
APPS = """
from django.conf import settings
from django.http import JsonResponse
from django.urls import path
from flask import Flask, jsonify
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from moesif_users_middleware.flask import MoesifUsers
from moesif_users_middleware.starlette import MoesifUsersMiddleware


def identify_user(request, response):
    headers = request.headers if hasattr(request, "headers") else request
    return headers.get("X-User") or headers.get("HTTP_X_USER")


def identify_company(request, response):
    return "acme"


def get_metadata(request, response):
    return {"plan": "pro", "path": request.path if hasattr(request, "path") else "/"}


HOOKS = {"identify_user": identify_user, "identify_company": identify_company}

settings.configure(
    SECRET_KEY="plugin-tests",
    ALLOWED_HOSTS=["testserver"],
    ROOT_URLCONF=__name__,
    MIDDLEWARE=["moesif_users_middleware.django.MoesifUsersMiddleware"],
    # No APPLICATION_ID: the recorder supplies one for the test.
    MOESIF_USERS={"IDENTIFY_USER": identify_user, "IDENTIFY_COMPANY": identify_company,
                  "GET_METADATA": get_metadata},
)
import django  # noqa: E402

django.setup()
urlpatterns = [path("me", lambda request: JsonResponse({"me": True}))]

flask_app = Flask(__name__)
MoesifUsers(flask_app, application_id="flask-tests", get_metadata=get_metadata, **HOOKS)
flask_app.get("/me")(lambda: jsonify(me=True))

starlette_app = Starlette(routes=[Route("/me", lambda request: JSONResponse({"me": True}))])
starlette_app.add_middleware(MoesifUsersMiddleware, **HOOKS)
"""

TESTS = """
import pytest
from django.test import Client
from starlette.testclient import TestClient

from apps import flask_app, starlette_app
from moesif_users_middleware import _lifecycle, get_sender


def test_django_test_client(moesif_users):
    response = Client(HTTP_USER_AGENT="curl/8").get("/me?utm_source=news", HTTP_X_USER="42")
    assert response.status_code == 200
    user = moesif_users.users["42"]
    assert user["company_id"] == "acme"
    assert user["metadata"] == {"plan": "pro", "path": "/me"}
    assert user["user_agent_string"] == "curl/8"
    assert user["campaign"] == {"utm_source": "news"}
    # the request had a company: its update went in a batch of its own
    assert sorted(batch.kind for batch in moesif_users.batches) == ["companies", "users"]
    assert moesif_users.companies["acme"]["campaign"] == {"utm_source": "news"}


def test_flask_test_client(moesif_users):
    client = flask_app.test_client()
    # The adapter works when the server closes the response; buffered=True makes the test
    # client close it before returning, as a server does once the body is sent.
    assert client.get("/me", headers={"X-User": "7"}, buffered=True).status_code == 200
    with client.get("/me", headers={"X-User": "8"}) as response:  # or close it yourself
        assert response.json == {"me": True}
    assert moesif_users.users["7"]["company_id"] == "acme"
    assert "8" in moesif_users.users
    assert moesif_users.batches[0].application_id == "flask-tests"


def test_starlette_test_client(moesif_users):
    with TestClient(starlette_app) as client:
        client.get("/me", headers={"X-User": "9"})
        client.get("/me", headers={"X-User": "10"})
    assert set(moesif_users.users) == {"9", "10"}


def test_direct_calls_merge_like_the_api(moesif_users):
    sender = get_sender(application_id="direct", base_url="https://api.example.invalid")
    sender.queue_user({"user_id": "u1", "session_token": "t1", "metadata": {"a": {"b": 1}}})
    assert moesif_users.users["u1"]["metadata"] == {"a": {"b": 1}}  # delivered: a 2nd batch
    sender.queue_user({"user_id": "u1", "session_token": "t2", "metadata": {"a": {"c": 2}}})
    sender.queue_company({"company_id": "c1", "company_domain": "acme.test"})
    user = moesif_users.users["u1"]
    assert user["metadata"] == {"a": {"b": 1, "c": 2}}
    assert user["session_tokens"] == ["t1", "t2"]
    assert moesif_users.companies["c1"]["company_domain"] == "acme.test"
    kinds = sorted(batch.kind for batch in moesif_users.batches)
    assert kinds == ["companies", "users", "users"]


def test_each_test_starts_empty(moesif_users):
    # What earlier tests queued stays in their own recorder, and the same capture again is
    # recorded again (the senders forgot what they delivered).
    assert moesif_users.users == {}
    Client().get("/me", HTTP_X_USER="42")
    assert list(moesif_users.users) == ["42"]


def test_enabled_false_still_turns_capture_off(moesif_users):
    from flask import Flask
    from moesif_users_middleware.flask import MoesifUsers

    app = Flask("off")
    MoesifUsers(app, application_id="off", enabled=False, identify_user=lambda q, r: "5")
    app.get("/me")(lambda: "me")
    app.test_client().get("/me")
    assert moesif_users.users == {}
    assert moesif_users.batches == []


def test_without_the_fixture_nothing_is_routed():
    assert _lifecycle.routed_transport is None
"""


@pytest.mark.skipif(
    any(find_spec(name) is None for name in FRAMEWORKS), reason="needs every framework extra"
)
def test_the_fixture_in_an_applications_own_suite(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(apps=APPS, test_app=TESTS)
    pytester.makeini("[pytest]\naddopts = -p no:cacheprovider -p no:randomly\n")
    result = pytester.runpytest_subprocess("-q", timeout=120)
    result.assert_outcomes(passed=7)


def test_a_suite_that_never_uses_the_fixture_loads_the_plugin_inertly(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(
        test_plain=textwrap.dedent(
            """
            import sys
            from moesif_users_middleware import _lifecycle

            def test_plugin_loaded_but_nothing_done(request):
                assert request.config.pluginmanager.has_plugin("moesif_users")
                assert "moesif_users" in request.fixturenames or True
                assert _lifecycle.routed_transport is None
                assert not _lifecycle._hooks_registered  # no sender, no exit hook
                assert "celery" not in sys.modules and "mangum" not in sys.modules
            """
        )
    )
    result = pytester.runpytest_subprocess("-q", "-p", "no:cacheprovider", timeout=60)
    result.assert_outcomes(passed=1)


# -- the recorder in this suite --------------------------------------------------------------


@pytest.fixture(autouse=True)
def _no_sender_left() -> Iterator[None]:
    yield
    _reset_senders_for_tests()


def test_a_sender_created_before_recording_is_routed_and_restored(
    collector: CollectorHandle, app_id: str
) -> None:
    sender = get_sender(application_id=app_id, base_url=collector.url, flush_interval=60)
    sender.queue_user({"user_id": "before"})
    assert sender.flush(5)
    with recording() as recorder:
        sender.queue_user({"user_id": "during"})
        assert list(recorder.users) == ["during"]
    sender.queue_user({"user_id": "after"})
    assert sender.flush(5)
    stored = {user["user_id"] for user in collector.list_users(app_id)}
    assert stored == {"before", "after"}
    assert _lifecycle.routed_transport is None


def test_what_is_pending_when_recording_ends_is_recorded() -> None:
    with recording() as recorder:
        get_sender(application_id="pending-at-end").queue_user({"user_id": "late"})
        assert recorder.transport.profiles("users") == {}  # not read: not flushed yet
    assert list(recorder.transport.profiles("users")) == ["late"]


def test_the_fixture_records_direct_calls(moesif_users: Recorder) -> None:
    sender = get_sender(application_id="fixture-here")
    sender.queue_users([{"user_id": "a"}, {"user_id": "b", "company_id": "c"}])
    assert set(moesif_users.users) == {"a", "b"}
    moesif_users.clear()
    assert moesif_users.users == {}
    assert moesif_users.batches == []


def test_the_recorders_merge_is_the_collectors(
    collector: CollectorHandle, app_id: str, moesif_users: Recorder
) -> None:
    updates = [
        {"user_id": "m", "company_id": "a", "session_token": "t1", "metadata": {"x": {"y": 1}}},
        {"user_id": "m", "campaign": {"utm_source": "s"}, "metadata": {"x": {"z": 2}, "k": [1]}},
        {"user_id": "m", "company_id": "b", "session_token": "t2", "metadata": {"k": "v"}},
        {"user_id": "m", "session_token": "t1", "campaign": {"utm_medium": "m"}},
    ]
    profile = None
    for number, update in enumerate(updates):
        stamped = {**update, "modified_time": f"2026-01-01T00:00:0{number}.000Z"}
        profile = merge_record(profile, stamped)
        response = collector.client.post(
            "/v1/users", json=stamped, headers={"X-Moesif-Application-Id": app_id}
        )
        assert response.status_code == 201
    stored = collector.get_user(app_id, "m")
    assert stored is not None
    stored.pop("created_time")
    assert profile == stored
