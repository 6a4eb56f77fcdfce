"""update_on_login in Flask: Flask-Login's real login_user() queues the profile
get_user_profile builds, with the login request's IP, user agent and campaign."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("flask_login")

from flask import Flask, request
from flask_login import LoginManager, UserMixin, login_user
from servers import CollectorHandle

from moesif_users_middleware._capture.config import ConfigurationError
from moesif_users_middleware.flask import EXTENSION_KEY, MoesifUsers
from moesif_users_middleware.sender import _reset_senders_for_tests, get_sender

PEER = {"REMOTE_ADDR": "198.51.100.8"}
ACCOUNTS = {"ada": "ada@acme.test", "grace": "grace@acme.test"}


class Account(UserMixin):
    def __init__(self, name: str) -> None:
        self.id = name
        self.email = ACCOUNTS[name]


def profile_of(user: Account) -> dict[str, Any]:
    return {"user_id": user.id, "company_id": "acme", "metadata": {"email": user.email}}


@pytest.fixture(autouse=True)
def _no_sender_left() -> Iterator[None]:
    yield
    _reset_senders_for_tests()


def make_app(app_id: str, collector: CollectorHandle, **options: Any) -> Flask:
    """A login form (the password check is the app's business) and Flask-Login."""
    app = Flask(__name__)
    app.config["SECRET_KEY"] = "login-tests"
    manager = LoginManager(app)
    manager.user_loader(lambda name: Account(name) if name in ACCOUNTS else None)

    @app.post("/login")
    def login() -> tuple[str, int]:
        login_user(Account(request.form["name"]))
        return "", 204

    MoesifUsers(app, application_id=app_id, base_url=collector.url, **options)
    return app


def delivered(app_id: str, collector: CollectorHandle, user_id: str) -> dict[str, Any] | None:
    assert get_sender(app_id, collector.url).flush(5)
    return collector.get_user(app_id, user_id)


def log_in(app: Flask, name: str) -> None:
    response = app.test_client().post(
        "/login?utm_source=newsletter",
        data={"name": name},
        headers={"User-Agent": "browser/2.0"},
        environ_base=PEER,
        buffered=True,
    )
    assert response.status_code == 204


def never(request: Any, response: Any) -> bool:
    return True  # skip every request: only the login's profile can arrive


def test_login_user_queues_the_profile_with_the_requests_fields(
    app_id: str, collector: CollectorHandle
) -> None:
    app = make_app(app_id, collector, update_on_login=True, get_user_profile=profile_of, skip=never)
    log_in(app, "ada")
    profile = delivered(app_id, collector, "ada")
    assert profile is not None
    assert profile["metadata"] == {"email": "ada@acme.test"}
    assert profile["company_id"] == "acme"
    assert profile["ip_address"] == PEER["REMOTE_ADDR"]
    assert profile["user_agent_string"] == "browser/2.0"
    assert profile["campaign"] == {"utm_source": "newsletter"}


def test_options_from_app_config_and_a_dotted_path(app_id: str, collector: CollectorHandle) -> None:
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY="login-tests",
        MOESIF_USERS_UPDATE_ON_LOGIN=True,
        MOESIF_USERS_GET_USER_PROFILE=f"{__name__}.profile_of",
    )
    LoginManager(app).user_loader(lambda name: None)
    app.post("/login")(lambda: (login_user(Account(request.form["name"])), ("", 204))[1])
    MoesifUsers(app, application_id=app_id, base_url=collector.url, skip=never)
    log_in(app, "grace")
    profile = delivered(app_id, collector, "grace")
    assert profile is not None
    assert profile["metadata"] == {"email": "grace@acme.test"}


def test_without_get_user_profile_the_user_id(app_id: str, collector: CollectorHandle) -> None:
    app = make_app(app_id, collector, update_on_login=True, skip=never)
    log_in(app, "ada")
    profile = delivered(app_id, collector, "ada")
    assert profile is not None
    assert profile["ip_address"] == PEER["REMOTE_ADDR"]


def test_off_by_default(app_id: str, collector: CollectorHandle) -> None:
    app = make_app(app_id, collector, get_user_profile=profile_of, skip=never)
    log_in(app, "ada")
    assert delivered(app_id, collector, "ada") is None
    assert app.extensions[EXTENSION_KEY].logins is None


def test_identify_user_needs_get_user_profile(app_id: str, collector: CollectorHandle) -> None:
    with pytest.raises(ConfigurationError, match="needs get_user_profile"):
        make_app(
            app_id,
            collector,
            update_on_login=True,
            identify_user=lambda request, response: "x",
            strict=True,
        )


def test_a_bad_profile_is_logged_and_the_login_goes_on(
    app_id: str, collector: CollectorHandle, caplog: pytest.LogCaptureFixture
) -> None:
    app = make_app(
        app_id,
        collector,
        update_on_login=True,
        get_user_profile=lambda user: {"metadata": {"no": "user id"}},
        skip=never,
    )
    with caplog.at_level(logging.WARNING, logger="moesif_users_middleware"):
        log_in(app, "ada")
    assert "invalid profile" in caplog.text
    assert delivered(app_id, collector, "ada") is None
