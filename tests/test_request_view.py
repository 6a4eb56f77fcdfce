"""RequestView: EnvironView and ScopeView built from hand-made environ and scope dicts."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from moesif_users_middleware._capture.request_view import EnvironView, RequestView, ScopeView

REQUEST = object()
RESPONSE = object()


def environ(**extra: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": "/v1/items",
        "QUERY_STRING": "utm_source=news&a=1&a=2&blank=",
        "REMOTE_ADDR": "10.0.0.7",
        "CONTENT_TYPE": "application/json",
        "CONTENT_LENGTH": "12",
        "HTTP_USER_AGENT": "curl/8.0",
        "HTTP_X_FORWARDED_FOR": "203.0.113.9, 10.0.0.2",
        "HTTP_COOKIE": 'session=abc; theme="dark"; session=second',
        "wsgi.input": object(),
    }
    base.update(extra)
    return base


def scope(**extra: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "type": "http",
        "method": "POST",
        "path": "/v1/items",
        "query_string": b"utm_source=news&a=1&a=2&blank=",
        "client": ("10.0.0.7", 5123),
        "headers": [
            (b"content-type", b"application/json"),
            (b"user-agent", b"curl/8.0"),
            (b"x-forwarded-for", b"203.0.113.9"),
            (b"x-forwarded-for", b"10.0.0.2"),
            (b"cookie", b"session=abc"),
            (b"cookie", b'theme="dark"'),
        ],
    }
    base.update(extra)
    return base


VIEWS = [
    pytest.param(lambda **kw: EnvironView(environ(**kw), REQUEST, RESPONSE), id="environ"),
    pytest.param(lambda **kw: ScopeView(scope(**kw), REQUEST, RESPONSE), id="scope"),
]


@pytest.mark.parametrize("make", VIEWS)
def test_request_line_and_peer(make: Any) -> None:
    view = make()
    assert view.method == "POST"
    assert view.path == "/v1/items"
    assert view.query_string == "utm_source=news&a=1&a=2&blank="
    assert view.peer == "10.0.0.7"
    assert view.request is REQUEST
    assert view.response is RESPONSE


@pytest.mark.parametrize("make", VIEWS)
@pytest.mark.parametrize("name", ["user-agent", "User-Agent", "USER-AGENT"])
def test_headers_are_case_insensitive(make: Any, name: str) -> None:
    assert make().header(name) == "curl/8.0"


@pytest.mark.parametrize("make", VIEWS)
def test_content_headers_and_missing_ones(make: Any) -> None:
    view = make()
    assert view.header("content-type") == "application/json"
    assert view.header("x-api-key") is None
    assert view.header("authorization") is None


@pytest.mark.parametrize("make", VIEWS)
def test_repeated_headers_are_joined(make: Any) -> None:
    view = make()
    assert view.header("x-forwarded-for") == "203.0.113.9, 10.0.0.2"


def test_repeated_cookie_headers_are_joined_as_one_cookie_header() -> None:
    view = ScopeView(scope(), REQUEST, RESPONSE)
    assert view.header("cookie") == 'session=abc; theme="dark"'


@pytest.mark.parametrize("make", VIEWS)
def test_query_params_are_parsed_lazily_once(make: Any) -> None:
    view = make()
    assert view._query_params is None
    assert view.query_params == {"utm_source": ["news"], "a": ["1", "2"], "blank": [""]}
    assert view.query_params is view.query_params
    assert view.query_param("a") == "1"
    assert view.query_param("missing") is None


@pytest.mark.parametrize("make", VIEWS)
def test_cookies(make: Any) -> None:
    view = make()
    assert view._cookies is None
    assert view.cookies["session"] == "abc"
    assert view.cookies["theme"] == "dark"


def test_missing_everything() -> None:
    for view in (EnvironView({}, None, None), ScopeView({}, None, None)):
        assert view.method == "GET"
        assert view.path == ""
        assert view.query_string == ""
        assert view.peer is None
        assert view.header("user-agent") is None
        assert view.query_params == {}
        assert view.cookies == {}
        assert view.auth_user() is None
        assert view.user_id_default() is None


def test_base_view_has_nothing() -> None:
    view = RequestView(REQUEST, RESPONSE)
    assert view.header("host") is None
    assert view.peer is None
    assert view.auth_user() is None


def test_utf8_header_values_are_decoded() -> None:
    raw = "Grüße/1.0 ☃".encode()
    wsgi_value = raw.decode("latin-1")  # what a WSGI server puts in the environ
    assert EnvironView({"HTTP_USER_AGENT": wsgi_value}, None, None).header("user-agent") == (
        "Grüße/1.0 ☃"
    )
    assert ScopeView({"headers": [(b"user-agent", raw)]}, None, None).header("user-agent") == (
        "Grüße/1.0 ☃"
    )
    latin = "café".encode("latin-1")
    assert ScopeView({"headers": [(b"user-agent", latin)]}, None, None).header("user-agent") == (
        "café"
    )
    assert EnvironView({"HTTP_USER_AGENT": "café"}, None, None).header("user-agent") == "café"


def test_upper_case_asgi_header_names_still_match() -> None:
    view = ScopeView({"headers": [(b"User-Agent", b"x"), (b"USER-AGENT", b"y")]}, None, None)
    assert view.header("user-agent") == "x, y"


def test_malformed_scope_entries_are_ignored() -> None:
    headers: list[Any] = [
        (b"user-agent", b"ok"),
        ("x-str", "name and value as str"),
        (b"only-name",),
        None,
        (b"x-none", None),
        (bytearray(b"x-array"), bytearray(b"v")),
    ]
    view = ScopeView({"headers": headers, "client": "not-a-tuple"}, None, None)
    assert view.header("user-agent") == "ok"
    assert view.header("x-str") is None
    assert view.header("x-none") is None
    assert view.header("x-array") == "v"
    assert view.peer is None
    assert ScopeView({"headers": 5, "client": None}, None, None).header("a") is None
    assert ScopeView({"client": ["::1", 1]}, None, None).peer == "::1"


def test_non_string_environ_values_are_ignored() -> None:
    view = EnvironView({"HTTP_USER_AGENT": b"bytes", "REMOTE_ADDR": None}, None, None)
    assert view.header("user-agent") is None
    assert view.peer is None


def test_auth_user_is_read_on_demand() -> None:
    calls: list[int] = []

    def load() -> str:
        calls.append(1)
        return "user-object"

    view = EnvironView(environ(), None, None, auth_user=load)
    assert calls == []
    assert view.auth_user() == "user-object"
    assert calls == [1]


def test_remote_user_is_the_default_without_a_framework_user() -> None:
    assert EnvironView({"REMOTE_USER": "alice"}, None, None).user_id_default() == "alice"
    assert EnvironView({"REMOTE_USER": " "}, None, None).user_id_default() is None
    with_loader = EnvironView({"REMOTE_USER": "alice"}, None, None, auth_user=lambda: None)
    assert with_loader.user_id_default() is None


def test_scope_user_is_the_default_auth_user() -> None:
    assert ScopeView({"user": "starlette-user"}, None, None).auth_user() == "starlette-user"
    view = ScopeView({"user": "starlette-user"}, None, None, auth_user=lambda: "given")
    assert view.auth_user() == "given"


header_names = st.binary(min_size=0, max_size=30)
header_values = st.binary(min_size=0, max_size=200)


@given(
    headers=st.lists(st.tuples(header_names, header_values), max_size=12),
    query=st.binary(max_size=200),
    client=st.one_of(st.none(), st.tuples(st.text(max_size=40), st.integers())),
)
def test_any_scope_bytes_read_without_raising(
    headers: list[tuple[bytes, bytes]], query: bytes, client: Any
) -> None:
    view = ScopeView({"headers": headers, "query_string": query, "client": client}, None, None)
    names = [raw_name.decode("latin-1") for raw_name, _ in headers]
    for name in [*names, "user-agent", "authorization", "x-forwarded-for", "cookie"]:
        value = view.header(name)
        assert value is None or isinstance(value, str)
    assert isinstance(view.query_string, str)
    assert isinstance(view.query_params, dict)
    assert isinstance(view.cookies, dict)


@given(
    values=st.dictionaries(
        st.sampled_from(["HTTP_USER_AGENT", "HTTP_COOKIE", "QUERY_STRING"]), st.text()
    )
)
def test_any_environ_text_reads_without_raising(values: dict[str, str]) -> None:
    view = EnvironView(values, None, None)
    for name in ("user-agent", "cookie"):
        value = view.header(name)
        assert value is None or isinstance(value, str)
    assert isinstance(view.query_params, dict)
    assert isinstance(view.cookies, dict)
