"""UPDATE_ON_LOGIN in Django: real logins (LoginView, the test client's login helpers)
queue the profile GET_USER_PROFILE builds, with the login request's IP, agent, campaign."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator
from typing import Any

import django_settings
import pytest

pytest.importorskip("django")
django_settings.configure()

from django.contrib.auth.models import User  # noqa: E402
from django.contrib.auth.views import LoginView  # noqa: E402
from django.http import HttpRequest, JsonResponse  # noqa: E402
from django.test import AsyncClient, Client, override_settings  # noqa: E402
from django.urls import path  # noqa: E402
from servers import CollectorHandle  # noqa: E402

from moesif_users_middleware._capture.hooks import counters  # noqa: E402
from moesif_users_middleware.django.login import stop_listening  # noqa: E402
from moesif_users_middleware.sender import _reset_senders_for_tests, get_sender  # noqa: E402

PASSWORD = "correct horse battery staple"
PEER = "198.51.100.7"


def whoami(request: HttpRequest) -> JsonResponse:
    user: Any = request.user
    return JsonResponse({"user": user.pk if user.is_authenticated else None})


urlpatterns = [path("login/", LoginView.as_view()), path("whoami", whoami)]


def profile_of(user: Any) -> dict[str, Any]:
    """GET_USER_PROFILE: what the app knows about the user (also used by the backfill)."""
    return {
        "user_id": str(user.pk),
        "company_id": "acme",
        "metadata": {"email": user.email, "plan": "pro"},
        "campaign": {"utm_source": "crm"},
    }


def broken_profile(user: Any) -> dict[str, Any]:
    raise RuntimeError("the CRM is down")


def identify_user(request: Any, response: Any) -> str | None:
    return None  # takes no `user`: the login cannot know which id it would give


@pytest.fixture(autouse=True)
def _no_sender_left() -> Iterator[None]:
    yield
    _reset_senders_for_tests()


@pytest.fixture
def configure(app_id: str, collector: CollectorHandle) -> Iterator[Callable[..., None]]:
    overrides: list[override_settings] = []

    def apply(**moesif: Any) -> None:
        options = {"APPLICATION_ID": app_id, "BASE_URL": collector.url, **moesif}
        override = override_settings(ROOT_URLCONF=__name__, MOESIF_USERS=options)
        override.enable()
        overrides.append(override)

    yield apply
    for override in reversed(overrides):
        override.disable()
    stop_listening()  # the test's middleware may outlive it (until the next gc)


def delivered(app_id: str, collector: CollectorHandle, user: User) -> dict[str, Any]:
    assert get_sender(app_id, collector.url).flush(5)
    profile = collector.get_user(app_id, str(user.pk))
    assert profile is not None
    return profile


def make_user(name: str) -> User:
    user: User = User.objects.create_user(
        username=f"{name}-{User.objects.count()}",
        email=f"{name}@acme.test",
        password=PASSWORD,
        first_name=name.title(),
    )
    return user


def log_in(client: Client, user: User) -> None:
    """The real login form: password checked, session started, redirect."""
    response = client.post(
        "/login/?utm_medium=email",
        {"username": user.username, "password": PASSWORD},
        HTTP_USER_AGENT="browser/1.0",
    )
    assert response.status_code == 302


def test_the_login_view_queues_the_profile_with_the_requests_fields(
    configure: Callable[..., None], app_id: str, collector: CollectorHandle
) -> None:
    configure(UPDATE_ON_LOGIN=True, GET_USER_PROFILE=f"{__name__}.profile_of")
    user = make_user("ada")
    log_in(Client(REMOTE_ADDR=PEER), user)
    profile = delivered(app_id, collector, user)
    assert profile["metadata"] == {"email": user.email, "plan": "pro"}
    assert profile["company_id"] == "acme"
    assert profile["ip_address"] == PEER
    assert profile["user_agent_string"] == "browser/1.0"
    assert profile["campaign"] == {"utm_source": "crm", "utm_medium": "email"}


def test_without_get_user_profile_the_backfills_defaults_apply(
    configure: Callable[..., None], app_id: str, collector: CollectorHandle
) -> None:
    configure(UPDATE_ON_LOGIN=True)
    user = make_user("grace")
    log_in(Client(REMOTE_ADDR=PEER), user)
    profile = delivered(app_id, collector, user)
    assert profile["metadata"] == {"email": user.email, "first_name": "Grace"}


def test_off_by_default_only_the_request_is_recorded(
    configure: Callable[..., None], app_id: str, collector: CollectorHandle
) -> None:
    configure(GET_USER_PROFILE=profile_of)
    user = make_user("hopper")
    log_in(Client(REMOTE_ADDR=PEER), user)
    profile = delivered(app_id, collector, user)  # the login request's own capture
    assert "metadata" not in profile
    assert "company_id" not in profile


def test_the_async_client_and_the_test_clients_login_helpers_count(
    configure: Callable[..., None], app_id: str, collector: CollectorHandle
) -> None:
    configure(UPDATE_ON_LOGIN=True, GET_USER_PROFILE=profile_of)
    first, second = make_user("alan"), make_user("edsger")
    client = AsyncClient()
    response = asyncio.run(
        client.post("/login/", {"username": first.username, "password": PASSWORD})
    )
    assert response.status_code == 302
    assert delivered(app_id, collector, first)["metadata"]["plan"] == "pro"
    plain = Client()
    plain.get("/whoami")  # Django loads the middleware (and connects) on a first request
    plain.force_login(second)
    assert delivered(app_id, collector, second)["company_id"] == "acme"


def test_a_failing_profile_hook_never_fails_the_login(
    configure: Callable[..., None], app_id: str, collector: CollectorHandle
) -> None:
    configure(UPDATE_ON_LOGIN=True, GET_USER_PROFILE=broken_profile)
    errors = counters()["hook_errors"]
    user = make_user("barbara")
    log_in(Client(REMOTE_ADDR=PEER), user)
    assert counters()["hook_errors"] == errors + 1
    assert "metadata" not in delivered(app_id, collector, user)  # the request still counts


def test_identify_user_without_a_user_parameter_turns_login_profiles_off(
    configure: Callable[..., None], caplog: pytest.LogCaptureFixture
) -> None:
    configure(UPDATE_ON_LOGIN=True, IDENTIFY_USER=identify_user)
    user = make_user("ken")
    with caplog.at_level(logging.ERROR, logger="moesif_users_middleware"):
        log_in(Client(REMOTE_ADDR=PEER), user)
    assert "profiles at login are off" in caplog.text
    assert "GET_USER_PROFILE" in caplog.text
