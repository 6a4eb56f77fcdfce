"""The collector's Users API semantics, over real loopback HTTP."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest
from samples import REFERENCE_USER
from servers import APP_ID_HEADER, CollectorHandle, ServerThread


def post(
    collector: CollectorHandle, app_id: str, payload: Any, *, batch: bool = False
) -> httpx.Response:
    path = "/v1/users/batch" if batch else "/v1/users"
    return collector.client.post(path, json=payload, headers={APP_ID_HEADER: app_id})


def post_ok(collector: CollectorHandle, app_id: str, payload: Any, *, batch: bool = False) -> None:
    response = post(collector, app_id, payload, batch=batch)
    assert response.status_code == 201, response.text
    assert response.json() == {"records": len(payload) if batch else 1}


def profile(collector: CollectorHandle, app_id: str, user_id: str) -> dict[str, Any]:
    found = collector.get_user(app_id, user_id)
    assert found is not None, f"user {user_id!r} not stored"
    return found


def parse_z(value: str) -> datetime:
    assert value.endswith("Z"), value
    return datetime.fromisoformat(value[:-1] + "+00:00")


def test_reference_example_is_stored_as_given(collector: CollectorHandle, app_id: str) -> None:
    before = datetime.now(timezone.utc)
    post_ok(collector, app_id, REFERENCE_USER)
    after = datetime.now(timezone.utc)

    stored = profile(collector, app_id, "12345")
    expected = {key: value for key, value in REFERENCE_USER.items() if key != "session_token"}
    assert {key: stored[key] for key in expected} == expected
    assert stored["session_tokens"] == ["XXXXXXXXXX"]
    assert "session_token" not in stored
    assert set(stored) == {*expected, "session_tokens", "created_time", "modified_time"}
    for key in ("created_time", "modified_time"):
        moment = parse_z(stored[key])
        assert before - timedelta(seconds=1) <= moment <= after + timedelta(seconds=1)


def test_reference_batch_example_creates_both_users(
    collector: CollectorHandle, app_id: str
) -> None:
    mary = {**REFERENCE_USER, "user_id": "54321", "metadata": {"email": "mary@acmeinc.com"}}
    post_ok(collector, app_id, [REFERENCE_USER, mary], batch=True)

    assert profile(collector, app_id, "12345")["metadata"] == REFERENCE_USER["metadata"]
    assert profile(collector, app_id, "54321")["metadata"] == {"email": "mary@acmeinc.com"}
    assert [user["user_id"] for user in collector.list_users(app_id)] == ["12345", "54321"]


def test_only_user_id_is_required(collector: CollectorHandle, app_id: str) -> None:
    post_ok(collector, app_id, {"user_id": "bare"})

    stored = profile(collector, app_id, "bare")
    assert stored["user_id"] == "bare"
    assert stored["session_tokens"] == []
    assert set(stored) == {"user_id", "session_tokens", "created_time", "modified_time"}


def test_metadata_merges_recursively(collector: CollectorHandle, app_id: str) -> None:
    post_ok(
        collector,
        app_id,
        {
            "user_id": "u",
            "metadata": {
                "email": "a@example.com",
                "sales_info": {"stage": "Lead", "owner": {"name": "Mary", "team": "east"}},
                "tags": ["a", "b", "c"],
                "plan": {"tier": "free"},
                "score": 1,
            },
        },
    )
    post_ok(
        collector,
        app_id,
        {
            "user_id": "u",
            "metadata": {
                "sales_info": {"stage": "Customer", "owner": {"team": "west"}},
                "tags": ["z"],  # lists are replaced, not merged
                "plan": "pro",  # object -> scalar: replaced
                "score": {"value": 2},  # scalar -> object: replaced
                "new": None,
            },
        },
    )

    assert profile(collector, app_id, "u")["metadata"] == {
        "email": "a@example.com",
        "sales_info": {"stage": "Customer", "owner": {"name": "Mary", "team": "west"}},
        "tags": ["z"],
        "plan": "pro",
        "score": {"value": 2},
        "new": None,
    }


def test_scalar_fields_latest_wins_and_absent_fields_are_kept(
    collector: CollectorHandle, app_id: str
) -> None:
    post_ok(
        collector,
        app_id,
        {
            "user_id": "u",
            "company_id": "c1",
            "ip_address": "10.0.0.1",
            "user_agent_string": "curl/8.0",
        },
    )
    post_ok(collector, app_id, {"user_id": "u", "ip_address": "10.0.0.2"})
    post_ok(collector, app_id, {"user_id": "u", "user_agent_string": "httpx", "company_id": None})

    stored = profile(collector, app_id, "u")
    assert stored["company_id"] == "c1"  # null means "not given", like an absent field
    assert stored["ip_address"] == "10.0.0.2"
    assert stored["user_agent_string"] == "httpx"


def test_company_association_latest_wins(collector: CollectorHandle, app_id: str) -> None:
    post_ok(collector, app_id, {"user_id": "u", "company_id": "67890"})
    assert profile(collector, app_id, "u")["company_id"] == "67890"

    post_ok(collector, app_id, {"user_id": "u", "company_id": "acme"})
    assert profile(collector, app_id, "u")["company_id"] == "acme"


def test_campaign_merges_field_by_field(collector: CollectorHandle, app_id: str) -> None:
    post_ok(
        collector,
        app_id,
        {"user_id": "u", "campaign": {"utm_source": "google", "utm_medium": "cpc"}},
    )
    post_ok(
        collector,
        app_id,
        {"user_id": "u", "campaign": {"utm_medium": "email", "gclid": "abc", "referrer": None}},
    )

    assert profile(collector, app_id, "u")["campaign"] == {
        "utm_source": "google",
        "utm_medium": "email",
        "gclid": "abc",
    }


def test_session_tokens_append_only_no_duplicates_order_kept(
    collector: CollectorHandle, app_id: str
) -> None:
    post_ok(collector, app_id, {"user_id": "u", "session_token": "t1"})
    post_ok(collector, app_id, {"user_id": "u", "session_token": "t2"})
    post_ok(collector, app_id, {"user_id": "u", "session_token": "t1"})  # duplicate
    post_ok(collector, app_id, {"user_id": "u"})  # no token: nothing removed
    post_ok(
        collector,
        app_id,
        [
            {"user_id": "u", "session_token": "t3"},
            {"user_id": "u", "session_token": "t2"},
            {"user_id": "u", "session_token": "t0"},
        ],
        batch=True,
    )

    assert profile(collector, app_id, "u")["session_tokens"] == ["t1", "t2", "t3", "t0"]


def test_modified_time_server_set_unless_given(collector: CollectorHandle, app_id: str) -> None:
    post_ok(collector, app_id, {"user_id": "u", "modified_time": "2024-01-02T03:04:05+02:00"})
    first = profile(collector, app_id, "u")
    assert first["modified_time"] == "2024-01-02T01:04:05.000Z"
    assert first["created_time"] == first["modified_time"]  # created from a past update

    post_ok(collector, app_id, {"user_id": "u", "ip_address": "10.0.0.1"})
    second = profile(collector, app_id, "u")
    assert abs(parse_z(second["modified_time"]) - datetime.now(timezone.utc)) < timedelta(minutes=5)
    assert second["created_time"] == first["created_time"]

    # An older update is merged under the profile: modified_time stays the newest seen.
    post_ok(collector, app_id, {"user_id": "u", "modified_time": "2023-06-01T00:00:00Z"})
    third = profile(collector, app_id, "u")
    assert third["modified_time"] == second["modified_time"]
    assert third["created_time"] == "2023-06-01T00:00:00.000Z"


def test_batch_applies_duplicates_in_order(collector: CollectorHandle, app_id: str) -> None:
    post_ok(
        collector,
        app_id,
        [
            {"user_id": "a", "ip_address": "10.0.0.1", "metadata": {"n": 1, "keep": True}},
            {"user_id": "b", "ip_address": "10.0.0.9"},
            {"user_id": "a", "ip_address": "10.0.0.2", "metadata": {"n": 2}},
        ],
        batch=True,
    )

    a = profile(collector, app_id, "a")
    assert a["ip_address"] == "10.0.0.2"
    assert a["metadata"] == {"n": 2, "keep": True}
    assert profile(collector, app_id, "b")["ip_address"] == "10.0.0.9"


def test_invalid_user_rejects_the_whole_batch(collector: CollectorHandle, app_id: str) -> None:
    post_ok(collector, app_id, {"user_id": "existing", "metadata": {"v": 1}})
    batch: list[Any] = [
        {"user_id": "new-1"},
        {"user_id": "existing", "metadata": {"v": 2}, "session_token": "t"},
        {"user_id": "new-2"},
        {"company_id": "67890"},  # index 3: no user_id
        {"user_id": "new-3"},
    ]

    response = post(collector, app_id, batch, batch=True)

    assert response.status_code == 400
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["error"] == "invalid user"
    assert body["index"] == 3
    assert body["field"] == "user_id"
    assert "required" in body["message"]
    assert [user["user_id"] for user in collector.list_users(app_id)] == ["existing"]
    existing = profile(collector, app_id, "existing")
    assert existing["metadata"] == {"v": 1}
    assert existing["session_tokens"] == []


@pytest.mark.parametrize(
    ("user", "field"),
    [
        ({"user_id": 12345}, "user_id"),
        ({"user_id": ""}, "user_id"),
        ({"user_id": "u", "company_id": 5}, "company_id"),
        ({"user_id": "u", "session_token": ["t"]}, "session_token"),
        ({"user_id": "u", "metadata": [1, 2]}, "metadata"),
        ({"user_id": "u", "campaign": {"utm_source": 1}}, "campaign.utm_source"),
        ({"user_id": "u", "campaign": {"utm_bogus": "x"}}, "campaign.utm_bogus"),
        ({"user_id": "u", "modified_time": "yesterday"}, "modified_time"),
        ({"user_id": "u", "nickname": "x"}, "nickname"),
    ],
)
def test_invalid_user_names_the_field(
    collector: CollectorHandle, app_id: str, user: dict[str, Any], field: str
) -> None:
    single = post(collector, app_id, user)
    batch = post(collector, app_id, [{"user_id": "ok"}, user], batch=True)

    assert single.status_code == 400
    assert single.json()["error"] == "invalid user"
    assert single.json()["field"] == field
    assert "index" not in single.json()
    assert batch.status_code == 400
    assert (batch.json()["index"], batch.json()["field"]) == (1, field)
    assert collector.list_users(app_id) == []


def test_empty_batch_is_accepted_and_stores_nothing(
    collector: CollectorHandle, app_id: str
) -> None:
    response = post(collector, app_id, [], batch=True)

    assert (response.status_code, response.json()) == (201, {"records": 0})
    assert collector.list_users(app_id) == []


def test_get_unknown_user_is_json_404(collector: CollectorHandle, app_id: str) -> None:
    response = collector.client.get("/v1/users/nobody", headers={APP_ID_HEADER: app_id})

    assert response.status_code == 404
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"] == "not found"
    assert collector.get_user(app_id, "nobody") is None


@pytest.mark.parametrize(
    "user_id", ["a/b", "with space", "ünïcødé 🎉", "?#%&=", "..", ".", "%2F", "batch", "\x00nul"]
)
def test_user_ids_round_trip_through_the_url(
    collector: CollectorHandle, app_id: str, user_id: str
) -> None:
    post_ok(collector, app_id, {"user_id": user_id, "metadata": {"id": user_id}})

    assert profile(collector, app_id, user_id)["metadata"] == {"id": user_id}


def test_list_users_pages_in_user_id_order(collector: CollectorHandle, app_id: str) -> None:
    post_ok(collector, app_id, [{"user_id": f"u{i:02d}"} for i in range(25)][::-1], batch=True)
    headers = {APP_ID_HEADER: app_id}

    first = collector.client.get("/v1/users", params={"limit": 10}, headers=headers).json()
    last = collector.client.get(
        "/v1/users", params={"limit": 10, "offset": 20}, headers=headers
    ).json()
    everything = collector.list_users(app_id)

    assert [user["user_id"] for user in first] == [f"u{i:02d}" for i in range(10)]
    assert [user["user_id"] for user in last] == [f"u{i:02d}" for i in range(20, 25)]
    assert [user["user_id"] for user in everything] == [f"u{i:02d}" for i in range(25)]


@pytest.mark.parametrize(
    "params", [{"limit": "0"}, {"limit": "abc"}, {"limit": "-1"}, {"offset": "-5"},
               {"limit": "99999999"}, {"limit": "9" * 5000}, {"offset": "1.5"}],
)  # fmt: skip
def test_list_users_rejects_bad_paging(
    collector: CollectorHandle, app_id: str, params: dict[str, str]
) -> None:
    response = collector.client.get("/v1/users", params=params, headers={APP_ID_HEADER: app_id})

    assert response.status_code == 400
    assert response.json()["error"] == "invalid parameter"


def test_application_ids_are_isolated(collector: CollectorHandle) -> None:
    first, second = "iso-a-" + uuid.uuid4().hex, "iso-b-" + uuid.uuid4().hex
    post_ok(collector, first, {"user_id": "shared", "metadata": {"owner": "a"}})
    post_ok(collector, first, {"user_id": "only-a"})
    post_ok(collector, second, {"user_id": "shared", "metadata": {"owner": "b"}})

    assert profile(collector, first, "shared")["metadata"] == {"owner": "a"}
    assert profile(collector, second, "shared")["metadata"] == {"owner": "b"}
    assert collector.get_user(second, "only-a") is None
    assert [user["user_id"] for user in collector.list_users(first)] == ["only-a", "shared"]
    assert [user["user_id"] for user in collector.list_users(second)] == ["shared"]
    assert collector.stats(first)["users"] == 2
    assert collector.stats(second)["users"] == 1


def test_stats_count_posts_batches_rejections_and_records(
    collector: CollectorHandle, app_id: str
) -> None:
    assert collector.stats(app_id) == {
        "requests": 0, "batches": 0, "rejected": 0, "records": 0, "users": 0,
    }  # fmt: skip
    post_ok(collector, app_id, {"user_id": "a"})
    post_ok(collector, app_id, [{"user_id": "a"}, {"user_id": "b"}, {"user_id": "c"}], batch=True)
    assert post(collector, app_id, [{"user_id": 1}], batch=True).status_code == 400
    assert post(collector, app_id, {"nope": 1}).status_code == 400

    assert collector.stats(app_id) == {
        "requests": 4, "batches": 2, "rejected": 2, "records": 4, "users": 3,
    }  # fmt: skip


def test_concurrent_updates_to_one_user_lose_nothing(
    collector: CollectorHandle, app_id: str
) -> None:
    def send(worker: int) -> None:
        with httpx.Client(base_url=collector.url, timeout=10) as client:
            for i in range(10):
                response = client.post(
                    "/v1/users/batch",
                    json=[
                        {
                            "user_id": "hot",
                            "session_token": f"w{worker}-{i}",
                            "metadata": {f"w{worker}": i},
                        }
                    ],
                    headers={APP_ID_HEADER: app_id},
                )
                assert response.status_code == 201

    threads = [threading.Thread(target=send, args=(worker,)) for worker in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    stored = profile(collector, app_id, "hot")
    assert sorted(stored["session_tokens"]) == sorted(
        f"w{w}-{i}" for w in range(4) for i in range(10)
    )
    for worker in range(4):
        tokens = [t for t in stored["session_tokens"] if t.startswith(f"w{worker}-")]
        assert tokens == [f"w{worker}-{i}" for i in range(10)]  # each sender's order kept
    assert stored["metadata"] == {f"w{w}": 9 for w in range(4)}
    assert collector.stats(app_id)["records"] == 40


def test_profiles_survive_a_restart(
    fresh_collector: Callable[..., ServerThread], tmp_path: Path, app_id: str
) -> None:
    db_path = tmp_path / "restart.db"
    server = fresh_collector(db_path)
    headers = {APP_ID_HEADER: app_id}
    response = httpx.post(
        f"{server.url}/v1/users",
        json={"user_id": "u", "session_token": "t1", "metadata": {"a": 1}},
        headers=headers,
    )
    assert response.status_code == 201
    port = server.port
    server.stop()
    server.app.state.store.close()

    restarted = fresh_collector(db_path, port)
    assert restarted.url == server.url
    response = httpx.post(
        f"{restarted.url}/v1/users",
        json={"user_id": "u", "session_token": "t2", "metadata": {"b": 2}},
        headers=headers,
    )
    assert response.status_code == 201
    stored = httpx.get(f"{restarted.url}/v1/users/u", headers=headers).json()
    assert stored["session_tokens"] == ["t1", "t2"]
    assert stored["metadata"] == {"a": 1, "b": 2}
