"""The collector orders updates by ``modified_time`` and keeps a bounded history per user.

Real collector over loopback HTTP: updates are POSTed, profiles read back with GET.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from servers import APP_ID_HEADER, CollectorHandle, ServerThread

pytest.importorskip("starlette")

from moesif_users_middleware.collector import partition_key

NEW = "2026-12-02T23:51:48.123Z"
OLD = "2026-12-01T10:00:00.000Z"
OLDER = "2026-11-30T09:00:00.000Z"


def post(collector: CollectorHandle, app_id: str, *users: dict[str, Any]) -> None:
    response = collector.client.post(
        "/v1/users/batch", json=list(users), headers={APP_ID_HEADER: app_id}
    )
    assert response.status_code == 201, response.text


def get(collector: CollectorHandle, app_id: str, user_id: str) -> dict[str, Any]:
    found = collector.get_user(app_id, user_id)
    assert found is not None
    return found


def parse_z(value: str) -> datetime:
    assert value.endswith("Z"), value
    assert len(value) == 24, value
    return datetime.fromisoformat(value[:-1] + "+00:00")


FULL_NEW = {
    "user_id": "u",
    "modified_time": NEW,
    "company_id": "new-co",
    "session_token": "tok-new",
    "ip_address": "203.0.113.2",
    "campaign": {"utm_source": "new-source"},
    "metadata": {"plan": "pro", "profile": {"name": "New Name"}},
}


def test_older_update_merges_under(collector: CollectorHandle, app_id: str) -> None:
    post(collector, app_id, FULL_NEW)
    post(
        collector,
        app_id,
        {
            "user_id": "u",
            "modified_time": OLD,
            "company_id": "old-co",  # present: not overwritten
            "user_agent_string": "old-agent/1.0",  # absent: filled
            "session_token": "tok-old",  # appended
            "ip_address": "198.51.100.1",
            "campaign": {"utm_source": "old-source", "utm_medium": "email"},
            "metadata": {
                "plan": "free",
                "signup": "2020",
                "profile": {"name": "Old Name", "age": 41, "address": {"city": "Oslo"}},
            },
        },
    )

    stored = get(collector, app_id, "u")
    assert stored["company_id"] == "new-co"
    assert stored["ip_address"] == "203.0.113.2"
    assert stored["user_agent_string"] == "old-agent/1.0"
    assert stored["session_tokens"] == ["tok-new", "tok-old"]
    assert stored["campaign"] == {"utm_source": "new-source", "utm_medium": "email"}
    assert stored["metadata"] == {
        "plan": "pro",
        "signup": "2020",
        "profile": {"name": "New Name", "age": 41, "address": {"city": "Oslo"}},
    }
    assert stored["modified_time"] == NEW
    assert stored["created_time"] == OLD  # an older update moves created_time back


def test_newer_update_merges_over(collector: CollectorHandle, app_id: str) -> None:
    post(collector, app_id, {**FULL_NEW, "modified_time": OLD})
    post(
        collector,
        app_id,
        {
            "user_id": "u",
            "modified_time": NEW,
            "company_id": "newer-co",
            "session_token": "tok-2",
            "metadata": {"profile": {"name": "Newer"}},
        },
    )

    stored = get(collector, app_id, "u")
    assert stored["company_id"] == "newer-co"
    assert stored["ip_address"] == "203.0.113.2"  # absent from the update: kept
    assert stored["metadata"] == {"plan": "pro", "profile": {"name": "Newer"}}
    assert stored["session_tokens"] == ["tok-new", "tok-2"]
    assert (stored["created_time"], stored["modified_time"]) == (OLD, NEW)


def test_equal_modified_time_merges_over(collector: CollectorHandle, app_id: str) -> None:
    post(collector, app_id, FULL_NEW)
    post(
        collector,
        app_id,
        # The same instant written in another zone: compared as times, not as text.
        {"user_id": "u", "modified_time": "2026-12-03T01:51:48.123+02:00", "company_id": "eq"},
    )

    stored = get(collector, app_id, "u")
    assert stored["company_id"] == "eq"
    assert stored["modified_time"] == NEW


def test_comparison_is_by_time_not_text(collector: CollectorHandle, app_id: str) -> None:
    # As text "2026-12-02T20:00:00-05:00" sorts before NEW; as a time it is after it.
    post(collector, app_id, FULL_NEW)
    post(collector, app_id, {"user_id": "u", "modified_time": "2026-12-02T20:00:00-05:00",
                             "company_id": "later"})  # fmt: skip

    stored = get(collector, app_id, "u")
    assert stored["company_id"] == "later"
    assert stored["modified_time"] == "2026-12-03T01:00:00.000Z"


def test_missing_modified_time_counts_as_now(collector: CollectorHandle, app_id: str) -> None:
    future = (datetime.now(timezone.utc) + timedelta(days=1)).isoformat(timespec="milliseconds")
    post(collector, app_id, {"user_id": "past", "modified_time": OLD, "company_id": "a"})
    post(collector, app_id, {"user_id": "future", "modified_time": future, "company_id": "a"})
    before = datetime.now(timezone.utc)
    post(collector, app_id, {"user_id": "past", "company_id": "b"}, {"user_id": "future",
                                                                   "company_id": "b"})  # fmt: skip

    past, ahead = get(collector, app_id, "past"), get(collector, app_id, "future")
    assert past["company_id"] == "b"  # now is newer than OLD
    assert parse_z(past["modified_time"]) >= before - timedelta(seconds=1)
    assert ahead["company_id"] == "a"  # now is older than tomorrow: merged under
    assert parse_z(ahead["modified_time"]) > datetime.now(timezone.utc)


def test_created_time_never_after_modified_time(collector: CollectorHandle, app_id: str) -> None:
    post(collector, app_id, {"user_id": "u", "modified_time": OLD})
    created = get(collector, app_id, "u")
    assert created["created_time"] == created["modified_time"] == OLD

    post(collector, app_id, {"user_id": "u", "modified_time": OLDER, "ip_address": "10.0.0.1"})
    older = get(collector, app_id, "u")
    assert (older["created_time"], older["modified_time"]) == (OLDER, OLD)
    assert older["ip_address"] == "10.0.0.1"

    post(collector, app_id, {"user_id": "n"})
    fresh = get(collector, app_id, "n")
    assert parse_z(fresh["created_time"]) <= parse_z(fresh["modified_time"])


def test_batch_applies_older_after_newer_in_order(collector: CollectorHandle, app_id: str) -> None:
    post(
        collector,
        app_id,
        {"user_id": "u", "modified_time": NEW, "ip_address": "10.0.0.2", "metadata": {"a": 2}},
        {"user_id": "v", "modified_time": OLD, "ip_address": "10.9.9.9"},
        {"user_id": "u", "modified_time": OLD, "ip_address": "10.0.0.1",
         "metadata": {"a": 1, "b": 1}, "session_token": "t-old"},
        {"user_id": "u", "modified_time": NEW, "company_id": "c-new"},
    )  # fmt: skip

    stored = get(collector, app_id, "u")
    assert stored["ip_address"] == "10.0.0.2"
    assert stored["metadata"] == {"a": 2, "b": 1}
    assert stored["session_tokens"] == ["t-old"]
    assert stored["company_id"] == "c-new"
    assert (stored["created_time"], stored["modified_time"]) == (OLD, NEW)
    assert get(collector, app_id, "v")["ip_address"] == "10.9.9.9"


# --- history -------------------------------------------------------------------------


def test_each_value_keeps_the_newest_write_whatever_the_arrival_order(
    collector: CollectorHandle, app_id: str
) -> None:
    """Two processes: one sets ``plan`` at OLD and delivers late, after the other set
    ``seats`` (and the user agent) at NEW. ``plan`` changed at OLD, later than its
    stored value (OLDER), so it is set; nothing NEW is overwritten."""
    post(
        collector,
        app_id,
        {
            "user_id": "lww",
            "modified_time": OLDER,
            "user_agent_string": "older-agent",
            "metadata": {"plan": "free", "seats": 1, "nested": {"a": 1, "b": 1}},
        },
    )
    post(
        collector,
        app_id,
        {
            "user_id": "lww",
            "modified_time": NEW,
            "user_agent_string": "new-agent",
            "metadata": {"seats": 5, "nested": {"b": 3}},
        },
    )
    post(
        collector,
        app_id,
        {
            "user_id": "lww",
            "modified_time": OLD,  # delivered last, written in between
            "user_agent_string": "old-agent",
            "metadata": {"plan": "pro", "seats": 2, "nested": {"a": 2, "b": 2}},
        },
    )
    profile = get(collector, app_id, "lww")
    assert profile["user_agent_string"] == "new-agent"
    assert profile["metadata"] == {"plan": "pro", "seats": 5, "nested": {"a": 2, "b": 3}}
    assert profile["modified_time"] == NEW


def test_a_newer_object_replaces_an_older_value_and_not_a_newer_one(
    collector: CollectorHandle, app_id: str
) -> None:
    post(collector, app_id, {"user_id": "shape", "modified_time": OLD, "metadata": {"x": 1}})
    post(collector, app_id, {"user_id": "shape", "modified_time": NEW, "metadata": {"x": {"y": 1}}})
    post(collector, app_id, {"user_id": "shape", "modified_time": OLDER, "metadata": {"x": 7}})
    assert get(collector, app_id, "shape")["metadata"] == {"x": {"y": 1}}
    post(collector, app_id, {"user_id": "shape2", "modified_time": NEW, "metadata": {"x": 1}})
    post(
        collector, app_id, {"user_id": "shape2", "modified_time": OLD, "metadata": {"x": {"y": 1}}}
    )
    assert get(collector, app_id, "shape2")["metadata"] == {"x": 1}


UPDATES = [
    {"user_id": "t", "company_id": "c1", "metadata": {"a": {"b": 1, "c": [1]}, "d": "x"}},
    {"user_id": "t", "metadata": {"a": {"b": 2}, "e": None}, "campaign": {"utm_source": "s"}},
    {"user_id": "t", "metadata": {"a": 5}, "campaign": {"utm_medium": "m"}, "ip_address": "::1"},
    {"user_id": "t", "metadata": {"a": {"z": True}, "d": {"k": 1.5}}, "company_id": "c2"},
]


def test_updates_in_time_order_merge_exactly_as_merge_update() -> None:
    """The clocked merge equals the plain one when every update is the newest."""
    from moesif_users_middleware._merge import merge_update
    from moesif_users_middleware.collector.ordering import merge_profile

    profile: dict[str, Any] | None = None
    clocks: dict[str, Any] = {}
    plain: dict[str, Any] = {}
    for second, update in enumerate(UPDATES):
        stamped = {**update, "modified_time": f"2026-01-01T00:00:{second:02d}.000Z"}
        profile, clocks = merge_profile(profile, clocks, stamped, "2026-01-01T00:00:00.000Z")
        plain = merge_update(plain, update)
        assert profile is not None
        assert {k: v for k, v in profile.items() if k in plain} == plain


def test_history_records_what_changed(
    fresh_collector: Callable[..., ServerThread], app_id: str
) -> None:
    server = fresh_collector()
    handle = CollectorHandle(server)
    try:
        post(handle, app_id, {**FULL_NEW, "modified_time": OLD})
        post(handle, app_id, {"user_id": "u", "modified_time": OLD, "company_id": "new-co"})
        post(
            handle,
            app_id,
            {
                "user_id": "u",
                "modified_time": NEW,
                "company_id": "newer-co",
                "session_token": "tok-2",
                "campaign": {"utm_medium": "cpc"},
                "metadata": {"profile": {"name": "Newer", "age": 3}},
            },
        )
        post(handle, app_id, {"user_id": "u", "modified_time": OLDER, "ip_address": "10.1.1.1",
                              "user_agent_string": "ua/1"})  # fmt: skip
    finally:
        handle.close()

    history = server.app.state.store.history(partition_key(app_id), "u")

    assert len(history) == 3  # the second update changed nothing
    under, over, created = history
    assert under["modified_time"] == OLDER
    assert under["changes"] == {"user_agent_string": [None, "ua/1"]}
    assert over["modified_time"] == NEW
    assert over["changes"] == {
        "company_id": ["new-co", "newer-co"],
        "campaign.utm_medium": [None, "cpc"],
        "metadata.profile.name": ["New Name", "Newer"],
        "metadata.profile.age": [None, 3],
        "session_token": "tok-2",
    }
    assert created["changes"]["user_id"] == [None, "u"]
    assert created["changes"]["company_id"] == [None, "new-co"]
    assert created["changes"]["metadata"] == [None, FULL_NEW["metadata"]]
    assert created["changes"]["session_token"] == "tok-new"
    for entry in history:
        assert parse_z(entry["applied_time"]) <= datetime.now(timezone.utc)


def test_history_is_bounded_per_user(
    fresh_collector: Callable[..., ServerThread], app_id: str
) -> None:
    server = fresh_collector()
    handle = CollectorHandle(server)
    try:
        post(handle, app_id, *({"user_id": "u", "metadata": {"n": n}} for n in range(60)))
        for n in range(60, 75):
            post(handle, app_id, {"user_id": "u", "metadata": {"n": n}}, {"user_id": "other"})
    finally:
        handle.close()
    store = server.app.state.store

    history = store.history(partition_key(app_id), "u")

    assert len(history) == 50
    assert history[0]["changes"] == {"metadata.n": [73, 74]}
    assert history[-1]["changes"] == {"metadata.n": [24, 25]}
    assert len(store.history(partition_key(app_id), "other")) == 1


def test_old_database_without_the_new_columns_is_migrated(
    tmp_path: Path, fresh_collector: Callable[..., ServerThread]
) -> None:
    import json
    import sqlite3

    db = tmp_path / "old.db"
    conn = sqlite3.connect(db)
    conn.execute(
        "CREATE TABLE users (partition TEXT NOT NULL, user_id TEXT NOT NULL, profile TEXT NOT NULL,"
        " PRIMARY KEY (partition, user_id)) WITHOUT ROWID"
    )
    key = partition_key("old-app")
    for n, stamp in enumerate([OLDER, NEW, OLD]):
        profile = {"user_id": f"old-{n}", "company_id": "co", "session_tokens": [],
                   "modified_time": stamp, "created_time": stamp}  # fmt: skip
        conn.execute("INSERT INTO users VALUES (?, ?, ?)", (key, f"old-{n}", json.dumps(profile)))
    conn.commit()
    conn.close()

    server = fresh_collector(db)
    store = server.app.state.store

    assert store.count_all() == 3
    assert [p["user_id"] for _, p in store.list_all(limit=10)] == ["old-1", "old-2", "old-0"]
    assert store.count_all(search="co") == 3
    handle = CollectorHandle(server)
    try:
        post(handle, "old-app", {"user_id": "old-0", "ip_address": "10.0.0.1"})
    finally:
        handle.close()
    assert store.list_all(limit=1)[0][1]["user_id"] == "old-0"
