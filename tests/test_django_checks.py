"""The Django adapter's settings reader, system checks, MiddlewareNotUsed and imports."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import django_settings
import pytest

pytest.importorskip("django")


django_settings.configure()

from django.core import checks  # noqa: E402
from django.core.exceptions import ImproperlyConfigured, MiddlewareNotUsed  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.core.management.base import SystemCheckError  # noqa: E402
from django.http import HttpRequest, HttpResponse  # noqa: E402
from django.test import Client, override_settings  # noqa: E402
from django_settings import AUTH, OURS, SESSION  # noqa: E402

from moesif_users_middleware.django import MoesifUsersMiddleware  # noqa: E402
from moesif_users_middleware.django.checks import check_middleware, check_settings  # noqa: E402
from moesif_users_middleware.django.conf import valid_keys  # noqa: E402
from moesif_users_middleware.sender import _reset_senders_for_tests  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
GOOD = {"APPLICATION_ID": "app-for-checks", "BASE_URL": "http://127.0.0.1:9"}


@pytest.fixture(autouse=True)
def _clean(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("MOESIF_APPLICATION_ID", raising=False)
    monkeypatch.delenv("MOESIF_BASE_URL", raising=False)
    yield
    _reset_senders_for_tests()


def ids(messages: list[checks.CheckMessage]) -> list[str]:
    return [str(message.id) for message in messages]


def run_ours() -> list[checks.CheckMessage]:
    """Every registered check (as ``manage.py check`` runs them), ours filtered out."""
    return [m for m in checks.run_checks() if str(m.id).startswith("moesif_users.")]


def get_response(request: HttpRequest) -> HttpResponse:
    return HttpResponse(b"ok")


# --- system checks -------------------------------------------------------------------------
def test_a_good_configuration_passes_every_check() -> None:
    with override_settings(MOESIF_USERS={**GOOD, "IDENTIFY_COMPANY": "django_views.explode"}):
        assert run_ours() == []


def test_checks_are_registered_by_the_app_config() -> None:
    with override_settings(MOESIF_USERS=["not", "a", "dict"]):
        assert ids(run_ours()) == ["moesif_users.E001"]
        with pytest.raises(SystemCheckError, match=r"moesif_users\.E001"):
            call_command("check")


def test_unknown_keys_are_errors_listing_the_valid_ones() -> None:
    with override_settings(MOESIF_USERS={**GOOD, "IDENTIFY_USR": "x.y", "application_id": "a"}):
        messages = check_settings()
    assert ids(messages) == ["moesif_users.E002"]
    assert "'IDENTIFY_USR'" in messages[0].msg
    assert "'application_id'" in messages[0].msg
    hint = str(messages[0].hint)
    for key in ("IDENTIFY_USER", "FORCE_USER_LOAD", "FLUSH_INTERVAL", "TRUSTED_PROXIES"):
        assert key in hint
    assert set(valid_keys()) >= {"APPLICATION_ID", "SKIP", "GET_METADATA"}


def test_missing_application_id_is_an_error_while_enabled(monkeypatch: pytest.MonkeyPatch) -> None:
    with override_settings(MOESIF_USERS={"IDENTIFY_COMPANY": "django_views.explode"}):
        assert ids(check_settings()) == ["moesif_users.E003"]
        monkeypatch.setenv("MOESIF_APPLICATION_ID", "from-the-environment")
        assert check_settings() == []
    with override_settings(MOESIF_USERS={"ENABLED": False}):
        monkeypatch.delenv("MOESIF_APPLICATION_ID")
        assert check_settings() == []


@pytest.mark.parametrize(
    ("key", "value", "named"),
    [
        ("FLUSH_INTERVAL", "fast", "FLUSH_INTERVAL"),
        ("ENABLED", "yes", "ENABLED"),
        ("FORCE_USER_LOAD", 1, "FORCE_USER_LOAD"),
        ("TRUSTED_PROXIES", 42, "TRUSTED_PROXIES"),
        ("APPLICATION_ID", 12345, "APPLICATION_ID"),
        ("IDENTIFY_USER", "no_such_module_here.identify", "IDENTIFY_USER"),
        ("GET_METADATA", 3, "GET_METADATA"),
    ],
)
def test_wrong_values_are_errors_naming_the_key(key: str, value: Any, named: str) -> None:
    with override_settings(MOESIF_USERS={**GOOD, key: value}):
        messages = check_settings()
    assert ids(messages) == ["moesif_users.E004"]
    assert named in messages[0].msg


def test_every_wrong_value_is_reported_not_only_the_first() -> None:
    with override_settings(MOESIF_USERS={**GOOD, "BATCH_SIZE": 0, "GZIP": "no"}):
        messages = check_settings()
    assert ids(messages) == ["moesif_users.E004", "moesif_users.E004"]


def test_missing_middleware_is_a_warning() -> None:
    with override_settings(MOESIF_USERS=GOOD, MIDDLEWARE=[SESSION, AUTH]):
        assert ids(check_middleware()) == ["moesif_users.W001"]
    with override_settings(MOESIF_USERS={"ENABLED": False}, MIDDLEWARE=[SESSION, AUTH]):
        assert check_middleware() == []


def test_middleware_before_authentication_is_a_warning() -> None:
    with override_settings(MOESIF_USERS=GOOD, MIDDLEWARE=[SESSION, OURS, AUTH]):
        assert ids(run_ours()) == ["moesif_users.W002"]
    # Any path naming the class (or a subclass) counts.
    inner = "moesif_users_middleware.django.middleware.MoesifUsersMiddleware"
    with override_settings(MOESIF_USERS=GOOD, MIDDLEWARE=[inner, SESSION, AUTH]):
        assert ids(check_middleware()) == ["moesif_users.W002"]


def test_no_authentication_and_no_identify_user_is_a_warning() -> None:
    with override_settings(MOESIF_USERS=GOOD, MIDDLEWARE=[SESSION, OURS]):
        assert ids(check_middleware()) == ["moesif_users.W003"]
    with override_settings(
        MOESIF_USERS={**GOOD, "IDENTIFY_USER": "django_views.explode"}, MIDDLEWARE=[OURS]
    ):
        assert check_middleware() == []


# --- startup ---------------------------------------------------------------------------------
def test_disabled_middleware_raises_middleware_not_used() -> None:
    with override_settings(MOESIF_USERS={"ENABLED": False}), pytest.raises(MiddlewareNotUsed):
        MoesifUsersMiddleware(get_response)


def test_disabled_middleware_is_dropped_from_the_chain() -> None:
    with override_settings(MOESIF_USERS={"ENABLED": False}):
        response = Client().get("/hello")
    assert response.status_code == 201


@pytest.mark.parametrize(
    ("moesif", "message"),
    [
        ({}, r"APPLICATION_ID'\] is required"),
        ({**GOOD, "IDENTIFY_USR": "x"}, r"unknown key.*'IDENTIFY_USR'"),
        ({**GOOD, "identify_user": "x"}, r"upper-case"),
        ({**GOOD, "SKIP": "nowhere_module.skip"}, r"SKIP.*nowhere_module"),
        ({**GOOD, "FORCE_USER_LOAD": "yes"}, r"FORCE_USER_LOAD"),
        ("APPLICATION_ID=x", r"must be a dict"),
    ],
)
def test_bad_settings_fail_at_startup(moesif: Any, message: str) -> None:
    with override_settings(MOESIF_USERS=moesif), pytest.raises(ImproperlyConfigured, match=message):
        MoesifUsersMiddleware(get_response)


def test_settings_are_read_once_at_construction() -> None:
    with override_settings(MOESIF_USERS={**GOOD, "FORCE_USER_LOAD": True}):
        middleware = MoesifUsersMiddleware(get_response)
    assert middleware.force_user_load is True
    assert middleware.async_mode is False
    assert "app-for-checks" not in repr(middleware)


def test_async_get_response_puts_the_middleware_in_async_mode() -> None:
    import inspect

    async def aget_response(request: HttpRequest) -> HttpResponse:
        return HttpResponse(b"ok")

    with override_settings(MOESIF_USERS=GOOD):
        middleware = MoesifUsersMiddleware(aget_response)
    assert middleware.async_mode is True
    assert inspect.iscoroutinefunction(middleware) or hasattr(middleware, "_is_coroutine")
    assert MoesifUsersMiddleware.sync_capable is True
    assert MoesifUsersMiddleware.async_capable is True


# --- import isolation ------------------------------------------------------------------------
PROBE = textwrap.dedent(
    """
    import json, sys

    blocked = set(sys.argv[2].split(","))

    class Blocker:
        def find_spec(self, name, path=None, target=None):
            if name.partition(".")[0] in blocked:
                raise ImportError(f"blocked by the test: {name}")
            return None

    sys.meta_path.insert(0, Blocker())
    module = __import__(sys.argv[1], fromlist=["MoesifUsersMiddleware"])
    assert module.MoesifUsersMiddleware.__module__ == "moesif_users_middleware.django.middleware"
    print(json.dumps(sorted(sys.modules)))
    """
)


def test_django_adapter_imports_no_other_framework() -> None:
    blocked = {"flask", "werkzeug", "starlette", "fastapi"}
    result = subprocess.run(
        [sys.executable, "-c", PROBE, "moesif_users_middleware.django", ",".join(sorted(blocked))],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    modules: list[str] = json.loads(result.stdout)
    roots = {name.partition(".")[0] for name in modules}
    assert "django" in modules  # the real one, not shadowed by our module
    assert "django.core.exceptions" in modules
    assert not roots & blocked
    others = {f"moesif_users_middleware.{name}" for name in ("flask", "wsgi", "starlette")}
    assert not others & set(modules)
