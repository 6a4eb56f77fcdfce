"""Per-call cost of the hot-path parsers: client IP resolution and campaign extraction.

Run: python benchmarks/bench_parsers.py
Prints the median ns/call over several repeats of many calls each.
"""

from __future__ import annotations

import itertools
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from moesif_users_middleware._capture.campaign import extract_campaign
from moesif_users_middleware._capture.client_ip import ClientIpResolver

LOOPS = 100_000
REPEATS = 7


def median_ns(call: Callable[[], object], loops: int = LOOPS, repeats: int = REPEATS) -> float:
    """Median over ``repeats`` of the mean ns per call of ``loops`` calls."""
    call()  # warm caches
    samples = []
    for _ in range(repeats):
        start = time.perf_counter_ns()
        for _ in range(loops):
            call()
        samples.append((time.perf_counter_ns() - start) / loops)
    return statistics.median(samples)


def main() -> None:
    resolver = ClientIpResolver()
    no_headers: dict[str, str] = {}
    proxied = {"x-forwarded-for": "203.0.113.7, 10.0.0.2", "user-agent": "bench"}
    get_none = no_headers.get
    get_proxied = proxied.get

    def untrusted() -> object:
        return resolver.resolve("203.0.113.7", get_none)

    def trusted_chain() -> object:
        return resolver.resolve("127.0.0.1", get_proxied)

    # A different client on every call: the chain and client-hop caches always miss.
    fresh = ClientIpResolver()
    getters = [
        {"x-forwarded-for": f"198.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}, 10.0.0.2"}.get
        for i in range(LOOPS)
    ]
    next_getter = itertools.cycle(getters).__next__

    def trusted_chain_new_client() -> object:
        return fresh.resolve("127.0.0.1", next_getter())

    def empty_loop() -> object:
        return None

    def no_utm() -> object:
        return extract_campaign("page=2&sort=asc", None, "shop.example.com")

    def with_utm() -> object:
        return extract_campaign(
            "utm_source=google&utm_medium=cpc&utm_campaign=spring+sale&page=2",
            None,
            "shop.example.com",
        )

    def with_referer() -> object:
        return extract_campaign("", "https://news.example.org/story?id=1", "shop.example.com")

    def same_site_referer() -> object:
        return extract_campaign("", "https://shop.example.com/cart", "shop.example.com")

    assert untrusted() == "203.0.113.7"
    assert trusted_chain() == "203.0.113.7"
    assert same_site_referer() is None
    assert with_utm() == {
        "utm_source": "google",
        "utm_medium": "cpc",
        "utm_campaign": "spring sale",
    }

    overhead = median_ns(empty_loop)
    rows = [
        ("resolve: untrusted public peer", untrusted),
        ("resolve: trusted peer + XFF chain of 2 (cached)", trusted_chain),
        ("resolve: same, a new client every call (cache miss)", trusted_chain_new_client),
        ("extract_campaign: no utm, no referer", no_utm),
        ("extract_campaign: 3 utm params", with_utm),
        ("extract_campaign: cross-site referer", with_referer),
        ("extract_campaign: same-site referer", same_site_referer),
    ]
    print(f"python {sys.version.split()[0]}; median of {REPEATS} x {LOOPS} calls")
    print(f"{'empty call (loop overhead, included below)':50s} {overhead:8.0f} ns")
    for label, call in rows:
        print(f"{label:50s} {median_ns(call):8.0f} ns")


if __name__ == "__main__":
    main()
