"""The Flask extension under Flask's real test client, delivering to the real collector."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from typing import Any

import pytest

pytest.importorskip("flask")

from conftest import CollectorHandle
from flask import Flask, Request, Response, g, jsonify, request, send_file, stream_with_context
from flask.testing import FlaskClient
from flask_login import LoginManager, UserMixin, current_user, login_required, login_user
from gunicorn.http.wsgi import FileWrapper
from werkzeug.test import EnvironBuilder

from moesif_users_middleware._capture.config import ConfigurationError
from moesif_users_middleware._capture.pipeline import capture_stats
from moesif_users_middleware.flask import EXTENSION_KEY, FlaskState, MoesifUsers
from moesif_users_middleware.sender import _reset_senders_for_tests, get_sender

PEER = {"REMOTE_ADDR": "198.51.100.23"}


@pytest.fixture(autouse=True)
def _no_sender_left() -> Iterator[None]:
    yield
    _reset_senders_for_tests()


def deliver(app_id: str, collector: CollectorHandle) -> None:
    assert get_sender(application_id=app_id, base_url=collector.url).flush(5)


def options(app_id: str, collector: CollectorHandle, **extra: Any) -> dict[str, Any]:
    return {"application_id": app_id, "base_url": collector.url, "flush_interval": 0.2, **extra}


def make_app() -> Flask:
    """A small API: ``X-User`` names the caller (stored on ``g`` by a before_request)."""
    app = Flask(__name__)
    app.config["SECRET_KEY"] = "test-secret"

    @app.before_request
    def load_account() -> None:
        user = request.headers.get("X-User")
        if user:
            g.account = {"id": user, "company": f"co-{user}", "email": f"{user}@example.com"}

    @app.get("/hello")
    def hello() -> Response:
        response = jsonify(hello="world")
        response.headers["X-Custom"] = "kept"
        return response

    @app.get("/stream")
    def stream() -> Response:
        produced = app.config["PRODUCED"]

        def chunks() -> Iterator[bytes]:
            for index in range(3):
                produced.append(index)
                yield f"chunk-{index};".encode()

        return Response(stream_with_context(chunks()), mimetype="text/plain")

    return app


def identify_user(request: Request, response: Response) -> str | None:
    account = g.get("account")
    return account["id"] if account else None


def identify_company(request: Request, response: Response) -> str | None:
    return str(g.account["company"])


def get_metadata(request: Request, response: Response) -> dict[str, Any]:
    return {"email": g.account["email"], "status": response.status_code, "path": request.path}


HOOKS = {
    "identify_user": identify_user,
    "identify_company": identify_company,
    "get_metadata": get_metadata,
}


def test_profile_arrives_with_every_field(app_id: str, collector: CollectorHandle) -> None:
    app = make_app()
    MoesifUsers(app, **options(app_id, collector, **HOOKS))
    client = app.test_client()
    response = client.get(
        "/hello?utm_source=newsletter&utm_campaign=spring",
        headers={
            "X-User": "ada",
            "Authorization": "Bearer tok-ada-1",
            "User-Agent": "ada-cli/1.0",
        },
        environ_base=PEER,
        buffered=True,
    )
    assert response.status_code == 200
    assert response.get_json() == {"hello": "world"}
    deliver(app_id, collector)

    profile = collector.get_user(app_id, "ada")
    assert profile is not None
    assert profile["company_id"] == "co-ada"
    assert profile["session_tokens"] == ["tok-ada-1"]
    assert profile["ip_address"] == "198.51.100.23"
    assert profile["user_agent_string"] == "ada-cli/1.0"
    assert profile["campaign"]["utm_source"] == "newsletter"
    assert profile["campaign"]["utm_campaign"] == "spring"
    assert profile["metadata"] == {"email": "ada@example.com", "status": 200, "path": "/hello"}


def test_hooks_run_after_the_response_is_closed_in_the_request_context(
    app_id: str, collector: CollectorHandle
) -> None:
    seen: list[tuple[str, str, bool]] = []

    def watch(request: Request, response: Response) -> dict[str, Any]:
        # g, request and the response are this request's, though the context was popped.
        seen.append(
            (g.account["id"], request.headers["X-User"], response.headers["X-Custom"] == "kept")
        )
        return {}

    app = make_app()
    MoesifUsers(app, **options(app_id, collector, identify_user=identify_user, get_metadata=watch))
    client = app.test_client()
    response = client.get("/hello", headers={"X-User": "grace"})
    assert seen == []  # not before the server closed the response
    response.close()
    assert seen == [("grace", "grace", True)]
    deliver(app_id, collector)
    assert collector.get_user(app_id, "grace") is not None


def test_raising_hooks_leave_the_response_untouched(
    app_id: str, collector: CollectorHandle
) -> None:
    def boom(request: Request, response: Response) -> Any:
        raise RuntimeError("hook bug")

    bare = make_app().test_client().get("/hello", headers={"X-User": "x"}, buffered=True)
    app = make_app()
    MoesifUsers(
        app,
        **options(
            app_id,
            collector,
            identify_user=identify_user,
            identify_company=boom,
            get_metadata=boom,
        ),
    )
    errors_before = capture_stats()["hook_errors"]
    response = app.test_client().get("/hello", headers={"X-User": "lin"}, buffered=True)
    assert response.status == bare.status
    assert response.get_data() == bare.get_data()
    assert sorted(response.headers.items()) == sorted(bare.headers.items())
    assert capture_stats()["hook_errors"] >= errors_before + 2
    deliver(app_id, collector)
    profile = collector.get_user(app_id, "lin")  # only the broken fields are lost
    assert profile is not None
    assert "company_id" not in profile or profile["company_id"] in (None, "")

    def identify_boom(request: Request, response: Response) -> str:
        raise RuntimeError("identify bug")

    app = make_app()
    MoesifUsers(app, **options(app_id, collector, identify_user=identify_boom))
    response = app.test_client().get("/hello", headers={"X-User": "mo"}, buffered=True)
    assert (response.status, response.get_data()) == (bare.status, bare.get_data())
    deliver(app_id, collector)
    assert collector.get_user(app_id, "mo") is None


def test_a_raising_skip_hook_skips_the_request(app_id: str, collector: CollectorHandle) -> None:
    def boom(request: Request, response: Response) -> bool:
        raise RuntimeError("skip bug")

    bare = make_app().test_client().get("/hello", headers={"X-User": "sk"}, buffered=True)
    app = make_app()
    MoesifUsers(app, **options(app_id, collector, identify_user=identify_user, skip=boom))
    before = capture_stats()
    response = app.test_client().get("/hello", headers={"X-User": "sk"}, buffered=True)
    assert (response.status, response.get_data()) == (bare.status, bare.get_data())
    after = capture_stats()
    assert after["skipped"] - before["skipped"] == 1  # fails closed: skipped, and
    assert after["hook_errors"] - before["hook_errors"] == 1  # counted as a hook error
    deliver(app_id, collector)
    assert collector.get_user(app_id, "sk") is None


def test_skip_and_anonymous_record_nothing(app_id: str, collector: CollectorHandle) -> None:
    def skip(request: Request, response: Response) -> bool:
        return request.headers.get("X-User") == "skipped"

    app = make_app()
    MoesifUsers(app, **options(app_id, collector, skip=skip, **HOOKS))
    client = app.test_client()
    assert client.get("/hello", headers={"X-User": "skipped"}, buffered=True).status_code == 200
    assert client.get("/hello", buffered=True).status_code == 200  # anonymous
    assert client.get("/hello", headers={"X-User": "kept"}, buffered=True).status_code == 200
    deliver(app_id, collector)
    assert [profile["user_id"] for profile in collector.list_users(app_id)] == ["kept"]


def test_streaming_response_still_streams(app_id: str, collector: CollectorHandle) -> None:
    app = make_app()
    produced: list[int] = []
    app.config["PRODUCED"] = produced
    MoesifUsers(app, **options(app_id, collector, **HOOKS))
    response = app.test_client().get("/stream", headers={"X-User": "streamer"})
    chunks = iter(response.response)
    # The test client read the first chunk to see the status; the rest is still unmade.
    assert produced == [0]
    assert next(chunks) == b"chunk-0;"
    assert produced == [0]
    assert next(chunks) == b"chunk-1;"
    assert produced == [0, 1]
    assert next(chunks) == b"chunk-2;"
    deliver(app_id, collector)
    assert collector.get_user(app_id, "streamer") is None  # recorded on close, not before
    response.close()
    deliver(app_id, collector)
    profile = collector.get_user(app_id, "streamer")
    assert profile is not None
    assert profile["metadata"]["path"] == "/stream"


def make_login_app() -> tuple[Flask, LoginManager]:
    class Member(UserMixin):  # type: ignore[misc]
        def __init__(self, user_id: str) -> None:
            self.id = user_id

    app = Flask(__name__)
    app.config["SECRET_KEY"] = "test-secret"
    manager = LoginManager(app)
    manager.user_loader(lambda user_id: Member(user_id))

    @app.post("/login/<user_id>")
    def login(user_id: str) -> str:
        login_user(Member(user_id))
        return "ok"

    def private() -> str:
        return f"hi {current_user.id}"

    app.get("/private")(login_required(private))

    @app.get("/public")
    def public() -> str:
        return "public"

    return app, manager


def test_flask_login_current_user_is_the_default_user_id(
    app_id: str, collector: CollectorHandle
) -> None:
    app, _ = make_login_app()
    MoesifUsers(app, **options(app_id, collector))
    client = app.test_client()
    assert client.get("/private", buffered=True).status_code == 401  # anonymous
    assert client.post("/login/u-42", buffered=True).status_code == 200
    response = client.get("/private", headers={"User-Agent": "browser/9"}, buffered=True)
    assert response.data == b"hi u-42"
    deliver(app_id, collector)
    assert [profile["user_id"] for profile in collector.list_users(app_id)] == ["u-42"]
    profile = collector.get_user(app_id, "u-42")
    assert profile is not None
    assert profile["user_agent_string"] == "browser/9"


def logged_in_client(app: Flask, user_id: str) -> FlaskClient:
    """A client of ``app`` carrying a session cookie made by a plain app (nothing recorded)."""
    plain, _ = make_login_app()
    login_client = plain.test_client()
    assert login_client.post(f"/login/{user_id}", buffered=True).status_code == 200
    cookie = login_client.get_cookie("session")
    assert cookie is not None
    client = app.test_client()
    client.set_cookie("session", cookie.value)
    return client


def test_a_user_the_request_never_loaded_is_not_forced(
    app_id: str, collector: CollectorHandle
) -> None:
    app, _ = make_login_app()
    MoesifUsers(app, **options(app_id, collector))
    client = logged_in_client(app, "u-43")
    assert client.get("/public", buffered=True).data == b"public"
    deliver(app_id, collector)
    assert collector.get_user(app_id, "u-43") is None  # no user-loader call was forced
    assert client.get("/private", buffered=True).data == b"hi u-43"
    deliver(app_id, collector)
    assert collector.get_user(app_id, "u-43") is not None

    forced_app, _ = make_login_app()
    MoesifUsers(forced_app, **options(app_id, collector, force_user_load=True))
    forced = logged_in_client(forced_app, "u-44")
    assert forced.get("/public", buffered=True).data == b"public"
    deliver(app_id, collector)
    assert collector.get_user(app_id, "u-44") is not None


def test_login_manager_initialised_after_the_extension(
    app_id: str, collector: CollectorHandle
) -> None:
    app = Flask(__name__)
    app.config["SECRET_KEY"] = "test-secret"
    MoesifUsers(app, **options(app_id, collector))  # before LoginManager, as factories may do
    manager = LoginManager()
    manager.init_app(app)

    class Member(UserMixin):  # type: ignore[misc]
        id = "late-user"

    manager.request_loader(lambda req: Member() if req.headers.get("X-Token") == "t" else None)

    def me() -> str:
        return str(current_user.id)

    app.get("/me")(login_required(me))

    assert app.test_client().get("/me", headers={"X-Token": "t"}, buffered=True).status_code == 200
    deliver(app_id, collector)
    profile = collector.get_user(app_id, "late-user")
    assert profile is not None
    assert not profile.get("session_tokens")  # X-Token is not a session token header


def test_config_from_app_config_and_kwargs_win(app_id: str, collector: CollectorHandle) -> None:
    app = make_app()
    app.config.update(
        MOESIF_USERS_APPLICATION_ID=app_id,
        MOESIF_USERS_BASE_URL=collector.url,
        MOESIF_USERS_FLUSH_INTERVAL=0.2,
        MOESIF_USERS_IDENTIFY_USER=f"{__name__}.identify_user",  # dotted path
        MOESIF_USERS_IDENTIFY_COMPANY=lambda request, response: "from-config",
        MOESIF_USERS_SESSION_TOKEN_HEADERS=["x-session"],
    )
    extension = MoesifUsers(identify_company=lambda request, response: "from-constructor")
    state = extension.init_app(app, get_metadata=lambda request, response: {"via": "init_app"})
    assert app.extensions[EXTENSION_KEY] is state
    assert isinstance(state, FlaskState)
    client = app.test_client()
    response = client.get("/hello", headers={"X-User": "cfg", "X-Session": "s-1"}, buffered=True)
    assert response.status_code == 200
    deliver(app_id, collector)
    profile = collector.get_user(app_id, "cfg")
    assert profile is not None
    assert profile["company_id"] == "from-constructor"
    assert profile["metadata"] == {"via": "init_app"}
    assert profile["session_tokens"] == ["s-1"]


async def async_identify(request: Request, response: Response) -> str:
    return "x"


FLASK_MISTAKES: list[tuple[dict[str, Any], dict[str, Any], str, str]] = [
    # (keyword options, app.config, level, what the one log line says)
    ({}, {}, "WARNING", "MOESIF_APPLICATION_ID"),
    (
        {"application_id": "a", "identfy_user": identify_user},
        {},
        "ERROR",
        "unknown option 'identfy_user': did you mean 'identify_user'?",
    ),
    (
        {"application_id": "a"},
        {"MOESIF_USERS_BATCHSIZE": 5},
        "ERROR",
        "unknown app.config key 'MOESIF_USERS_BATCHSIZE': did you mean 'MOESIF_USERS_BATCH_SIZE'?",
    ),
    ({"application_id": "a", "force_user_load": "yes"}, {}, "ERROR", "force_user_load"),
    (
        {"application_id": "a", "identify_user": async_identify},
        {},
        "ERROR",
        "identify_user is an async def hook (test_flask_extension.async_identify); "
        "Flask runs hooks synchronously: make it a plain function",
    ),
    ({"application_id": "a", "skip": "no_such_module_x.skip"}, {}, "ERROR", "skip: cannot"),
]


@pytest.mark.parametrize(("given", "app_config", "level", "fragment"), FLASK_MISTAKES)
def test_configuration_mistakes_turn_capture_off(
    given: dict[str, Any],
    app_config: dict[str, Any],
    level: str,
    fragment: str,
    collector: CollectorHandle,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("MOESIF_APPLICATION_ID", raising=False)
    caplog.set_level("DEBUG", logger="moesif_users_middleware")
    app = make_app()
    app.config.update(app_config)
    MoesifUsers(app, base_url=collector.url, **given)
    state = app.extensions[EXTENSION_KEY]
    assert isinstance(state, FlaskState)
    assert state.capture is None
    assert not app.after_request_funcs.get(None)  # nothing on the request path
    client = app.test_client()
    for _ in range(3):
        response = client.get("/hello", headers={"X-User": "off"}, buffered=True)
        assert response.status_code == 200
        assert response.json == {"hello": "world"}
    records = [r for r in caplog.records if r.name == "moesif_users_middleware"]
    assert [r.levelname for r in records] == [level]  # once, not per request
    assert fragment in records[0].getMessage()
    # strict: the same mistake raises when the extension is set up, by keyword or config.
    with pytest.raises(ConfigurationError) as info:
        MoesifUsers(make_app_with(app_config), base_url=collector.url, strict=True, **given)
    assert fragment in str(info.value)
    with pytest.raises(ConfigurationError):
        MoesifUsers(
            make_app_with({**app_config, "MOESIF_USERS_STRICT": True}),
            base_url=collector.url,
            **given,
        )


def make_app_with(config: dict[str, Any]) -> Flask:
    app = make_app()
    app.config.update(config)
    return app


def test_disabled_is_silent_and_double_init_raises(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG", logger="moesif_users_middleware")
    app = make_app()
    MoesifUsers(app, enabled=False)
    assert app.extensions[EXTENSION_KEY].capture is None
    assert app.test_client().get("/hello").status_code == 200
    assert caplog.records == []
    app = make_app()
    extension = MoesifUsers(app, application_id="a")
    with pytest.raises(ConfigurationError, match="already"):
        extension.init_app(app)


def test_one_extension_two_apps(collector: CollectorHandle) -> None:
    first_id, second_id = "test-app-flask-first", "test-app-flask-second"
    extension = MoesifUsers(identify_user=identify_user, base_url=collector.url)
    first, second = make_app(), make_app()
    extension.init_app(first, application_id=first_id)
    extension.init_app(second, application_id=second_id, identify_company=identify_company)
    assert first.extensions[EXTENSION_KEY] is not second.extensions[EXTENSION_KEY]
    first.test_client().get("/hello", headers={"X-User": "one"}, buffered=True)
    second.test_client().get("/hello", headers={"X-User": "two"}, buffered=True)
    deliver(first_id, collector)
    deliver(second_id, collector)
    assert collector.get_user(first_id, "one") is not None
    assert collector.get_user(first_id, "two") is None
    profile = collector.get_user(second_id, "two")
    assert profile is not None
    assert profile["company_id"] == "co-two"
    assert collector.get_user(second_id, "one") is None


def test_disabled_extension_registers_nothing(app_id: str, collector: CollectorHandle) -> None:
    app = make_app()
    app.config["MOESIF_USERS_ENABLED"] = False
    state = MoesifUsers().init_app(app, identify_user=identify_user)
    assert state.capture is None
    assert app.after_request_funcs.get(None, []) == []
    app.test_client().get("/hello", headers={"X-User": "off"}, buffered=True)
    assert collector.get_user(app_id, "off") is None


def test_send_file_keeps_the_servers_file_wrapper(app_id: str, collector: CollectorHandle) -> None:
    app = make_app()

    @app.get("/download")
    def download() -> Response:
        return send_file(io.BytesIO(b"file body"), mimetype="application/octet-stream")

    MoesifUsers(app, **options(app_id, collector, **HOOKS))
    # Called as a server would, with the server's own file_wrapper in the environ.
    environ = EnvironBuilder(path="/download", headers=[("X-User", "dl")]).get_environ()
    environ["wsgi.file_wrapper"] = FileWrapper
    started: list[str] = []

    def start_response(
        status: str, headers: list[tuple[str, str]], exc_info: Any = None
    ) -> Callable[[bytes], object]:
        started.append(status)
        return lambda data: None

    body = app(environ, start_response)
    assert isinstance(body, FileWrapper)  # the server can still sendfile() it
    assert b"".join(body) == b"file body"
    deliver(app_id, collector)
    assert collector.get_user(app_id, "dl") is None
    body.close()
    deliver(app_id, collector)
    assert started == ["200 OK"]
    profile = collector.get_user(app_id, "dl")
    assert profile is not None
    assert profile["metadata"]["path"] == "/download"

    # Without a server file_wrapper (the test client), the body is recorded on close too.
    client: FlaskClient = app.test_client()
    response = client.get("/download", headers={"X-User": "dl2"}, buffered=True)
    assert response.data == b"file body"
    deliver(app_id, collector)
    assert collector.get_user(app_id, "dl2") is not None


def test_a_bug_in_the_extension_never_reaches_the_response(
    app_id: str, collector: CollectorHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    import moesif_users_middleware.flask as adapter

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("library bug")

    app = make_app()
    MoesifUsers(app, **options(app_id, collector, **HOOKS))
    bare = make_app().test_client().get("/hello", headers={"X-User": "bug"}, buffered=True)
    before = capture_stats()["internal_errors"]
    for target in ("EnvironView", "_Deferred"):  # one fails after, one before, the response
        with monkeypatch.context() as patch:
            patch.setattr(adapter, target, broken)
            response = app.test_client().get("/hello", headers={"X-User": "bug"}, buffered=True)
        assert (response.status, response.get_data()) == (bare.status, bare.get_data())
        assert sorted(response.headers.items()) == sorted(bare.headers.items())
    assert capture_stats()["internal_errors"] == before + 2
