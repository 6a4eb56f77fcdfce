"""Property tests: no client input makes the collector answer 5xx, and merges follow the API.

Everything goes over real loopback HTTP to the shared collector, one client reused.
"""

from __future__ import annotations

import copy
import gzip
import itertools
import json
import uuid
from datetime import datetime
from typing import Any
from urllib.parse import quote

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from servers import APP_ID_HEADER, CollectorHandle

from moesif_users_middleware.models import CAMPAIGN_FIELDS, USER_FIELDS

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FUZZ_APP_ID = "fuzz-" + uuid.uuid4().hex

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
timestamps = st.from_regex(
    r"\A\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?)?([+-]\d{2}:\d{2}|Z)?\Z"
) | st.builds(
    lambda moment, offset: moment.isoformat() + offset,
    st.datetimes() | st.sampled_from([datetime.min, datetime.max]),  # edges too
    st.sampled_from(["", "Z", "+00:00", "+23:59", "-23:59", "+05:30"]),
)
campaigns = st.dictionaries(
    st.sampled_from([*CAMPAIGN_FIELDS, "utm_other"]), scalars | json_values, max_size=4
)
user_like = st.dictionaries(
    st.sampled_from([*USER_FIELDS, "session_tokens", "created_time", ""]) | st.text(max_size=6),
    json_values | timestamps | campaigns,
    max_size=8,
) | st.builds(
    lambda user_id, extra: {"user_id": user_id, **extra},
    st.text(min_size=1, max_size=10).filter(lambda text: not text.isspace()) | json_values,
    st.fixed_dictionaries(
        {},
        optional={
            "modified_time": timestamps | json_values,
            "campaign": campaigns | json_values,
            "metadata": json_values,
            "session_token": st.text(max_size=5) | json_values,
            "company_id": st.text(max_size=5) | json_values,
        },
    ),
)
# Every field present with a plausible value, so validation gets past user_id.
valid_ish_users = st.fixed_dictionaries(
    {
        "user_id": st.text(min_size=1, max_size=10),
        "modified_time": timestamps,
        "campaign": campaigns,
        "metadata": st.dictionaries(st.text(max_size=4), json_values, max_size=3),
        "session_token": st.text(max_size=5),
    }
)
payloads = json_values | user_like | st.lists(user_like | json_values, max_size=5)
json_ish_text = st.text(
    alphabet=st.sampled_from([*'{}[]",:0123456789.eE+-\\ud800 ntrufalsNIy_', "\ufffd"]),
    max_size=120,
) | st.builds(
    lambda user, junk, at: (lambda text: text[:at] + junk + text[at:])(json.dumps(user)),
    user_like,
    st.sampled_from(["NaN", "-Infinity", "1e999", '"\\ud800"', "[" * 3000, "\x00", "\\", ","]),
    st.integers(0, 40),
)


def post(
    collector: CollectorHandle, body: bytes, *, batch: bool, gzipped: bool = False
) -> httpx.Response:
    headers = {APP_ID_HEADER: FUZZ_APP_ID}
    if gzipped:
        headers["Content-Encoding"] = "gzip"
    path = "/v1/users/batch" if batch else "/v1/users"
    return collector.client.post(path, content=body, headers=headers)


def assert_client_answer(response: httpx.Response) -> None:
    assert response.status_code < 500, response.text[:500]
    assert response.status_code in (201, 400, 413, 415), response.status_code
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    if response.status_code == 201:
        assert isinstance(body["records"], int)
    else:
        assert isinstance(body["error"], str)
        assert isinstance(body["message"], str)


@FUZZ
@given(payload=payloads, batch=st.booleans(), gzipped=st.booleans())
def test_random_json_never_5xx(
    collector: CollectorHandle, payload: Any, batch: bool, gzipped: bool
) -> None:
    body = json.dumps(payload).encode()
    response = post(
        collector, gzip.compress(body) if gzipped else body, batch=batch, gzipped=gzipped
    )

    assert_client_answer(response)
    if response.status_code == 201:
        assert response.json()["records"] == (len(payload) if batch else 1)


@FUZZ
@given(body=st.binary(max_size=2000), batch=st.booleans(), gzipped=st.booleans())
def test_random_bytes_never_5xx(
    collector: CollectorHandle, body: bytes, batch: bool, gzipped: bool
) -> None:
    assert_client_answer(post(collector, body, batch=batch, gzipped=gzipped))


@FUZZ
@given(text=json_ish_text, batch=st.booleans())
def test_json_like_text_never_5xx(collector: CollectorHandle, text: str, batch: bool) -> None:
    assert_client_answer(post(collector, text.encode("utf-8", "surrogatepass"), batch=batch))


@FUZZ
@given(user=valid_ish_users, batch=st.booleans())
def test_plausible_users_never_5xx(
    collector: CollectorHandle, user: dict[str, Any], batch: bool
) -> None:
    body = json.dumps([user] if batch else user).encode()
    assert_client_answer(post(collector, body, batch=batch))


@FUZZ
@given(
    segment=st.text(max_size=20),
    params=st.dictionaries(
        st.sampled_from(["limit", "offset", "app", "page", "q", "partition", "id", "x"])
        | st.text(max_size=4),
        st.text(max_size=12) | st.integers().map(str),
        max_size=3,
    ),
    route=st.sampled_from(["/v1/users/", "/v1/users", "/", "/v1/_stats", "/users/"]),
)
def test_random_reads_never_5xx(
    collector: CollectorHandle, segment: str, params: dict[str, str], route: str
) -> None:
    path = route + quote(segment, safe="").replace(".", "%2E") if route.endswith("/") else route
    response = collector.client.get(path, params=params, headers={APP_ID_HEADER: FUZZ_APP_ID})

    assert response.status_code in (200, 303, 400, 404), response.text[:500]
    if response.status_code == 303:  # ?app= (an application id) redirects to its partition
        assert route == "/"
        assert response.headers["location"].startswith("/")
    elif response.status_code != 400 and (path == "/" or route == "/users/"):
        # The HTML pages, including the user page's 404.
        assert response.headers["content-type"].startswith("text/html")
    else:
        assert response.headers["content-type"] == "application/json"
        response.json()


def test_collector_still_serves_after_fuzzing(collector: CollectorHandle) -> None:
    response = collector.client.post(
        "/v1/users", json={"user_id": "after-fuzz"}, headers={APP_ID_HEADER: FUZZ_APP_ID}
    )
    assert response.status_code == 201
    assert collector.get_user(FUZZ_APP_ID, "after-fuzz") is not None
    assert collector.client.get("/").status_code == 200


# --- merge semantics against an independent model ---------------------------------------

keys = st.sampled_from(["a", "b", "c"])
merge_values = st.recursive(
    scalars | st.lists(scalars, max_size=3),
    lambda children: st.dictionaries(keys, children, max_size=3),
    max_leaves=8,
)
valid_updates = st.fixed_dictionaries(
    {"user_id": st.sampled_from(["u1", "u/2", "ü 3"])},
    optional={
        "company_id": st.sampled_from(["c1", "c2"]) | st.none(),
        "session_token": st.sampled_from(["t1", "t2", "t3", "t4"]) | st.none(),
        "ip_address": st.sampled_from(["10.0.0.1", "::1"]),
        "user_agent_string": st.text(max_size=10),
        "campaign": st.dictionaries(
            st.sampled_from(CAMPAIGN_FIELDS[:3]), st.text(max_size=4) | st.none(), max_size=3
        ),
        "metadata": st.dictionaries(keys, merge_values, max_size=3),
    },
)


def model_merge(old: Any, new: Any) -> Any:
    if isinstance(old, dict) and isinstance(new, dict):
        merged = dict(old)
        for key, value in new.items():
            merged[key] = model_merge(old.get(key), value) if key in old else value
        return merged
    return new


def model_apply(profile: dict[str, Any] | None, update: dict[str, Any]) -> dict[str, Any]:
    result = copy.deepcopy(profile) if profile else {"session_tokens": []}
    for key, value in update.items():
        if value is None:
            continue
        if key == "session_token":
            if value not in result["session_tokens"]:
                result["session_tokens"].append(value)
        elif key == "metadata":
            result["metadata"] = model_merge(result.get("metadata"), value)
        elif key == "campaign":
            fields = {name: text for name, text in value.items() if text is not None}
            if fields:
                result["campaign"] = {**result.get("campaign", {}), **fields}
        else:
            result[key] = value
    return result


@settings(max_examples=60, deadline=None)
@given(
    updates=st.lists(valid_updates, min_size=1, max_size=12),
    cuts=st.lists(st.integers(0, 12), max_size=4),
)
def test_stored_profiles_match_the_merge_model(
    collector: CollectorHandle, updates: list[dict[str, Any]], cuts: list[int]
) -> None:
    app_id = "model-" + uuid.uuid4().hex
    headers = {APP_ID_HEADER: app_id}
    bounds = sorted({0, len(updates), *(cut for cut in cuts if cut < len(updates))})
    for start, end in itertools.pairwise(bounds):
        chunk = updates[start:end]
        if len(chunk) == 1 and start % 2 == 0:
            response = collector.client.post("/v1/users", json=chunk[0], headers=headers)
        else:
            response = collector.client.post("/v1/users/batch", json=chunk, headers=headers)
        assert response.status_code == 201, response.text

    expected: dict[str, dict[str, Any]] = {}
    for update in updates:
        expected[update["user_id"]] = model_apply(expected.get(update["user_id"]), update)
    for user_id, profile in expected.items():
        stored = collector.get_user(app_id, user_id)
        assert stored is not None
        assert stored.pop("created_time").endswith("Z")
        assert stored.pop("modified_time").endswith("Z")
        assert stored == {"user_id": user_id, **profile}
    assert collector.stats(app_id)["users"] == len(expected)
