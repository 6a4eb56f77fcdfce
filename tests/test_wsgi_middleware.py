"""The plain WSGI middleware under werkzeug's test Client, delivering to the real collector."""

from __future__ import annotations

import io
import re
import wsgiref.util
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pytest

pytest.importorskip("flask")

from conftest import CollectorHandle
from flask import Flask, g
from werkzeug.test import Client, EnvironBuilder
from werkzeug.wrappers import Request

from moesif_users_middleware._capture.config import ConfigurationError
from moesif_users_middleware._capture.pipeline import capture_stats
from moesif_users_middleware._capture.wsgi_response import ResponseView
from moesif_users_middleware.sender import _reset_senders_for_tests, get_sender
from moesif_users_middleware.wsgi import MoesifUsersMiddleware

Environ = dict[str, Any]
StartResponse = Callable[..., Any]
PEER = {"REMOTE_ADDR": "198.51.100.23"}


@pytest.fixture(autouse=True)
def _no_sender_left() -> Iterator[None]:
    yield
    _reset_senders_for_tests()


def ignore_start(
    status: str, headers: list[tuple[str, str]], exc_info: Any = None
) -> Callable[[bytes], object]:
    return lambda data: None


def deliver(app_id: str, collector: CollectorHandle) -> None:
    assert get_sender(application_id=app_id, base_url=collector.url).flush(5)


def options(app_id: str, collector: CollectorHandle, **extra: Any) -> dict[str, Any]:
    return {"application_id": app_id, "base_url": collector.url, "flush_interval": 0.2, **extra}


def hello_app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    start_response("201 Created", [("Content-Type", "text/plain"), ("X-Custom", "kept")])
    return [b"hello ", b"world"]


# Hooks get the environ dict (unless request_class says otherwise).
def identify_user(request: Environ, response: ResponseView) -> str | None:
    return request.get("HTTP_X_USER")


def identify_company(request: Environ, response: ResponseView) -> str | None:
    user = request.get("HTTP_X_USER")
    return f"co-{user}" if user else None


def get_metadata(request: Environ, response: ResponseView) -> dict[str, Any]:
    return {
        "request": type(request).__name__,
        "status": response.status_code,
        "custom": response.header("x-custom"),
        "headers": len(response.headers or ()),
    }


HOOKS = {
    "identify_user": identify_user,
    "identify_company": identify_company,
    "get_metadata": get_metadata,
}


def test_profile_arrives_with_every_field(app_id: str, collector: CollectorHandle) -> None:
    client = Client(MoesifUsersMiddleware(hello_app, **options(app_id, collector, **HOOKS)))
    response = client.get(
        "/hello?utm_source=ads&utm_medium=cpc",
        headers={"X-User": "ada", "X-Api-Key": "key-ada", "User-Agent": "ada-cli/2.0"},
        environ_base=PEER,
        buffered=True,
    )
    assert (response.status, response.get_data()) == ("201 Created", b"hello world")
    deliver(app_id, collector)
    profile = collector.get_user(app_id, "ada")
    assert profile is not None
    assert profile["company_id"] == "co-ada"
    assert profile["session_tokens"] == ["key-ada"]
    assert profile["ip_address"] == "198.51.100.23"
    assert profile["user_agent_string"] == "ada-cli/2.0"
    assert profile["campaign"]["utm_source"] == "ads"
    assert profile["campaign"]["utm_medium"] == "cpc"
    assert profile["metadata"] == {
        "request": "dict",
        "status": 201,
        "custom": "kept",
        "headers": 2,
    }


def test_remote_user_is_the_default_user_id(app_id: str, collector: CollectorHandle) -> None:
    client = Client(MoesifUsersMiddleware(hello_app, **options(app_id, collector)))
    client.get("/", environ_base={"REMOTE_USER": "alice", **PEER}, buffered=True)
    client.get("/", environ_base=PEER, buffered=True)  # anonymous: nothing recorded
    deliver(app_id, collector)
    assert [profile["user_id"] for profile in collector.list_users(app_id)] == ["alice"]


def test_skip_and_anonymous_record_nothing(app_id: str, collector: CollectorHandle) -> None:
    def skip(request: Environ, response: ResponseView) -> bool:
        return request["PATH_INFO"] == "/health"

    client = Client(
        MoesifUsersMiddleware(hello_app, **options(app_id, collector, skip=skip, **HOOKS))
    )
    client.get("/health", headers={"X-User": "skipped"}, buffered=True)
    client.get("/anything", buffered=True)
    client.get("/anything", headers={"X-User": "kept"}, buffered=True)
    deliver(app_id, collector)
    assert [profile["user_id"] for profile in collector.list_users(app_id)] == ["kept"]


def test_raising_hooks_leave_the_response_untouched(
    app_id: str, collector: CollectorHandle
) -> None:
    def boom(request: Environ, response: ResponseView) -> Any:
        raise RuntimeError("hook bug")

    bare = Client(hello_app).get("/", buffered=True)
    errors_before = capture_stats()["hook_errors"]
    wrapped = MoesifUsersMiddleware(
        hello_app,
        **options(
            app_id,
            collector,
            identify_user=identify_user,
            identify_company=boom,
            get_metadata=boom,
            get_session_token=boom,
        ),
    )
    response = Client(wrapped).get("/", headers={"X-User": "lin"}, buffered=True)
    assert response.status == bare.status
    assert response.get_data() == bare.get_data()
    assert sorted(response.headers.items()) == sorted(bare.headers.items())
    assert capture_stats()["hook_errors"] >= errors_before + 3
    deliver(app_id, collector)
    profile = collector.get_user(app_id, "lin")
    assert profile is not None  # only the broken fields are lost
    assert not profile.get("metadata")

    # a raising skip fails closed: the request is skipped (and counted as a hook error)
    wrapped = MoesifUsersMiddleware(
        hello_app, **options(app_id, collector, identify_user=identify_user, skip=boom)
    )
    before = capture_stats()
    response = Client(wrapped).get("/", headers={"X-User": "sk"}, buffered=True)
    assert (response.status, response.get_data()) == (bare.status, bare.get_data())
    after = capture_stats()
    assert after["skipped"] - before["skipped"] == 1
    assert after["hook_errors"] - before["hook_errors"] == 1
    deliver(app_id, collector)
    assert collector.get_user(app_id, "sk") is None


def test_streaming_body_passes_through_lazily(app_id: str, collector: CollectorHandle) -> None:
    produced: list[int] = []

    def streaming_app(environ: Environ, start_response: StartResponse) -> Iterator[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        for index in range(3):
            produced.append(index)
            yield f"chunk-{index};".encode()

    client = Client(MoesifUsersMiddleware(streaming_app, **options(app_id, collector, **HOOKS)))
    response = client.get("/stream", headers={"X-User": "streamer"})
    chunks = iter(response.response)
    # The client read one chunk to see the status (the generator starts the response).
    assert produced == [0]
    assert next(chunks) == b"chunk-0;"
    assert next(chunks) == b"chunk-1;"
    assert produced == [0, 1]
    assert next(chunks) == b"chunk-2;"
    deliver(app_id, collector)
    assert collector.get_user(app_id, "streamer") is None  # recorded on close, not before
    response.close()
    deliver(app_id, collector)
    profile = collector.get_user(app_id, "streamer")
    assert profile is not None
    assert profile["metadata"]["status"] == 200


def test_body_object_is_passed_through_unchanged() -> None:
    body_closed: list[bool] = []

    class Body:
        def __iter__(self) -> Iterator[bytes]:
            yield b"x"

        def close(self) -> None:
            body_closed.append(True)

    def app(environ: Environ, start_response: StartResponse) -> Body:
        start_response("200 OK", [])
        return Body()

    wrapped = MoesifUsersMiddleware(app, application_id="unused", identify_user=lambda q, r: None)
    environ = EnvironBuilder().get_environ()
    result = wrapped(environ, ignore_start)
    assert list(result) == [b"x"]
    result.close()  # type: ignore[attr-defined]
    result.close()  # type: ignore[attr-defined]
    assert body_closed == [True]  # forwarded once

    wrapped.app = hello_app
    listed = wrapped(environ, ignore_start)
    assert len(listed) == 2  # type: ignore[arg-type]  # servers set Content-Length from len()


def test_file_wrapper_is_handed_to_the_server(app_id: str, collector: CollectorHandle) -> None:
    source = io.BytesIO(b"file body")

    def file_app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        wrapper: Iterable[bytes] = environ["wsgi.file_wrapper"](source, 4)
        return wrapper

    wrapped = MoesifUsersMiddleware(file_app, **options(app_id, collector, **HOOKS))
    environ = EnvironBuilder(headers=[("X-User", "dl")]).get_environ()
    environ["wsgi.file_wrapper"] = wsgiref.util.FileWrapper
    result = wrapped(environ, ignore_start)
    assert isinstance(result, wsgiref.util.FileWrapper)
    assert b"".join(result) == b"file body"
    result.close()
    assert source.closed
    deliver(app_id, collector)
    assert collector.get_user(app_id, "dl") is not None


def test_generator_app_starting_late(app_id: str, collector: CollectorHandle) -> None:
    def late_app(environ: Environ, start_response: StartResponse) -> Iterator[bytes]:
        yield b""  # some apps call start_response only once iterated
        start_response("202 Accepted", [])
        yield b"done"

    def never_started(environ: Environ, start_response: StartResponse) -> Iterator[bytes]:
        return iter(())

    for app, user in ((late_app, "late"), (never_started, "never")):
        wrapped = MoesifUsersMiddleware(app, **options(app_id, collector, **HOOKS))
        result = wrapped(EnvironBuilder(headers=[("X-User", user)]).get_environ(), ignore_start)
        list(result)
        result.close()  # type: ignore[attr-defined]
    deliver(app_id, collector)
    profile = collector.get_user(app_id, "late")
    assert profile is not None
    assert profile["metadata"]["status"] == 202
    assert collector.get_user(app_id, "never") is None  # no response, nothing recorded


def test_app_exceptions_propagate_and_record_nothing(
    app_id: str, collector: CollectorHandle
) -> None:
    class AppError(Exception):
        pass

    def failing_app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        raise AppError("boom")

    client = Client(MoesifUsersMiddleware(failing_app, **options(app_id, collector, **HOOKS)))
    with pytest.raises(AppError, match="boom"):
        client.get("/", headers={"X-User": "err"})
    deliver(app_id, collector)
    assert collector.get_user(app_id, "err") is None


def test_wrapping_a_flask_app_from_outside(app_id: str, collector: CollectorHandle) -> None:
    app = Flask(__name__)

    @app.get("/me")
    def me() -> str:
        g.user = "from-view"
        return "me"

    seen: list[bool] = []

    def flask_identify(request: Request, response: ResponseView) -> str:
        seen.append(isinstance(request, Request) and response.status_code == 200)
        return str(request.args.get("user"))

    app.wsgi_app = MoesifUsersMiddleware(  # type: ignore[method-assign]
        app.wsgi_app,
        **options(app_id, collector, identify_user=flask_identify, request_class=Request),
    )
    assert app.test_client().get("/me?user=outer", buffered=True).data == b"me"
    assert seen == [True]
    deliver(app_id, collector)
    assert collector.get_user(app_id, "outer") is not None


class Wrapped:
    def __init__(self, environ: Environ) -> None:
        self.environ = environ


@pytest.mark.parametrize(
    ("request_class", "expected"),
    [
        (None, "dict"),
        (Request, "werkzeug"),
        ("werkzeug.wrappers.Request", "werkzeug"),
        (Wrapped, "Wrapped"),
        ("test_wsgi_middleware:Wrapped", "Wrapped"),
    ],
)
def test_request_class_decides_what_hooks_get(
    request_class: Any, expected: str, app_id: str, collector: CollectorHandle
) -> None:
    seen: list[Any] = []

    def identify(request: Any, response: ResponseView) -> str:
        seen.append(request)
        environ = request if isinstance(request, dict) else request.environ
        return str(environ["HTTP_X_USER"])

    extra = {} if request_class is None else {"request_class": request_class}
    client = Client(
        MoesifUsersMiddleware(
            hello_app, **options(app_id, collector, identify_user=identify, **extra)
        )
    )
    client.get("/", headers={"X-User": "rc"}, buffered=True)
    assert len(seen) == 1
    if expected == "werkzeug":  # the test Client's own request, else a LazyRequest
        assert isinstance(seen[0], Request)
    else:
        assert type(seen[0]).__name__ == expected
    deliver(app_id, collector)
    assert collector.get_user(app_id, "rc") is not None


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        (42, "request_class must be a class or callable"),
        ("no_such_module_x.Request", "request_class: cannot import"),
        (lambda: None, "cannot be called as request_class(environ)"),
    ],
)
def test_bad_request_class_is_a_configuration_error(value: Any, fragment: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        MoesifUsersMiddleware(hello_app, application_id="a", request_class=value, strict=True)
    assert fragment in str(info.value)


def test_configuration_mistakes_turn_capture_off(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MOESIF_APPLICATION_ID", raising=False)
    caplog.set_level("DEBUG", logger="moesif_users_middleware")

    async def async_hook(request: Environ, response: ResponseView) -> str:
        return "x"

    cases: list[tuple[dict[str, Any], str, str]] = [
        ({}, "WARNING", "MOESIF_APPLICATION_ID"),
        ({"application_id": "a", "batchsize": 5}, "ERROR", "did you mean 'batch_size'?"),
        (
            {"application_id": "a", "get_metadata": async_hook},
            "ERROR",
            "is an async def hook (test_wsgi_middleware.test_configuration_mistakes_turn_capture_"
            "off.<locals>.async_hook); a plain WSGI app (no event loop) runs hooks synchronously: "
            "make it a plain function",
        ),
        ({"application_id": "a", "skip": "no_such_module_x.skip"}, "ERROR", "skip: cannot import"),
        ({"application_id": "a", "identify_user": 42}, "ERROR", "identify_user must be a callable"),
    ]
    for given, level, fragment in cases:
        caplog.clear()
        middleware = MoesifUsersMiddleware(hello_app, **given)
        assert middleware.capture is None
        client = Client(middleware)
        for _ in range(3):
            response = client.get("/", headers={"X-User": "off"}, buffered=True)
            assert (response.status, response.get_data()) == ("201 Created", b"hello world")
        records = [r for r in caplog.records if r.name == "moesif_users_middleware"]
        assert [r.levelname for r in records] == [level], given  # once, not per request
        assert fragment in records[0].getMessage()
        with pytest.raises(ConfigurationError, match=re.escape(fragment)):
            MoesifUsersMiddleware(hello_app, strict=True, **given)


def test_disabled_and_repr() -> None:
    disabled = MoesifUsersMiddleware(hello_app, enabled=False)
    body = disabled(EnvironBuilder().get_environ(), ignore_start)
    assert body == [b"hello ", b"world"]  # the app's own list: nothing wrapped
    assert "secret-id" not in repr(MoesifUsersMiddleware(hello_app, application_id="secret-id"))


def test_a_bug_in_the_middleware_never_reaches_the_response(
    app_id: str, collector: CollectorHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    import moesif_users_middleware.wsgi as adapter

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("library bug")

    client = Client(MoesifUsersMiddleware(hello_app, **options(app_id, collector, **HOOKS)))
    before = capture_stats()["internal_errors"]
    for target in ("EnvironView", "call_on_close"):  # one fails after, one before, the response
        with monkeypatch.context() as patch:
            patch.setattr(adapter, target, broken)
            response = client.get("/", headers={"X-User": "bug"}, buffered=True)
        assert (response.status, response.get_data()) == ("201 Created", b"hello world")
        assert response.headers["X-Custom"] == "kept"
    assert capture_stats()["internal_errors"] == before + 2


def test_werkzeug_request_class_parses_lazily_when_the_app_left_none() -> None:
    seen: list[Any] = []

    def identify(request: Any, response: ResponseView) -> None:
        seen.append(request)  # records nothing: no sender needed

    middleware = MoesifUsersMiddleware(
        hello_app, application_id="a", identify_user=identify, request_class=Request
    )
    environ = EnvironBuilder(path="/lazy", headers={"X-User": "z"}).get_environ()
    assert "werkzeug.request" not in environ
    body = middleware(environ, ignore_start)
    list(body)
    body.close()  # type: ignore[attr-defined]
    assert type(seen[0]).__name__ == "LazyRequest"
    assert isinstance(seen[0], Request)
    assert (seen[0].path, seen[0].headers["X-User"], seen[0].method) == ("/lazy", "z", "GET")
