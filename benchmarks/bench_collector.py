"""Collector throughput: users/s (or companies/s) for 100-record batches over loopback HTTP.

Starts ``moesif_users_middleware.collector.serve`` in a subprocess on 127.0.0.1 (a new
database in a temporary directory), then per repeat, under a fresh application id:
pass 1 creates N users (or companies, with ``--kind companies``), pass 2 updates the same
records (metadata merge, a new session token, campaign fields). Bodies are serialized
before timing, so the figures are the collector's (HTTP + JSON + validation + merge +
SQLite), not the client's.

    python benchmarks/bench_collector.py [--kind users|companies] [--batches 200]
                                          [--batch-size 100] [--repeats 5] [--gzip]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent


def make_user(index: int, second_pass: bool) -> dict[str, Any]:
    """A user shaped like the reference's example, varied by ``index``."""
    user: dict[str, Any] = {
        "user_id": f"user-{index:07d}",
        "company_id": f"company-{index % 500}",
        "session_token": f"tok-{index}-{'b' if second_pass else 'a'}",
        "ip_address": f"10.{index % 256}.{(index // 256) % 256}.{index % 7}",
        "user_agent_string": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/126.0",
        "metadata": {
            "email": f"user{index}@acmeinc.com",
            "first_name": "John",
            "last_name": f"Doe{index}",
            "title": "Software Engineer",
            "sales_info": {
                "stage": "Customer" if second_pass else "Lead",
                "lifetime_value": 24000 + index,
                "account_owner": "mary@contoso.com",
            },
        },
    }
    if second_pass:
        user["campaign"] = {"utm_source": "google", "utm_medium": "cpc"}
        user["metadata"] = {"sales_info": {"stage": "Customer"}, "plan": "pro"}
    else:
        user["campaign"] = {
            "utm_source": "google",
            "utm_medium": "cpc",
            "utm_campaign": "adwords",
            "utm_term": "api+tooling",
            "utm_content": "landing",
        }
    return user


def make_company(index: int, second_pass: bool) -> dict[str, Any]:
    """A company shaped like the Companies API reference's example, varied by ``index``."""
    company: dict[str, Any] = {
        "company_id": f"company-{index:07d}",
        "company_domain": f"company{index}.example",
        "session_token": f"key-{index}-{'b' if second_pass else 'a'}",
        "ip_address": f"10.{index % 256}.{(index // 256) % 256}.{index % 7}",
        "metadata": {
            "org_name": f"Company {index}, Inc",
            "plan_name": "Free",
            "mrr": 24000 + index,
            "demographics": {"alexa_ranking": 500000 + index, "employee_count": 47},
        },
    }
    if second_pass:
        company["campaign"] = {"utm_source": "google", "utm_medium": "cpc"}
        company["metadata"] = {"demographics": {"employee_count": 52}, "plan_name": "Pro"}
    else:
        company["campaign"] = {
            "utm_source": "google",
            "utm_medium": "cpc",
            "utm_campaign": "adwords",
        }
    return company


# What each kind's records look like, and which of them the check reads back.
MAKERS = {"users": make_user, "companies": make_company}
PROBES = {"users": "user-0000001", "companies": "company-0000001"}


def make_bodies(
    kind: str, batches: int, size: int, second_pass: bool, compress: bool
) -> list[bytes]:
    make = MAKERS[kind]
    bodies = []
    for batch in range(batches):
        records = [make(batch * size + i, second_pass) for i in range(size)]
        body = json.dumps(records, separators=(",", ":")).encode()
        bodies.append(gzip.compress(body, 6) if compress else body)
    return bodies


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_server(db_path: Path, port: int) -> subprocess.Popen[bytes]:
    code = (
        "from moesif_users_middleware.collector import serve; "
        f"serve('127.0.0.1', {port}, {str(db_path)!r})"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen([sys.executable, "-c", code], env=env)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/v1/_stats", timeout=1)
            return process
        except httpx.TransportError:
            if process.poll() is not None:
                raise RuntimeError("collector exited during startup") from None
            time.sleep(0.05)
    process.terminate()
    raise RuntimeError("collector did not start")


def run_pass(
    client: httpx.Client, kind: str, headers: dict[str, str], bodies: list[bytes]
) -> float:
    start = time.perf_counter()
    for body in bodies:
        response = client.post(f"/v1/{kind}/batch", content=body, headers=headers)
        if response.status_code != 201:
            raise RuntimeError(f"unexpected {response.status_code}: {response.text[:200]}")
    return time.perf_counter() - start


def check_stored(client: httpx.Client, kind: str, headers: dict[str, str], count: int) -> None:
    """Fail loudly unless both passes were stored and merged."""
    stats = client.get("/v1/_stats", params={"kind": kind}, headers=headers).json()
    profile = client.get(f"/v1/{kind}/{PROBES[kind]}", headers=headers).json()
    if (stats[kind], stats["records"]) != (count, 2 * count):
        raise RuntimeError(f"unexpected stats {stats}")
    first, second = MAKERS[kind](1, False), MAKERS[kind](1, True)
    expected = _deep_merge(first["metadata"], second["metadata"])
    tokens = [first["session_token"], second["session_token"]]
    if profile["session_tokens"] != tokens or profile["metadata"] != expected:
        raise RuntimeError(f"unexpected profile {profile}")


def _deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        current = merged.get(key)
        if isinstance(current, dict) and isinstance(value, dict):
            value = _deep_merge(current, value)
        merged[key] = value
    return merged


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kind", choices=sorted(MAKERS), default="users")
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--gzip", action="store_true", help="send gzip bodies, like the sender")
    args = parser.parse_args()
    kind, count = args.kind, args.batches * args.batch_size
    create_bodies = make_bodies(kind, args.batches, args.batch_size, False, args.gzip)
    update_bodies = make_bodies(kind, args.batches, args.batch_size, True, args.gzip)
    extra = {"Content-Encoding": "gzip"} if args.gzip else {}

    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        process = start_server(Path(tmp) / "bench.db", port)
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
                creates, updates = [], []
                for _ in range(args.repeats):
                    app_id = "bench-" + uuid.uuid4().hex
                    headers = {"X-Moesif-Application-Id": app_id, **extra}
                    creates.append(count / run_pass(client, kind, headers, create_bodies))
                    updates.append(count / run_pass(client, kind, headers, update_bodies))
                    check_stored(client, kind, headers, count)
        finally:
            process.terminate()
            process.wait(10)

    body_kind = "gzip" if args.gzip else "plain"
    print(
        f"collector: {args.batches} batches x {args.batch_size} {kind} ({body_kind} JSON), "
        f"{args.repeats} repeats"
    )
    for label, rates in (("create", creates), ("update", updates)):
        print(
            f"  {label}: median {statistics.median(rates):,.0f} {kind}/s "
            f"(min {min(rates):,.0f}, max {max(rates):,.0f})"
        )


if __name__ == "__main__":
    main()
