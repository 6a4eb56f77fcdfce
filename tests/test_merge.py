"""The recursive merge rules shared by the sender and the collector."""

from __future__ import annotations

from typing import Any

import pytest

from moesif_users_middleware._merge import deep_merge, merge_update

DEEP_CASES: list[tuple[str, dict[str, Any], dict[str, Any], dict[str, Any]]] = [
    ("add key", {"a": 1}, {"b": 2}, {"a": 1, "b": 2}),
    ("replace scalar", {"a": 1}, {"a": 2}, {"a": 2}),
    ("nested merge", {"s": {"x": 1, "y": 2}}, {"s": {"y": 3}}, {"s": {"x": 1, "y": 3}}),
    ("list replaced", {"l": [1, 2]}, {"l": [3]}, {"l": [3]}),
    ("dict replaces scalar", {"a": 1}, {"a": {"b": 1}}, {"a": {"b": 1}}),
    ("scalar replaces dict", {"a": {"b": 1}}, {"a": 1}, {"a": 1}),
    ("null replaces", {"a": 1}, {"a": None}, {"a": None}),
    (
        "three levels",
        {"a": {"b": {"c": 1, "d": 1}}},
        {"a": {"b": {"d": 2}}},
        {"a": {"b": {"c": 1, "d": 2}}},
    ),
]


@pytest.mark.parametrize(
    ("base", "update", "expected"), [c[1:] for c in DEEP_CASES], ids=[c[0] for c in DEEP_CASES]
)
def test_deep_merge(base: dict[str, Any], update: dict[str, Any], expected: dict[str, Any]) -> None:
    before = repr((base, update))
    assert deep_merge(base, update) == expected
    assert repr((base, update)) == before  # inputs untouched


def test_merge_update_rules() -> None:
    older = {
        "user_id": "u",
        "company_id": "c1",
        "ip_address": "1.1.1.1",
        "campaign": {"utm_source": "google", "utm_medium": "cpc"},
        "metadata": {"plan": {"name": "free", "seats": 1}, "email": "a@x"},
        "session_token": "t1",
    }
    newer = {
        "user_id": "u",
        "company_id": "c2",
        "campaign": {"utm_medium": "email"},
        "metadata": {"plan": {"seats": 5}},
        "session_token": "t2",
    }
    assert merge_update(older, newer) == {
        "user_id": "u",
        "company_id": "c2",
        "ip_address": "1.1.1.1",
        "campaign": {"utm_source": "google", "utm_medium": "email"},
        "metadata": {"plan": {"name": "free", "seats": 5}, "email": "a@x"},
        "session_token": "t2",
    }
    assert older["metadata"] == {"plan": {"name": "free", "seats": 1}, "email": "a@x"}
