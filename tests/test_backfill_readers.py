"""The streaming readers of ``moesif-users send``: formats, line numbers, constant memory."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from moesif_users_middleware.backfill import json_reader
from moesif_users_middleware.backfill.items import MalformedInputError, Unparsed
from moesif_users_middleware.backfill.kinds import SEND_KINDS
from moesif_users_middleware.backfill.readers import detect_format, open_reader


def items(path: Path, format: str | None = None, skip: int = 0) -> list[tuple[Any, Any]]:
    with open_reader(str(path), format) as reader:
        return [(line, value) for line, value, _ in reader.records(skip, None)]


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Force the JSON reader to refill its buffer every few characters."""
    monkeypatch.setattr(json_reader, "_CHUNK_CHARS", 7)


@pytest.mark.usefixtures("small_chunks")
def test_json_array_is_streamed_with_line_numbers(tmp_path: Path) -> None:
    path = tmp_path / "users.json"
    path.write_text(
        '[\n  {"user_id": "a", "metadata": {"n": 12345678901234567890}},\n'
        '  {"user_id": "b",\n   "metadata": {"text": "with \\"escapes\\" and ünïcode"}},\n'
        "  12.5e3,\n"
        '  {"user_id": "c"}\n]\n',
        encoding="utf-8",
    )
    assert items(path) == [
        (2, {"user_id": "a", "metadata": {"n": 12345678901234567890}}),
        (3, {"user_id": "b", "metadata": {"text": 'with "escapes" and ünïcode'}}),
        (5, 12.5e3),
        (6, {"user_id": "c"}),
    ]
    assert items(path, skip=3) == [(6, {"user_id": "c"})]


@given(
    st.lists(
        st.fixed_dictionaries(
            {"user_id": st.text(min_size=1, max_size=12)},
            optional={"metadata": st.dictionaries(st.text(max_size=5), st.integers(), max_size=3)},
        ),
        max_size=8,
    ),
    st.sampled_from([None, 2]),
)
@settings(max_examples=60, deadline=None)
def test_json_array_round_trips_across_chunk_boundaries(
    records: list[dict[str, Any]], indent: int | None
) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "users.json"
        path.write_text(json.dumps(records, indent=indent, ensure_ascii=False), encoding="utf-8")
        original = json_reader._CHUNK_CHARS
        json_reader._CHUNK_CHARS = 5
        try:
            assert [value for _, value in items(path)] == records
        finally:
            json_reader._CHUNK_CHARS = original


def test_json_single_object_and_concatenated_values(tmp_path: Path) -> None:
    one = tmp_path / "one.json"
    one.write_text('\ufeff{\n  "user_id": "solo"\n}\n', encoding="utf-8")
    assert items(one) == [(1, {"user_id": "solo"})]
    several = tmp_path / "several.json"
    several.write_text('{"user_id": "a"}\n{"user_id": "b"}\n[{"user_id": "c"}]', encoding="utf-8")
    assert [value["user_id"] for _, value in items(several)] == ["a", "b", "c"]
    empty = tmp_path / "empty.json"
    empty.write_text("[ ]", encoding="utf-8")
    assert items(empty) == []


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[{"user_id": "a"},]', "trailing comma"),
        ('[{"user_id": "a"}', "not closed"),
        ('[{"user_id": "a"} {"user_id": "b"}]', "expected ',' or ']'"),
        ('"just a string"', "expected a JSON object or array"),
        ('[{"user_id": "a"},\n {"user_id": }]', "line 2: not valid JSON"),
    ],
)
@pytest.mark.usefixtures("small_chunks")
def test_broken_json_is_malformed_input(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "users.json"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(MalformedInputError, match=message):
        items(path)


def test_jsonl_lines_blank_lines_and_bad_lines(tmp_path: Path) -> None:
    path = tmp_path / "users.jsonl"
    path.write_bytes(
        b'\xef\xbb\xbf{"user_id": "a"}\n\n  \n{"user_id": "b"}\r\n{broken\n\xff\xfe not utf-8\n"x"'
    )
    result = items(path)
    assert result[:2] == [(1, {"user_id": "a"}), (4, {"user_id": "b"})]
    assert [line for line, _ in result] == [1, 4, 5, 6, 7]
    assert isinstance(result[2][1], Unparsed)
    assert isinstance(result[3][1], Unparsed)
    assert result[4] == (7, "x")
    assert items(path, skip=2)[0][0] == 5  # skipping counts records, not lines


def test_jsonl_estimated_total_counts_lines(tmp_path: Path) -> None:
    path = tmp_path / "users.jsonl"
    path.write_text("".join(f'{{"user_id": "u{i}"}}\n' for i in range(1234)), encoding="utf-8")
    with open_reader(str(path)) as reader:
        assert reader.estimated_total(0) == 1234


def test_csv_columns_nesting_types_and_empty_cells(tmp_path: Path) -> None:
    path = tmp_path / "users.csv"
    path.write_text(
        "\ufeffuser_id;metadata.a.b;metadata.a.c:number;metadata.tags:json;campaign.gclid\n"
        'u1;x;1.5;["p","q"];g1\n'
        "u2;;7;;\n"
        "\n"
        "u3;;;;\n",
        encoding="utf-8",
    )
    assert items(path) == [
        (
            2,
            {
                "user_id": "u1",
                "metadata": {"a": {"b": "x", "c": 1.5}, "tags": ["p", "q"]},
                "campaign": {"gclid": "g1"},
            },
        ),
        (3, {"user_id": "u2", "metadata": {"a": {"c": 7}}}),
        (5, {"user_id": "u3"}),
    ]
    whole = tmp_path / "whole.csv"
    whole.write_text('user_id,metadata\nu1,"{""k"": [1, 2]}"\nu2,[1]\n', encoding="utf-8")
    [(_, first), (_, second)] = items(whole)
    assert first == {"user_id": "u1", "metadata": {"k": [1, 2]}}
    assert isinstance(second, Unparsed)
    assert second.field == "metadata"


def test_csv_header_rules(tmp_path: Path) -> None:
    def header(text: str) -> None:
        path = tmp_path / "h.csv"
        path.write_text(text + "\nx\n", encoding="utf-8")
        items(path)

    header("user_id,metadata.plan,metadata.sales.ltv:int,campaign.utm_source")  # fine
    for bad, message in [
        ("user_id,metadata,metadata.plan", "write the same key"),
        ("user_id,metadata.a,metadata.a.b", "write the same key"),
        ("user_id,user_id", "write the same key"),
        ("user_id,campaign.utm_foo", "unknown campaign column"),
        ("user_id,company_id:int", "only metadata columns take a type"),
        ("user_id,metadata.", "unknown column"),
        ("company_id", "no user_id column"),
    ]:
        with pytest.raises(MalformedInputError, match=message):
            header(bad)


def test_csv_columns_follow_the_kind(tmp_path: Path) -> None:
    companies = SEND_KINDS["companies"]
    path = tmp_path / "companies.csv"
    path.write_text(
        "company_id,company_domain,session_token,modified_time,ip_address,"
        "campaign.utm_source,metadata.mrr:int\n"
        "c1,acme.test,tok,2024-01-02T03:04:05Z,::1,google,24000\n",
        encoding="utf-8",
    )
    with open_reader(str(path), kind=companies) as reader:
        [(line, value, _)] = list(reader)
    assert (line, value) == (
        2,
        {
            "company_id": "c1",
            "company_domain": "acme.test",
            "session_token": "tok",
            "modified_time": "2024-01-02T03:04:05Z",
            "ip_address": "::1",
            "campaign": {"utm_source": "google"},
            "metadata": {"mrr": 24000},
        },
    )
    for header, message in [
        ("company_id,user_agent_string", "unknown column 'user_agent_string'"),
        ("user_id,company_id", "unknown column 'user_id'"),
        ("company_domain,metadata.plan", "no company_id column"),
    ]:
        path.write_text(header + "\nx,y\n", encoding="utf-8")
        with pytest.raises(MalformedInputError, match=message):
            open_reader(str(path), kind=companies)
    path.write_text("user_id,company_domain\nu1,acme.test\n", encoding="utf-8")
    with pytest.raises(MalformedInputError, match="unknown column 'company_domain'"):
        open_reader(str(path))  # users: the default kind


def test_csv_typed_cells(tmp_path: Path) -> None:
    path = tmp_path / "users.csv"
    path.write_text(
        "user_id,metadata.n:number,metadata.i:int,metadata.f:float,metadata.b:bool,metadata.s\n"
        "u1,42,-3,2.5,TRUE,007\n"
        "u2,1e3,0,inf,no,\n",
        encoding="utf-8",
    )
    [(_, first), (_, second)] = items(path)
    assert first == {
        "user_id": "u1",
        "metadata": {"n": 42, "i": -3, "f": 2.5, "b": True, "s": "007"},
    }
    assert isinstance(second, Unparsed)
    assert second.field == "metadata.f"


def test_csv_row_with_bad_bytes_is_rejected_alone(tmp_path: Path) -> None:
    path = tmp_path / "users.csv"
    path.write_bytes(b"user_id,metadata.name\nu1,Ren\xe9\nu2,Ren\xc3\xa9\n")
    [(line1, first), (line2, second)] = items(path)
    assert (line1, line2) == (2, 3)
    assert isinstance(first, Unparsed)
    assert second == {"user_id": "u2", "metadata": {"name": "René"}}


@pytest.mark.parametrize(
    ("name", "head", "expected"),
    [
        ("users.JSON", b"", "json"),
        ("users.ndjson", b"", "jsonl"),
        ("users.tsv", b"", "csv"),
        ("-", b'  [{"user_id": 1}]', "json"),
        ("-", b'{"user_id": 1}\n{"user_id": 2}\n', "jsonl"),
        ("-", b'{\n "user_id": 1\n}', "json"),
        ("-", b"user_id,company_id\n", "csv"),
        ("users.txt", b"", None),
    ],
)
def test_detect_format(name: str, head: bytes, expected: str | None) -> None:
    assert detect_format(name, head) == expected


def test_binary_input_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "users.json"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    with pytest.raises(MalformedInputError, match="binary"):
        open_reader(str(path))


def test_an_empty_file_has_no_records(tmp_path: Path) -> None:
    for name in ("empty.csv", "empty.json", "empty.jsonl"):
        path = tmp_path / name
        path.write_text("\n", encoding="utf-8")
        assert items(path) == []
