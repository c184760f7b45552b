"""mcpd at scale: many servers and editors on one daemon, and a refresh storm.

    .venv/bin/python bench/scale.py [--quick] [--json FILE] [--profile DIR] [--source DIR]

4. scale (`at_scale()`): 500 configured servers (the TypeScript SDK's
   simpleStreamableHttp example, one process per 100 sessions, on loopback)
   and 100 editors (`mcpctl stdio NAME` bridges, spread over the servers, each
   initialized). Figures: the daemon's VmRSS with all of that attached; its
   CPU while idle (utime + stime from /proc/PID/stat over an idle stretch, as
   a percentage of one core; the example sends an SSE keep-alive on every
   session's GET stream each 15 s, so idle means 33 of those a second); the
   time from exec to READY=1 on the notify socket; the time from exec until
   all servers are `connected` in `status`. A daemon with no servers, started
   alternately with the measured one, is the floor.
5. refresh storm (`refresh_storm()`): 500 servers whose stored credentials
   all expire within a minute, refreshed at a counting token endpoint
   (bench/token_server.py, 50 ms a request). Figures: the refresh requests
   that reach it (goal: exactly one per credential), the most in flight at
   once, and the spread from the first to the last. Two cases: tokens issued
   an hour ago (a restart: every refresh is overdue when the daemon starts)
   and tokens issued together with a one-minute lifetime (the 70-80% jitter
   spreads them).

Start-up figures are medians over repeated starts with the worst beside them.
The machine is shared: read the floors beside the figures. `--profile DIR`
also runs the daemon under py-spy (start-up, attaching the editors, idle, the
storm) and tracemalloc, and prints what the profiles show. `--source DIR`
runs another revision's `mcpd` package, to compare.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import random
import selectors
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "bench"))

from bench_common import (  # noqa: E402
    BIN,
    INITIALIZE,
    SOURCE_VARIABLE,
    percentile,
    private_env,
    rss_kb,
    summary,
)
from harness import MCPCTL, MCPD, DaemonProcess, McpdEnv, Notifications, RawClient, cpu_seconds  # noqa: E402
from real_peers import Peer, simple_streamable_http, stateless_server  # noqa: E402

from mcpd.keys import open_keyring  # noqa: E402
from mcpd.oauth.model import (  # noqa: E402
    AuthorizationServer,
    ClientRegistration,
    CredentialRecord,
    TokenSet,
)
from mcpd.store import CredentialStore  # noqa: E402

SESSIONS_PER_PEER = 100  # the SDK example refuses more than 1000 sessions a process
# The SDK example sends an SSE keep-alive comment on each session's GET stream
# every 15 s (DEFAULT_SSE_KEEP_ALIVE_MS): "idle" includes them (33/s for 500
# servers), so the idle stretch is a whole number of those periods.
IDLE_SECONDS = {False: 30.0, True: 15.0}  # by --quick
TOKEN_SERVER = REPO / "bench" / "token_server.py"
TRACED_MCPD = REPO / "bench" / "traced_mcpd.py"
PY_SPY = BIN / "py-spy"

# --- Processes ---------------------------------------------------------------


@dataclass
class Started:
    daemon: DaemonProcess
    ready_seconds: float  # from exec to READY=1
    started_at: float  # perf_counter at exec


@contextmanager
def timed_daemon(
    env: McpdEnv, argv: list[str] | None = None, extra_env: dict[str, str] | None = None
) -> Iterator[Started]:
    """Start mcpd as tests/harness.py's start_daemon does, timing exec to READY=1;
    stop it afterwards, whatever happened. `argv`: another command that runs mcpd
    (under a profiler, say), stopped with SIGINT, as py-spy wants to be. The
    process gets a process group of its own, killed at the end, so that nothing
    it started outlives it."""
    notify = Notifications(env.root / f"notify-{time.monotonic_ns()}.sock")
    log_path = env.root / "mcpd.log"
    process = None
    try:
        with log_path.open("ab") as log:
            started = time.perf_counter()
            process = subprocess.Popen(
                argv or [MCPD],
                env={**env.vars, **(extra_env or {}), "NOTIFY_SOCKET": str(notify.path)},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        notify.wait_for("READY=1", process, log_path)
        ready = time.perf_counter() - started
        yield Started(DaemonProcess(env, process, log_path), ready, started)
    finally:
        if process is not None:
            if process.poll() is None:
                process.send_signal(signal.SIGINT if argv else signal.SIGTERM)
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
            with suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
        notify.close()


def hello_pid(client: RawClient) -> int:
    """The daemon's pid, as it says (it may run under a profiler)."""
    pid: int = client.hello().result["pid"]  # type: ignore[union-attr]
    return pid


def status(client: RawClient) -> list[dict[str, Any]]:
    client.request("status")
    response = client.receive()
    servers: list[dict[str, Any]] = response.result["servers"]  # type: ignore[union-attr]
    return servers


def wait_states(
    client: RawClient, state: str, count: int, timeout: float, poll: float = 0.1
) -> float:
    """Poll `status` until `count` servers are in `state`; the perf_counter then."""
    deadline = time.monotonic() + timeout
    while True:
        servers = status(client)
        if sum(1 for s in servers if s["state"] == state) >= count:
            return time.perf_counter()
        if time.monotonic() > deadline:
            states = collections.Counter(s["state"] for s in servers)
            errors = collections.Counter(s["error"] for s in servers if s["error"])
            raise AssertionError(
                f"{count} servers never got {state} in {timeout}s: {dict(states)}, "
                f"errors {errors.most_common(3)}"
            )
        time.sleep(poll)


@contextmanager
def mcp_peers(servers: int, log_dir: Path) -> Iterator[list[Peer]]:
    """Enough SDK example processes for `servers` sessions, SESSIONS_PER_PEER each."""
    with ExitStack() as stack:
        count = max(1, -(-servers // SESSIONS_PER_PEER))
        yield [stack.enter_context(simple_streamable_http(log_dir)) for _ in range(count)]


def servers_config(names: list[str], peers: list[Peer]) -> str:
    return "".join(
        f'[servers.{name}]\nurl = "{peers[i % len(peers)].url}"\n' for i, name in enumerate(names)
    )


# --- Editors -------------------------------------------------------------------------


class Bridges:
    """`mcpctl stdio NAME` processes, driven over their stdin and stdout."""

    def __init__(self, env: McpdEnv, names: list[str], log_path: Path) -> None:
        self.log = log_path.open("ab")
        self.processes: list[subprocess.Popen[bytes]] = []
        try:
            for name in names:
                self.processes.append(
                    subprocess.Popen(
                        [MCPCTL, "stdio", name],
                        env=env.vars,
                        stdin=subprocess.PIPE,
                        stdout=subprocess.PIPE,
                        stderr=self.log,
                    )
                )
        except BaseException:
            self.close()
            raise

    def initialize(self, timeout: float = 60) -> None:
        """Each bridge's editor initializes (request, answer, `initialized`)."""
        self.ask(1, "initialize", INITIALIZE, timeout)
        done = json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}).encode()
        for process in self.processes:
            assert process.stdin is not None
            process.stdin.write(done + b"\n")
            process.stdin.flush()

    def ask(self, request_id: int, method: str, params: Any, timeout: float = 60) -> None:
        """Every bridge's editor sends one request; returns once each has its answer."""
        request = {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}
        line = json.dumps(request).encode() + b"\n"
        for process in self.processes:
            assert process.stdin is not None
            process.stdin.write(line)
            process.stdin.flush()
        selector = selectors.DefaultSelector()
        buffers: dict[int, bytes] = {}
        for index, process in enumerate(self.processes):
            assert process.stdout is not None
            os.set_blocking(process.stdout.fileno(), False)
            selector.register(process.stdout, selectors.EVENT_READ, index)
            buffers[index] = b""
        deadline = time.monotonic() + timeout
        waiting = set(buffers)
        while waiting:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"{len(waiting)} bridges never answered {method}")
            for key, _ in selector.select(remaining):
                index = key.data
                chunk = os.read(key.fd, 65536)
                if not chunk:
                    raise AssertionError(f"bridge {index} closed its stdout")
                buffers[index] += chunk
                for raw in buffers[index].split(b"\n")[:-1]:
                    message = json.loads(raw)
                    if message.get("id") == request_id:
                        if "result" not in message:
                            raise AssertionError(f"{method} failed: {message}")
                        waiting.discard(index)
                        selector.unregister(key.fileobj)
                buffers[index] = buffers[index].rsplit(b"\n", 1)[-1]
        selector.close()
        for process in self.processes:
            assert process.stdout is not None
            os.set_blocking(process.stdout.fileno(), True)

    def rss_kb(self) -> list[int]:
        return [rss_kb(process.pid) for process in self.processes]

    def close(self) -> None:
        for process in self.processes:
            if process.stdin is not None:
                with suppress(OSError):
                    process.stdin.close()
        deadline = time.monotonic() + 10
        for process in self.processes:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            if process.stdout is not None:
                process.stdout.close()
        self.log.close()


# --- 4. scale ------------------------------------------------------------------------


def _idle_cpu(pid: int, seconds: float, window: float) -> dict[str, Any]:
    """CPU time over `seconds` of idle, in windows: percent of one core."""
    windows = []
    started_wall, started_cpu = time.monotonic(), cpu_seconds(pid)
    while time.monotonic() - started_wall < seconds - 1e-3:
        wall, cpu = time.monotonic(), cpu_seconds(pid)
        time.sleep(min(window, seconds - (wall - started_wall)))
        windows.append(100 * (cpu_seconds(pid) - cpu) / (time.monotonic() - wall))
    total = 100 * (cpu_seconds(pid) - started_cpu) / (time.monotonic() - started_wall)
    return {
        "percent": round(total, 3),
        "window_median_percent": round(statistics.median(windows), 3),
        "window_max_percent": round(max(windows), 3),
        "seconds": round(time.monotonic() - started_wall, 1),
        "windows": len(windows),
    }


def at_scale(
    servers: int = 500,
    bridges: int = 100,
    *,
    starts: int = 5,
    idle_seconds: float = 30.0,
    log_dir: Path | None = None,
) -> dict[str, Any]:
    """Benchmark 4: `servers` configured and connected, `bridges` editors attached.

    The start is measured `starts` times (each a fresh daemon, alternating with a
    daemon with no servers, the floor); the last daemon then takes the editors
    and is measured for RSS and idle CPU.
    """
    with ExitStack() as stack:
        if log_dir is None:
            log_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="mcpd-scale-")))
        names = [f"s{i:03d}" for i in range(servers)]
        peers = stack.enter_context(mcp_peers(servers, log_dir))
        env = stack.enter_context(private_env(servers_config(names, peers)))
        empty_env = stack.enter_context(private_env())
        ready, connected, ready_empty, rss_empty = [], [], [], []
        daemon_cpu, peers_cpu = [], []
        for attempt in range(starts):
            with timed_daemon(empty_env) as floor:
                ready_empty.append(floor.ready_seconds)
                client = RawClient(empty_env.socket)
                client.hello()
                status(client)
                time.sleep(0.5)
                rss_empty.append(rss_kb(floor.daemon.pid))
                client.close()
            last = attempt == starts - 1
            peers_before = sum(cpu_seconds(peer.process.pid) for peer in peers)
            with timed_daemon(env) as run:
                ready.append(run.ready_seconds)
                client = RawClient(env.socket, timeout=30)
                client.hello()
                connected.append(wait_states(client, "connected", servers, 60) - run.started_at)
                daemon_cpu.append(cpu_seconds(run.daemon.pid))
                peers_cpu.append(sum(cpu_seconds(p.process.pid) for p in peers) - peers_before)
                if not last:
                    client.close()
                    continue
                pid = run.daemon.pid
                time.sleep(1.0)
                rss_connected = rss_kb(pid)
                spread = [names[i * servers // bridges] for i in range(bridges)]
                attach_started = time.perf_counter()
                editors = Bridges(env, spread, log_dir / "bridges.log")
                try:
                    editors.initialize()
                    attached = time.perf_counter() - attach_started
                    states = collections.Counter(s["state"] for s in status(client))
                    time.sleep(2.0)  # the attach work settles
                    idle = _idle_cpu(pid, idle_seconds, window=5.0)
                    rss_attached = rss_kb(pid)
                    hwm = rss_kb(pid, "VmHWM")
                    bridge_rss = editors.rss_kb()
                    fds = len(os.listdir(f"/proc/{pid}/fd"))
                    threads = len(os.listdir(f"/proc/{pid}/task"))
                finally:
                    editors.close()
                client.close()
    return {
        "servers": servers,
        "bridges": bridges,
        "peers": len(peers),
        "connected_after_attach": states.get("connected", 0),
        "ready": summary(ready),
        "all_connected": summary(connected),
        "ready_empty_config": summary(ready_empty),
        # CPU seconds from exec until all connected: whose work the wait is.
        "daemon_cpu_to_connected_s": round(statistics.median(daemon_cpu), 2),
        "peers_cpu_to_connected_s": round(statistics.median(peers_cpu), 2),
        "rss_mb": round(rss_attached / 1024, 1),
        "rss_connected_no_bridges_mb": round(rss_connected / 1024, 1),
        "rss_peak_mb": round(hwm / 1024, 1),
        "rss_empty_mb": round(statistics.median(rss_empty) / 1024, 1),
        "rss_per_server_kb": round((rss_connected - statistics.median(rss_empty)) / servers, 1),
        "rss_per_bridge_kb": round((rss_attached - rss_connected) / bridges, 1),
        "idle_cpu": idle,
        "attach_all_bridges_s": round(attached, 3),
        "bridge_rss_median_mb": round(statistics.median(bridge_rss) / 1024, 1),
        "daemon_fds": fds,
        "daemon_threads": threads,
        "goals": "RSS <= 80 MB; idle CPU < 0.5%; ready < 1 s (median)",
        "met": {
            "rss": rss_attached / 1024 <= 80,
            "idle_cpu": idle["percent"] < 0.5,
            "ready": statistics.median(ready) < 1.0,
        },
    }


def list_cache(bridges: int = 20, rounds: int = 5, ttl_ms: int = 60000) -> dict[str, Any]:
    """Editors' list requests to a 2026-07-28 server whose lists are fresh for
    `ttl_ms` (tests/peers/stateless_server.mjs on the TypeScript SDK v2): how
    many reached the server, against how many editors sent."""
    with ExitStack() as stack:
        log_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="mcpd-cache-")))
        peer = stack.enter_context(stateless_server(log_dir, list_ttl_ms=ttl_ms))
        env = stack.enter_context(private_env(f'[servers.v2]\nurl = "{peer.url}"\n'))
        with timed_daemon(env):
            client = RawClient(env.socket, timeout=30)
            client.hello()
            wait_states(client, "connected", 1, 30)
            client.close()
            editors = Bridges(env, ["v2"] * bridges, log_dir / "bridges.log")
            try:
                editors.initialize()
                for round_ in range(rounds):
                    editors.ask(100 + round_, "tools/list", {})
            finally:
                editors.close()
        upstream = sum(
            rpc.get("method") == "tools/list"
            for request in peer.requests()
            for rpc in request.get("rpc") or []
        )
    sent = bridges * rounds
    return {
        "editors": bridges,
        "lists_sent": sent,
        "lists_upstream": upstream,
        "saved_percent": round(100 * (1 - upstream / sent), 1),
        "ttl_ms": ttl_ms,
    }


# --- 5. refresh storm -------------------------------------------------------------


@contextmanager
def token_server(log_dir: Path, service_ms: float) -> Iterator[str]:
    """bench/token_server.py on a free loopback port; yields its base URL."""
    with (log_dir / "token-server.log").open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, str(TOKEN_SERVER), "--service-ms", str(service_ms)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=log,
        )
    try:
        assert process.stdout is not None
        line = process.stdout.readline().decode()
        if not line.startswith("listening "):
            raise AssertionError(f"the token server did not start: {line!r}")
        yield f"http://127.0.0.1:{int(line.split()[1])}"
    finally:
        process.kill()
        process.wait()
        if process.stdout is not None:
            process.stdout.close()


def token_stats(base: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{base}/stats", timeout=10) as response:  # noqa: S310
        stats: dict[str, Any] = json.loads(response.read())
        return stats


def seed(env: McpdEnv, servers: dict[str, tuple[str, float]], issuer: str, lifetime: float) -> None:
    """Credential records as a sign-in leaves them, through the store's own API."""
    keyring = open_keyring(env.key_file, {}, existing_records=0)
    store = CredentialStore(env.credentials_dir, keyring, CredentialRecord)
    store.prepare()
    for name, (url, expires_at) in servers.items():
        store.save(
            CredentialRecord(
                server=name,
                url=url,
                tokens=TokenSet(
                    access_token=f"at-{name}-0",
                    refresh_token=f"rt-{name}-0",
                    expires_at=expires_at,
                    obtained_at=expires_at - lifetime,
                ),
                client=ClientRegistration(
                    client_id=name,
                    token_endpoint_auth_method="none",  # noqa: S106 - a public client
                    issuer=issuer,
                ),
                authorization=AuthorizationServer(
                    issuer=issuer, token_endpoint=f"{issuer}/token", resource=url
                ),
            )
        )


def _percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    at = {f"p{round(q * 100)}": round(percentile(ordered, q), 3) for q in (0.1, 0.5, 0.9)}
    return {**at, "max": round(ordered[-1], 3)}


def refresh_storm(
    credentials: int = 500,
    *,
    expiring_within: float = 60.0,
    lifetime: float = 3600.0,
    service_ms: float = 50.0,
    log_dir: Path | None = None,
    profile_to: Path | None = None,
) -> dict[str, Any]:
    """Benchmark 5: `credentials` servers whose access tokens all expire within
    `expiring_within` seconds of the start, each issued `lifetime` seconds before
    its expiry (3600: an hour ago, so every refresh is due when the daemon starts;
    with lifetime == expiring_within all were issued together at the start and
    expire together). The token endpoint takes `service_ms` per request.
    `profile_to`: run the daemon under py-spy, its samples (raw) to that file."""
    with ExitStack() as stack:
        if log_dir is None:
            log_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="mcpd-storm-")))
        names = [f"s{i:03d}" for i in range(credentials)]
        peers = stack.enter_context(mcp_peers(credentials, log_dir))
        issuer = stack.enter_context(token_server(log_dir, service_ms))
        env = stack.enter_context(private_env(servers_config(names, peers)))
        urls = [peers[i % len(peers)].url for i in range(credentials)]
        now = time.time()
        if lifetime <= expiring_within:
            expiry = [now + lifetime] * credentials  # issued together, now
        else:
            rng = random.Random(6)  # noqa: S311 - the same spread every run
            expiry = [now + expiring_within * rng.random() for _ in names]
        seed(env, dict(zip(names, zip(urls, expiry, strict=True), strict=True)), issuer, lifetime)
        seeded = time.time()
        # Where the daemon's schedule puts each refresh: 70-80% of the lifetime, no
        # later than a minute before expiry for long tokens; overdue means at start.
        latest_due = max(
            min(e - lifetime + 0.8 * lifetime, e - 60 if lifetime > 300 else e) for e in expiry
        )
        argv = [*spy_argv(profile_to, 250), MCPD] if profile_to else None
        run = stack.enter_context(timed_daemon(env, argv))
        ready_wall = time.time()
        client = RawClient(env.socket, timeout=30)
        pid = hello_pid(client)
        connected = wait_states(client, "connected", credentials, 60) - run.started_at
        deadline = max(latest_due, ready_wall) + 60
        while True:
            stats = token_stats(issuer)
            refreshed = {event["client"] for event in stats["refreshes"]}
            if len(refreshed) >= credentials or time.time() > deadline:
                break
            time.sleep(0.2)
        time.sleep(3.0)  # any duplicate or retry would come now
        stats = token_stats(issuer)
        servers = status(client)
        client.close()
        cpu = cpu_seconds(pid)
        fds, rss = len(os.listdir(f"/proc/{pid}/fd")), rss_kb(pid)
        if profile_to:
            stop_spy(run.daemon.process)
    refreshes, refused = stats["refreshes"], stats["refused"]
    per_client = collections.Counter(event["client"] for event in refreshes + refused)
    starts = sorted(event["start"] for event in refreshes + refused)
    first = starts[0] if starts else ready_wall
    durations = [event["end"] - event["start"] for event in refreshes]
    fresh = sum(
        1
        for s in servers
        if s["last_refresh_at"] is not None and (s["access_expires_at"] or 0) > now + 3000
    )
    return {
        "credentials": credentials,
        "lifetime_s": lifetime,
        "expiring_within_s": expiring_within,
        "service_ms": service_ms,
        "requests": len(refreshes) + len(refused),
        "refreshed_servers": len({event["client"] for event in refreshes}),
        "duplicates": sum(count - 1 for count in per_client.values() if count > 1),
        "refused": len(refused),
        "missed": credentials - len({event["client"] for event in refreshes}),
        "status_fresh": fresh,
        "max_in_flight": stats["max_in_flight"],
        "max_connections": stats["max_connections"],
        "spread_s": round(starts[-1] - first, 3) if starts else None,
        "first_after_ready_s": round(first - ready_wall, 3),
        "first_after_seed_s": round(first - seeded, 3),
        "start_offsets_s": _percentiles([s - first for s in starts]) if starts else None,
        "per_second": _histogram([s - first for s in starts]),
        "request_ms": _percentiles([d * 1000 for d in durations]) if durations else None,
        "ready_s": round(run.ready_seconds, 3),
        "all_connected_s": round(connected, 3),
        "daemon_cpu_s": round(cpu, 2),
        # After the storm: connections to the token endpoint still open count here.
        "daemon_fds_after": fds,
        "daemon_rss_after_mb": round(rss / 1024, 1),
        "goal": "exactly one refresh per credential",
        "met": (
            len(refreshes) + len(refused) == credentials
            and len({event["client"] for event in refreshes}) == credentials
        ),
    }


def _histogram(offsets: list[float]) -> list[int]:
    """Refresh requests started in each second after the first."""
    if not offsets:
        return []
    counts = [0] * (int(max(offsets)) + 1)
    for offset in offsets:
        counts[int(offset)] += 1
    return counts


# --- profiles --------------------------------------------------------------------


def spy_argv(out: Path, rate: int) -> list[str]:
    """py-spy recording a command (append it) or, with --pid, a process."""
    return [str(PY_SPY), "record", "--format", "raw", "--output", str(out), "--rate", str(rate),
            "--nonblocking", "--"]  # fmt: skip


def stop_spy(process: subprocess.Popen[bytes]) -> None:
    """Stop py-spy; it writes its file (and ends a command it started)."""
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextmanager
def spying(pid: int, out: Path, rate: int) -> Iterator[None]:
    argv = [*spy_argv(out, rate)[:-1], "--pid", str(pid)]
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.3)  # attached
        yield
    finally:
        stop_spy(process)


def _frame(frame: str) -> str:
    """`function (file:line)` without the line, so a function is one entry."""
    name, _, where = frame.partition(" (")
    return f"{name} ({where.rsplit(':', 1)[0]})" if where else name


def summarize_profile(path: Path, top: int = 12) -> dict[str, Any]:
    """py-spy's raw samples: the functions that were running (self), and those
    on the stack (inclusive), as percentages of the samples."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        samples, frames = int(count), [_frame(f) for f in stack.split(";")]
        total += samples
        own[frames[-1]] += samples
        for frame in set(frames):
            inclusive[frame] += samples

    def share(counter: collections.Counter[str]) -> list[tuple[str, float]]:
        return [(name, round(100 * n / total, 1)) for name, n in counter.most_common(top)]

    return {"samples": total, "self": share(own), "inclusive": share(inclusive)}


def profile(
    out_dir: Path, servers: int = 500, bridges: int = 100, idle_seconds: float = 30.0
) -> dict[str, Any]:
    """Where the daemon spends its time (py-spy) and memory (tracemalloc) at scale."""
    out_dir.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {}
    with ExitStack() as stack:
        log_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="mcpd-prof-")))
        names = [f"s{i:03d}" for i in range(servers)]
        spread = [names[i * servers // bridges] for i in range(bridges)]
        peers = stack.enter_context(mcp_peers(servers, log_dir))
        env = stack.enter_context(private_env(servers_config(names, peers)))
        # Start-up, under py-spy from exec until every server is connected.
        with timed_daemon(env, [*spy_argv(out_dir / "start.txt", 250), MCPD]) as run:
            client = RawClient(env.socket, timeout=30)
            hello_pid(client)
            wait_states(client, "connected", servers, 60)
            client.close()
            stop_spy(run.daemon.process)
        result["start"] = summarize_profile(out_dir / "start.txt")
        # Attaching the editors, then idle: py-spy attached to a running daemon.
        with timed_daemon(env):
            client = RawClient(env.socket, timeout=30)
            pid = hello_pid(client)
            wait_states(client, "connected", servers, 60)
            editors: Bridges | None = None
            try:
                with spying(pid, out_dir / "attach.txt", 250):
                    editors = Bridges(env, spread, log_dir / "bridges.log")
                    editors.initialize()
                time.sleep(2.0)
                with spying(pid, out_dir / "idle.txt", 1000):
                    time.sleep(idle_seconds)
            finally:
                if editors is not None:
                    editors.close()
            client.close()
        result["attach"] = summarize_profile(out_dir / "attach.txt")
        result["idle"] = summarize_profile(out_dir / "idle.txt")
        # Memory: the same, under tracemalloc.
        dump = out_dir / "tracemalloc.txt"
        dump.unlink(missing_ok=True)
        argv = [sys.executable, str(TRACED_MCPD)]
        with timed_daemon(env, argv, {"MCPD_TRACEMALLOC_OUT": str(dump)}) as run:
            client = RawClient(env.socket, timeout=30)
            pid = hello_pid(client)
            wait_states(client, "connected", servers, 90)
            editors = Bridges(env, spread, log_dir / "bridges.log")
            try:
                editors.initialize()
                time.sleep(2.0)
                os.kill(pid, signal.SIGUSR1)
                deadline = time.monotonic() + 60
                while not dump.exists() and time.monotonic() < deadline:
                    time.sleep(0.1)
                result["traced_rss_mb"] = round(rss_kb(pid) / 1024, 1)
            finally:
                editors.close()
            client.close()
        result["tracemalloc"] = dump.read_text().splitlines()
    # The restart storm, under py-spy from exec to the last refresh.
    refresh_storm(servers, profile_to=out_dir / "storm.txt")
    result["storm"] = summarize_profile(out_dir / "storm.txt")
    (out_dir / "summary.json").write_text(json.dumps(result, indent=2))
    return result


def print_profile(result: dict[str, Any]) -> None:
    for phase in ("start", "attach", "idle", "storm"):
        summary = result[phase]
        print(f"profile: {phase} ({summary['samples']} samples)")
        for kind in ("self", "inclusive"):
            print(f"  {kind}:")
            for name, percent in summary[kind]:
                print(f"    {percent:5.1f}%  {name}")
    print(f"profile: memory (tracemalloc; VmRSS under tracing {result['traced_rss_mb']} MB)")
    for line in result["tracemalloc"]:
        print(f"  {line}")


# --- main ------------------------------------------------------------------------------


def scale_and_storm(quick: bool) -> dict[str, Any]:
    """Benchmarks 4 and 5, as bench/run.py and this script's main run them."""
    figures: dict[str, Any] = {}
    starts = 2 if quick else 5
    figures["scale"] = at_scale(starts=starts, idle_seconds=IDLE_SECONDS[quick])
    figures["list_cache"] = list_cache()
    window = 20.0 if quick else 60.0
    figures["refresh_storm_restart"] = refresh_storm(expiring_within=window)
    figures["refresh_storm_jitter"] = refresh_storm(expiring_within=window, lifetime=window)
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer runs, shorter waits")
    parser.add_argument("--json", type=Path, default=REPO / "bench" / "results" / "scale.json")
    parser.add_argument("--profile", type=Path, help="also profile the daemon into this directory")
    parser.add_argument(
        "--source",
        type=Path,
        help="run the mcpd package in this directory (e.g. `git archive HEAD mcpd | tar -x -C "
        "DIR`) instead of the installed one, to compare revisions",
    )
    args = parser.parse_args()
    if args.source:
        os.environ[SOURCE_VARIABLE] = str(args.source.resolve())
    figures = scale_and_storm(args.quick)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(figures, indent=2))
    print_table(figures)
    print(f"figures: {args.json}")
    if args.profile:
        print_profile(profile(args.profile, idle_seconds=IDLE_SECONDS[args.quick]))
    return 0


def print_table(figures: dict[str, Any]) -> None:
    sc = figures["scale"]
    yes = {True: "met", False: "NOT MET"}
    print(f"4. scale: {sc['servers']} servers on {sc['peers']} peers, {sc['bridges']} bridges")
    for key, title in (("ready", "ready (exec to READY=1)"), ("all_connected", "all connected")):
        figure, floor = sc[key], sc["ready_empty_config"]
        print(
            f"  {title:<28}{figure['median_ms'] / 1000:8.3f} s (p99 {figure['p99_ms'] / 1000:.3f},"
            f" n={figure['n']}; empty config ready {floor['median_ms'] / 1000:.3f})"
            + (f"  goal < 1 s: {yes[sc['met']['ready']]}" if key == "ready" else "")
        )
    print(
        f"  CPU until all connected     {sc['daemon_cpu_to_connected_s']:8.2f} s daemon, "
        f"{sc['peers_cpu_to_connected_s']:.2f} s the MCP servers (2 cores, shared)"
    )
    print(
        f"  RSS, all attached           {sc['rss_mb']:8.1f} MB (empty {sc['rss_empty_mb']}, "
        f"{sc['rss_per_server_kb']} KB/server, {sc['rss_per_bridge_kb']} KB/bridge)"
        f"  goal <= 80 MB: {yes[sc['met']['rss']]}"
    )
    idle = sc["idle_cpu"]
    print(
        f"  idle CPU                    {idle['percent']:8.3f} % over {idle['seconds']} s "
        f"(windows: median {idle['window_median_percent']}, max {idle['window_max_percent']})"
        f"  goal < 0.5%: {yes[sc['met']['idle_cpu']]}"
    )
    lc = figures["list_cache"]
    print(
        f"  list cache (2026-07-28)     {lc['lists_upstream']:8d} of {lc['lists_sent']} tools/list "
        f"from {lc['editors']} editors reached the server ({lc['saved_percent']}% saved, "
        f"ttlMs {lc['ttl_ms']})"
    )
    for key, title in (
        ("refresh_storm_restart", "5. refresh storm, tokens issued an hour ago"),
        ("refresh_storm_jitter", "5. refresh storm, tokens issued together"),
    ):
        st = figures[key]
        print(
            f"{title} ({st['credentials']} credentials, lifetime {st['lifetime_s']:g} s, "
            f"token endpoint {st['service_ms']:g} ms)"
        )
        print(
            f"  requests at the AS          {st['requests']:8d} (duplicates {st['duplicates']}, "
            f"missed {st['missed']})  goal exactly {st['credentials']}: {yes[st['met']]}"
        )
        print(
            f"  most in flight at once      {st['max_in_flight']:8d} "
            f"(connections {st['max_connections']})"
        )
        print(
            f"  spread first to last        {st['spread_s']:8.3f} s (offsets "
            f"{st['start_offsets_s']}; per second {st['per_second']})"
        )


if __name__ == "__main__":
    sys.exit(main())
