"""Collector throughput: users/s for 100-user batches over loopback HTTP.

Starts ``moesif_users_middleware.collector.serve`` in a subprocess on 127.0.0.1 (a new
database in a temporary directory), then per repeat, under a fresh application id:
pass 1 creates N users, pass 2 updates the same users (metadata merge, a new session
token, campaign fields). Bodies are serialized before timing, so the figures are the
collector's (HTTP + JSON + validation + merge + SQLite), not the client's.

    python benchmarks/bench_collector.py [--batches 200] [--batch-size 100] [--repeats 5]
                                          [--gzip]
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


def make_bodies(batches: int, size: int, second_pass: bool, compress: bool) -> list[bytes]:
    bodies = []
    for batch in range(batches):
        users = [make_user(batch * size + i, second_pass) for i in range(size)]
        body = json.dumps(users, separators=(",", ":")).encode()
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


def run_pass(client: httpx.Client, headers: dict[str, str], bodies: list[bytes]) -> float:
    start = time.perf_counter()
    for body in bodies:
        response = client.post("/v1/users/batch", content=body, headers=headers)
        if response.status_code != 201:
            raise RuntimeError(f"unexpected {response.status_code}: {response.text[:200]}")
    return time.perf_counter() - start


def check_stored(client: httpx.Client, headers: dict[str, str], users: int) -> None:
    """Fail loudly unless both passes were stored and merged."""
    stats = client.get("/v1/_stats", headers=headers).json()
    profile = client.get("/v1/users/user-0000001", headers=headers).json()
    if (stats["users"], stats["records"]) != (users, 2 * users):
        raise RuntimeError(f"unexpected stats {stats}")
    if profile["session_tokens"] != ["tok-1-a", "tok-1-b"] or profile["metadata"] != {
        **make_user(1, False)["metadata"],
        "sales_info": {**make_user(1, False)["metadata"]["sales_info"], "stage": "Customer"},
        "plan": "pro",
    }:
        raise RuntimeError(f"unexpected profile {profile}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--gzip", action="store_true", help="send gzip bodies, like the sender")
    args = parser.parse_args()
    users = args.batches * args.batch_size
    create_bodies = make_bodies(args.batches, args.batch_size, False, args.gzip)
    update_bodies = make_bodies(args.batches, args.batch_size, True, args.gzip)
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
                    creates.append(users / run_pass(client, headers, create_bodies))
                    updates.append(users / run_pass(client, headers, update_bodies))
                    check_stored(client, headers, users)
        finally:
            process.terminate()
            process.wait(10)

    body_kind = "gzip" if args.gzip else "plain"
    print(
        f"collector: {args.batches} batches x {args.batch_size} users ({body_kind} JSON), "
        f"{args.repeats} repeats"
    )
    for label, rates in (("create", creates), ("update", updates)):
        print(
            f"  {label}: median {statistics.median(rates):,.0f} users/s "
            f"(min {min(rates):,.0f}, max {max(rates):,.0f})"
        )


if __name__ == "__main__":
    main()
