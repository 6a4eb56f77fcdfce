"""The JSON checker's fast path (``plain_bound``) and general path (``check_json``) agree.

One table of metadata objects goes through both: the same verdict, the same bound for
what the fast path vouches for (and a bound no smaller than the real size), the same
field for what is rejected. The models' ``check_json_value`` and ``normalize_user`` give
the same answers too.
"""

from __future__ import annotations

import enum
import json
import math
from collections import OrderedDict
from types import MappingProxyType
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from moesif_users_middleware._json import MAX_DEPTH, check_json, plain_bound
from moesif_users_middleware.models import ValidationError, check_json_value, normalize_user
from moesif_users_middleware.transport import normalize_users


class Text(str):
    pass


class Number(int):
    pass


class Real(float):
    pass


class Level(enum.IntEnum):
    HIGH = 3


def nested(levels: int, leaf: Any) -> dict[str, Any]:
    """``{"d": {"d": ... leaf}}`` with ``levels`` dicts below the top one."""
    node: dict[str, Any] = {"d": leaf}
    for _ in range(levels - 1):
        node = {"d": node}
    return {"d": node} if levels else {"d": leaf}


PLAIN = "plain"  # valid, and the fast path vouches for it
VALID = "valid"  # valid, but only the general path says so (not plain data)

# (id, metadata, PLAIN / VALID / the field the general path names)
TABLE: list[tuple[str, Any, str]] = [
    ("empty", {}, PLAIN),
    ("flat", {"email": "a@b.c", "n": 1, "ok": True, "none": None, "f": 1.5}, PLAIN),
    ("nested", {"sales": {"stage": "Customer", "ltv": 24000, "tags": ["a", 1, None]}}, PLAIN),
    ("list of dicts", {"l": [{"a": [1, 2.5, {"b": [[]]}]}, [True, False]]}, PLAIN),
    ("non-ascii text", {"name": "Zoë", "emoji": "😀", "key é": "v"}, PLAIN),
    ("escaped characters", {"c": '\x00\x1f"\\' * 10, "\n": "\t"}, PLAIN),
    ("bool vs int", {"t": True, "one": 1, "zero": 0, "f": False, "l": [True, 1]}, PLAIN),
    ("big ints", {"i": 10**30, "j": -(10**30), "l": [10**30, -(10**100)]}, PLAIN),
    ("4000 digits", {"i": 10**4000 - 1, "l": [-(10**4000) + 1]}, PLAIN),
    (
        "floats",
        {"a": 0.0, "b": -0.0, "c": 1e308, "d": -2.2250738585072014e-308, "l": [5e-324]},
        PLAIN,
    ),
    ("deepest allowed", nested(MAX_DEPTH - 1, 1), PLAIN),
    ("deepest allowed list", nested(MAX_DEPTH - 2, [1]), PLAIN),
    ("tuple", {"t": ("a", 1), "nested": [{"u": (1.5, None)}]}, VALID),
    ("mapping proxy", {"m": MappingProxyType({"b": 1})}, VALID),
    ("ordered dict", {"o": OrderedDict(a=1)}, VALID),
    ("subclasses", {"s": Text("x"), "n": Number(2), "r": Real(1.5), "e": Level.HIGH}, VALID),
    ("str subclass in a list", {"l": [Text("x")]}, VALID),
    ("str subclass key", {Text("k"): 1}, PLAIN),  # what json.dumps accepts as a key
    ("NaN", {"f": math.nan}, "metadata.f"),
    ("infinity in a list", {"l": [1, -math.inf]}, "metadata.l[1]"),
    ("infinity in a tuple", {"t": (math.inf,)}, "metadata.t[0]"),
    ("float subclass NaN", {"r": Real("nan")}, "metadata.r"),
    ("lone surrogate", {"s": "a\ud800"}, "metadata.s"),
    ("lone surrogate, nested", {"a": {"b": ["ok", "\udfff"]}}, "metadata.a.b[1]"),
    ("lone surrogate in a key", {"\ud83d": 1}, "metadata"),
    ("lone surrogate in a nested key", {"a": {"\ud83d": 1}}, "metadata.a"),
    ("lone surrogate in a str subclass", {"s": Text("\ud800")}, "metadata.s"),
    ("int over 4000 digits", {"n": 10**4000}, "metadata.n"),
    ("negative int over 4000 digits", {"l": [-(10**4000)]}, "metadata.l[0]"),
    ("int key", {1: "x"}, "metadata"),
    ("int key, nested", {"a": {2: "x"}}, "metadata.a"),
    ("None key", {None: 1}, "metadata"),
    ("set", {"s": {1, 2}}, "metadata.s"),
    ("object", {"o": object()}, "metadata.o"),
    ("bytes", {"b": b"bytes"}, "metadata.b"),
    ("too deep", nested(MAX_DEPTH, 1), "metadata" + ".d" * MAX_DEPTH),
    ("too deep list", nested(MAX_DEPTH - 1, [1]), "metadata" + ".d" * MAX_DEPTH),
    ("invalid inside a mapping proxy", {"m": MappingProxyType({"x": math.nan})}, "metadata.m.x"),
]


def compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


@pytest.mark.parametrize(
    ("metadata", "expected"), [row[1:] for row in TABLE], ids=[row[0] for row in TABLE]
)
def test_the_fast_and_the_general_path_agree(metadata: dict[Any, Any], expected: str) -> None:
    snapshot = repr(metadata)
    fast = plain_bound(metadata)
    if expected in (PLAIN, VALID):
        checked, bound = check_json(metadata, "metadata")
        assert bound >= len(compact(checked))
        if expected == PLAIN:
            assert fast == bound
            assert checked is metadata
        else:
            assert fast is None
    else:
        assert fast is None
        with pytest.raises(ValidationError) as info:
            check_json(metadata, "metadata")
        assert info.value.field == expected
    assert repr(metadata) == snapshot  # never mutated


@pytest.mark.parametrize(
    ("metadata", "expected"), [row[1:] for row in TABLE], ids=[row[0] for row in TABLE]
)
def test_the_models_give_the_same_verdict(metadata: dict[Any, Any], expected: str) -> None:
    if expected in (PLAIN, VALID):
        check_json_value(metadata, "metadata")
        out = normalize_user({"user_id": "u", "metadata": metadata})["metadata"]
        assert type(out) is dict
        compact(out)  # what is accepted can be sent
        return
    with pytest.raises(ValidationError) as info:
        check_json_value(metadata, "metadata")
    assert info.value.field == expected
    with pytest.raises(ValidationError) as info:
        normalize_user({"user_id": "u", "metadata": metadata})
    assert info.value.field == expected


def test_a_batch_names_the_user_and_the_field() -> None:
    users = [{"user_id": f"u{n}"} for n in range(3)]
    users.append({"user_id": "u3", "metadata": {"x": math.nan}})
    with pytest.raises(ValidationError) as info:
        normalize_users(users)
    assert info.value.field == "users[3].metadata.x"


def test_mappings_are_copied_only_where_needed() -> None:
    inner = MappingProxyType({"b": 1})
    plain_list = [1, 2]
    metadata = {"a": inner, "l": plain_list, "t": (MappingProxyType({"c": 2}),)}
    checked, _ = check_json(metadata, "metadata")
    assert checked == {"a": {"b": 1}, "l": [1, 2], "t": [{"c": 2}]}
    assert type(checked["a"]) is dict
    assert checked["l"] is plain_list  # unchanged parts are shared, not copied
    assert metadata["a"] is inner


def test_a_lazy_proxy_is_not_evaluated() -> None:
    evaluated: list[bool] = []

    class Lazy:
        """Like Django's SimpleLazyObject: asking for __class__ evaluates it."""

        @property  # type: ignore[misc]
        def __class__(self) -> type:
            evaluated.append(True)
            return str

    metadata = {"name": Lazy(), "l": [Lazy()]}
    assert plain_bound(metadata) is None
    with pytest.raises(ValidationError) as info:
        check_json(metadata, "metadata")
    assert info.value.field == "metadata.name"
    assert evaluated == []


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda children: (
        st.lists(children, max_size=4)
        | st.tuples(children, children)
        | st.dictionaries(st.one_of(st.text(max_size=5), st.integers()), children, max_size=4)
    ),
    max_leaves=20,
)


@given(st.dictionaries(st.text(max_size=8), json_values, max_size=6))
def test_random_metadata_gets_one_verdict(metadata: dict[str, Any]) -> None:
    fast = plain_bound(metadata)
    try:
        checked, bound = check_json(metadata, "metadata")
    except ValidationError:
        assert fast is None
        return
    assert bound >= len(compact(checked))
    if fast is not None:
        assert (checked, bound) == (metadata, fast)
