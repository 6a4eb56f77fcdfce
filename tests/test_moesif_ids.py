"""User ids from Moesif's settings equal the ones Moesif's own code derives, input by input.

Each case runs the real ``get_user_id`` of ``moesifwsgi``, ``moesifasgi`` and
``moesifdjango`` (with their header parsing) and this library's capture with the same
settings dict on the same request, and compares: random and hand-picked
``Authorization`` values (JWTs, Basic credentials, custom tokens, junk), several
``AUTHORIZATION_HEADER_NAME`` / ``AUTHORIZATION_USER_ID_FIELD`` values, and
``IDENTIFY_USER`` hooks that return an id, nothing, or raise. The only allowed
difference is this library's limits on ids: blank, over 1,024 characters or not valid
Unicode means no id.
"""

from __future__ import annotations

import asyncio
import base64
import json
from functools import partial
from typing import Any

import django_settings
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

pytest.importorskip("moesifwsgi")
pytest.importorskip("moesifasgi")
pytest.importorskip("moesifdjango")
pytest.importorskip("starlette")
pytest.importorskip("django")

django_settings.configure()

from django.test import RequestFactory  # noqa: E402
from moesifasgi.logger_helper import LoggerHelper as AsgiHelper  # noqa: E402
from moesifdjango.logger_helper import LoggerHelper as DjangoHelper  # noqa: E402
from moesifwsgi.logger_helper import LoggerHelper as WsgiHelper  # noqa: E402
from starlette.requests import Request  # noqa: E402

from moesif_users_middleware._capture.fields import UNSET  # noqa: E402
from moesif_users_middleware._capture.moesif_settings import moesif_config  # noqa: E402
from moesif_users_middleware._capture.pipeline import Capture  # noqa: E402
from moesif_users_middleware._capture.request_view import EnvironView, ScopeView  # noqa: E402
from moesif_users_middleware.models import MAX_ID_LENGTH  # noqa: E402

APP = object()  # what WSGI hooks get as ``app``

# -- inputs ---------------------------------------------------------------------------------


def b64(data: bytes, urlsafe: bool, pad: bool) -> str:
    text = (base64.urlsafe_b64encode if urlsafe else base64.b64encode)(data).decode()
    return text if pad else text.rstrip("=")


claim_values = st.one_of(
    st.text(max_size=12),
    st.integers(-(10**6), 10**6),
    st.booleans(),
    st.none(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
claims = st.dictionaries(
    st.sampled_from(["sub", "Sub", "userid", "UserId", "id", "x"]), claim_values
)


@st.composite
def jwt_like(draw: st.DrawFn) -> str:
    payload = json.dumps(draw(claims)).encode()
    if draw(st.booleans()):
        payload = draw(st.binary(max_size=20))  # not JSON at all
    segment = b64(payload, draw(st.booleans()), draw(st.booleans()))
    shape = draw(st.sampled_from(["jwt", "two", "bare"]))
    if shape == "jwt":
        return f"eyJhbGciOiJIUzI1NiJ9.{segment}.sig"
    return f"head.{segment}" if shape == "two" else segment


@st.composite
def basic_like(draw: st.DrawFn) -> str:
    user = draw(st.text(max_size=10))
    password = draw(st.text(max_size=6))
    raw = f"{user}:{password}" if draw(st.booleans()) else user
    return b64(raw.encode(), draw(st.booleans()), draw(st.booleans()))


@st.composite
def header_value(draw: st.DrawFn) -> str:
    scheme = draw(st.sampled_from(["Bearer ", "Basic ", "bearer ", "Token ", "", " Bearer  "]))
    credential = draw(
        st.one_of(
            jwt_like(),
            basic_like(),
            st.text(alphabet="ab.,= BearicsT0+/_-\u00e0", max_size=16),
        )
    )
    value = scheme + credential
    if draw(st.booleans()):
        value += ", " + draw(st.text(alphabet="ab.,= ", max_size=5))
    return value


header_names = st.sampled_from(
    [
        None,
        "authorization",
        "X-Token, Authorization",
        "x-api-key,x-token",
        "x_token",
        "Content-Type",
    ]
)
fields = st.sampled_from([None, "sub", "UserId", "ID"])
request_headers = st.dictionaries(
    st.sampled_from(["authorization", "x-token", "x-api-key", "content-type", "x-user"]),
    header_value(),
    max_size=3,
)
hook_results = st.sampled_from(["absent", None, "", "hook-id", 0, 42, False, "raise"])


def moesif_settings(names: str | None, field: str | None, hook: Any) -> dict[str, Any]:
    settings: dict[str, Any] = {"APPLICATION_ID": "ids-test", "BASE_URI": "http://127.0.0.1:9"}
    if names is not None:
        settings["AUTHORIZATION_HEADER_NAME"] = names
    if field is not None:
        settings["AUTHORIZATION_USER_ID_FIELD"] = field
    if hook is not None:
        settings["IDENTIFY_USER"] = hook
    return settings


def hook_for(result: Any, wsgi: bool) -> Any:
    if result == "absent":
        return None

    def identify(*args: Any) -> Any:
        if result == "raise":
            raise RuntimeError("hook failed")
        return result

    if wsgi:
        return lambda app, environ, response_headers=None: identify()
    return lambda request, response: identify()


# -- this library's id and the comparison ------------------------------------------------------


def ours(settings: dict[str, Any], framework: Any, view: Any) -> str | None:
    """The user id this library's capture takes for ``view`` (the pipeline's own steps)."""
    config, _ = moesif_config(settings, framework, source="moesif_settings", app=APP)
    capture = Capture(config)
    hook = config.identify_user
    if hook is None:
        result: Any = UNSET
    else:
        try:
            result = hook(view.request, view.response)
        except Exception:
            return None  # the pipeline records nothing (Django and ASGI: Moesif neither)
    return capture._user_id(view, result)


def within_limits(user_id: Any) -> str | None:
    """Moesif's id as this library can send it: a non-blank string of valid Unicode."""
    if not user_id:
        return None
    text = str(user_id)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return None
    return None if text.isspace() or len(text) > MAX_ID_LENGTH else text


def environ_for(headers: dict[str, str]) -> dict[str, Any]:
    environ: dict[str, Any] = {"REQUEST_METHOD": "GET", "PATH_INFO": "/", "REMOTE_ADDR": "1.2.3.4"}
    for name, value in headers.items():
        key = "CONTENT_TYPE" if name == "content-type" else "HTTP_" + name.upper().replace("-", "_")
        environ[key] = value
    return environ


COMMON = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
JWT = "Bearer " + "eyJhbGciOiJIUzI1NiJ9." + b64(b'{"sub": "jwt-user"}', False, False) + ".sig"


@COMMON
@given(request_headers, header_names, fields, hook_results)
@example({"authorization": JWT}, None, None, "absent")
@example({"authorization": "Basic " + b64(b"ann:pw", False, True)}, None, None, None)
@example({"x-token": JWT, "authorization": "Basic eA=="}, "x-token,authorization", None, "")
def test_wsgi_ids_equal_moesifwsgi(
    headers: dict[str, str], names: str | None, field: str | None, result: Any
) -> None:
    settings_ = moesif_settings(names, field, hook_for(result, wsgi=True))
    environ = environ_for(headers)
    theirs = WsgiHelper().get_user_id(dict(environ), settings_, APP, False, {})
    view = EnvironView(environ, environ, None)
    assert ours(settings_, "wsgi", view) == within_limits(theirs)


@COMMON
@given(request_headers, header_names, fields, hook_results)
@example({"authorization": JWT}, None, None, "absent")
def test_asgi_ids_equal_moesifasgi(
    headers: dict[str, str], names: str | None, field: str | None, result: Any
) -> None:
    settings_ = moesif_settings(names, field, hook_for(result, wsgi=False))
    scope = {
        "type": "http",
        "method": "GET",
        "path": "/",
        "query_string": b"",
        "headers": [(name.encode(), value.encode()) for name, value in headers.items()],
    }
    request = Request(scope)
    theirs = asyncio.run(
        AsgiHelper().get_user_id(settings_, request, None, dict(request.headers), False)
    )
    view = ScopeView(scope, request, None)
    assert ours(settings_, "asgi", view) == within_limits(theirs)


class _User:
    def __init__(self, username: Any, authenticated: bool) -> None:
        self.username = username
        self.is_authenticated = authenticated


users = st.one_of(
    st.none(),
    st.builds(_User, st.sampled_from(["", "alice", "bob smith"]), st.booleans()),
    st.just("no user attribute"),
)


@COMMON
@given(request_headers, header_names, fields, hook_results, users)
@example({"authorization": JWT}, None, None, "absent", _User("alice", True))
@example({"authorization": JWT}, None, None, "absent", "no user attribute")
def test_django_ids_equal_moesifdjango(
    headers: dict[str, str], names: str | None, field: str | None, result: Any, user: Any
) -> None:
    settings_ = moesif_settings(names, field, hook_for(result, wsgi=False))
    settings_["REQUEST_HEADER_MASKS"] = ["x-api-key"]
    request = RequestFactory().get("/")
    request.META.update(environ_for(headers))
    if user != "no user attribute":
        request.user = user  # type: ignore[attr-defined]
    helper = DjangoHelper()
    parsed = helper.parse_request_headers(request, settings_, False)
    parsed, _ = helper.add_transaction_id_to_header(parsed, None, settings_)
    theirs = helper.get_user_id(settings_, request, None, parsed, False)
    view = EnvironView(request.META, request, None, partial(getattr, request, "user", None))
    assert ours(settings_, "django", view) == within_limits(theirs)
