"""``moesif-users send --kind companies``: company profiles over loopback HTTP."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest
from faults import FaultServer, Reset
from test_backfill_resume import read_checkpoint, resume, run_into_an_outage

from moesif_users_middleware.cli import main

COMPANIES = "/v1/companies/batch"


def send(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run ``moesif-users send --kind companies`` in process: (status, stdout, stderr)."""
    status = main(["send", "--kind", "companies", "--progress", "none", *argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def write_jsonl(path: Path, records: list[Any]) -> Path:
    path.write_text("".join(json.dumps(record) + "\n" for record in records), encoding="utf-8")
    return path


def rejects_of(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture
def api() -> Any:
    with FaultServer() as server:
        yield server


def test_json_jsonl_and_csv_companies_arrive(
    api: FaultServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    companies = [f"co-{index}" for index in range(12)]
    array = tmp_path / "companies.json"
    array.write_text(
        json.dumps(
            [
                {"company_id": co, "company_domain": f"{co}.test", "metadata": {"plan": "free"}}
                for co in companies
            ],
            indent=2,
        ),
        encoding="utf-8",
    )
    lines = write_jsonl(
        tmp_path / "companies.jsonl",
        [{"company_id": co, "session_token": f"tok-{co}", "ip_address": "::1"} for co in companies],
    )
    table = tmp_path / "crm.csv"
    with table.open("w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(
            ["company_id", "campaign.utm_source", "metadata.plan", "metadata.sales.mrr:int"]
        )
        for index, co in enumerate(companies):
            writer.writerow([co, "google", "pro", index * 100])

    for path in (array, lines, table):
        status, out, _ = send(capsys, str(path), "--application-id", "app", "--base-url", api.url)
        assert status == 0, out
        assert f"sent: {len(companies)} companies in 1 request" in out
        assert "companies/s" in out

    assert {request.path for request in api.received} == {COMPANIES}
    by_file = [request.records for request in api.accepted]
    assert by_file[0][7] == {
        "company_id": "co-7",
        "company_domain": "co-7.test",
        "metadata": {"plan": "free"},
    }
    assert by_file[1][7] == {"company_id": "co-7", "session_token": "tok-co-7", "ip_address": "::1"}
    assert by_file[2][7] == {
        "company_id": "co-7",
        "campaign": {"utm_source": "google"},
        "metadata": {"plan": "pro", "sales": {"mrr": 700}},
    }


def test_invalid_companies_go_to_the_rejects_file_naming_the_field(
    api: FaultServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_jsonl(
        tmp_path / "companies.jsonl",
        [
            {"company_id": "ok-1"},
            {"company_domain": "nameless.test"},  # no company_id
            {"company_id": "ok-2", "metadata": ["not", "an", "object"]},
            {"user_id": "u1"},  # a user, not a company
            {"company_id": "ok-3", "user_agent_string": "curl/8"},  # a user field
            "a string",
            {"company_id": "ok-4", "metadata": {"employees": 47}},
        ],
    )
    status, out, _ = send(capsys, str(path), "--application-id", "app", "--base-url", api.url)
    assert status == 1, out
    assert "sent: 2 companies" in out
    assert "invalid: 5" in out
    rejects = rejects_of(tmp_path / "companies.jsonl.rejects.jsonl")
    assert [(entry["line"], entry["field"]) for entry in rejects] == [
        (2, "company_id"),
        (3, "metadata"),
        (4, "company_id"),
        (5, "user_agent_string"),
        (6, "company"),
    ]
    assert rejects[0]["message"] == "is required"
    assert "must be an object" in rejects[1]["message"]
    assert "unknown company field" in rejects[3]["message"]
    assert [record["company_id"] for record in api.accepted_records()] == ["ok-1", "ok-4"]

    table = tmp_path / "companies.csv"
    table.write_text(
        "company_id,company_domain,metadata\n"
        'c1,c1.test,"{""plan"": ""pro""}"\n'
        ",orphan.test,\n"  # line 3: no company_id
        'c2,,"[1, 2]"\n',  # line 4: metadata not an object
        encoding="utf-8",
    )
    status, out, _ = send(capsys, str(table), "--application-id", "app", "--base-url", api.url)
    assert status == 1, out
    rejects = rejects_of(tmp_path / "companies.csv.rejects.jsonl")
    assert [(entry["line"], entry["field"]) for entry in rejects] == [
        (3, "company_id"),
        (4, "metadata"),
    ]
    assert rejects[1]["record"] == {"company_id": "c2", "company_domain": "", "metadata": "[1, 2]"}
    assert api.accepted[-1].records == [
        {"company_id": "c1", "company_domain": "c1.test", "metadata": {"plan": "pro"}}
    ]


def test_a_csv_header_of_another_kind_is_malformed_input(
    api: FaultServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    users = tmp_path / "users.csv"
    users.write_text("user_id,company_id\nu1,acme\n", encoding="utf-8")
    status, _, err = send(capsys, str(users), "--application-id", "app", "--base-url", api.url)
    assert status == 2
    assert "unknown column 'user_id'" in err
    assert "CSV columns of companies are company_id, company_domain," in err
    no_id = tmp_path / "domains.csv"
    no_id.write_text("company_domain\nacme.test\n", encoding="utf-8")
    status, _, err = send(capsys, str(no_id), "--application-id", "app", "--base-url", api.url)
    assert status == 2
    assert "no company_id column" in err
    assert api.received == []


def test_dry_run_validates_companies_and_sends_nothing(
    api: FaultServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_jsonl(
        tmp_path / "companies.jsonl",
        [{"company_id": f"co-{index}"} for index in range(250)] + [{"company_id": ""}],
    )
    status, out, _ = send(
        capsys, str(path), "--dry-run", "--batch-size", "100", "--base-url", api.url
    )
    assert status == 1  # one invalid record
    assert "valid (dry run, nothing sent): 250 companies" in out
    assert api.received == []
    assert not (tmp_path / "companies.jsonl.checkpoint").exists()
    dry_rejects = rejects_of(tmp_path / "companies.jsonl.dry-run.rejects.jsonl")
    assert [(entry["line"], entry["field"]) for entry in dry_rejects] == [(251, "company_id")]


def test_progress_and_summary_count_companies(
    api: FaultServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ("--progress", "log", "--application-id", "app", "--base-url", api.url)
    one = write_jsonl(tmp_path / "one.jsonl", [{"company_id": "solo"}])
    status, out, err = send(capsys, str(one), *argv)
    assert status == 0, out
    assert "sent: 1 company in 1 request" in out
    assert "progress: 1/1 company (100.0%)" in err
    many = write_jsonl(tmp_path / "many.jsonl", [{"company_id": f"c{i}"} for i in range(40)])
    status, out, err = send(capsys, str(many), *argv)
    assert status == 0, out
    assert "progress: 40/40 companies (100.0%)" in err


def test_a_checkpoint_resumes_only_a_run_of_its_kind(
    api: FaultServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A file that is valid as both kinds: the users run must not be continued as companies.
    path = write_jsonl(
        tmp_path / "ids.jsonl", [{"user_id": f"u{i}", "company_id": f"c{i}"} for i in range(3)]
    )
    argv = (str(path), "--application-id", "app", "--base-url", api.url)
    status = main(["send", "--progress", "none", *argv])  # --kind users: the default
    assert status == 0, capsys.readouterr()
    capsys.readouterr()
    checkpoint = json.loads((tmp_path / "ids.jsonl.checkpoint").read_text(encoding="utf-8"))
    assert (checkpoint["kind"], checkpoint["position"]) == ("users", 3)

    status, out, err = send(capsys, *argv)
    assert status == 2, out
    assert f"checkpoint {path}.checkpoint belongs to a --kind users run" in err
    assert "this run sends companies; pass --kind users to resume it" in err
    assert [request.path for request in api.received] == ["/v1/users/batch"]

    status, out, _ = send(capsys, *argv, "--restart")  # starts a companies run over
    assert status == 1, out  # the users' other fields are not company fields
    checkpoint = json.loads((tmp_path / "ids.jsonl.checkpoint").read_text(encoding="utf-8"))
    assert (checkpoint["kind"], checkpoint["invalid"]) == ("companies", 3)
    status = main(["send", "--progress", "none", *argv])
    assert status == 2
    assert "belongs to a --kind companies run, and this run sends users" in capsys.readouterr().err


def test_a_checkpoint_without_a_kind_is_a_users_checkpoint(
    api: FaultServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_jsonl(tmp_path / "c.jsonl", [{"company_id": f"c{i}"} for i in range(5)])
    checkpoint = tmp_path / "c.jsonl.checkpoint"
    # As written before companies existed: no "kind".
    checkpoint.write_text(json.dumps({"source": str(path), "position": 2, "version": 1}))
    argv = (str(path), "--application-id", "app", "--base-url", api.url)
    status, _, err = send(capsys, *argv)
    assert status == 2
    assert "belongs to a --kind users run" in err
    checkpoint.write_text(
        json.dumps({"source": str(path), "kind": "companies", "position": 2, "version": 1})
    )
    status, out, _ = send(capsys, *argv)
    assert status == 0, out
    assert "resumed after record 2" in out
    assert [record["company_id"] for record in api.accepted_records()] == ["c2", "c3", "c4"]


def test_an_outage_stops_the_run_and_a_rerun_resumes_after_the_checkpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    total = 3000
    path = write_jsonl(
        tmp_path / "companies.jsonl",
        [
            {"company_id": f"c{line:05d}", "metadata": {"line": line}}
            if line % 500
            else {"company_id": f"c{line:05d}", "metadata": "not an object"}
            for line in range(1, total + 1)
        ],
    )
    checkpoint = tmp_path / "companies.jsonl.checkpoint"
    first = FaultServer().start()

    class Outage:
        def stop(self) -> None:
            first.mode = Reset()  # every later request: the connection reset, no answer

    try:
        status, out = run_into_an_outage(
            capsys,
            Outage(),
            checkpoint,
            ("--kind", "companies", str(path), "--application-id", "app", "--base-url", first.url),
        )
    finally:
        first.stop()
    assert status == 3, out
    assert "STOPPED: not delivered after" in out
    saved = read_checkpoint(checkpoint)
    position = saved["position"]
    assert saved["kind"] == "companies"
    assert 1000 <= position < total
    valid = [f"c{line:05d}" for line in range(1, total + 1) if line % 500]
    delivered_first = [record["company_id"] for record in first.accepted_records()]
    settled = [company for company in valid if int(company[1:]) <= position]
    assert delivered_first[: len(settled)] == settled  # all confirmed, in order

    with FaultServer() as second:
        status, out = resume(
            capsys,
            "--kind",
            "companies",
            str(path),
            "--application-id",
            "app",
            "--base-url",
            second.url,
        )
        assert status == 1, out  # 6 invalid: 1 or 2 of them in this run
        assert f"resumed after record {position:,}" in out
        assert "all runs: 2,994 sent, 6 invalid, 0 failed" in out
        # The resumed run sent exactly what the checkpoint had not confirmed.
        assert [record["company_id"] for record in second.accepted_records()] == [
            company for company in valid if int(company[1:]) > position
        ]
        assert {request.path for request in second.received} == {COMPANIES}
    rejects = rejects_of(tmp_path / "companies.jsonl.rejects.jsonl")
    assert [(entry["line"], entry["field"]) for entry in rejects] == [
        (line, "metadata") for line in range(500, total + 1, 500)
    ]
