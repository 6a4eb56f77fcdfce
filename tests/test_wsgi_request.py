"""``LazyRequest`` reads exactly what werkzeug's own ``Request`` would (table-driven)."""

from __future__ import annotations

from typing import Any

import pytest
from werkzeug.wrappers import Request

from moesif_users_middleware._capture.wsgi_request import LazyRequest

BASE: dict[str, Any] = {
    "REQUEST_METHOD": "get",
    "SCRIPT_NAME": "",
    "PATH_INFO": "/orders/42",
    "QUERY_STRING": "a=1&b=%C3%A9",
    "SERVER_NAME": "example.test",
    "SERVER_PORT": "8080",
    "REMOTE_ADDR": "203.0.113.9",
    "HTTP_HOST": "example.test:8080",
    "HTTP_X_USER_ID": "u-1",
    "HTTP_USER_AGENT": "agent/1",
    "wsgi.url_scheme": "https",
}

ENVIRONS = {
    "ordinary": {},
    "no PATH_INFO": {"PATH_INFO": None},
    "empty PATH_INFO": {"PATH_INFO": ""},
    "double slash": {"PATH_INFO": "//a//b/"},
    "UTF-8 seen as Latin-1": {"PATH_INFO": "/caf\u00c3\u00a9"},
    "not UTF-8": {"PATH_INFO": "/\u00e9t\u00e9"},
    "script name": {"SCRIPT_NAME": "/app/", "PATH_INFO": "/x"},
    "no server": {"SERVER_NAME": None, "SERVER_PORT": None},
    "bad port": {"SERVER_PORT": "http"},
    "no method": {"REQUEST_METHOD": None},
}

READS = [
    "path",
    "method",
    "scheme",
    "server",
    "root_path",
    "query_string",
    "remote_addr",
    "full_path",
    "url",
    "host",
    "args",
    "headers",
]


def environ(case: str) -> dict[str, Any]:
    values = {**BASE, **ENVIRONS[case]}
    return {key: value for key, value in values.items() if value is not None}


def read(request: Request, name: str) -> Any:
    try:
        value = getattr(request, name)
    except Exception as exc:
        return ("raised", type(exc))
    if name == "headers":
        return sorted(value.items())
    if name == "args":
        return sorted(value.items(multi=True))
    return value


@pytest.mark.parametrize("case", ENVIRONS)
@pytest.mark.parametrize("first", READS)
def test_every_read_matches_werkzeug_whatever_is_read_first(case: str, first: str) -> None:
    real = Request(environ(case), populate_request=False)
    lazy = LazyRequest(environ(case))
    assert read(lazy, first) == read(real, first)
    for name in READS:
        assert read(lazy, name) == read(real, name), name


def test_an_environ_werkzeug_cannot_parse_fails_only_the_reads_that_need_parsing() -> None:
    """A path beyond Latin-1 (a broken server) makes werkzeug's constructor raise."""
    broken = {**BASE, "PATH_INFO": "/\u4e2d"}
    with pytest.raises(UnicodeEncodeError):
        Request(dict(broken), populate_request=False)
    lazy = LazyRequest(dict(broken))
    assert lazy.headers.get("X-User-Id") == "u-1"
    with pytest.raises(UnicodeEncodeError):
        _ = lazy.path
    with pytest.raises(UnicodeEncodeError):
        _ = lazy.method


def test_it_is_a_werkzeug_request_over_the_same_environ() -> None:
    env = environ("ordinary")
    lazy = LazyRequest(env)
    assert isinstance(lazy, Request)
    assert lazy.environ is env
    assert "werkzeug.request" not in env  # like populate_request=False


def test_headers_and_path_alone_do_not_run_the_constructor() -> None:
    lazy = LazyRequest(environ("ordinary"))
    assert lazy.headers.get("X-User-Id") == "u-1"
    assert lazy.path == "/orders/42"
    assert "method" not in lazy.__dict__
    assert lazy.method == "GET"  # now it runs
    assert "server" in lazy.__dict__


def test_what_a_hook_set_survives_the_constructor() -> None:
    lazy = LazyRequest(environ("ordinary"))
    lazy.path = "/rewritten"
    assert lazy.method == "GET"
    assert lazy.path == "/rewritten"


def test_unknown_attributes_raise_attribute_error() -> None:
    lazy = LazyRequest(environ("ordinary"))
    with pytest.raises(AttributeError, match="no_such_thing"):
        _ = lazy.no_such_thing  # type: ignore[attr-defined]
    assert not hasattr(lazy, "also_missing")
