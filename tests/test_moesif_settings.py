"""Moesif's settings dicts read by the adapters: what is used, what is ignored, and mistakes.

A mistake in Moesif's settings gets the treatment of any configuration mistake: capture
off with one ERROR naming the key and the fix (``strict=True`` raises), and in Django a
system check error. A hook written for another of Moesif's middlewares is reported with
the call shape this adapter uses. The ``update_user`` & co. helpers never raise.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from typing import Any

import pytest

pytest.importorskip("starlette")
pytest.importorskip("django")

import django_settings

django_settings.configure()

from django.core.exceptions import ImproperlyConfigured, MiddlewareNotUsed  # noqa: E402
from django.test import override_settings  # noqa: E402
from django_settings import AUTH, OURS, SESSION  # noqa: E402

from moesif_users_middleware._capture import profile_methods  # noqa: E402
from moesif_users_middleware._capture.config import ConfigurationError  # noqa: E402
from moesif_users_middleware._ratelimit import RateLimitedLog  # noqa: E402
from moesif_users_middleware.django import MoesifUsersMiddleware as DjangoMiddleware  # noqa: E402
from moesif_users_middleware.django.checks import check_middleware, check_settings  # noqa: E402
from moesif_users_middleware.sender import _reset_senders_for_tests  # noqa: E402
from moesif_users_middleware.starlette import MoesifUsersMiddleware as AsgiMiddleware  # noqa: E402
from moesif_users_middleware.wsgi import MoesifUsersMiddleware as WsgiMiddleware  # noqa: E402

LOGGER = "moesif_users_middleware"
GOOD = {"APPLICATION_ID": "settings-test", "BASE_URI": "http://127.0.0.1:9"}
# Every key the three packages document that concerns event capture only.
EVENT_KEYS = {
    "LOG_BODY": False,
    "REQUEST_BODY_MASKS": ["password"],
    "RESPONSE_HEADER_MASKS": ["set-cookie"],
    "RESPONSE_BODY_MASKS": ["token"],
    "MASK_EVENT_MODEL": lambda event: event,
    "CAPTURE_OUTGOING_REQUESTS": False,
    "BATCH_SIZE": 25,
    "EVENT_QUEUE_SIZE": 1000,
    "EVENT_WORKER_COUNT": 2,
    "EVENT_BATCH_TIMEOUT": 1,
    "API_VERSION": "1.0",
    "DISABLE_TRANSACTION_ID": True,
    "DISABLED_TRANSACTION_ID": True,
    "IDENTIFY_USER_OUTGOING": lambda request, response: None,
    "SKIP_OUTGOING": lambda request, response: False,
}


@pytest.fixture(autouse=True)
def _clean(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("MOESIF_APPLICATION_ID", raising=False)
    monkeypatch.delenv("MOESIF_BASE_URL", raising=False)
    yield
    _reset_senders_for_tests()


def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    start_response("200 OK", [])
    return [b"ok"]


def errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno >= logging.WARNING
    ]


# -- hooks in each package's shape ------------------------------------------------------------
def django_hook(request: Any, response: Any) -> Any:
    return None


def wsgi_identify(app: Any, environ: Any, response_headers: Any = None) -> Any:
    return None


def wsgi_metadata(app: Any, environ: Any) -> Any:
    return None


def three_required(first: Any, second: Any, third: Any) -> Any:
    return None


async def async_hook(request: Any, response: Any) -> Any:
    return None


async def async_wsgi_hook(app: Any, environ: Any) -> Any:
    return None


def test_used_and_ignored_keys_make_no_noise(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    settings = {
        **GOOD,
        **EVENT_KEYS,
        "IDENTIFY_USER": wsgi_identify,
        "IDENTIFY_COMPANY": wsgi_identify,
        "GET_SESSION_TOKEN": wsgi_metadata,
        "GET_METADATA": wsgi_metadata,
        "SKIP": wsgi_metadata,
        "AUTHORIZATION_HEADER_NAME": "authorization, x-api-key",
        "AUTHORIZATION_USER_ID_FIELD": "userId",
        "LOCAL_MOESIF_BASEURL": "http://127.0.0.1:8",
        "SOME_FUTURE_KEY": 1,
    }
    middleware = WsgiMiddleware(app, moesif_settings=settings)
    assert middleware.capture is not None
    assert middleware.capture.config.base_url == "http://127.0.0.1:9"  # BASE_URI first
    asgi = AsgiMiddleware(app, moesif_settings={**GOOD, **EVENT_KEYS, "GET_METADATA": async_hook})
    assert asgi.capture is not None
    assert asgi.capture.has_async_hooks
    assert caplog.records == []


def test_base_uri_falls_back_as_each_package_reads_it() -> None:
    local = {"APPLICATION_ID": "x", "LOCAL_MOESIF_BASEURL": "http://127.0.0.1:7"}
    wsgi = WsgiMiddleware(app, moesif_settings=local)
    assert wsgi.capture is not None
    assert wsgi.capture.config.base_url == "http://127.0.0.1:7"
    asgi = AsgiMiddleware(app, moesif_settings=local)  # moesifasgi reads BASE_URI only
    assert asgi.capture is not None
    assert asgi.capture.config.base_url == "https://api.moesif.net"


def test_debug_turns_on_debug_logging() -> None:
    logger = logging.getLogger(LOGGER)
    level = logger.level
    try:
        logger.setLevel(logging.NOTSET)
        WsgiMiddleware(app, moesif_settings={**GOOD, "DEBUG": True})
        assert logger.level == logging.DEBUG
    finally:
        logger.setLevel(level)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ("not a dict", "moesif_settings must be a dict (the settings of Moesif's moesifwsgi)"),
        (
            {**GOOD, "IDENTIFY_USER": 42},
            "moesif_settings['IDENTIFY_USER'] must be a callable or a dotted path string",
        ),
        ({**GOOD, "SKIP": "no.such.module.skip"}, "moesif_settings['SKIP']: cannot import"),
        (
            {**GOOD, "IDENTIFY_USER": django_hook},
            "cannot be called as IDENTIFY_USER(app, environ, response_headers), as moesifwsgi",
        ),
        (
            {**GOOD, "GET_METADATA": django_hook},
            "takes moesifdjango's and moesifasgi's GET_METADATA(request, response); the plain "
            "WSGI middleware, like moesifwsgi, calls it as GET_METADATA(app, environ)",
        ),
        (
            {**GOOD, "GET_METADATA": async_wsgi_hook},
            "moesif_settings['GET_METADATA'] is an async def",
        ),
        (
            {**GOOD, "AUTHORIZATION_HEADER_NAME": ["authorization"]},
            "moesif_settings['AUTHORIZATION_HEADER_NAME'] must be a string, not list",
        ),
        ({**GOOD, "BASE_URI": "ftp://x"}, "moesif_settings['BASE_URI']: base_url must start"),
        ({**GOOD, "APPLICATION_ID": 5}, "moesif_settings['APPLICATION_ID'] must be a string"),
    ],
)
def test_wsgi_mistakes(settings: Any, message: str, caplog: pytest.LogCaptureFixture) -> None:
    middleware = WsgiMiddleware(app, moesif_settings=settings)
    assert middleware.capture is None
    [logged] = errors(caplog)
    assert message in logged
    assert "capture is off" in logged
    with pytest.raises(ConfigurationError) as raised:
        WsgiMiddleware(app, moesif_settings=settings, strict=True)
    assert message in str(raised.value)


@pytest.mark.parametrize(
    ("hook", "message"),
    [
        (
            wsgi_identify,
            "takes moesifwsgi's IDENTIFY_USER(app, environ, response_headers); the "
            "Starlette/FastAPI middleware, like moesifasgi, calls it as "
            "IDENTIFY_USER(request, response)",
        ),
        (three_required, "cannot be called as IDENTIFY_USER(request, response), as moesifasgi"),
    ],
)
def test_asgi_hook_of_another_shape(hook: Any, message: str) -> None:
    with pytest.raises(ConfigurationError) as raised:
        AsgiMiddleware(app, moesif_settings={**GOOD, "IDENTIFY_USER": hook}, strict=True)
    assert message in str(raised.value)


def test_keyword_options_apply_on_top(caplog: pytest.LogCaptureFixture) -> None:
    middleware = WsgiMiddleware(app, moesif_settings=GOOD, flush_interval=0.5)
    assert middleware.capture is not None
    assert middleware.capture.config.sender_options["flush_interval"] == 0.5
    assert WsgiMiddleware(app, moesif_settings=GOOD, enabled=False).capture is None
    with pytest.raises(ConfigurationError, match="request_class does not apply"):
        WsgiMiddleware(app, moesif_settings=GOOD, request_class=dict, strict=True)
    with pytest.raises(ConfigurationError, match="unknown option 'stirct'"):
        WsgiMiddleware(app, moesif_settings=GOOD, stirct=True, strict=True)


def test_missing_application_id_is_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    assert WsgiMiddleware(app, moesif_settings={"BASE_URI": "http://127.0.0.1:9"}).capture is None
    [logged] = errors(caplog)
    assert "set moesif_settings['APPLICATION_ID'] or the MOESIF_APPLICATION_ID" in logged


# -- Django: MOESIF_MIDDLEWARE ----------------------------------------------------------------
def moesif_ids(messages: list[Any]) -> list[str]:
    return [str(message.id) for message in messages]


def test_django_reads_moesif_middleware_without_moesif_users(
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = {**GOOD, **EVENT_KEYS, "IDENTIFY_USER": django_hook, "LOCAL_DEBUG": False}
    with override_settings(
        MOESIF_USERS=None, MOESIF_MIDDLEWARE=settings, MIDDLEWARE=[SESSION, AUTH, OURS]
    ):
        middleware = DjangoMiddleware(lambda request: None)
        assert middleware.capture.config.application_id == "settings-test"
        assert middleware.force_user_load
        assert middleware.reads_user
        assert check_settings() == []
        assert check_middleware() == []
    assert errors(caplog) == []


def test_django_moesif_users_wins_with_an_info_check() -> None:
    ours = {"APPLICATION_ID": "ours", "BASE_URL": "http://127.0.0.1:9"}
    with override_settings(MOESIF_USERS=ours, MOESIF_MIDDLEWARE={"APPLICATION_ID": "theirs"}):
        assert DjangoMiddleware(lambda request: None).capture.config.application_id == "ours"
        [info] = check_settings()
        assert info.id == "moesif_users.I001"
        assert "reads settings.MOESIF_USERS only" in info.msg


@pytest.mark.parametrize(
    ("value", "check_id", "message"),
    [
        (["APPLICATION_ID"], "moesif_users.E005", "settings.MOESIF_MIDDLEWARE must be a dict"),
        (
            {**GOOD, "IDENTIFY_COMPANY": "not.importable.hook"},
            "moesif_users.E006",
            "settings.MOESIF_MIDDLEWARE['IDENTIFY_COMPANY']: cannot import",
        ),
        (
            {**GOOD, "GET_METADATA": wsgi_metadata},
            "moesif_users.E006",
            "takes moesifwsgi's GET_METADATA(app, environ); the Django middleware, like "
            "moesifdjango, calls it as GET_METADATA(request, response)",
        ),
        (
            {**GOOD, "AUTHORIZATION_USER_ID_FIELD": 1},
            "moesif_users.E006",
            "settings.MOESIF_MIDDLEWARE['AUTHORIZATION_USER_ID_FIELD'] must be a string",
        ),
    ],
)
def test_django_mistakes(
    value: Any, check_id: str, message: str, caplog: pytest.LogCaptureFixture
) -> None:
    with override_settings(MOESIF_USERS=None, MOESIF_MIDDLEWARE=value):
        [error] = check_settings()
        assert (error.id, message in error.msg) == (check_id, True), error.msg
        with pytest.raises(MiddlewareNotUsed):
            DjangoMiddleware(lambda request: None)
        [logged] = errors(caplog)
        assert message in logged
        assert "settings.MOESIF_MIDDLEWARE['STRICT'] = True" in logged
        # Built by application code for update_user & co.: no MiddlewareNotUsed.
        assert not DjangoMiddleware(None).update_user({"user_id": "u"})
    if isinstance(value, dict):
        with (
            override_settings(MOESIF_USERS=None, MOESIF_MIDDLEWARE={**value, "STRICT": True}),
            pytest.raises(ImproperlyConfigured, match=r"\[.IDENTIFY_COMPANY|GET_METADATA|FIELD"),
        ):
            DjangoMiddleware(lambda request: None)


def test_django_strict_and_enabled_keys() -> None:
    """STRICT and ENABLED: this library's own keys in MOESIF_MIDDLEWARE (Moesif ignores them)."""
    with override_settings(MOESIF_USERS=None, MOESIF_MIDDLEWARE={**GOOD, "STRICT": "yes"}):
        [error] = check_settings()
        assert "settings.MOESIF_MIDDLEWARE['STRICT'] must be True or False" in error.msg
    with (
        override_settings(MOESIF_USERS=None, MOESIF_MIDDLEWARE={**GOOD, "ENABLED": False}),
        pytest.raises(MiddlewareNotUsed, match=r"settings.MOESIF_MIDDLEWARE\['ENABLED'\]"),
    ):
        DjangoMiddleware(lambda request: None)


def test_django_missing_application_id() -> None:
    with override_settings(MOESIF_USERS=None, MOESIF_MIDDLEWARE={"LOG_BODY": False}):
        [warning] = check_settings()
        assert warning.id == "moesif_users.W004"
        assert "settings.MOESIF_MIDDLEWARE has no APPLICATION_ID" in warning.msg
        with pytest.raises(MiddlewareNotUsed):
            DjangoMiddleware(lambda request: None)


# -- update_user & co. never raise --------------------------------------------------------------
def test_profile_helpers_log_instead_of_raising(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # (a fresh rate limit: other tests log the same keys)
    monkeypatch.setattr(profile_methods, "_log", RateLimitedLog(logging.getLogger(LOGGER)))
    middleware = WsgiMiddleware(app, moesif_settings=GOOD)
    assert not middleware.update_user({"user_id": "u", "plan": "top-level"})
    assert not middleware.update_users_batch([{"user_id": "u"}, {"user_id": ""}])
    assert not middleware.update_company("{not json")
    assert not middleware.update_companies_batch({"company_id": "c"})  # not a list
    logged = errors(caplog)
    assert "update_user: the profile was not sent: plan: unknown user field" in logged[0]
    assert "update_users_batch: the profile was not sent: users[1].user_id" in logged[1]
    assert (
        "update_company: the profile was not sent: profile: is a string that is not JSON"
        in (logged[2])
    )
    assert "update_companies_batch" in logged[3]
    caplog.clear()
    off = WsgiMiddleware(app, moesif_settings=GOOD, enabled=False)
    assert not off.update_user({"user_id": "u"})
    assert "update_user: capture is off" in errors(caplog)[0]


def test_profile_helpers_take_moesifapi_models() -> None:
    moesifapi = pytest.importorskip("moesifapi.models")
    middleware = AsgiMiddleware(app, moesif_settings=GOOD)
    user = moesifapi.UserModel(user_id="m-1", metadata={"a": 1}, campaign=None)
    assert middleware.update_user(user)
    assert middleware.update_users_batch([user, moesifapi.UserModel(user_id=7)])
    company = moesifapi.CompanyModel(company_id="mc-1", company_domain="acme.com")
    assert middleware.update_company(company)
    assert middleware.update_companies_batch('[{"company_id": "mc-2"}]')
    assert middleware.capture is not None
    stats = middleware.capture.sender.stats()
    assert stats["queued"] == 5


def test_flask_extension_has_the_helpers_too() -> None:
    flask = pytest.importorskip("flask")
    from moesif_users_middleware.flask import MoesifUsers

    one = flask.Flask("one")
    extension = MoesifUsers(one, application_id="flask-helpers", base_url="http://127.0.0.1:9")
    assert extension.update_user({"user_id": "f-1"})  # outside a context: the one app
    with one.app_context():
        assert extension.update_company({"company_id": "fc-1"})
    two = flask.Flask("two")
    extension.init_app(two)
    assert not extension.update_user({"user_id": "f-2"})  # two apps, no context: which one?
    with two.app_context():
        assert extension.update_users_batch([{"user_id": "f-3"}])
    state = one.extensions["moesif_users"]
    assert state.capture.sender.stats()["queued"] == 3
