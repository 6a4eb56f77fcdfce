"""Company profiles end to end: the model, the clients, the sender and the adapters.

Everything is delivered over loopback HTTP to the real collector and read back from it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
from faults import FaultServer, Reply
from samples import fast_retry
from servers import CollectorHandle

from moesif_users_middleware import (
    ApiError,
    AsyncUsersClient,
    Campaign,
    Company,
    UsersClient,
    ValidationError,
)
from moesif_users_middleware.sender import _reset_senders_for_tests, get_sender

APP_HEADER = "X-Moesif-Application-Id"
ACME = {
    "company_id": "acme",
    "company_domain": "acmeinc.com",
    "campaign": {"utm_source": "google", "utm_medium": "cpc"},
    "metadata": {"org_name": "Acme, Inc", "mrr": 24000, "demographics": {"employees": 47}},
}


@pytest.fixture(autouse=True)
def _no_sender_left() -> Iterator[None]:
    yield
    _reset_senders_for_tests()


def get_company(collector: CollectorHandle, app_id: str, company_id: str) -> dict[str, Any] | None:
    path = "/v1/companies/" + quote(company_id, safe="").replace(".", "%2E")
    answer = collector.client.get(path, headers={APP_HEADER: app_id})
    if answer.status_code == 404:
        return None
    answer.raise_for_status()
    company: dict[str, Any] = answer.json()
    return company


def sender_for(app_id: str, url: str, **options: Any) -> Any:
    options.setdefault("flush_interval", 60.0)
    options.setdefault("shutdown_timeout", 0.5)
    return get_sender(app_id, url, _retry=fast_retry(batch_deadline=3.0), **options)


# -- the model ---------------------------------------------------------------------------------


def test_company_round_trips_its_wire_form() -> None:
    company = Company(**ACME)  # type: ignore[arg-type]
    assert company.to_dict() == ACME
    assert Company.from_dict(ACME) == company
    assert isinstance(company.campaign, Campaign)
    assert "acme" in repr(company)


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({}, "company_id"),
        ({"company_id": ""}, "company_id"),
        ({"company_id": 7}, "company_id"),
        ({"company_id": "x" * 1025}, "company_id"),
        ({"company_id": "a", "metadata": ["not", "an", "object"]}, "metadata"),
        ({"company_id": "a", "metadata": {"x": float("nan")}}, "metadata.x"),
        ({"company_id": "a", "campaign": {"utm_nope": "x"}}, "campaign.utm_nope"),
        ({"company_id": "a", "company_domain": 3}, "company_domain"),
        ({"company_id": "a", "ip_address": "300.1.1.1"}, "ip_address"),
        ({"company_id": "a", "user_agent_string": "ua"}, "user_agent_string"),
        ({"company_id": "a", "modified_time": "yesterday"}, "modified_time"),
    ],
)
def test_bad_companies_name_the_field(data: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        Company.from_dict(data)
    assert caught.value.field == field
    with pytest.raises(ValidationError) as again:
        get_sender("app-validation", "http://127.0.0.1:9").queue_company(data)
    assert again.value.field == field


def test_a_batch_names_the_index_of_the_bad_company() -> None:
    sender = get_sender("app-validation", "http://127.0.0.1:9")
    with pytest.raises(ValidationError) as caught:
        sender.queue_companies([{"company_id": "ok"}, {"company_id": "b", "metadata": 1}])
    assert caught.value.field == "companies[1].metadata"
    with pytest.raises(ValidationError) as caught:
        sender.queue_companies({"company_id": "a dict is not a list"})
    assert caught.value.field == "companies"
    assert sender.stats("companies")["queued"] == 0


# -- the direct calls --------------------------------------------------------------------------


def test_client_updates_companies(app_id: str, collector: CollectorHandle) -> None:
    with UsersClient(app_id, collector.url) as client:
        client.update_company(Company(**ACME))  # type: ignore[arg-type]
        client.update_companies_batch(
            [{"company_id": "acme", "metadata": {"plan_name": "Pro"}}, {"company_id": "globex"}]
        )
        client.update_companies_batch([])  # sends nothing
        with pytest.raises(ValidationError) as caught:
            client.update_company({"company_domain": "no-id.com"})
        assert caught.value.field == "company_id"
    acme = get_company(collector, app_id, "acme")
    assert acme is not None
    assert acme["company_domain"] == "acmeinc.com"
    assert acme["metadata"]["plan_name"] == "Pro"
    assert acme["metadata"]["demographics"] == {"employees": 47}  # merged, not replaced
    assert get_company(collector, app_id, "globex") is not None


def test_async_client_updates_companies(app_id: str, collector: CollectorHandle) -> None:
    async def main() -> None:
        async with AsyncUsersClient(app_id, collector.url) as client:
            await client.update_company({"company_id": "initech", "session_token": "k-1"})
            await client.update_companies_batch([{"company_id": "initech", "session_token": "k-2"}])

    asyncio.run(main())
    company = get_company(collector, app_id, "initech")
    assert company is not None
    assert company["session_tokens"] == ["k-1", "k-2"]


def test_client_raises_api_error_for_a_refused_company(app_id: str) -> None:
    with (
        FaultServer(mode=Reply(400, b'{"error":"no"}')) as server,
        UsersClient(app_id, server.url) as client,
        pytest.raises(ApiError) as caught,
    ):
        client.update_company({"company_id": "acme"})
    assert caught.value.status_code == 400
    assert server.received[0].path == "/v1/companies"


# -- the sender --------------------------------------------------------------------------------


def test_sender_coalesces_companies_apart_from_users(
    app_id: str, collector: CollectorHandle
) -> None:
    with FaultServer(forward_to=collector.url) as server:
        sender = sender_for(app_id, server.url)
        for seats in range(50):
            assert sender.queue_company(
                {
                    "company_id": "acme",
                    "session_token": f"k-{seats % 2}",
                    "metadata": {"seats": seats},
                }
            )
            assert sender.queue_user({"user_id": f"u{seats}", "company_id": "acme"})
        assert sender.flush(5)

    paths = sorted(request.path for request in server.accepted)
    assert paths == ["/v1/companies/batch", "/v1/users/batch"]
    companies = next(r for r in server.accepted if r.path == "/v1/companies/batch").records
    assert all("user_id" not in record for record in companies)
    company = get_company(collector, app_id, "acme")
    assert company is not None
    assert company["metadata"] == {"seats": 49}
    assert sorted(company["session_tokens"]) == ["k-0", "k-1"]
    users = sender.stats("users")
    firms = sender.stats("companies")
    assert (users["queued"], users["sent"]) == (50, 50)
    assert (firms["queued"], firms["coalesced"]) == (50, 49)
    assert firms["sent"] == len(companies)
    assert firms["batches"] == 1
    assert sender.stats()["queued"] == 100  # both kinds


def test_sender_retries_companies_and_skips_unchanged(
    app_id: str, collector: CollectorHandle
) -> None:
    with FaultServer(forward_to=collector.url) as server:
        server.script(Reply(503, b"{}"), Reply(503, b"{}"))
        sender = sender_for(app_id, server.url)
        assert sender.queue_company({"company_id": "retry-co", "metadata": {"plan": "pro"}})
        assert sender.flush(10)
        assert sender.queue_company({"company_id": "retry-co", "metadata": {"plan": "pro"}})
        assert sender.flush(5)
    stats = sender.stats("companies")
    assert stats["retries"] == 2
    assert stats["sent"] == 1
    assert stats["skipped_unchanged"] == 1
    company = get_company(collector, app_id, "retry-co")
    assert company is not None
    assert company["metadata"] == {"plan": "pro"}


def test_stats_names_the_kinds() -> None:
    sender = get_sender("app-stats", "http://127.0.0.1:9")
    with pytest.raises(ValidationError) as caught:
        sender.stats("company")
    assert caught.value.field == "kind"


# -- the adapters ------------------------------------------------------------------------------


def flask_app(**options: Any) -> Any:
    flask = pytest.importorskip("flask")
    from moesif_users_middleware.flask import MoesifUsers

    app = flask.Flask(__name__)

    @app.get("/hello")
    def hello() -> Any:
        return {"hello": "world"}

    MoesifUsers(app, **options)
    return app


def call_flask(app: Any, user: str, company: str, agent: str = "cli/1") -> None:
    response = app.test_client().get(
        "/hello?utm_source=ads",
        headers={"X-User": user, "X-Company": company, "User-Agent": agent, "X-Api-Key": "key-1"},
        environ_base={"REMOTE_ADDR": "198.51.100.7"},
        buffered=True,
    )
    assert response.status_code == 200


def identify_user(request: Any, response: Any) -> str | None:
    return request.headers.get("X-User")  # type: ignore[no-any-return]


def identify_company(request: Any, response: Any) -> str | None:
    return request.headers.get("X-Company")  # type: ignore[no-any-return]


def company_domain(request: Any, response: Any) -> str:
    return request.headers["X-Company"] + ".example"  # type: ignore[no-any-return]


def company_metadata(request: Any, response: Any) -> dict[str, Any]:
    return {"plan": "pro", "status": response.status_code}


def explode(request: Any, response: Any) -> Any:
    raise RuntimeError("the hook failed")


COMPANY_HOOKS = {
    "identify_user": identify_user,
    "identify_company": identify_company,
    "get_company_domain": company_domain,
    "get_company_metadata": company_metadata,
}


def test_flask_request_updates_its_company(app_id: str, collector: CollectorHandle) -> None:
    app = flask_app(application_id=app_id, base_url=collector.url, **COMPANY_HOOKS)
    call_flask(app, "ada", "co-flask")
    assert get_sender(app_id, collector.url).flush(5)

    company = get_company(collector, app_id, "co-flask")
    assert company == {
        **company,
        "company_id": "co-flask",
        "company_domain": "co-flask.example",
        "ip_address": "198.51.100.7",
        "session_tokens": ["key-1"],
        "campaign": {"utm_source": "ads"},
        "metadata": {"plan": "pro", "status": 200},
    }
    user = collector.get_user(app_id, "ada")
    assert user is not None
    assert user["company_id"] == "co-flask"
    assert "metadata" not in user or user["metadata"] == {}


@pytest.mark.parametrize("hook", ["get_company_domain", "get_company_metadata"])
def test_a_failing_company_hook_loses_only_its_field(
    app_id: str, collector: CollectorHandle, hook: str
) -> None:
    app = flask_app(
        application_id=app_id, base_url=collector.url, **{**COMPANY_HOOKS, hook: explode}
    )
    call_flask(app, "bea", f"co-{hook}")
    assert get_sender(app_id, collector.url).flush(5)

    company = get_company(collector, app_id, f"co-{hook}")
    assert company is not None
    assert ("company_domain" in company) is (hook != "get_company_domain")
    assert ("metadata" in company and company["metadata"] != {}) is (hook != "get_company_metadata")
    user = collector.get_user(app_id, "bea")
    assert user is not None
    assert user["user_agent_string"] == "cli/1"


def test_update_companies_false_sends_users_only(app_id: str, collector: CollectorHandle) -> None:
    app = flask_app(
        application_id=app_id, base_url=collector.url, update_companies=False, **COMPANY_HOOKS
    )
    call_flask(app, "cy", "co-off")
    sender = get_sender(app_id, collector.url)
    assert sender.flush(5)
    assert sender.stats("companies")["queued"] == 0
    assert get_company(collector, app_id, "co-off") is None
    user = collector.get_user(app_id, "cy")
    assert user is not None
    assert user["company_id"] == "co-off"


def test_many_requests_coalesce_to_one_record_per_user_and_company(
    app_id: str, collector: CollectorHandle
) -> None:
    app = flask_app(
        application_id=app_id, base_url=collector.url, flush_interval=60.0, **COMPANY_HOOKS
    )
    for round_ in range(3):
        for user in range(20):
            call_flask(app, f"u{user}", f"co{user % 4}", agent=f"cli/{round_}")
    sender = get_sender(app_id, collector.url)
    assert sender.flush(5)
    assert sender.stats("users")["sent"] == 20
    assert sender.stats("companies")["sent"] == 4
    for index in range(4):
        company = get_company(collector, app_id, f"co{index}")
        assert company is not None
        assert company["company_domain"] == f"co{index}.example"


def test_a_repeated_capture_repeats_its_company_too(
    app_id: str, collector: CollectorHandle
) -> None:
    app = flask_app(application_id=app_id, base_url=collector.url, **COMPANY_HOOKS)
    for _ in range(5):
        call_flask(app, "dee", "co-repeat")
    sender = get_sender(app_id, collector.url)
    assert sender.flush(5)
    users, firms = sender.stats("users"), sender.stats("companies")
    assert (users["queued"], users["coalesced"], users["sent"]) == (5, 4, 1)
    assert (firms["queued"], firms["coalesced"], firms["sent"]) == (5, 4, 1)


def test_plain_wsgi_request_updates_its_company(app_id: str, collector: CollectorHandle) -> None:
    werkzeug_test = pytest.importorskip("werkzeug.test")
    from moesif_users_middleware.wsgi import MoesifUsersMiddleware

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    wrapped = MoesifUsersMiddleware(
        app,
        application_id=app_id,
        base_url=collector.url,
        identify_user=lambda environ, response: environ.get("HTTP_X_USER"),
        identify_company=lambda environ, response: environ.get("HTTP_X_COMPANY"),
        get_company_metadata=lambda environ, response: {"status": response.status_code},
    )
    client = werkzeug_test.Client(wrapped)
    client.get("/", headers={"X-User": "eve", "X-Company": "co-wsgi"}, buffered=True)
    assert get_sender(app_id, collector.url).flush(5)
    company = get_company(collector, app_id, "co-wsgi")
    assert company is not None
    assert company["metadata"] == {"status": 200}


@pytest.mark.parametrize("style", ["sync", "async"])
def test_starlette_request_updates_its_company(
    app_id: str, collector: CollectorHandle, style: str
) -> None:
    pytest.importorskip("starlette")
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route
    from starlette.testclient import TestClient

    from moesif_users_middleware.starlette import MoesifUsersMiddleware

    async def domain_async(request: Any, response: Any) -> str:
        await asyncio.sleep(0)
        return "async.example"

    async def home(request: Any) -> PlainTextResponse:
        return PlainTextResponse("ok")

    hooks = dict(COMPANY_HOOKS)
    if style == "async":
        hooks["get_company_domain"] = domain_async
    app = Starlette(
        routes=[Route("/", home)],
        middleware=[
            Middleware(
                MoesifUsersMiddleware, application_id=app_id, base_url=collector.url, **hooks
            )
        ],
    )
    company_id = f"co-starlette-{style}"
    with TestClient(app) as client:
        client.get("/", headers={"X-User": "fay", "X-Company": company_id})
    assert get_sender(app_id, collector.url).flush(5)
    company = get_company(collector, app_id, company_id)
    assert company is not None
    assert company["metadata"] == {"plan": "pro", "status": 200}
    expected = "async.example" if style == "async" else f"{company_id}.example"
    assert company["company_domain"] == expected
