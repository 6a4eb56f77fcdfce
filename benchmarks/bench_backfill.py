"""Backfill throughput and memory: ``moesif-users send`` on a generated JSON Lines file.

1. End to end: the collector runs under uvicorn in a subprocess (new SQLite database in
   a temporary directory); ``python -m moesif_users_middleware send FILE`` runs in
   another subprocess. Reported: records/s over the sender process's whole life
   (startup, line count, validation, gzip, HTTP, the collector storing every record) and
   the sender's peak RSS -- for N records and for N/10, to show memory does not grow
   with the file.
2. Sending side alone: the same ``send`` against a trivial loopback sink (a separate
   process answering ``200 {}`` as soon as a body has arrived), so the figure is
   validation + batching + gzip + HTTP on the sender's side.

``--kind companies`` sends company profiles (``send --kind companies``) instead of users.

    python benchmarks/bench_backfill.py [--users 1000000] [--kind companies] [--skip-collector]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
APP_ID = "bench-backfill"


def make_user(index: int, rng: random.Random) -> dict[str, Any]:
    """A user shaped like the reference's example (about 450 bytes of JSON), varied."""
    return {
        "user_id": f"user-{index:08d}",
        "company_id": f"company-{rng.randrange(5000)}",
        "session_token": f"tok-{rng.getrandbits(64):016x}",
        "ip_address": f"203.0.{rng.randrange(256)}.{rng.randrange(256)}",
        "user_agent_string": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/126.0",
        "campaign": {
            "utm_source": rng.choice(["google", "bing", "newsletter", "partner"]),
            "utm_medium": rng.choice(["cpc", "email", "referral"]),
            "utm_campaign": f"campaign-{rng.randrange(40)}",
        },
        "metadata": {
            "email": f"user{index}@acmeinc.com",
            "first_name": rng.choice(["John", "Mary", "Ana", "Wei", "Olu"]),
            "last_name": f"Doe{index}",
            "title": rng.choice(["Software Engineer", "CTO", "Product Manager"]),
            "sales_info": {
                "stage": rng.choice(["Lead", "Customer", "Churned"]),
                "lifetime_value": rng.randrange(100_000),
                "account_owner": "mary@contoso.com",
            },
        },
    }


def make_company(index: int, rng: random.Random) -> dict[str, Any]:
    """A company shaped like the reference's example (about 400 bytes of JSON), varied."""
    return {
        "company_id": f"company-{index:08d}",
        "company_domain": f"company{index}.example",
        "session_token": f"tok-{rng.getrandbits(64):016x}",
        "ip_address": f"203.0.{rng.randrange(256)}.{rng.randrange(256)}",
        "campaign": {
            "utm_source": rng.choice(["google", "bing", "newsletter", "partner"]),
            "utm_medium": rng.choice(["cpc", "email", "referral"]),
            "utm_campaign": f"campaign-{rng.randrange(40)}",
        },
        "metadata": {
            "org_name": f"Company {index}, Inc",
            "plan_name": rng.choice(["Free", "Team", "Enterprise"]),
            "mrr": rng.randrange(100_000),
            "demographics": {
                "alexa_ranking": rng.randrange(1_000_000),
                "employee_count": rng.randrange(5000),
            },
            "account_owner": "mary@contoso.com",
        },
    }


MAKERS = {"users": make_user, "companies": make_company}


def generate(path: Path, count: int, kind: str = "users") -> None:
    make = MAKERS[kind]
    rng = random.Random(count)
    dumps = json.JSONEncoder(separators=(", ", ": ")).encode
    with path.open("w", encoding="utf-8") as file:
        for index in range(count):
            file.write(dumps(make(index, rng)) + "\n")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_ready(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            httpx.get(url, headers={"X-Moesif-Application-Id": APP_ID}, timeout=1.0)
            return
        except httpx.HTTPError:
            time.sleep(0.05)
    raise RuntimeError(f"{url} did not come up")


def python_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def run_send(path: Path, base_url: str, application_id: str, kind: str) -> dict[str, Any]:
    """Run ``send`` in a subprocess; wall time, peak RSS (from wait4) and its summary."""
    command = [
        sys.executable,
        "-m",
        "moesif_users_middleware",
        "send",
        "--kind",
        kind,
        str(path),
        "--application-id",
        application_id,
        "--base-url",
        base_url,
        "--progress",
        "none",
        "--restart",
    ]
    with tempfile.TemporaryFile("w+") as out_file, tempfile.TemporaryFile("w+") as err_file:
        started = time.monotonic()
        process = subprocess.Popen(command, env=python_env(), stdout=out_file, stderr=err_file)
        _, status, usage = os.wait4(process.pid, 0)  # wait4: the child's own peak RSS
        elapsed = time.monotonic() - started
        out_file.seek(0)
        err_file.seek(0)
        out, err = out_file.read(), err_file.read()
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise RuntimeError(f"send failed ({process.returncode}):\n{out}\n{err}")
    match = re.search(rf"sent: ([\d,]+) {kind}", out)
    sent = int(match.group(1).replace(",", "")) if match else 0
    inner = re.search(rf"\(([\d,]+) {kind}/s\)", out)
    return {
        "sent": sent,
        "wall": elapsed,
        "rate": sent / elapsed,
        "inner_rate": int(inner.group(1).replace(",", "")) if inner else 0,
        "peak_rss_mb": usage.ru_maxrss / 1024,
        "command": " ".join(command[1:]),
    }


def start_collector(directory: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "moesif_users_middleware",
            "collector",
            "--port",
            str(port),
            "--db",
            str(directory / "collector.db"),
            "--log-level",
            "warning",
        ],
        env=python_env(),
    )
    url = f"http://127.0.0.1:{port}"
    wait_ready(url + "/v1/_stats")
    return process, url


def start_sink() -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, __file__, "--serve-sink", str(port)], env=python_env()
    )
    url = f"http://127.0.0.1:{port}"
    wait_ready(url + "/ready")
    return process, url


def serve_sink(port: int) -> None:
    """Answer every request with ``200 {}`` once its body has arrived (keep-alive)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                match = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head)
                if match:
                    await reader.readexactly(int(match.group(1)))
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    b"Content-Length: 2\r\n\r\n{}"
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    async def main() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", port)
        async with server:
            await server.serve_forever()

    asyncio.run(main())


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=1_000_000, help="records to send")
    parser.add_argument("--kind", choices=tuple(MAKERS), default="users")
    parser.add_argument("--skip-collector", action="store_true", help="only the sink figure")
    parser.add_argument("--serve-sink", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_sink:
        serve_sink(args.serve_sink)
        return

    kind, count, tenth = args.kind, args.users, max(1, args.users // 10)
    with tempfile.TemporaryDirectory(prefix="bench-backfill-") as tmp:
        directory = Path(tmp)
        big = directory / f"{kind}.jsonl"
        small = directory / f"{kind}-small.jsonl"
        started = time.monotonic()
        generate(big, count, kind)
        generate(small, tenth, kind)
        print(
            f"generated {count:,} {kind} ({big.stat().st_size / 1e6:,.0f} MB) and "
            f"{tenth:,} in {time.monotonic() - started:.1f} s",
            flush=True,
        )
        rows: list[tuple[str, dict[str, Any]]] = []

        sink, sink_url = start_sink()
        try:
            rows.append((f"sink, {count:,} {kind}", run_send(big, sink_url, APP_ID, kind)))
            rows.append((f"sink, {tenth:,} {kind}", run_send(small, sink_url, APP_ID, kind)))
        finally:
            stop(sink)

        if not args.skip_collector:
            collector, url = start_collector(directory)
            try:
                big_id, small_id = APP_ID + "-big", APP_ID + "-small"
                rows.append((f"collector, {count:,} {kind}", run_send(big, url, big_id, kind)))
                rows.append((f"collector, {tenth:,} {kind}", run_send(small, url, small_id, kind)))
                check_stored(url, big_id, kind, count)
            finally:
                stop(collector)

    print()
    print(f"| run | {kind}/s (whole process) | {kind}/s (run) | wall s | sender peak RSS |")
    print("|---|---:|---:|---:|---:|")
    for label, row in rows:
        print(
            f"| {label} | {row['rate']:,.0f} | {row['inner_rate']:,} | {row['wall']:.1f} "
            f"| {row['peak_rss_mb']:.0f} MB |"
        )
    print()
    print("sender command:", rows[0][1]["command"])


def check_stored(url: str, application_id: str, kind: str, expected: int) -> None:
    """The collector holds every record sent (its stats count each kind's profiles)."""
    stats = httpx.get(
        url + "/v1/_stats",
        params={"kind": kind},
        headers={"X-Moesif-Application-Id": application_id},
        timeout=30,
    ).json()
    if stats.get(kind) != expected:
        raise RuntimeError(f"collector holds {stats.get(kind)} {kind}, not {expected}")


if __name__ == "__main__":
    main()
