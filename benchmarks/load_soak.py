"""Load and soak: real servers on loopback, driven by ``wrk`` with 1,000 rotating users.

For each server — FastAPI under uvicorn (one worker), Flask and Django under gunicorn
(sync workers) — three variants, each its own server process:

- ``bare``: the middleware built with ``enabled=False`` (the baseline);
- ``healthy``: the middleware sending to a local collector (``moesif-users collector``);
- ``blackhole``: the middleware sending to a TCP listener that accepts and never answers.

The three servers of a kind run side by side. Each gets a warm-up run (every user seen
at least once); then the measured time is cut into ``--rounds`` turns and the variants
take turns, round after round, so that whatever else the machine does falls on all of
them alike (``--rounds 1``: one continuous run each). wrk gives requests per second and
the latency distribution (p50/p99 over all rounds); the server's RSS (VmRSS of the
worker processes) is read after boot, after the warm-up and at the end. Then each server
gets SIGTERM (its exit flush delivers what is pending) and, for ``healthy``, the
collector must hold every user. Requests carry ``Authorization: Bearer user-<n>``, a
per-user ``User-Agent`` and ``utm_*`` query parameters; the apps are ``load_fastapi.py``,
``load_flask.py`` and ``load_django.py`` beside this file, each authenticating a request
once, in its own layer, for the route and the hooks alike.

    python benchmarks/load_soak.py                  # 60 s per variant
    python benchmarks/load_soak.py --quick          # 10 s smoke run
    python benchmarks/load_soak.py --output load.md

Needs ``wrk`` (Debian: ``apt-get install wrk``), uvicorn, gunicorn, FastAPI, Flask and
Django (for the servers chosen with ``--servers``).
All traffic stays on 127.0.0.1; the script stops everything it started.
"""

from __future__ import annotations

import argparse
import os
import platform
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from contextlib import ExitStack, suppress
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"
APP_ID_HEADER = "X-Moesif-Application-Id"
HOST = "127.0.0.1"
SERVERS = ("fastapi", "flask", "django")
VARIANTS = ("bare", "healthy", "blackhole")

# wrk's Lua: thread k of T sends users k, k+T, k+2T, ... (mod USERS), so every user is
# seen once per USERS requests; each user keeps one user agent and one campaign.
LUA = """
local users = {users}
local step = {threads}
local counter = 0
local next_id = 0

function setup(thread)
  thread:set("id", next_id)
  next_id = next_id + 1
end

function init(args)
  counter = id
end

function request()
  local n = counter % users
  counter = counter + step
  local path = "/items?utm_source=src" .. (n % 7) .. "&utm_medium=email&utm_campaign=launch" .. (n % 13)
  return wrk.format("GET", path, {{
    ["Authorization"] = "Bearer user-" .. n,
    ["User-Agent"] = "load-client/" .. (n % 20) .. ".0",
  }})
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT requests=%d duration_us=%d status=%d socket=%d\\n",
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout))
  for p = 1, 99 do
    io.write(string.format("PCT %d %d\\n", p, latency:percentile(p)))
  end
  io.write(string.format("PCT 99.9 %d\\n", latency:percentile(99.9)))
end
"""


# --- processes ---------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def base_env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(BENCHMARKS)])}
    for name in ("MOESIF_APPLICATION_ID", "MOESIF_BASE_URL", "LOAD_MOESIF"):
        env.pop(name, None)
    env.update(extra)
    return env


class Processes:
    """Every subprocess this script starts; ``stop_all`` ends whatever is still running."""

    def __init__(self) -> None:
        self.started: list[subprocess.Popen[bytes]] = []

    def start(self, args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
        with log.open("ab") as out:
            # Own session: a stuck server's workers can be killed with it as a group.
            process = subprocess.Popen(
                args,
                env=env,
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.started.append(process)
        return process

    def stop_all(self) -> None:
        for process in self.started:
            if process.poll() is None:
                terminate(process, timeout=10.0)


def terminate(process: subprocess.Popen[bytes], timeout: float) -> float:
    """SIGTERM, wait up to ``timeout`` (then SIGKILL the group); the seconds it took to exit."""
    start = time.monotonic()
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            with suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(5.0)
            return float("inf")
    return time.monotonic() - start


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


def answers(url: str, headers: dict[str, str] | None = None) -> bool:
    try:
        return httpx.get(url, headers=headers, timeout=2.0).status_code == 200
    except httpx.HTTPError:
        return False


def children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(child) for child in text.split()]


def rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


# --- the collector and the blackhole -----------------------------------------------------
class Blackhole:
    """A loopback TCP listener that accepts, reads and never answers (until stopped)."""

    def __init__(self) -> None:
        self.listener = socket.create_server((HOST, 0))
        self.listener.setblocking(False)
        self.url = f"http://{HOST}:{self.listener.getsockname()[1]}"
        self.accepted = 0
        self.received_bytes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="blackhole", daemon=True)

    def __enter__(self) -> Blackhole:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5.0)

    def _run(self) -> None:
        with selectors.DefaultSelector() as selector:
            selector.register(self.listener, selectors.EVENT_READ)
            while not self._stop.is_set():
                for key, _ in selector.select(timeout=0.2):
                    sock: socket.socket = key.fileobj  # type: ignore[assignment]
                    if sock is self.listener:
                        try:
                            conn, _ = sock.accept()
                        except BlockingIOError:
                            continue
                        conn.setblocking(False)
                        selector.register(conn, selectors.EVENT_READ)
                        self.accepted += 1
                        continue
                    try:
                        data = sock.recv(65536)
                    except BlockingIOError:
                        continue
                    except ConnectionError:
                        data = b""  # reset by the client: close our end too
                    if data:
                        self.received_bytes += len(data)
                    else:
                        selector.unregister(sock)
                        sock.close()
            for key in list(selector.get_map().values()):
                key.fileobj.close()  # type: ignore[union-attr]


def start_collector(processes: Processes, workdir: Path) -> str:
    port = free_port()
    args = [sys.executable, "-m", "moesif_users_middleware", "collector"]
    args += ["--host", HOST, "--port", str(port), "--db", str(workdir / "collector.db")]
    processes.start(args, base_env(), workdir / "collector.log")
    url = f"http://{HOST}:{port}"
    wait_until(lambda: answers(f"{url}/v1/_stats", {APP_ID_HEADER: "probe"}), 30, "the collector")
    return url


def collector_users(url: str, application_id: str) -> set[str]:
    users: set[str] = set()
    with httpx.Client(base_url=url, headers={APP_ID_HEADER: application_id}, timeout=30) as client:
        while True:
            page = client.get("/v1/users", params={"limit": 1000, "offset": len(users)})
            page.raise_for_status()
            rows: list[dict[str, Any]] = page.json()
            users.update(str(row["user_id"]) for row in rows)
            if len(rows) < 1000:
                return users


# --- servers -----------------------------------------------------------------------------
def gunicorn_has_control_socket() -> bool:
    help_text = subprocess.run(
        [sys.executable, "-m", "gunicorn", "--help"], capture_output=True, text=True, timeout=30
    ).stdout
    return "--no-control-socket" in help_text


@dataclass
class Server:
    kind: str
    process: subprocess.Popen[bytes]
    url: str
    workers: int

    def worker_pids(self) -> list[int]:
        if self.kind == "fastapi":
            return [self.process.pid]
        return children(self.process.pid)

    def rss_mib(self) -> list[float]:
        return [rss_kib(pid) / 1024 for pid in self.worker_pids()]


def start_server(
    kind: str, processes: Processes, env: dict[str, str], log: Path, workers: int
) -> Server:
    port = free_port()
    if kind == "fastapi":
        args = [sys.executable, "-m", "uvicorn", "--factory", "load_fastapi:create_app"]
        args += ["--host", HOST, "--port", str(port), "--log-level", "warning", "--no-access-log"]
        workers = 1
    else:
        args = [sys.executable, "-m", "gunicorn", "--workers", str(workers), "--worker-class"]
        args += ["sync", "--bind", f"{HOST}:{port}", "--log-level", "warning"]
        if gunicorn_has_control_socket():
            args.append("--no-control-socket")  # no socket in $HOME shared with others
        args.append("load_flask:create_app()" if kind == "flask" else "load_django:application")
    server = Server(kind, processes.start(args, env, log), f"http://{HOST}:{port}", workers)

    def ready() -> bool:
        if server.process.poll() is not None:
            raise RuntimeError(f"the {kind} server exited at start:\n{log.read_text()[-3000:]}")
        return len(server.worker_pids()) == workers and answers(server.url + "/items")

    try:
        wait_until(ready, 60, f"the {kind} server")
    except TimeoutError as error:
        raise TimeoutError(f"{error}:\n{log.read_text()[-3000:]}") from None
    return server


# --- wrk ---------------------------------------------------------------------------------
@dataclass
class WrkRun:
    """One wrk run, from the script's ``done()`` lines (latency in ms, per percent)."""

    requests: int = 0
    seconds: float = 0.0
    non_2xx: int = 0
    socket_errors: int = 0
    percentiles: list[tuple[float, float]] = field(default_factory=list)


def parse_wrk(output: str) -> WrkRun:
    run = WrkRun()
    for line in output.splitlines():
        fields = line.split()
        if fields[:1] == ["RESULT"]:
            values = dict(field.split("=") for field in fields[1:])
            run.requests = int(values["requests"])
            run.seconds = int(values["duration_us"]) / 1e6
            run.non_2xx = int(values["status"])
            run.socket_errors = int(values["socket"])
        elif fields[:1] == ["PCT"]:
            run.percentiles.append((float(fields[1]), int(fields[2]) / 1000))
    if not run.seconds or not run.percentiles:
        raise RuntimeError(f"could not read wrk's output:\n{output}")
    return run


def run_wrk(url: str, script: Path, seconds: int, threads: int, connections: int) -> WrkRun:
    args = ["wrk", "--threads", str(threads), "--connections", str(connections)]
    args += ["--duration", f"{seconds}s", "--timeout", "5s", "--script", str(script)]
    completed = subprocess.run(
        [*args, url + "/items"], capture_output=True, text=True, timeout=seconds + 60, check=False
    )
    if completed.returncode != 0:
        raise RuntimeError(f"wrk failed ({completed.returncode}): {completed.stderr}")
    return parse_wrk(completed.stdout)


def merged_percentile(runs: list[WrkRun], percent: float) -> float:
    """The percentile of all runs' requests together (each run's distribution weighted)."""
    total = sum(run.requests for run in runs)

    def below(run: WrkRun, value: float) -> float:
        return max((p for p, v in run.percentiles if v <= value), default=0.0) / 100

    for value in sorted({v for run in runs for _, v in run.percentiles}):
        if sum(run.requests * below(run, value) for run in runs) >= total * percent / 100:
            return value
    return max(v for run in runs for _, v in run.percentiles)


@dataclass
class Totals:
    requests: int
    seconds: float
    p50: float
    p99: float
    non_2xx: int
    socket_errors: int

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    @classmethod
    def of(cls, runs: list[WrkRun]) -> Totals:
        return cls(
            requests=sum(run.requests for run in runs),
            seconds=sum(run.seconds for run in runs),
            p50=merged_percentile(runs, 50),
            p99=merged_percentile(runs, 99),
            non_2xx=sum(run.non_2xx for run in runs),
            socket_errors=sum(run.socket_errors for run in runs),
        )


# --- one server kind, its variants interleaved --------------------------------------------
@dataclass
class Outcome:
    server: str
    variant: str
    result: Totals
    rss_boot: list[float]
    rss_start: list[float]
    rss_end: list[float]
    exit_seconds: float
    sender: dict[str, int]
    users_expected: int
    users_found: int | None
    load: float  # the machine's 1-minute load average after the measured rounds


def run_kind(
    kind: str,
    options: argparse.Namespace,
    workdir: Path,
    collector_url: str,
    blackhole_url: str,
    processes: Processes,
    script: Path,
) -> list[Outcome]:
    """Start one server per variant, warm each, then measure them in turn, round by round.

    Interleaving spreads whatever else the machine does over every variant alike.
    """
    variants: list[str] = options.variants
    ids = {v: f"load-{kind}-{v}-{uuid.uuid4().hex[:8]}" for v in variants}
    servers: dict[str, Server] = {}
    for variant in variants:
        env = base_env(
            MOESIF_APPLICATION_ID=ids[variant],
            MOESIF_BASE_URL=blackhole_url if variant == "blackhole" else collector_url,
            LOAD_MOESIF="off" if variant == "bare" else "on",
        )
        log = workdir / f"{kind}-{variant}.log"
        servers[variant] = start_server(kind, processes, env, log, options.workers)
    rss_boot = {v: servers[v].rss_mib() for v in variants}
    for variant in variants:
        warm = run_wrk(
            servers[variant].url, script, options.warmup, options.threads, options.connections
        )
        if warm.requests < options.users:
            raise RuntimeError(f"{kind}/{variant}: warm-up sent fewer requests than users")
    rss_start = {v: servers[v].rss_mib() for v in variants}
    burst = max(1, round(options.duration / options.rounds))
    runs: dict[str, list[WrkRun]] = {v: [] for v in variants}
    for number in range(options.rounds):
        shift = number % len(variants)  # rotate the order: no variant always goes first
        for variant in variants[shift:] + variants[:shift]:
            url = servers[variant].url
            runs[variant].append(run_wrk(url, script, burst, options.threads, options.connections))
    load = os.getloadavg()[0]
    outcomes = []
    for variant in variants:
        server = servers[variant]
        rss_end = server.rss_mib()
        sender: dict[str, int] = {}
        with suppress(httpx.HTTPError, ValueError):
            sender = httpx.get(server.url + "/_sender", timeout=5).json()
        exit_seconds = terminate(server.process, timeout=60.0)
        users_found = None
        if variant != "blackhole":
            users_found = len(collector_users(collector_url, ids[variant]))
        outcomes.append(
            Outcome(
                server=kind,
                variant=variant,
                result=Totals.of(runs[variant]),
                rss_boot=rss_boot[variant],
                rss_start=rss_start[variant],
                rss_end=rss_end,
                exit_seconds=exit_seconds,
                sender=sender,
                users_expected=options.users if variant == "healthy" else 0,
                users_found=users_found,
                load=load,
            )
        )
    return outcomes


# --- report ------------------------------------------------------------------------------
def mib(values: list[float]) -> str:
    return "+".join(f"{value:.1f}" for value in values) or "?"


def installed(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def report(outcomes: list[Outcome], options: argparse.Namespace, command: str) -> str:
    bare = {o.server: o.result.rps for o in outcomes if o.variant == "bare"}
    lines = [
        f"Command: `{command}`",
        "",
        f"Machine: {os.cpu_count()} cores, Python {platform.python_version()}, "
        + ", ".join(
            f"{name} {installed(name)}"
            for name in ("fastapi", "starlette", "uvicorn", "flask", "django", "gunicorn")
        )
        + f", wrk {options.threads} thread(s) x {options.connections} connections, "
        + f"{options.users} users; per variant {options.warmup} s warm-up, then "
        + f"{options.duration} s measured in {options.rounds} round(s), the variants taking turns.",
        "",
        "| server | variant | req/s | vs bare | p50 ms | p99 ms | non-2xx | socket errors "
        "| RSS MiB boot / warm / end | exit s | users at collector | sender sent / retries / failed / dropped | load |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|---:|---|---|---:|",
    ]
    for o in outcomes:
        r = o.result
        ratio = f"{r.rps / bare[o.server]:.2f}" if bare.get(o.server) else "-"
        users = "-" if o.users_found is None else f"{o.users_found} / {o.users_expected}"
        s = o.sender
        sender = (
            f"{s.get('sent', 0)} / {s.get('retries', 0)} / {s.get('failed', 0)} / {s.get('dropped', 0)}"
            if s
            else "-"
        )
        lines.append(
            f"| {o.server} | {o.variant} | {r.rps:,.0f} | {ratio} | {r.p50:.2f} "
            f"| {r.p99:.2f} | {r.non_2xx} | {r.socket_errors} "
            f"| {mib(o.rss_boot)} / {mib(o.rss_start)} / {mib(o.rss_end)} | {o.exit_seconds:.1f} "
            f"| {users} | {sender} | {o.load:.1f} |"
        )
    return "\n".join(lines) + "\n"


def failures(outcomes: list[Outcome]) -> list[str]:
    problems = []
    for o in outcomes:
        name = f"{o.server}/{o.variant}"
        if o.users_found is not None and o.users_found != o.users_expected:
            problems.append(
                f"{name}: {o.users_found} users at the collector, expected {o.users_expected}"
            )
        if o.result.non_2xx or o.result.socket_errors:
            problems.append(
                f"{name}: {o.result.non_2xx} non-2xx, {o.result.socket_errors} socket errors"
            )
    return problems


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("--duration", type=int, default=60, help="measured seconds per variant")
    parser.add_argument("--warmup", type=int, default=10, help="warm-up seconds per variant")
    parser.add_argument(
        "--rounds", type=int, default=6, help="split the measured time into this many turns"
    )
    parser.add_argument(
        "--quick", action="store_true", help="10 s measured in 2 rounds, 3 s warm-up"
    )
    parser.add_argument("--users", type=int, default=1000, help="distinct users (>= 1,000)")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads")
    parser.add_argument("--connections", type=int, default=16, help="wrk connections")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn sync workers")
    parser.add_argument("--servers", default=",".join(SERVERS), help="fastapi,flask,django")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="bare,healthy,blackhole")
    parser.add_argument("--output", type=Path, help="also write the markdown table here")
    options = parser.parse_args(argv)
    if options.quick:
        options.duration, options.warmup, options.rounds = 10, 3, 2
    options.servers = [s for s in options.servers.split(",") if s]
    options.variants = [v for v in options.variants.split(",") if v]
    if not set(options.servers) <= set(SERVERS) or not set(options.variants) <= set(VARIANTS):
        parser.error(f"servers are {SERVERS}, variants {VARIANTS}")
    return options


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    if shutil.which("wrk") is None:
        print("load_soak: needs wrk (Debian: apt-get install wrk)", file=sys.stderr)
        return 2
    command = " ".join(
        ["python", "benchmarks/load_soak.py", *(argv if argv is not None else sys.argv[1:])]
    )
    processes = Processes()
    outcomes: list[Outcome] = []
    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="load-soak-")))
        stack.callback(processes.stop_all)  # before the directory goes: their logs are there
        script = workdir / "users.lua"
        script.write_text(LUA.format(users=options.users, threads=options.threads))
        collector_url = start_collector(processes, workdir)
        blackhole = stack.enter_context(Blackhole())
        for kind in options.servers:
            print(f"load_soak: {kind} ...", file=sys.stderr, flush=True)
            outcomes += run_kind(
                kind, options, workdir, collector_url, blackhole.url, processes, script
            )
        text = report(outcomes, options, command)
        if "blackhole" in options.variants:
            text += (
                f"\nThe blackhole accepted {blackhole.accepted} connections and read "
                f"{blackhole.received_bytes:,} bytes; it answered none.\n"
            )
        problems = failures(outcomes)
        if problems:
            text += "\nProblems:\n" + "".join(f"- {problem}\n" for problem in problems)
        print(text)
        if options.output:
            options.output.write_text(text)
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
