"""Sender building blocks without I/O: coalescing buffer, batching, options, retry timing."""

from __future__ import annotations

import copy
import json
import random
from typing import Any

import pytest

from moesif_users_middleware._capture.config import ConfigurationError
from moesif_users_middleware._delivery.batches import Item, pack, serialize
from moesif_users_middleware._delivery.buffer import MAX_TOKENS_PER_RECORD, Entry, PendingBuffer
from moesif_users_middleware._delivery.kinds import COMPANIES
from moesif_users_middleware._delivery.options import (
    SENDER_OPTIONS,
    SenderOptions,
    UnknownOptionError,
    validate_sender_options,
)
from moesif_users_middleware._delivery.retry import RetryPolicy, is_retryable_status
from moesif_users_middleware._delivery.unchanged import Unchanged


def record(user_id: str = "u", **fields: Any) -> dict[str, Any]:
    return {"user_id": user_id, **fields}


def K(user_id: str) -> tuple[str, str]:
    return ("users", user_id)


def add(buffer: PendingBuffer, user_id: str, update: dict[str, Any], stamp: float = 0.0) -> bool:
    return buffer.add(K(user_id), update, "user_id", stamp)


# ------------------------------------------------------------------ PendingBuffer


def test_new_users_take_slots_and_updates_coalesce() -> None:
    buffer = PendingBuffer(10, 10**9)
    assert add(buffer, "a", record("a", metadata={"x": 1}))
    assert add(buffer, "b", record("b"))
    assert add(buffer, "a", record("a", metadata={"y": 2}, ip_address="1.1.1.1"))
    assert buffer.slots == 2
    assert (buffer.queued, buffer.coalesced, buffer.dropped) == (3, 1, 0)
    assert buffer.pending[K("a")].record == {
        "user_id": "a",
        "metadata": {"x": 1, "y": 2},
        "ip_address": "1.1.1.1",
    }


def test_later_scalars_win_and_metadata_merges_recursively() -> None:
    buffer = PendingBuffer(10, 10**9)
    add(buffer, "u", record(company_id="c1", metadata={"plan": {"tier": "free", "seats": 1}}))
    add(buffer, "u", record(company_id="c2", metadata={"plan": {"tier": "pro"}, "tags": ["a"]}))
    add(buffer, "u", record(metadata={"tags": ["b"]}))
    assert buffer.pending[K("u")].record == {
        "user_id": "u",
        "company_id": "c2",
        "metadata": {"plan": {"tier": "pro", "seats": 1}, "tags": ["b"]},
    }


def test_records_given_are_never_mutated() -> None:
    shared_metadata = {"plan": {"tier": "free"}, "n": 1}
    first = record(metadata=shared_metadata, session_token="t1")
    second = record(metadata={"plan": {"seats": 3}}, session_token="t2")
    third = record(metadata={"plan": {"tier": "pro"}}, session_token="t3")
    snapshot = copy.deepcopy((first, second, third))
    buffer = PendingBuffer(10, 10**9)
    add(buffer, "u", first)
    add(buffer, "u", second)
    drained = buffer.drain()
    add(buffer, "u", third)
    buffer.merge_back(K("u"), "user_id", drained[K("u")].timed_records())
    assert (first, second, third) == snapshot
    assert buffer.pending[K("u")].record["metadata"] == {
        "plan": {"tier": "pro", "seats": 3},
        "n": 1,
    }


def test_identical_update_skips_the_merge() -> None:
    buffer = PendingBuffer(10, 10**9)
    original = record(metadata={"a": 1})
    add(buffer, "u", original)
    add(buffer, "u", record(metadata={"a": 1}))  # equal, not identical
    add(buffer, "u", original)
    assert buffer.pending[K("u")].record is original
    assert buffer.coalesced == 2


def test_distinct_session_tokens_are_all_kept_in_order() -> None:
    buffer = PendingBuffer(10, 10**9)
    add(buffer, "u", record(session_token="t1", company_id="c"))
    add(buffer, "u", record(session_token="t2"))
    add(buffer, "u", record(session_token="t2"))
    add(buffer, "u", record(session_token="t3"))
    add(buffer, "u", record(session_token="t1"))  # back to an older token
    records = buffer.pending[K("u")].records()
    assert records[:-1] == [
        {"user_id": "u", "session_token": "t2"},
        {"user_id": "u", "session_token": "t3"},
    ]
    assert records[-1] == {"user_id": "u", "session_token": "t1", "company_id": "c"}


def test_tokens_per_user_are_bounded() -> None:
    buffer = PendingBuffer(10, 10**9)
    for index in range(MAX_TOKENS_PER_RECORD + 5):
        add(buffer, "u", record(session_token=f"t{index}"))
    entry = buffer.pending[K("u")]
    assert entry.tokens is not None
    assert len(entry.tokens) == MAX_TOKENS_PER_RECORD
    assert buffer.dropped == 4
    assert entry.record["session_token"] == f"t{MAX_TOKENS_PER_RECORD + 4}"


def test_the_oldest_tokens_are_the_ones_evicted() -> None:
    buffer = PendingBuffer(10, 10**9)
    count = MAX_TOKENS_PER_RECORD + 3
    for index in range(count):
        add(buffer, "u", record(session_token=f"t{index}"))
    add(buffer, "u", record(session_token="t5"))  # a kept token comes back: it moves up
    sent = [r["session_token"] for r in buffer.pending[K("u")].records()]
    evicted = count - 1 - MAX_TOKENS_PER_RECORD  # the newest is the record's own token
    older = [f"t{index}" for index in range(evicted, count) if index != 5]
    assert sent == [*older, "t5"]  # older tokens oldest first, then the merged record
    assert buffer.dropped == evicted


def test_a_token_merged_back_under_a_full_set_is_evicted_at_once() -> None:
    buffer = PendingBuffer(10, 10**9)
    add(buffer, "u", record(session_token="old"), stamp=1.0)
    failed = buffer.drain()[K("u")].timed_records()
    for index in range(MAX_TOKENS_PER_RECORD + 1):  # newer: fills the older tokens
        add(buffer, "u", record(session_token=f"t{index}"), stamp=2.0)
    dropped = buffer.dropped
    buffer.merge_back(K("u"), "user_id", failed)
    buffer.release([K("u")])
    tokens = [r["session_token"] for r in buffer.pending[K("u")].records()]
    assert "old" not in tokens  # it would be the oldest of more than the bound
    assert len(tokens) == MAX_TOKENS_PER_RECORD + 1
    assert buffer.dropped == dropped + 1


def test_full_buffer_drops_new_users_but_merges_pending_ones() -> None:
    buffer = PendingBuffer(3, 10**9)
    assert all(add(buffer, uid, record(uid)) for uid in "abc")
    assert not add(buffer, "d", record("d"))
    assert not add(buffer, "e", record("e"))
    assert add(buffer, "a", record("a", company_id="c"))
    assert buffer.dropped == 2
    assert buffer.queued == 4
    assert {key[1] for key in buffer.pending} == {"a", "b", "c"}


def test_in_flight_users_keep_their_slot() -> None:
    buffer = PendingBuffer(2, 10**9)
    add(buffer, "a", record("a"))
    add(buffer, "b", record("b"))
    drained = buffer.drain()
    assert {key[1] for key in drained} == {"a", "b"}
    assert not add(buffer, "c", record("c"))  # a and b are still being sent
    assert add(buffer, "a", record("a", company_id="new"))  # in flight: no new slot
    assert buffer.slots == 2
    buffer.release([K("a"), K("b")])
    assert buffer.slots == 1  # "a" is pending again
    assert add(buffer, "c", record("c"))
    assert buffer.slots == 2


def test_merge_back_goes_under_newer_updates() -> None:
    buffer = PendingBuffer(10, 10**9)
    add(buffer, "u", record(session_token="t1", metadata={"a": 1, "b": 1}, company_id="old"))
    drained = buffer.drain()
    add(buffer, "u", record(session_token="t2", metadata={"a": 2}))
    buffer.merge_back(K("u"), "user_id", drained[K("u")].timed_records())
    buffer.release([K("u")])
    entry = buffer.pending[K("u")]
    assert entry.records() == [
        {"user_id": "u", "session_token": "t1"},
        {"user_id": "u", "session_token": "t2", "metadata": {"a": 2, "b": 1}, "company_id": "old"},
    ]
    assert buffer.slots == 1


def test_merge_back_of_a_user_with_older_tokens_keeps_their_order() -> None:
    buffer = PendingBuffer(10, 10**9)
    for token in ("t1", "t2", "t3"):
        add(buffer, "u", record(session_token=token))
    failed = buffer.drain()[K("u")].timed_records()
    buffer.merge_back(K("u"), "user_id", failed)
    buffer.release([K("u")])
    assert buffer.pending[K("u")].timed_records() == failed


def test_observed_sizes_turn_the_byte_bound_into_a_user_bound() -> None:
    buffer = PendingBuffer(10_000, 100_000)
    buffer.observe(total_bytes=10_000_000, records=1_000)  # 10 KB per record
    assert buffer.slot_limit < 100
    buffer.observe(total_bytes=100, records=1)
    buffer.observe(total_bytes=100, records=1)
    buffer.observe(total_bytes=100, records=1)
    buffer.observe(total_bytes=100, records=1)
    assert buffer.slot_limit > 50


# -------------------------------------------------------------------- DeliveredLog


def test_delivered_log_skips_identical_updates_within_the_interval() -> None:
    log = Unchanged(capacity=2, interval=10.0)
    log.delivered(K("a"), 111, 100.0, ({"user_id": "a"}, 0.0, None), "user_id")
    assert log.unchanged(K("a"), 111, now=105.0)
    assert not log.unchanged(K("a"), 222, now=105.0)
    assert not log.unchanged(K("a"), 111, now=110.5)
    assert not log.unchanged(K("b"), 111, now=105.0)
    log.delivered(K("b"), 1, 101.0, ({"user_id": "b"}, 0.0, None), "user_id")
    log.delivered(K("c"), 1, 102.0, ({"user_id": "c"}, 0.0, None), "user_id")  # evicts "a"
    assert len(log) == 2
    assert not log.unchanged(K("a"), 111, now=103.0)


def test_delivered_log_disabled_with_zero_interval() -> None:
    log = Unchanged(capacity=10, interval=0)
    log.delivered(K("a"), 1, 1.0, ({"user_id": "a"}, 0.0, None), "user_id")
    assert not log.unchanged(K("a"), 1, now=1.0)
    assert len(log) == 0


# ----------------------------------------------------------------------- batching


def items(count: int, size: int = 0) -> list[Item]:
    entries = [
        (K(f"u{i}"), Entry(record(f"u{i}", metadata={"pad": "x" * size}), "user_id"))
        for i in range(count)
    ]
    out, errors = serialize(entries)
    assert errors == []
    return out


def test_pack_by_count() -> None:
    batches, too_large = pack(items(25), batch_size=10, max_batch_bytes=10**6)
    assert [len(batch.items) for batch in batches] == [10, 10, 5]
    assert too_large == []
    assert [json.loads(batch.body())[0]["user_id"] for batch in batches] == ["u0", "u10", "u20"]


def test_pack_by_bytes_and_drop_oversize_items() -> None:
    small = items(10, size=100)
    huge = items(1, size=5000)[0]
    batches, too_large = pack([*small[:5], huge, *small[5:]], batch_size=100, max_batch_bytes=500)
    assert too_large == [huge]
    for batch in batches:
        body = batch.body()
        assert len(body) <= 500
        assert len(body) == batch.size
    sent = [user["user_id"] for batch in batches for user in json.loads(batch.body())]
    assert sent == [f"u{i}" for i in range(10)]


def test_halves_keep_every_record() -> None:
    (batch,), _ = pack(items(7), batch_size=10, max_batch_bytes=10**6)
    first, second = batch.halves()
    assert [i.key for i in first.items + second.items] == [i.key for i in batch.items]
    assert len(first.body()) == first.size
    assert len(second.body()) == second.size


def test_serialize_marks_the_main_record_and_reports_bad_ones() -> None:
    entry = Entry(record("a", session_token="t1"), "user_id")
    entry.tokens = {"t0": None}
    bad = Entry(record("b", metadata={"x": float("nan")}), "user_id")
    out, errors = serialize([(K("a"), entry), (K("b"), bad)])
    assert [(i.key[1], i.main) for i in out] == [("a", False), ("a", True)]
    assert [(key[1], type(exc)) for key, _, exc in errors] == [("b", ValueError)]
    assert out[1].text == (
        '{"user_id":"a","session_token":"t1","modified_time":"1970-01-01T00:00:00.000Z"}'
    )


# ------------------------------------------------------------------------ options


def test_default_options() -> None:
    options = validate_sender_options({})
    assert options == SenderOptions()
    assert options.batch_size == 100
    assert options.max_queue_size == 10_000
    assert options.gzip is True
    assert set(SENDER_OPTIONS) == set(SenderOptions.__dataclass_fields__)


def test_unknown_option_lists_the_valid_ones() -> None:
    with pytest.raises(UnknownOptionError) as info:
        validate_sender_options({"batchsize": 5})
    assert isinstance(info.value, TypeError)
    assert isinstance(info.value, ConfigurationError)
    assert "batchsize" in str(info.value)
    assert "batch_size" in str(info.value)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("batch_size", 0),
        ("batch_size", 1.5),
        ("batch_size", True),
        ("max_queue_size", "10"),
        ("max_batch_bytes", 10),
        ("flush_interval", 0),
        ("flush_interval", float("nan")),
        ("timeout", -1),
        ("min_update_interval", -0.1),
        ("shutdown_timeout", "3"),
        ("gzip", "yes"),
    ],
)
def test_bad_option_values_name_the_option(name: str, value: Any) -> None:
    with pytest.raises(ConfigurationError) as info:
        validate_sender_options({name: value})
    assert str(info.value).startswith(name)


def test_zero_is_allowed_where_it_means_off() -> None:
    options = validate_sender_options({"min_update_interval": 0, "shutdown_timeout": 0})
    assert options.min_update_interval == 0.0
    assert options.shutdown_timeout == 0.0


# -------------------------------------------------------------------------- retry


def test_backoff_is_full_jitter_and_capped() -> None:
    policy = RetryPolicy(backoff_base=1.0, backoff_cap=8.0)
    rng = random.Random(1)
    for attempt in range(10):
        ceiling = min(8.0, 2.0**attempt)
        delays = [policy.backoff(attempt, rng) for _ in range(200)]
        assert all(0.0 <= delay <= ceiling for delay in delays)
        assert max(delays) > ceiling * 0.8
    assert policy.retry_after(500.0) == policy.retry_after_cap
    assert policy.retry_after(-1.0) == 0.0
    assert policy.cycle_backoff(0) == 0.0
    assert 0.0 <= policy.cycle_backoff(100, rng) <= policy.cycle_backoff_cap


@pytest.mark.parametrize(
    ("status", "retryable"),
    [(408, True), (429, True), (500, True), (503, True), (400, False), (401, False), (413, False)],
)
def test_retryable_statuses(status: int, retryable: bool) -> None:
    assert is_retryable_status(status) is retryable


def test_a_company_keeps_the_tokens_of_many_users() -> None:
    """A company's update carries each of its users' tokens: far more than a user's 32."""
    buffer = PendingBuffer(10, 10**9)
    key = ("companies", "c")
    for index in range(COMPANIES.max_tokens + 3):
        record = {"company_id": "c", "session_token": f"t{index}"}
        assert buffer.add(key, record, "company_id")
    entry = buffer.pending[key]
    assert entry.tokens is not None
    assert len(entry.tokens) == COMPANIES.max_tokens > MAX_TOKENS_PER_RECORD
    assert buffer.dropped == 2
    sent = {record["session_token"] for record in entry.records()}
    assert sent == {f"t{index}" for index in range(2, COMPANIES.max_tokens + 3)}
