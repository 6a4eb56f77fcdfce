"""``moesif-users send`` end to end against the real collector over loopback."""

from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path
from typing import Any

import pytest
from conftest import CollectorHandle

from moesif_users_middleware.cli import main


def send(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run ``moesif-users send`` in process; returns (status, stdout, stderr)."""
    status = main(["send", "--progress", "none", *argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def write_jsonl(path: Path, records: list[Any]) -> Path:
    path.write_text("".join(json.dumps(record) + "\n" for record in records), encoding="utf-8")
    return path


def rejects_of(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_json_jsonl_and_csv_inputs_arrive_merged(
    collector: CollectorHandle, app_id: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    users = [f"user-{index}" for index in range(30)]
    array = tmp_path / "profiles.json"
    array.write_text(
        json.dumps(
            [
                {"user_id": user, "metadata": {"email": f"{user}@acme.test", "plan": "free"}}
                for user in users
            ],
            indent=2,
        ),
        encoding="utf-8",
    )
    lines = write_jsonl(
        tmp_path / "companies.jsonl",
        [{"user_id": user, "company_id": "acme", "session_token": f"tok-{user}"} for user in users],
    )
    table = tmp_path / "crm.csv"
    with table.open("w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(
            ["user_id", "campaign.utm_source", "metadata.plan", "metadata.sales.ltv:int"]
        )
        for index, user in enumerate(users):
            writer.writerow([user, "google", "pro", index * 100])

    for path in (array, lines, table):
        status, out, _ = send(
            capsys, str(path), "--application-id", app_id, "--base-url", collector.url
        )
        assert status == 0, out
        assert f"sent: {len(users)} users" in out

    assert collector.stats(app_id)["records"] == 3 * len(users)
    profile = collector.get_user(app_id, "user-7")
    assert profile is not None
    assert profile["company_id"] == "acme"
    assert profile["session_tokens"] == ["tok-user-7"]
    assert profile["campaign"] == {"utm_source": "google"}
    # The JSON file's email survives; the CSV's plan (sent later) wins; nested and typed.
    assert profile["metadata"] == {
        "email": "user-7@acme.test",
        "plan": "pro",
        "sales": {"ltv": 700},
    }
    assert len(collector.list_users(app_id)) == len(users)


def test_invalid_records_go_to_the_rejects_file_and_the_run_goes_on(
    collector: CollectorHandle, app_id: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "users.jsonl"
    path.write_text(
        "\n".join(
            [
                json.dumps({"user_id": "ok-1"}),
                "{not json",
                json.dumps({"user_id": 42}),
                "",  # blank lines are not records
                json.dumps({"user_id": "ok-2", "campaign": {"utm_sorce": "typo"}}),
                json.dumps({"user_id": "ok-3", "metadata": {"age": 31}}),
                json.dumps({"user_id": "ok-4", "colour": "blue"}),
                json.dumps(["not", "an", "object"]),
                json.dumps({"user_id": "ok-5", "modified_time": "yesterday"}),
            ]
        )
        + "\n",
        encoding="utf-8",
    )
    status, out, _ = send(
        capsys, str(path), "--application-id", app_id, "--base-url", collector.url
    )
    assert status == 1  # something was rejected
    assert "sent: 2 users" in out
    assert "invalid: 6" in out

    rejects = rejects_of(tmp_path / "users.jsonl.rejects.jsonl")
    assert [(entry["line"], entry["field"]) for entry in rejects] == [
        (2, None),
        (3, "user_id"),
        (5, "campaign.utm_sorce"),
        (7, "colour"),
        (8, "user"),
        (9, "modified_time"),
    ]
    assert rejects[0]["record"] == "{not json"
    assert "not valid JSON" in rejects[0]["message"]
    assert rejects[1]["record"] == {"user_id": 42}
    assert "must be a string" in rejects[1]["message"]
    assert {user["user_id"] for user in collector.list_users(app_id)} == {"ok-1", "ok-3"}


def test_invalid_ip_addresses_are_rejected(
    collector: CollectorHandle, app_id: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = write_jsonl(
        tmp_path / "users.jsonl",
        [
            {"user_id": "v4", "ip_address": "203.0.113.7"},
            {"user_id": "bad-octet", "ip_address": "999.1.1.1"},
            {"user_id": "v6", "ip_address": "2001:db8::1"},
            {"user_id": "words", "ip_address": "not-an-ip"},
        ],
    )
    status, out, _ = send(
        capsys, str(lines), "--application-id", app_id, "--base-url", collector.url
    )
    assert status == 1, out
    assert "invalid: 2" in out
    rejects = rejects_of(tmp_path / "users.jsonl.rejects.jsonl")
    assert [(entry["line"], entry["field"]) for entry in rejects] == [
        (2, "ip_address"),
        (4, "ip_address"),
    ]
    assert "not an IPv4 or IPv6 address" in rejects[0]["message"]

    table = tmp_path / "users.csv"
    table.write_text("user_id,ip_address\ncsv-ok,::1\ncsv-bad,1.2.3\n", encoding="utf-8")
    status, out, _ = send(
        capsys, str(table), "--application-id", app_id, "--base-url", collector.url
    )
    assert status == 1, out
    [entry] = rejects_of(tmp_path / "users.csv.rejects.jsonl")
    assert (entry["line"], entry["field"]) == (3, "ip_address")
    assert sorted(user["user_id"] for user in collector.list_users(app_id)) == [
        "csv-ok",
        "v4",
        "v6",
    ]


def test_csv_rejects_name_the_line_and_the_column(
    collector: CollectorHandle, app_id: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "users.csv"
    path.write_text(
        "user_id,company_id,metadata.age:int,metadata.vip:bool,metadata.note\n"
        "u1,acme,31,yes,\n"
        "u2,acme,thirty,no,\n"  # line 3: not an int
        ',acme,40,no,"a note\nover two lines"\n'  # lines 4-5: no user id
        "u3,,,,plain\n"  # line 6: empty cells are absent
        "u4,acme,1,maybe,\n"  # line 7: not a bool
        "u5,acme,2,no,x,extra\n",  # line 8: too many cells
        encoding="utf-8",
    )
    status, out, _ = send(
        capsys, str(path), "--application-id", app_id, "--base-url", collector.url
    )
    assert status == 1, out
    rejects = rejects_of(tmp_path / "users.csv.rejects.jsonl")
    assert [(entry["line"], entry["field"]) for entry in rejects] == [
        (3, "metadata.age"),
        (4, "user_id"),
        (7, "metadata.vip"),
        (8, None),
    ]
    assert rejects[0]["record"]["metadata.age:int"] == "thirty"
    assert rejects[1]["record"]["metadata.note"] == "a note\nover two lines"
    u1 = collector.get_user(app_id, "u1")
    assert u1 is not None
    assert (u1["company_id"], u1["metadata"]) == ("acme", {"age": 31, "vip": True})
    u3 = collector.get_user(app_id, "u3")
    assert u3 is not None
    assert "company_id" not in u3
    assert u3["metadata"] == {"note": "plain"}


def test_dry_run_validates_and_sends_nothing(
    collector: CollectorHandle, app_id: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_jsonl(
        tmp_path / "users.jsonl",
        [{"user_id": f"u{index}"} for index in range(250)] + [{"user_id": ""}],
    )
    status, out, _ = send(
        capsys,
        str(path),
        "--dry-run",
        "--batch-size",
        "100",
        "--application-id",
        app_id,
        "--base-url",
        collector.url,
    )
    assert status == 1  # one invalid record
    assert "valid (dry run, nothing sent): 250 users" in out
    assert collector.stats(app_id)["requests"] == 0
    assert not (tmp_path / "users.jsonl.checkpoint").exists()
    dry_rejects = rejects_of(tmp_path / "users.jsonl.dry-run.rejects.jsonl")
    assert [(entry["line"], entry["field"]) for entry in dry_rejects] == [(251, "user_id")]


def test_dry_run_needs_no_application_id(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MOESIF_APPLICATION_ID", raising=False)
    path = write_jsonl(tmp_path / "users.jsonl", [{"user_id": "a"}])
    assert send(capsys, str(path), "--dry-run")[0] == 0
    status, _, err = send(capsys, str(path))
    assert status == 2
    assert "MOESIF_APPLICATION_ID" in err


def test_batches_respect_batch_size_and_byte_limit(
    collector: CollectorHandle, app_id: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    records = [{"user_id": f"u{index}", "metadata": {"pad": "x" * 400}} for index in range(100)]
    path = write_jsonl(tmp_path / "users.jsonl", records)
    status, out, _ = send(
        capsys,
        str(path),
        "--batch-size",
        "30",
        "--application-id",
        app_id,
        "--base-url",
        collector.url,
    )
    assert status == 0, out
    assert collector.stats(app_id) | {"users": 0} == {
        "requests": 4,
        "batches": 4,
        "rejected": 0,
        "records": 100,
        "users": 0,
    }
    # ~450 bytes per record: a 4 KiB cap holds 9 of them.
    other = app_id + "-bytes"
    status, out, _ = send(
        capsys,
        str(path),
        "--restart",
        "--max-batch-bytes",
        "4096",
        "--application-id",
        other,
        "--base-url",
        collector.url,
    )
    assert status == 0, out
    assert collector.stats(other)["batches"] == 12
    assert collector.stats(other)["records"] == 100


def test_a_record_over_the_byte_limit_is_rejected_not_sent(
    collector: CollectorHandle, app_id: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_jsonl(
        tmp_path / "users.jsonl",
        [{"user_id": "small"}, {"user_id": "huge", "metadata": {"blob": "x" * 5000}}],
    )
    status, _, _ = send(
        capsys,
        str(path),
        "--max-batch-bytes",
        "2048",
        "--application-id",
        app_id,
        "--base-url",
        collector.url,
    )
    assert status == 1
    [entry] = rejects_of(tmp_path / "users.jsonl.rejects.jsonl")
    assert entry["line"] == 2
    assert "over the batch limit" in entry["message"]
    assert [user["user_id"] for user in collector.list_users(app_id)] == ["small"]


def test_413_from_the_api_splits_the_batch(
    fresh_collector: Any, app_id: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The collector refuses bodies over 3000 bytes (after gunzip), below our batch limit.
    server = fresh_collector(max_body_bytes=3000)
    records = [{"user_id": f"u{index:03d}", "metadata": {"pad": "y" * 200}} for index in range(40)]
    records.append({"user_id": "too-big-for-the-api", "metadata": {"pad": "z" * 4000}})
    path = write_jsonl(tmp_path / "users.jsonl", records)
    status, out, _ = send(
        capsys,
        str(path),
        "--no-gzip",
        "--application-id",
        app_id,
        "--base-url",
        server.url,
    )
    assert status == 1, out  # the one user the API refused
    store = server.app.state.store
    assert store.stats(_partition(app_id))["records"] == 40
    [entry] = rejects_of(tmp_path / "users.jsonl.rejects.jsonl")
    assert entry["line"] == 41
    assert "refused by the API" in entry["message"]
    assert "failed:  1" in out


def test_malformed_files_fail_at_once_with_a_clear_message(
    collector: CollectorHandle, app_id: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    binary = tmp_path / "users.jsonl"
    binary.write_bytes(gzip.compress(b'{"user_id": "a"}\n' * 100))
    status, _, err = send(
        capsys, str(binary), "--application-id", app_id, "--base-url", collector.url
    )
    assert status == 2
    assert "binary" in err

    not_csv = tmp_path / "users.csv"
    not_csv.write_text("hello world, this is prose\nnot a table\n", encoding="utf-8")
    status, _, err = send(
        capsys, str(not_csv), "--application-id", app_id, "--base-url", collector.url
    )
    assert status == 2
    assert "unknown column" in err

    no_id = tmp_path / "no_id.csv"
    no_id.write_text("email,company_id\na@b.c,acme\n", encoding="utf-8")
    status, _, err = send(
        capsys, str(no_id), "--application-id", app_id, "--base-url", collector.url
    )
    assert status == 2
    assert "unknown column 'email'" in err

    prose = tmp_path / "notes.jsonl"
    prose.write_text("Dear team,\nplease find the users attached.\n", encoding="utf-8")
    status, _, err = send(
        capsys, str(prose), "--application-id", app_id, "--base-url", collector.url
    )
    assert status == 2
    assert "not JSON Lines" in err
    assert collector.stats(app_id)["requests"] == 0


def test_json_breaking_mid_array_settles_what_came_before(
    collector: CollectorHandle, app_id: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "users.json"
    path.write_text(
        '[\n  {"user_id": "a"},\n  {"user_id": "b"},\n  {"user_id": "c" oops},\n  {"user_id": "d"}\n]',
        encoding="utf-8",
    )
    status, out, _ = send(
        capsys, str(path), "--application-id", app_id, "--base-url", collector.url
    )
    assert status == 2
    assert "line 4" in out
    assert "malformed input" in out
    assert [user["user_id"] for user in collector.list_users(app_id)] == ["a", "b"]
    checkpoint = json.loads((tmp_path / "users.json.checkpoint").read_text())
    assert checkpoint["position"] == 2
    assert checkpoint["complete"] is False


def test_stdin_is_sniffed(
    collector: CollectorHandle,
    app_id: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    import io
    import sys

    monkeypatch.chdir(tmp_path)
    for data in (
        b'{"user_id": "s1"}\n{"user_id": "s2"}\n',
        b'[{"user_id": "s3"},\n {"user_id": "s4"}]',
        b'{\n  "user_id": "s5"\n}\n',
        b"user_id,company_id\ns6,acme\n",
    ):
        stdin = io.TextIOWrapper(io.BytesIO(data))
        monkeypatch.setattr(sys, "stdin", stdin)
        status, out, _ = send(capsys, "-", "--application-id", app_id, "--base-url", collector.url)
        assert status == 0, out
    assert [user["user_id"] for user in collector.list_users(app_id)] == [
        f"s{index}" for index in range(1, 7)
    ]
    assert not list(tmp_path.glob("*.checkpoint"))  # no checkpoint for stdin by default


def test_a_finished_run_is_not_repeated_unless_restarted_or_the_file_grew(
    collector: CollectorHandle, app_id: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_jsonl(tmp_path / "users.jsonl", [{"user_id": f"u{index}"} for index in range(10)])
    argv = (str(path), "--application-id", app_id, "--base-url", collector.url)
    assert send(capsys, *argv)[0] == 0
    status, out, _ = send(capsys, *argv)
    assert status == 0
    assert "Nothing to do" in out
    assert collector.stats(app_id)["records"] == 10

    with path.open("a", encoding="utf-8") as file:  # new users appended later
        file.write(json.dumps({"user_id": "u10"}) + "\n")
    status, out, err = send(capsys, *argv)
    assert status == 0, out
    assert "changed since checkpoint" in err
    assert collector.stats(app_id)["records"] == 11

    assert send(capsys, *argv, "--restart")[0] == 0
    assert collector.stats(app_id)["records"] == 22


def test_exit_status_and_summary_count_the_runs_a_run_resumes(
    collector: CollectorHandle, app_id: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_jsonl(tmp_path / "users.jsonl", [{"user_id": "a"}, {"user_id": 2}])
    argv = (str(path), "--application-id", app_id, "--base-url", collector.url)
    status, out, _ = send(capsys, *argv)
    assert status == 1, out
    assert "sent: 1 user in 1 request," in out  # singular where it is one

    status, out, _ = send(capsys, *argv)  # nothing left, but a record was rejected
    assert status == 1, out
    assert "Nothing to do" in out
    assert "1 invalid" in out

    with path.open("a", encoding="utf-8") as file:  # new valid users appended later
        file.write(json.dumps({"user_id": "c"}) + "\n" + json.dumps({"user_id": "d"}) + "\n")
    status, out, err = send(capsys, *argv)
    assert "changed since checkpoint" in err
    assert "sent: 2 users in 1 request," in out
    assert "invalid: 0" in out
    assert status == 1, out  # the earlier run's reject still counts
    assert "all runs: 3 sent, 1 invalid, 0 failed" in out

    # --resume-from keeps the rejects file: what it holds still counts
    status, out, _ = send(capsys, *argv, "--resume-from", "3", "--no-checkpoint")
    assert status == 1, out
    assert "earlier runs rejected records" in out
    assert [entry["line"] for entry in rejects_of(tmp_path / "users.jsonl.rejects.jsonl")] == [2]

    status, out, _ = send(capsys, *argv, "--restart")  # a fresh run forgets them
    assert status == 1, out
    clean = write_jsonl(tmp_path / "clean.jsonl", [{"user_id": "e"}])
    status, out, _ = send(capsys, str(clean), *argv[1:])
    assert status == 0, out
    assert "sent: 1 user in 1 request," in out
    status, out, _ = send(capsys, str(clean), *argv[1:])
    assert status == 0, out
    assert "the only record of" in out


def test_resume_from_skips_records(
    collector: CollectorHandle, app_id: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_jsonl(tmp_path / "users.jsonl", [{"user_id": f"u{index}"} for index in range(10)])
    status, out, _ = send(
        capsys,
        str(path),
        "--resume-from",
        "7",
        "--application-id",
        app_id,
        "--base-url",
        collector.url,
    )
    assert status == 0, out
    assert "resumed after record 7" in out
    assert [user["user_id"] for user in collector.list_users(app_id)] == ["u7", "u8", "u9"]


def test_progress_lines_when_not_a_terminal(
    collector: CollectorHandle, app_id: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_jsonl(tmp_path / "users.jsonl", [{"user_id": f"u{index}"} for index in range(50)])
    status = main(
        [
            "send",
            str(path),
            "--progress",
            "auto",
            "--application-id",
            app_id,
            "--base-url",
            collector.url,
        ]
    )
    assert status == 0
    err = capsys.readouterr().err
    assert "\r" not in err
    assert "progress: 50/50 users (100.0%)" in err


def _partition(application_id: str) -> str:
    from moesif_users_middleware.collector.store import partition_key

    return partition_key(application_id)


def test_unusable_checkpoints_are_reported_not_guessed(
    collector: CollectorHandle, app_id: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_jsonl(tmp_path / "users.jsonl", [{"user_id": "a"}])
    checkpoint = tmp_path / "users.jsonl.checkpoint"
    argv = (str(path), "--application-id", app_id, "--base-url", collector.url)
    checkpoint.write_text("{half a checkpoint", encoding="utf-8")
    status, _, err = send(capsys, *argv)
    assert status == 2
    assert "not usable" in err
    other = write_jsonl(tmp_path / "other.jsonl", [{"user_id": "b"}])
    status, _, err = send(capsys, str(other), "--checkpoint", str(checkpoint), *argv[1:])
    assert status == 2  # still the broken one
    assert send(capsys, *argv, "--restart")[0] == 0
    status, _, err = send(capsys, str(other), "--checkpoint", str(checkpoint), *argv[1:])
    assert status == 2
    assert "was written for" in err
    assert collector.stats(app_id)["records"] == 1
    saved = json.loads(checkpoint.read_text(encoding="utf-8"))
    for bad in ({"invalid": -1}, {"failed": "2"}, {"sent": None}):
        checkpoint.write_text(json.dumps({**saved, **bad}), encoding="utf-8")
        status, _, err = send(capsys, *argv)
        assert status == 2  # the exit status rests on these counts
        assert "not usable" in err


def test_lone_surrogates_are_rejected_locally_with_their_field(
    collector: CollectorHandle, app_id: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "users.jsonl"
    path.write_text(
        '{"user_id": "fine"}\n{"user_id": "x", "metadata": {"name": "bad \\ud800 half"}}\n',
        encoding="utf-8",
    )
    status, _, _ = send(capsys, str(path), "--application-id", app_id, "--base-url", collector.url)
    assert status == 1
    [entry] = rejects_of(tmp_path / "users.jsonl.rejects.jsonl")
    assert (entry["line"], entry["field"]) == (2, "metadata.name")
    assert collector.stats(app_id)["records"] == 1
