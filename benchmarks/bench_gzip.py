"""Which gzip level for the sender's batch bodies: CPU per batch and bytes, levels side by side.

Builds realistic batches the way the sender does (compact JSON, one object per user with
``modified_time``, joined into one array): user ids, company ids, a session token (an
opaque API key or a JWT), an IP address, a browser or SDK user agent, a campaign, and
metadata of a few keys. Then compresses each body exactly as ``transport.compress`` does
(``zlib.compressobj(level, DEFLATED, 31)``: a gzip stream) at every level, the levels
taking turns round after round in one process, and reports the median of this thread's
CPU time per batch, the compressed size, and what the bytes cost on a few uplinks
(transfer time only; latency and TLS are the same at every level). Run::

    python benchmarks/bench_gzip.py [--rounds 30] [--levels 1,3,6,9] [--json]
"""

from __future__ import annotations

import argparse
import base64
import json
import random
import statistics
import sys
import time
import zlib
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from moesif_users_middleware.transport import GZIP_LEVEL

ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=False)
BATCH_SIZES = (100, 1000)
UPLINKS_MBIT = (10, 100)  # a small office or cloud egress, a LAN-class link
USER_AGENTS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_6) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/18.1 Safari/605.1.15",
    "Mozilla/5.0 (X11; Linux x86_64; rv:132.0) Gecko/20100101 Firefox/132.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
    "python-requests/2.32.3",
    "okhttp/4.12.0",
    "curl/8.5.0",
    "acme-sdk-node/3.4.1 node/20.11.0",
)
SOURCES = ("google", "newsletter", "twitter", "partner-site", "bing")
MEDIUMS = ("cpc", "email", "social", "referral")
PLANS = ("free", "starter", "pro", "enterprise")


def jwt(rng: random.Random, user_id: str) -> str:
    def part(value: bytes) -> str:
        return base64.urlsafe_b64encode(value).rstrip(b"=").decode()

    header = part(b'{"alg":"HS256","typ":"JWT"}')
    claims = part(
        ENCODER.encode({"sub": user_id, "iat": 1732000000 + rng.randrange(10**6)}).encode()
    )
    return f"{header}.{claims}.{part(rng.randbytes(32))}"


def user_record(rng: random.Random, number: int, stamp: datetime) -> str:
    """One user as the sender serializes it (its ``modified_time`` last)."""
    user_id = f"user-{rng.randrange(10**9):09d}"
    company = rng.randrange(5000)
    record: dict[str, Any] = {
        "user_id": user_id,
        "company_id": f"company-{company}",
        "session_token": (
            jwt(rng, user_id) if number % 2 else "sk_live_" + rng.randbytes(16).hex()
        ),
        "ip_address": ".".join(str(rng.randrange(1, 255)) for _ in range(4)),
        "user_agent_string": rng.choice(USER_AGENTS),
        "campaign": {
            "utm_source": rng.choice(SOURCES),
            "utm_medium": rng.choice(MEDIUMS),
            "utm_campaign": f"launch-{rng.randrange(40)}",
            "referrer": f"https://www.{rng.choice(SOURCES)}.com/",
        },
        "metadata": {
            "email": f"{user_id}@customer-{company}.example.com",
            "plan": rng.choice(PLANS),
            "seats": rng.randrange(1, 500),
            "signed_up": (stamp - timedelta(days=rng.randrange(900))).date().isoformat(),
        },
    }
    moment = (stamp + timedelta(milliseconds=number)).isoformat(timespec="milliseconds")
    return ENCODER.encode(record)[:-1] + ',"modified_time":"' + moment[:-6] + 'Z"}'


def batch_body(rng: random.Random, size: int) -> bytes:
    stamp = datetime(2026, 11, 28, 12, tzinfo=timezone.utc)
    return ("[" + ",".join(user_record(rng, n, stamp) for n in range(size)) + "]").encode()


def gzip_body(body: bytes, level: int) -> bytes:
    packer = zlib.compressobj(level, zlib.DEFLATED, 31)  # as transport.compress
    return packer.compress(body) + packer.flush()


def measure(
    bodies: dict[int, list[bytes]], levels: list[int], rounds: int
) -> dict[tuple[int, int], dict[str, float]]:
    """Per (batch size, level): median thread CPU per batch (µs) and mean compressed bytes."""
    cpu: dict[tuple[int, int], list[float]] = {(s, lv): [] for s in bodies for lv in levels}
    sizes: dict[tuple[int, int], list[int]] = {key: [] for key in cpu}
    for number in range(rounds):
        shift = number % len(levels)  # rotate the order: no level always goes first
        for size, samples in bodies.items():
            for level in levels[shift:] + levels[:shift]:
                start = time.thread_time_ns()
                packed = [gzip_body(body, level) for body in samples]
                elapsed = time.thread_time_ns() - start
                cpu[size, level].append(elapsed / len(samples) / 1e3)
                if number == 0:
                    sizes[size, level] += map(len, packed)
    return {
        key: {"cpu_us": statistics.median(cpu[key]), "bytes": statistics.fmean(sizes[key])}
        for key in cpu
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("--rounds", type=int, default=30, help="rounds (medians over them)")
    parser.add_argument("--levels", default="1,3,6,9", help="gzip levels to compare")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    options = parser.parse_args(argv)
    levels = [int(level) for level in options.levels.split(",")]
    rng = random.Random(12345)
    # Several distinct batches per size, so no level meets one lucky input.
    bodies = {size: [batch_body(rng, size) for _ in range(20_000 // size)] for size in BATCH_SIZES}
    results = measure(bodies, levels, options.rounds)
    if options.json:
        print(json.dumps({f"{s}/{lv}": r for (s, lv), r in results.items()}, indent=2))
        return 0
    print(f"Python {sys.version.split()[0]}, zlib {zlib.ZLIB_RUNTIME_VERSION}; ")
    print(f"GZIP_LEVEL in transport.py: {GZIP_LEVEL}; medians of {options.rounds} rounds\n")
    uplinks = " | ".join(f"{mbit} Mbit/s ms" for mbit in UPLINKS_MBIT)
    print(f"| users | level | JSON KiB | gzip KiB | ratio | CPU µs/batch | µs/user | {uplinks} |")
    print("|---:|---:|---:|---:|---:|---:|---:|" + "---:|" * len(UPLINKS_MBIT))
    for size, samples in bodies.items():
        raw = statistics.fmean(map(len, samples))
        for level in levels:
            r = results[size, level]
            wire = " | ".join(f"{r['bytes'] * 8 / (mbit * 1e3):.2f}" for mbit in UPLINKS_MBIT)
            print(
                f"| {size:,} | {level} | {raw / 1024:,.1f} | {r['bytes'] / 1024:,.1f} "
                f"| {raw / r['bytes']:.2f} | {r['cpu_us']:,.0f} | {r['cpu_us'] / size:.2f} "
                f"| {wire} |"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
