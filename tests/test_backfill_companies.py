"""``moesif-users send --kind companies``: company profiles at the real collector over
loopback HTTP (the Companies API: ``POST /v1/companies/batch``, ``GET /v1/companies/{id}``)."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from servers import APP_ID_HEADER, CollectorHandle
from test_backfill_resume import read_checkpoint, resume, run_into_an_outage

from moesif_users_middleware.cli import main
from moesif_users_middleware.collector.kinds import COMPANIES
from moesif_users_middleware.collector.store import partition_key


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


class Companies:
    """The companies of one application id at a collector, read through its HTTP API."""

    def __init__(self, url: str, application_id: str, client: Any) -> None:
        self.url = url
        self.argv = ("--application-id", application_id, "--base-url", url)
        self._client = client
        self._headers = {APP_ID_HEADER: application_id}

    def get(self, company_id: str) -> dict[str, Any]:
        response = self._client.get(
            f"{self.url}/v1/companies/{quote(company_id, safe='')}", headers=self._headers
        )
        response.raise_for_status()
        profile: dict[str, Any] = response.json()
        return profile

    def ids(self) -> list[str]:
        response = self._client.get(
            f"{self.url}/v1/companies", params={"limit": 1000}, headers=self._headers
        )
        response.raise_for_status()
        return [profile["company_id"] for profile in response.json()]

    def stats(self, kind: str = "companies") -> dict[str, int]:
        response = self._client.get(
            f"{self.url}/v1/_stats", params={"kind": kind}, headers=self._headers
        )
        response.raise_for_status()
        stats: dict[str, int] = response.json()
        return stats


@pytest.fixture
def api(collector: CollectorHandle, app_id: str) -> Companies:
    return Companies(collector.url, app_id, collector.client)


def test_json_jsonl_and_csv_companies_arrive(
    api: Companies, tmp_path: Path, capsys: pytest.CaptureFixture[str]
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
        status, out, _ = send(capsys, str(path), *api.argv)
        assert status == 0, out
        assert f"sent: {len(companies)} companies in 1 request" in out
        assert "companies/s" in out

    stats = api.stats()
    assert (stats["batches"], stats["records"], stats["companies"]) == (3, 36, 12)
    assert api.stats("users")["requests"] == 0
    profile = api.get("co-7")
    assert {
        key: profile.get(key) for key in ("company_domain", "session_tokens", "ip_address")
    } == {
        "company_domain": "co-7.test",
        "session_tokens": ["tok-co-7"],
        "ip_address": "::1",
    }
    assert profile["campaign"] == {"utm_source": "google"}
    # The JSON file's plan is replaced by the CSV's (sent later); nested and typed.
    assert profile["metadata"] == {"plan": "pro", "sales": {"mrr": 700}}
    assert api.ids() == sorted(companies)


def test_invalid_companies_go_to_the_rejects_file_naming_the_field(
    api: Companies, tmp_path: Path, capsys: pytest.CaptureFixture[str]
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
    status, out, _ = send(capsys, str(path), *api.argv)
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
    assert api.ids() == ["ok-1", "ok-4"]

    table = tmp_path / "companies.csv"
    table.write_text(
        "company_id,company_domain,metadata\n"
        'c1,c1.test,"{""plan"": ""pro""}"\n'
        ",orphan.test,\n"  # line 3: no company_id
        'c2,,"[1, 2]"\n',  # line 4: metadata not an object
        encoding="utf-8",
    )
    status, out, _ = send(capsys, str(table), *api.argv)
    assert status == 1, out
    rejects = rejects_of(tmp_path / "companies.csv.rejects.jsonl")
    assert [(entry["line"], entry["field"]) for entry in rejects] == [
        (3, "company_id"),
        (4, "metadata"),
    ]
    assert rejects[1]["record"] == {"company_id": "c2", "company_domain": "", "metadata": "[1, 2]"}
    assert api.ids() == ["c1", "ok-1", "ok-4"]
    c1 = api.get("c1")
    assert (c1["company_domain"], c1["metadata"]) == ("c1.test", {"plan": "pro"})


def test_a_csv_header_of_another_kind_is_malformed_input(
    api: Companies, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    users = tmp_path / "users.csv"
    users.write_text("user_id,company_id\nu1,acme\n", encoding="utf-8")
    status, _, err = send(capsys, str(users), *api.argv)
    assert status == 2
    assert "unknown column 'user_id'" in err
    assert "CSV columns of companies are company_id, company_domain," in err
    no_id = tmp_path / "domains.csv"
    no_id.write_text("company_domain\nacme.test\n", encoding="utf-8")
    status, _, err = send(capsys, str(no_id), *api.argv)
    assert status == 2
    assert "no company_id column" in err
    assert api.stats()["requests"] == 0


def test_dry_run_validates_companies_and_sends_nothing(
    api: Companies, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_jsonl(
        tmp_path / "companies.jsonl",
        [{"company_id": f"co-{index}"} for index in range(250)] + [{"company_id": ""}],
    )
    status, out, _ = send(capsys, str(path), "--dry-run", "--batch-size", "100", *api.argv)
    assert status == 1  # one invalid record
    assert "valid (dry run, nothing sent): 250 companies" in out
    assert api.stats()["requests"] == 0
    assert not (tmp_path / "companies.jsonl.checkpoint").exists()
    dry_rejects = rejects_of(tmp_path / "companies.jsonl.dry-run.rejects.jsonl")
    assert [(entry["line"], entry["field"]) for entry in dry_rejects] == [(251, "company_id")]


def test_progress_and_summary_count_companies(
    api: Companies, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ("--progress", "log", *api.argv)
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
    api: Companies, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A file that is valid as both kinds: the users run must not be continued as companies.
    path = write_jsonl(
        tmp_path / "ids.jsonl", [{"user_id": f"u{i}", "company_id": f"c{i}"} for i in range(3)]
    )
    argv = (str(path), *api.argv)
    status = main(["send", "--progress", "none", *argv])  # --kind users: the default
    assert status == 0, capsys.readouterr()
    capsys.readouterr()
    checkpoint = json.loads((tmp_path / "ids.jsonl.checkpoint").read_text(encoding="utf-8"))
    assert (checkpoint["kind"], checkpoint["position"]) == ("users", 3)

    status, out, err = send(capsys, *argv)
    assert status == 2, out
    assert f"checkpoint {path}.checkpoint belongs to a --kind users run" in err
    assert "this run sends companies; pass --kind users to resume it" in err
    assert (api.stats("users")["users"], api.stats()["requests"]) == (3, 0)

    status, out, _ = send(capsys, *argv, "--restart")  # starts a companies run over
    assert status == 1, out  # the users' other fields are not company fields
    checkpoint = json.loads((tmp_path / "ids.jsonl.checkpoint").read_text(encoding="utf-8"))
    assert (checkpoint["kind"], checkpoint["invalid"]) == ("companies", 3)
    status = main(["send", "--progress", "none", *argv])
    assert status == 2
    assert "belongs to a --kind companies run, and this run sends users" in capsys.readouterr().err


def test_a_checkpoint_without_a_kind_is_a_users_checkpoint(
    api: Companies, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_jsonl(tmp_path / "c.jsonl", [{"company_id": f"c{i}"} for i in range(5)])
    checkpoint = tmp_path / "c.jsonl.checkpoint"
    # As written before companies existed: no "kind".
    checkpoint.write_text(json.dumps({"source": str(path), "position": 2, "version": 1}))
    argv = (str(path), *api.argv)
    status, _, err = send(capsys, *argv)
    assert status == 2
    assert "belongs to a --kind users run" in err
    checkpoint.write_text(
        json.dumps({"source": str(path), "kind": "companies", "position": 2, "version": 1})
    )
    status, out, _ = send(capsys, *argv)
    assert status == 0, out
    assert "resumed after record 2" in out
    assert api.ids() == ["c2", "c3", "c4"]


def test_an_outage_stops_the_run_and_a_rerun_resumes_after_the_checkpoint(
    fresh_collector: Callable[..., Any],
    app_id: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    total, invalid_every = 3000, 500  # lines 500, 1000, ... have a metadata that is no object
    path = write_jsonl(
        tmp_path / "companies.jsonl",
        [
            {"company_id": f"c{line:05d}", "metadata": {"line": line} if line % 500 else "x"}
            for line in range(1, total + 1)
        ],
    )

    def valid_before(position: int) -> int:
        return position - position // invalid_every

    db = tmp_path / "collector.db"
    first = fresh_collector(db)
    checkpoint = tmp_path / "companies.jsonl.checkpoint"
    argv = ("--kind", "companies", str(path), "--application-id", app_id, "--base-url", first.url)
    status, out = run_into_an_outage(capsys, first, checkpoint, argv)
    assert status == 3, out
    assert "STOPPED: not delivered after" in out
    saved = read_checkpoint(checkpoint)
    position = saved["position"]
    assert (saved["kind"], position < total) == ("companies", True)
    delivered_first = first.app.state.store.stats(partition_key(app_id), COMPANIES)["records"]
    # At most the batch in flight was delivered without being checkpointed.
    assert valid_before(position) <= delivered_first <= valid_before(position) + 100

    second = fresh_collector(db, port=first.port)
    status, out = resume(capsys, *argv)
    assert status == 1, out  # the invalid records, of both runs
    assert f"resumed after record {position:,}" in out
    assert "all runs: 2,994 sent, 6 invalid, 0 failed" in out
    with httpx.Client(timeout=10.0) as client:
        api = Companies(second.url, app_id, client)
        # Nothing the first run confirmed was sent again; every valid company is stored.
        assert api.stats()["records"] == valid_before(total) - valid_before(position)
        assert api.stats()["companies"] == valid_before(total)
        assert api.get("c02999")["metadata"] == {"line": 2999}
    rejects = rejects_of(tmp_path / "companies.jsonl.rejects.jsonl")
    assert [(entry["line"], entry["field"]) for entry in rejects] == [
        (line, "metadata") for line in range(invalid_every, total + 1, invalid_every)
    ]
