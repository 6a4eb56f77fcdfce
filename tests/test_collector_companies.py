"""The collector's Companies API, over real loopback HTTP: the same semantics, errors and
ordering as users (create or merge, append-only session tokens, per-value clocks by
``modified_time``, a bounded history), and kept apart from users."""

from __future__ import annotations

import json
import sqlite3
import threading
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from samples import REFERENCE_COMPANY
from servers import APP_ID_HEADER, CollectorHandle, ServerThread

pytest.importorskip("starlette")

from moesif_users_middleware.collector import partition_key
from moesif_users_middleware.collector.kinds import COMPANIES
from moesif_users_middleware.collector.store import HISTORY_LIMIT

NEW = "2026-12-02T23:51:48.123Z"
OLD = "2026-12-01T10:00:00.000Z"
OLDER = "2026-11-30T09:00:00.000Z"


def post(
    collector: CollectorHandle, app_id: str, payload: Any, *, batch: bool = False
) -> httpx.Response:
    path = "/v1/companies/batch" if batch else "/v1/companies"
    return collector.client.post(path, json=payload, headers={APP_ID_HEADER: app_id})


def post_ok(collector: CollectorHandle, app_id: str, *companies: dict[str, Any]) -> None:
    """POST one company to the single route, several to the batch route."""
    batch = len(companies) > 1
    response = post(collector, app_id, list(companies) if batch else companies[0], batch=batch)
    assert response.status_code == 201, response.text
    assert response.json() == {"records": len(companies)}


def company(collector: CollectorHandle, app_id: str, company_id: str) -> dict[str, Any]:
    found = collector.get_company(app_id, company_id)
    assert found is not None, f"company {company_id!r} not stored"
    return found


def parse_z(value: str) -> datetime:
    assert value.endswith("Z"), value
    assert len(value) == 24, value
    return datetime.fromisoformat(value[:-1] + "+00:00")


# --- the API --------------------------------------------------------------------------------


def test_reference_example_is_stored_as_given(collector: CollectorHandle, app_id: str) -> None:
    before = datetime.now(timezone.utc)
    post_ok(collector, app_id, {**REFERENCE_COMPANY, "session_token": "key-1"})
    after = datetime.now(timezone.utc)

    stored = company(collector, app_id, "12345")
    assert {key: stored[key] for key in REFERENCE_COMPANY} == REFERENCE_COMPANY
    assert stored["session_tokens"] == ["key-1"]
    assert set(stored) == {*REFERENCE_COMPANY, "session_tokens", "created_time", "modified_time"}
    for key in ("created_time", "modified_time"):
        assert before - timedelta(seconds=1) <= parse_z(stored[key]) <= after + timedelta(seconds=1)
    assert list(stored)[:3] == ["company_id", "company_domain", "session_tokens"]


def test_only_company_id_is_required(collector: CollectorHandle, app_id: str) -> None:
    post_ok(collector, app_id, {"company_id": "bare"})

    stored = company(collector, app_id, "bare")
    assert set(stored) == {"company_id", "session_tokens", "created_time", "modified_time"}
    assert stored["session_tokens"] == []


def test_a_partial_update_merges_recursively(collector: CollectorHandle, app_id: str) -> None:
    post_ok(collector, app_id, {**REFERENCE_COMPANY, "ip_address": "203.0.113.5"})
    post_ok(
        collector,
        app_id,
        {
            "company_id": "12345",
            "company_domain": "acme.example",
            "campaign": {"utm_campaign": "spring", "gclid": "g-1"},
            "metadata": {"plan_name": "Pro", "demographics": {"employee_count": 52}, "new": [1]},
        },
    )

    stored = company(collector, app_id, "12345")
    assert stored["company_domain"] == "acme.example"  # a newly set field overrides
    assert stored["ip_address"] == "203.0.113.5"  # an absent one is kept
    assert stored["campaign"] == {**REFERENCE_COMPANY["campaign"], "utm_campaign": "spring",
                                  "gclid": "g-1"}  # fmt: skip
    assert stored["metadata"] == {
        "org_name": "Acme, Inc",
        "plan_name": "Pro",
        "mrr": 24000,
        "demographics": {"alexa_ranking": 500000, "employee_count": 52},
        "new": [1],
    }


def test_session_tokens_are_append_only_in_order(collector: CollectorHandle, app_id: str) -> None:
    post_ok(collector, app_id, {"company_id": "c", "session_token": "k1"})
    post_ok(
        collector,
        app_id,
        {"company_id": "c", "session_token": "k2"},
        {"company_id": "c", "session_token": "k1"},  # already kept: not repeated
        {"company_id": "c", "session_token": "k3"},
        {"company_id": "c"},  # no token: none removed
    )

    assert company(collector, app_id, "c")["session_tokens"] == ["k1", "k2", "k3"]


def test_a_batch_applies_duplicates_in_order(collector: CollectorHandle, app_id: str) -> None:
    post_ok(
        collector,
        app_id,
        {"company_id": "a", "metadata": {"n": 1}},
        {"company_id": "b"},
        {"company_id": "a", "metadata": {"n": 2, "m": 1}},
    )

    assert company(collector, app_id, "a")["metadata"] == {"n": 2, "m": 1}
    assert [c["company_id"] for c in collector.list_companies(app_id)] == ["a", "b"]


def test_an_empty_batch_stores_nothing(collector: CollectorHandle, app_id: str) -> None:
    response = post(collector, app_id, [], batch=True)

    assert (response.status_code, response.json()) == (201, {"records": 0})
    assert collector.list_companies(app_id) == []


@pytest.mark.parametrize(
    "company_id", ["a/b", "with space", "ünïcødé 🎉", "?#%&=", "..", ".", "%2F", "batch", "\x00"]
)
def test_company_ids_round_trip_through_the_url(
    collector: CollectorHandle, app_id: str, company_id: str
) -> None:
    post_ok(collector, app_id, {"company_id": company_id, "metadata": {"id": company_id}})

    assert company(collector, app_id, company_id)["metadata"] == {"id": company_id}


def test_get_unknown_company_is_json_404(collector: CollectorHandle, app_id: str) -> None:
    post_ok(collector, app_id, {"company_id": "known"})
    response = collector.client.get("/v1/companies/nobody", headers={APP_ID_HEADER: app_id})

    assert response.status_code == 404
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"error": "not found", "message": "no company with this company_id"}


def test_list_companies_pages_in_company_id_order(collector: CollectorHandle, app_id: str) -> None:
    post_ok(collector, app_id, *[{"company_id": f"c{i:02d}"} for i in range(25)][::-1])
    headers = {APP_ID_HEADER: app_id}

    first = collector.client.get("/v1/companies", params={"limit": 10}, headers=headers).json()
    last = collector.client.get(
        "/v1/companies", params={"limit": 10, "offset": 20}, headers=headers
    ).json()

    assert [c["company_id"] for c in first] == [f"c{i:02d}" for i in range(10)]
    assert [c["company_id"] for c in last] == [f"c{i:02d}" for i in range(20, 25)]
    assert all("session_tokens" in c for c in first + last)
    assert len(collector.list_companies(app_id)) == 25


@pytest.mark.parametrize(
    "params", [{"limit": "0"}, {"limit": "abc"}, {"offset": "-5"}, {"limit": "99999999"}]
)
def test_list_companies_rejects_bad_paging(
    collector: CollectorHandle, app_id: str, params: dict[str, str]
) -> None:
    response = collector.client.get("/v1/companies", params=params, headers={APP_ID_HEADER: app_id})

    assert response.status_code == 400
    assert response.json()["error"] == "invalid parameter"


def test_users_and_companies_are_apart(collector: CollectorHandle, app_id: str) -> None:
    """One id as a user and as a company: two profiles, each in its own list and counters."""
    user = collector.client.post(
        "/v1/users",
        json={"user_id": "12345", "company_id": "12345"},
        headers={APP_ID_HEADER: app_id},
    )
    assert user.status_code == 201
    post_ok(collector, app_id, REFERENCE_COMPANY)

    assert "company_domain" not in (collector.get_user(app_id, "12345") or {})
    assert company(collector, app_id, "12345")["company_domain"] == "acmeinc.com"
    assert [u["user_id"] for u in collector.list_users(app_id)] == ["12345"]
    assert [c["company_id"] for c in collector.list_companies(app_id)] == ["12345"]
    assert collector.stats(app_id)["users"] == 1
    assert collector.stats(app_id, "companies")["companies"] == 1


def test_application_ids_are_isolated(collector: CollectorHandle) -> None:
    first, second = "iso-a-" + uuid.uuid4().hex, "iso-b-" + uuid.uuid4().hex
    post_ok(collector, first, {"company_id": "shared", "metadata": {"owner": "a"}})
    post_ok(collector, second, {"company_id": "shared", "metadata": {"owner": "b"}})
    post_ok(collector, first, {"company_id": "only-a"})

    assert company(collector, first, "shared")["metadata"] == {"owner": "a"}
    assert company(collector, second, "shared")["metadata"] == {"owner": "b"}
    assert collector.get_company(second, "only-a") is None


def test_stats_count_company_posts_apart_from_users(
    collector: CollectorHandle, app_id: str
) -> None:
    post_ok(collector, app_id, {"company_id": "a"})
    post_ok(collector, app_id, {"company_id": "a"}, {"company_id": "b"}, {"company_id": "c"})
    assert post(collector, app_id, [{"company_id": 1}], batch=True).status_code == 400
    assert post(collector, app_id, {"nope": 1}).status_code == 400

    assert collector.stats(app_id, "companies") == {
        "requests": 4, "batches": 2, "rejected": 2, "records": 4, "companies": 3,
    }  # fmt: skip
    assert collector.stats(app_id) == {
        "requests": 0, "batches": 0, "rejected": 0, "records": 0, "users": 0,
    }  # fmt: skip
    response = collector.client.get(
        "/v1/_stats", params={"kind": "events"}, headers={APP_ID_HEADER: app_id}
    )
    assert response.status_code == 400
    assert response.json()["parameter"] == "kind"


def test_concurrent_updates_to_one_company_lose_nothing(
    collector: CollectorHandle, app_id: str
) -> None:
    def send(worker: int) -> None:
        with httpx.Client(base_url=collector.url, timeout=10) as client:
            for i in range(10):
                response = client.post(
                    "/v1/companies/batch",
                    json=[{"company_id": "hot", "session_token": f"w{worker}-{i}",
                           "metadata": {f"w{worker}": i}}],
                    headers={APP_ID_HEADER: app_id},
                )  # fmt: skip
                assert response.status_code == 201

    threads = [threading.Thread(target=send, args=(worker,)) for worker in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    stored = company(collector, app_id, "hot")
    assert sorted(stored["session_tokens"]) == sorted(
        f"w{w}-{i}" for w in range(4) for i in range(10)
    )
    assert stored["metadata"] == {f"w{w}": 9 for w in range(4)}


# --- errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"company_domain": "no-id.com"}, "company_id"),
        ({"company_id": None}, "company_id"),
        ({"company_id": ""}, "company_id"),
        ({"company_id": "   "}, "company_id"),
        ({"company_id": 12345}, "company_id"),
        ({"company_id": "x" * 1025}, "company_id"),  # oversize id
        ({"company_id": "a", "metadata": ["not", "an", "object"]}, "metadata"),
        ({"company_id": "a", "metadata": "plan=pro"}, "metadata"),
        ({"company_id": "a", "metadata": {"x": 1e999}}, "metadata.x"),
        ({"company_id": "a", "metadata": {"big": int("9" * 4001)}}, "metadata.big"),
        ({"company_id": "a", "campaign": {"utm_nope": "x"}}, "campaign.utm_nope"),
        ({"company_id": "a", "campaign": {"utm_source": 3}}, "campaign.utm_source"),
        ({"company_id": "a", "campaign": "google"}, "campaign"),
        ({"company_id": "a", "company_domain": 3}, "company_domain"),
        ({"company_id": "a", "session_token": ["k"]}, "session_token"),
        ({"company_id": "a", "ip_address": "300.1.1.1"}, "ip_address"),
        ({"company_id": "a", "ip_address": "fe80::1%eth0"}, "ip_address"),
        ({"company_id": "a", "user_agent_string": "ua/1"}, "user_agent_string"),  # users only
        ({"company_id": "a", "user_id": "u"}, "user_id"),
        ({"company_id": "a", "modified_time": "yesterday"}, "modified_time"),
        ({"company_id": "a", "modified_time": "9999-12-31T23:59:59-23:59"}, "modified_time"),
    ],
)
def test_an_invalid_company_is_400_naming_the_field(
    collector: CollectorHandle, app_id: str, body: dict[str, Any], field: str
) -> None:
    # Serialized by hand: json.dumps writes 1e999 as Infinity, which the parser refuses.
    text = json.dumps(body).replace("Infinity", "1e999")
    headers = {APP_ID_HEADER: app_id, "Content-Type": "application/json"}
    single = collector.client.post("/v1/companies", content=text, headers=headers)
    batch = collector.client.post(
        "/v1/companies/batch", content=f'[{{"company_id": "fine"}}, {text}]', headers=headers
    )

    assert single.status_code == 400, single.text
    assert single.headers["content-type"] == "application/json"
    assert single.json()["error"] == "invalid company"
    assert single.json()["field"] == field
    assert "index" not in single.json()
    assert batch.status_code == 400
    assert (batch.json()["field"], batch.json()["index"]) == (field, 1)
    assert collector.list_companies(app_id) == []  # a bad record rejects its whole batch


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (rb'{"company_id": "a\ud800"}', "invalid company"),
        (rb'{"company_id": "a", "company_domain": "\udfff.com"}', "invalid company"),
        (b'{"company_id": "a", "metadata": {"x": NaN}}', "invalid JSON"),
        (b'{"company_id": "a",}', "invalid JSON"),
        (b"", "invalid JSON"),
        (b'{"company_id": "\xff"}', "invalid body"),
        (b"[]", "invalid body"),
        (b'"acme"', "invalid body"),
    ],
)
def test_bad_bodies_are_400(
    collector: CollectorHandle, app_id: str, body: bytes, error: str
) -> None:
    response = collector.client.post("/v1/companies", content=body, headers={APP_ID_HEADER: app_id})

    assert response.status_code == 400, response.text
    assert response.json()["error"] == error


def test_the_routes_want_an_object_and_an_array(collector: CollectorHandle, app_id: str) -> None:
    to_batch = post(collector, app_id, {"company_id": "a"}, batch=True)
    to_single = post(collector, app_id, [{"company_id": "a"}])

    assert to_batch.status_code == to_single.status_code == 400
    assert to_batch.json()["message"] == "expected a JSON array of company objects"
    assert to_single.json()["message"] == "expected a JSON object (one company)"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v1/companies"),
        ("POST", "/v1/companies/batch"),
        ("GET", "/v1/companies"),
        ("GET", "/v1/companies/12345"),
    ],
)
def test_company_routes_need_an_application_id(
    collector: CollectorHandle, method: str, path: str
) -> None:
    response = collector.client.request(method, path, content=b'{"company_id": "a"}')

    assert response.status_code == 401
    assert response.json()["error"] == "unauthorized"


@pytest.mark.parametrize(
    ("method", "path"),
    [("PUT", "/v1/companies"), ("DELETE", "/v1/companies/1"), ("GET", "/v1/companies/batch/")],
)
def test_wrong_methods_and_paths_are_json(
    collector: CollectorHandle, app_id: str, method: str, path: str
) -> None:
    response = collector.client.request(method, path, headers={APP_ID_HEADER: app_id})

    assert response.status_code in (404, 405)
    assert response.headers["content-type"] == "application/json"


def test_oversize_and_gzip_bodies(fresh_collector: Callable[..., ServerThread]) -> None:
    import gzip

    server = fresh_collector(max_body_bytes=2000)
    headers = {APP_ID_HEADER: "small"}
    with httpx.Client(base_url=server.url, timeout=10) as client:
        big = client.post(
            "/v1/companies",
            json={"company_id": "a", "metadata": {"p": "x" * 3000}},
            headers=headers,
        )
        bomb = client.post(
            "/v1/companies",
            content=gzip.compress(json.dumps({"company_id": "a", "m": "x" * 5000}).encode()),
            headers={**headers, "Content-Encoding": "gzip"},
        )
        zipped = client.post(
            "/v1/companies/batch",
            content=gzip.compress(json.dumps([{"company_id": "z", "session_token": "t"}]).encode()),
            headers={**headers, "Content-Encoding": "gzip"},
        )
        stored = client.get("/v1/companies/z", headers=headers)

    assert (big.status_code, big.json()["error"]) == (413, "payload too large")
    assert bomb.status_code == 413
    assert zipped.status_code == 201
    assert stored.json()["session_tokens"] == ["t"]


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=10,
)
company_like = st.dictionaries(
    st.sampled_from(["company_id", "company_domain", "session_token", "modified_time",
                     "ip_address", "campaign", "metadata", "user_id", "x"]),
    json_values,
)  # fmt: skip


@settings(max_examples=80, deadline=None)
@given(payload=company_like | st.lists(company_like, max_size=3) | json_values)
def test_random_payloads_never_5xx(collector: CollectorHandle, payload: Any) -> None:
    for path in ("/v1/companies", "/v1/companies/batch"):
        response = collector.client.post(path, json=payload, headers={APP_ID_HEADER: "fuzz-c"})
        assert response.status_code in (201, 400), response.text
        assert response.headers["content-type"] == "application/json"


# --- ordering ---------------------------------------------------------------------------------

FULL_NEW = {
    "company_id": "c",
    "modified_time": NEW,
    "company_domain": "new.example",
    "session_token": "tok-new",
    "campaign": {"utm_source": "new-source"},
    "metadata": {"plan": "pro", "billing": {"mrr": 900}},
}


def test_a_late_older_update_does_not_overwrite_newer_values(
    collector: CollectorHandle, app_id: str
) -> None:
    post_ok(collector, app_id, FULL_NEW)
    post_ok(
        collector,
        app_id,
        {
            "company_id": "c",
            "modified_time": OLD,
            "company_domain": "old.example",  # present and newer: kept
            "ip_address": "198.51.100.1",  # absent: filled
            "session_token": "tok-old",  # appended all the same
            "campaign": {"utm_source": "old-source", "utm_medium": "email"},
            "metadata": {"plan": "free", "seats": 3, "billing": {"mrr": 100, "currency": "EUR"}},
        },
    )

    stored = company(collector, app_id, "c")
    assert stored["company_domain"] == "new.example"
    assert stored["ip_address"] == "198.51.100.1"
    assert stored["session_tokens"] == ["tok-new", "tok-old"]
    assert stored["campaign"] == {"utm_source": "new-source", "utm_medium": "email"}
    assert stored["metadata"] == {"plan": "pro", "seats": 3,
                                  "billing": {"mrr": 900, "currency": "EUR"}}  # fmt: skip
    assert (stored["created_time"], stored["modified_time"]) == (OLD, NEW)


def test_a_newer_update_merges_over(collector: CollectorHandle, app_id: str) -> None:
    post_ok(collector, app_id, {**FULL_NEW, "modified_time": OLD})
    post_ok(collector, app_id, {"company_id": "c", "modified_time": NEW,
                                "company_domain": "newer.example", "metadata": {"plan": "max"}})  # fmt: skip

    stored = company(collector, app_id, "c")
    assert stored["company_domain"] == "newer.example"
    assert stored["metadata"] == {"plan": "max", "billing": {"mrr": 900}}
    assert (stored["created_time"], stored["modified_time"]) == (OLD, NEW)


def test_each_leaf_keeps_its_newest_write_inside_one_batch(
    collector: CollectorHandle, app_id: str
) -> None:
    post_ok(
        collector,
        app_id,
        {"company_id": "c", "modified_time": OLDER, "metadata": {"a": 1, "b": 1, "n": {"x": 1}}},
        {"company_id": "c", "modified_time": NEW, "metadata": {"b": 3, "n": {"y": 3}}},
        {
            "company_id": "c",
            "modified_time": OLD,
            "metadata": {"a": 2, "b": 2, "n": {"x": 2, "y": 2}},
        },
    )

    stored = company(collector, app_id, "c")
    assert stored["metadata"] == {"a": 2, "b": 3, "n": {"x": 2, "y": 3}}
    assert stored["modified_time"] == NEW


def test_created_time_is_never_after_modified_time(collector: CollectorHandle, app_id: str) -> None:
    future = (datetime.now(timezone.utc) + timedelta(days=1)).isoformat()
    post_ok(collector, app_id, {"company_id": "old", "modified_time": OLD})
    post_ok(collector, app_id, {"company_id": "old", "modified_time": OLDER})
    post_ok(collector, app_id, {"company_id": "ahead", "modified_time": future})
    post_ok(collector, app_id, {"company_id": "now"})

    old = company(collector, app_id, "old")
    assert (old["created_time"], old["modified_time"]) == (OLDER, OLD)
    for company_id in ("ahead", "now"):
        stored = company(collector, app_id, company_id)
        assert parse_z(stored["created_time"]) <= parse_z(stored["modified_time"])


STAMPS = [f"2025-06-01T00:00:{second:02d}.000Z" for second in range(60)]
leaf = st.integers(0, 9) | st.sampled_from(["x", "y"])
timed_updates = st.lists(
    st.fixed_dictionaries(
        {"modified_time": st.sampled_from(STAMPS)},
        optional={
            "company_domain": st.sampled_from(["a.example", "b.example"]),
            "ip_address": st.sampled_from(["10.0.0.1", "::1"]),
            "session_token": st.sampled_from(["k1", "k2", "k3"]),
            "campaign": st.dictionaries(st.sampled_from(["utm_source", "gclid"]), st.text("ab", max_size=2), max_size=2),
            "metadata": st.fixed_dictionaries(
                {}, optional={"a": leaf, "b": leaf, "n": st.fixed_dictionaries({}, optional={"x": leaf, "y": leaf})}
            ),
        },
    ),
    min_size=1,
    max_size=8,
    unique_by=lambda update: update["modified_time"],
)  # fmt: skip


def merged_in_time_order(updates: list[dict[str, Any]]) -> dict[str, Any]:
    """The independent model: apply the updates oldest first, each value replacing."""
    result: dict[str, Any] = {}
    for update in sorted(updates, key=lambda u: u["modified_time"]):
        for key, value in update.items():
            if key == "session_token" or (key == "campaign" and not value):
                continue  # tokens are checked apart; an empty campaign is no campaign
            if isinstance(value, dict):
                merged = result.setdefault(key, {})
                for inner, item in value.items():
                    if isinstance(item, dict):
                        merged.setdefault(inner, {}).update(item)
                    else:
                        merged[inner] = item
            else:
                result[key] = value
    return result


@settings(max_examples=40, deadline=None)
@given(updates=timed_updates, order=st.randoms(use_true_random=False))
def test_any_arrival_order_gives_the_newest_value_of_every_field(
    collector: CollectorHandle, updates: list[dict[str, Any]], order: Any
) -> None:
    app_id = "order-" + uuid.uuid4().hex
    arrival = list(updates)
    order.shuffle(arrival)
    for update in arrival:  # one POST each: every update arrives on its own, late or not
        post_ok(collector, app_id, {"company_id": "c", **update})

    stored = company(collector, app_id, "c")
    tokens = stored.pop("session_tokens")
    assert sorted(tokens) == sorted({u["session_token"] for u in updates if "session_token" in u})
    assert stored.pop("created_time") == min(u["modified_time"] for u in updates)
    assert stored == {"company_id": "c", **merged_in_time_order(updates)}


# --- history, migration, restart -------------------------------------------------------------


def test_history_records_what_changed(
    fresh_collector: Callable[..., ServerThread], app_id: str
) -> None:
    server = fresh_collector()
    handle = CollectorHandle(server)
    try:
        post_ok(handle, app_id, {**FULL_NEW, "modified_time": OLD})
        post_ok(
            handle,
            app_id,
            {"company_id": "c", "modified_time": OLD, "company_domain": "new.example"},
        )
        post_ok(
            handle,
            app_id,
            {
                "company_id": "c",
                "modified_time": NEW,
                "company_domain": "x.example",
                "session_token": "tok-2",
                "metadata": {"billing": {"mrr": 1000}},
            },
        )
        post_ok(
            handle, app_id, {"company_id": "c", "modified_time": OLDER, "ip_address": "10.1.1.1"}
        )
    finally:
        handle.close()  # fmt: skip

    history = server.app.state.store.history(partition_key(app_id), "c", COMPANIES)

    assert len(history) == 3  # the second update changed nothing
    under, over, created = history
    assert (under["modified_time"], under["changes"]) == (OLDER, {"ip_address": [None, "10.1.1.1"]})
    assert over["changes"] == {
        "company_domain": ["new.example", "x.example"],
        "metadata.billing.mrr": [900, 1000],
        "session_token": "tok-2",
    }
    assert created["changes"]["company_id"] == [None, "c"]
    assert created["changes"]["session_token"] == "tok-new"
    assert server.app.state.store.history(partition_key(app_id), "c") == []  # no user "c"


def test_history_is_bounded_per_company(
    fresh_collector: Callable[..., ServerThread], app_id: str
) -> None:
    server = fresh_collector()
    handle = CollectorHandle(server)
    try:
        post_ok(handle, app_id, *({"company_id": "c", "metadata": {"n": n}} for n in range(60)))
    finally:
        handle.close()

    history = server.app.state.store.history(partition_key(app_id), "c", COMPANIES)
    assert len(history) == HISTORY_LIMIT
    assert history[0]["changes"] == {"metadata.n": [58, 59]}


def test_a_users_only_database_gains_companies_and_keeps_them(
    tmp_path: Path, fresh_collector: Callable[..., ServerThread]
) -> None:
    db = tmp_path / "users-only.db"
    conn = sqlite3.connect(db)
    conn.execute(
        "CREATE TABLE users (partition TEXT NOT NULL, user_id TEXT NOT NULL, profile TEXT NOT NULL,"
        " PRIMARY KEY (partition, user_id)) WITHOUT ROWID"
    )
    profile = {"user_id": "u", "company_id": "c", "session_tokens": [], "modified_time": OLD,
               "created_time": OLD}  # fmt: skip
    conn.execute(
        "INSERT INTO users VALUES (?, ?, ?)", (partition_key("app"), "u", json.dumps(profile))
    )
    conn.commit()
    conn.close()

    server = fresh_collector(db)
    handle = CollectorHandle(server)
    try:
        post_ok(handle, "app", {"company_id": "c", "session_token": "k"})
        assert handle.get_user("app", "u") == profile
    finally:
        handle.close()
    port = server.port
    server.stop()
    server.app.state.store.close()

    restarted = CollectorHandle(fresh_collector(db, port))
    try:
        assert company(restarted, "app", "c")["session_tokens"] == ["k"]
        assert restarted.stats("app", "companies")["companies"] == 1
    finally:
        restarted.close()
