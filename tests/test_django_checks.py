"""The Django adapter's settings reader, system checks, MiddlewareNotUsed and imports."""

from __future__ import annotations

import json
import re
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

from moesif_users_middleware._capture.config import ConfigurationError  # noqa: E402
from moesif_users_middleware._capture.pipeline import capture_stats  # noqa: E402
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


def test_a_misspelled_key_fails_check_deploy_with_a_suggestion() -> None:
    with override_settings(MOESIF_USERS={**GOOD, "BATCHSIZE": 5}):
        messages = check_settings()
        assert ids(messages) == ["moesif_users.E002"]
        assert "'BATCHSIZE'" in messages[0].msg
        assert "did you mean 'BATCH_SIZE'?" in messages[0].msg
        with pytest.raises(SystemCheckError, match=r"moesif_users\.E002"):
            call_command("check", "--deploy")
    with override_settings(MOESIF_USERS={**GOOD, "batch_size": 5}):
        assert "did you mean 'BATCH_SIZE'?" in check_settings()[0].msg


def test_a_bad_strict_value_is_reported() -> None:
    with override_settings(MOESIF_USERS={**GOOD, "STRICT": "yes"}):
        messages = check_settings()
    assert ids(messages) == ["moesif_users.E004"]
    assert "STRICT" in messages[0].msg


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


def test_missing_application_id_is_a_warning_while_enabled(monkeypatch: pytest.MonkeyPatch) -> None:
    with override_settings(MOESIF_USERS={"IDENTIFY_COMPANY": "django_views.explode"}):
        messages = check_settings()
        assert ids(messages) == ["moesif_users.W004"]
        assert messages[0].level == checks.WARNING
        call_command("check", "--deploy")  # a warning does not fail the check
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


DJANGO_MISTAKES = [
    ({}, "WARNING", r"no application id: set settings.MOESIF_USERS\['APPLICATION_ID'\]"),
    ({**GOOD, "IDENTIFY_USR": "x"}, "ERROR", r"unknown key 'IDENTIFY_USR'.*'IDENTIFY_USER'\?"),
    ({**GOOD, "identify_user": "x"}, "ERROR", r"'identify_user'.*did you mean 'IDENTIFY_USER'"),
    ({**GOOD, "BATCHSIZE": 5}, "ERROR", r"did you mean 'BATCH_SIZE'\?"),
    ({**GOOD, "SKIP": "nowhere_module.skip"}, "ERROR", r"SKIP.*nowhere_module"),
    ({**GOOD, "FORCE_USER_LOAD": "yes"}, "ERROR", r"FORCE_USER_LOAD"),
    ({**GOOD, "FLUSH_INTERVAL": -1}, "ERROR", r"FLUSH_INTERVAL"),
]


@pytest.mark.parametrize(("moesif", "level", "message"), DJANGO_MISTAKES)
def test_bad_settings_turn_capture_off_with_one_log_line(
    moesif: dict[str, Any], level: str, message: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG", logger="moesif_users_middleware")
    with override_settings(MOESIF_USERS=moesif), pytest.raises(MiddlewareNotUsed):
        MoesifUsersMiddleware(get_response)
    records = [r for r in caplog.records if r.name == "moesif_users_middleware"]
    assert [r.levelname for r in records] == [level]
    assert re.search(message, records[0].getMessage())
    assert "app-for-checks" not in caplog.text


@pytest.mark.parametrize(("moesif", "level", "message"), DJANGO_MISTAKES)
def test_strict_settings_raise_at_construction(
    moesif: dict[str, Any], level: str, message: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG", logger="moesif_users_middleware")
    strict = override_settings(MOESIF_USERS={**moesif, "STRICT": True})
    with strict, pytest.raises(ConfigurationError, match=message) as info:
        MoesifUsersMiddleware(get_response)
    assert isinstance(info.value, ImproperlyConfigured)  # what Django users catch too
    assert caplog.records == []


def test_settings_that_are_not_a_dict_turn_capture_off(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG", logger="moesif_users_middleware")
    with override_settings(MOESIF_USERS="APPLICATION_ID=x"), pytest.raises(MiddlewareNotUsed):
        MoesifUsersMiddleware(get_response)
    assert [r.levelname for r in caplog.records] == ["ERROR"]
    assert "must be a dict" in caplog.text


@pytest.mark.parametrize(
    ("moesif", "level", "message"),
    [DJANGO_MISTAKES[0], DJANGO_MISTAKES[3]],
    ids=["missing application id", "misspelled key"],
)
def test_a_site_with_a_mistake_serves_normally(
    moesif: dict[str, Any], level: str, message: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG", logger="moesif_users_middleware")
    before = capture_stats()
    with override_settings(MOESIF_USERS={**moesif, "IDENTIFY_USER": "django_views.header_user"}):
        client = Client()
        for _ in range(3):
            response = client.get("/hello", headers={"X-User": "off"})
            assert response.status_code == 201
    records = [r for r in caplog.records if r.name == "moesif_users_middleware"]
    assert [r.levelname for r in records] == [level]  # once (per handler), not per request
    assert re.search(message, records[0].getMessage())
    after = capture_stats()
    assert after["captured"] == before["captured"]
    assert after["anonymous"] == before["anonymous"]


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
