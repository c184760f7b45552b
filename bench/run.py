"""mcpd's benchmarks, each a ratio against a floor measured in the same run.

    .venv/bin/python bench/run.py [--quick] [--json FILE]

1. control plane: the `status` round trip over the daemon's real socket,
   against a raw Unix-socket echo of the same frames (another process, as the
   daemon is; the two measured in turns, pinned alike: on the client's core,
   and on another core);
2. CLI start: `mcpctl status` as a whole process, against
   `python -c "import msgspec"`, both from the project installed as the README
   says (`pip install .` into a venv of the run's own: an editable install's
   import hook slows every Python start);
3. data plane: `tools/call` of the TypeScript SDK example's `greet` from 1, 8
   and 32 editors at once, each its own process calling in sequence: through
   `mcpctl stdio` and the daemon, through mcp-remote (one copy per editor, as
   editors run it), and with the same driver speaking Streamable HTTP to the
   server directly (the floor), and through the floor relay
   (bench/floor_relay.py, the least a Python daemon can do), with its own
   HTTP and with aiohttp's; then where one call's time goes, hop by hop
   (bench/spans/sitecustomize.py);
4. editor start-up: from spawning `mcpctl stdio NAME` (installed likewise) to
   its answer to `tools/list`, the daemon warm, against mcp-remote doing the same;
5. scale: 500 servers and 100 editors on one daemon (bench/scale.py);
6. a refresh storm: 500 credentials expiring within a minute (bench/scale.py).

Every figure is a median over repeated runs with the 99th percentile beside
it. The real peers come from tests/peers/install.sh.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "bench"))

from bench_common import (  # noqa: E402
    BIN,
    INITIALIZE,
    daemon_env,
    installed_product,
    rss_kb,
    summary,
    timed,
)
from harness import RawClient, cpu_seconds  # noqa: E402
from real_peers import mcp_remote_argv, simple_streamable_http  # noqa: E402
from scale import print_table as print_scale_and_storm  # noqa: E402
from scale import scale_and_storm  # noqa: E402

from mcpd.protocol import FrameDecoder, Request, encode_frame  # noqa: E402

# --- 1. control plane -------------------------------------------------------------


ECHO_SERVER = """
import socket, struct, sys
listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
listener.bind(sys.argv[1])
listener.listen(1)
response = bytes.fromhex(sys.argv[2])
print("ready", flush=True)
conn, _ = listener.accept()
buffer = b""
while data := conn.recv(65536):
    buffer += data
    while len(buffer) >= 4 and len(buffer) >= 4 + struct.unpack(">I", buffer[:4])[0]:
        buffer = buffer[4 + struct.unpack(">I", buffer[:4])[0]:]
        conn.sendall(response)
"""


@contextmanager
def echo_server(path: str, response: bytes) -> Iterator[int]:
    """The floor: another process that reads a frame and answers with a frame of the
    status's size over a Unix socket, doing nothing else (as the daemon is another
    process, so is the floor). Yields its pid."""
    process = subprocess.Popen(
        [sys.executable, "-c", ECHO_SERVER, path, response.hex()], stdout=subprocess.PIPE
    )
    try:
        assert process.stdout is not None
        process.stdout.readline()
        yield process.pid
    finally:
        process.kill()
        process.wait()


def placements() -> dict[str, tuple[set[int], set[int]]]:
    """Where the client and the server (the daemon, or the floor) run. A
    round trip across two cores costs several times one within a core here
    (waking an idle core), and the scheduler may place the two servers
    differently: so both are pinned alike, and both placements measured."""
    cpus = sorted(os.sched_getaffinity(0))
    chosen = {"same core": ({cpus[0]}, {cpus[0]})}
    if len(cpus) > 1:
        chosen["two cores"] = ({cpus[0]}, {cpus[-1]})
    return chosen


def control_plane(runs: int) -> dict[str, Any]:
    result: dict[str, Any] = {"goal": "at most 3x"}
    everywhere = os.sched_getaffinity(0)
    with daemon_env() as (env, daemon):
        client = RawClient(env.socket)
        client.hello()
        client.request("status")
        response_frame = encode_frame(client.receive())

        def status() -> None:
            client.request("status")
            client.receive()

        floor_path = str(env.root / "floor.sock")
        with echo_server(floor_path, response_frame) as echo_pid:
            raw = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            raw.connect(floor_path)
            decoder = FrameDecoder()
            probe = encode_frame(Request(2, "status"))

            def echo() -> None:
                raw.sendall(probe)
                while decoder.next_frame() is None:
                    decoder.feed(raw.recv(65536))

            try:
                for name, (mine, theirs) in placements().items():
                    os.sched_setaffinity(0, mine)
                    os.sched_setaffinity(daemon.process.pid, theirs)
                    os.sched_setaffinity(echo_pid, theirs)
                    timed(status, 200)  # warm up
                    timed(echo, 200)
                    measured, floor = [], []
                    for _ in range(max(1, runs // 50)):  # in turns: drift hits both alike
                        measured += timed(status, 50)
                        floor += timed(echo, 50)
                    figures = {"status": summary(measured), "floor": summary(floor)}
                    figures["ratio"] = (
                        figures["status"]["median_ms"] / figures["floor"]["median_ms"]
                    )
                    result[name] = figures
            finally:
                os.sched_setaffinity(0, everywhere)
            raw.close()
        client.close()
    result["ratio"] = max(result[name]["ratio"] for name in placements())
    return result


# --- 2. CLI start ---------------------------------------------------------------------


def cli_start(runs: int, installed: Path) -> dict[str, Any]:
    """`installed`: the bin directory of the product as users install it."""
    with daemon_env() as (env, _daemon):

        def mcpctl() -> None:
            subprocess.run(
                [str(installed / "mcpctl"), "status"], env=env.vars, capture_output=True, check=True
            )

        def floor() -> None:
            subprocess.run(
                [str(installed / "python"), "-c", "import msgspec"], capture_output=True, check=True
            )

        timed(mcpctl, 3)
        timed(floor, 3)
        measured, baseline = [], []
        for _ in range(runs):  # interleaved, so that drift hits both alike
            measured += timed(mcpctl, 1)
            baseline += timed(floor, 1)
    result = {"mcpctl_status": summary(measured), "floor": summary(baseline)}
    result["ratio"] = result["mcpctl_status"]["median_ms"] / result["floor"]["median_ms"]
    result["goal"] = "at most 1.5x"
    return result


# --- 3. data plane ----------------------------------------------------------------------

CALL = {"name": "greet", "arguments": {"name": "bench"}}


class DirectClient:
    """The floor: the editor-like driver speaking Streamable HTTP itself, doing no
    more per call than the stdio driver does. One kept-alive connection (with
    TCP_NODELAY), each request written whole in one send, and each call's answer
    taken at its JSON-RPC response event, as an editor's SDK hands a result on;
    the end of that response's stream is read on the way to the next answer.
    A minimal HTTP/1.1 reader for this one server: a status line, headers, and
    a body by Content-Length or in chunks."""

    pid = None  # nothing stands between it and the server

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        assert parts.hostname is not None
        assert parts.port is not None
        self.address = (parts.hostname, parts.port)
        self.head = (
            f"POST {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
            "Content-Type: application/json\r\nAccept: application/json, text/event-stream\r\n"
        )
        self.sock: socket.socket | None = None
        self.buffer = b""
        self.stream_open = False  # the last answer's stream has not ended yet
        self.session: str | None = None
        self.next_id = 0
        self.call("initialize", INITIALIZE)
        self.notify("notifications/initialized")

    # --- the connection -------------------------------------------------------------

    def _connect(self) -> socket.socket:
        sock = socket.create_connection(self.address)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock, self.buffer, self.stream_open = sock, b"", False
        return sock

    def _fill(self) -> None:
        assert self.sock is not None
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionResetError("the server closed the connection")
        self.buffer += data

    def _line(self) -> bytes:
        while (end := self.buffer.find(b"\r\n")) < 0:
            self._fill()
        line, self.buffer = self.buffer[:end], self.buffer[end + 2 :]
        return line

    def _take(self, size: int) -> bytes:
        while len(self.buffer) < size:
            self._fill()
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data

    def _chunk(self) -> bytes:
        """The next chunk of a chunked body; b"" at its end (trailers read)."""
        size = int(self._line().split(b";")[0], 16)
        if size == 0:
            while self._line():
                pass
            return b""
        data = self._take(size)
        self._take(2)
        return data

    def _exchange(self, body: bytes) -> tuple[int, dict[str, str]]:
        """Send a request and read its answer's head, reconnecting once when the
        server has closed the idle connection (while other variants ran)."""
        headers = self.head
        if self.session is not None:
            headers += f"Mcp-Session-Id: {self.session}\r\nMCP-Protocol-Version: 2025-11-25\r\n"
        request = f"{headers}Content-Length: {len(body)}\r\n\r\n".encode() + body
        for attempt in (1, 2):
            try:
                sock = self.sock or self._connect()
                sock.sendall(request)
                while self.stream_open:  # the previous answer's stream, to its end
                    self.stream_open = self._chunk() != b""
                status = int(self._line().split(b" ", 2)[1])
                fields = {}
                while line := self._line():
                    name, _, value = line.partition(b":")
                    fields[name.strip().lower().decode()] = value.strip().decode()
            except (BrokenPipeError, ConnectionResetError):
                if self.sock is not None:
                    self.sock.close()
                self.sock = None
                if attempt == 2:
                    raise
            else:
                return status, fields
        raise AssertionError("unreachable")

    def notify(self, method: str) -> None:
        _status, fields = self._exchange(json.dumps({"jsonrpc": "2.0", "method": method}).encode())
        if "content-length" in fields:
            self._take(int(fields["content-length"]))
        else:
            while self._chunk():
                pass

    def call(self, method: str, params: dict[str, Any]) -> Any:
        self.next_id += 1
        body = json.dumps(
            {"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": params}
        ).encode()
        _status, fields = self._exchange(body)
        self.head_at = time.perf_counter_ns()  # for the span breakdown
        self.session = fields.get("mcp-session-id", self.session)
        if not fields.get("content-type", "").startswith("text/event-stream"):
            return json.loads(self._take(int(fields["content-length"])))
        events = b""
        while chunk := self._chunk():
            events += chunk
            while (end := events.find(b"\n\n")) >= 0:
                event, events = events[:end], events[end + 2 :]
                for line in event.split(b"\n"):
                    if line.startswith(b"data:") and line[5:].strip():  # not a priming event
                        message = json.loads(line[5:])
                        if message.get("id") == self.next_id:
                            self.stream_open = True
                            return message
        raise RuntimeError("the server's stream ended without the response")

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()


class StdioClient:
    """The same driver, through a stdio proxy process: `mcpctl stdio NAME` or mcp-remote."""

    def __init__(self, argv: list[str], env: dict[str, str], stderr: Any) -> None:
        self.process = subprocess.Popen(
            argv, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr
        )
        self.pid: int | None = self.process.pid
        self.next_id = 0
        self.call("initialize", INITIALIZE)
        self._write({"jsonrpc": "2.0", "method": "notifications/initialized"})

    def _write(self, message: dict[str, Any]) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(message).encode() + b"\n")
        self.process.stdin.flush()

    def call(self, method: str, params: dict[str, Any]) -> Any:
        self.next_id += 1
        self._write({"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": params})
        assert self.process.stdout is not None
        while True:
            line = self.process.stdout.readline()
            if not line:
                raise RuntimeError(f"{self.process.args[0]} exited ({self.process.wait()})")
            message = json.loads(line)
            if message.get("id") == self.next_id:
                if "result" not in message:
                    raise RuntimeError(f"the call failed: {message}")
                return message

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def node_tree(pid: int) -> list[int]:
    """A process and its descendants (mcp-remote may run its work in a child)."""
    found, frontier = [pid], [pid]
    while frontier:
        parent = frontier.pop()
        children = Path(f"/proc/{parent}/task/{parent}/children")
        if children.exists():
            for child in map(int, children.read_text().split()):
                found.append(child)
                frontier.append(child)
    return found


def run_batch(editors: list[Any], calls: int, extra_pids: list[int]) -> dict[str, Any]:
    """Every editor makes `calls` calls in sequence, all editors at once."""
    pids = [p for e in editors if e.pid for p in node_tree(e.pid)] + extra_pids
    cpu_before = sum(cpu_seconds(pid) for pid in pids)
    latencies: list[list[float]] = [[] for _ in editors]
    start = threading.Barrier(len(editors) + 1)

    failures: list[BaseException] = []

    def drive(index: int) -> None:
        start.wait()
        try:
            latencies[index] = timed(lambda: editors[index].call("tools/call", CALL), calls)
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=drive, args=(i,)) for i in range(len(editors))]
    for thread in threads:
        thread.start()
    start.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - began
    if failures:
        raise failures[0]
    cpu = sum(cpu_seconds(pid) for pid in pids) - cpu_before
    samples = [x for per_editor in latencies for x in per_editor]
    return {"samples": samples, "wall": wall, "cpu": cpu}


@contextmanager
def floor_relay(url: str, log_dir: Path, upstream: str) -> Iterator[tuple[str, int]]:
    """bench/floor_relay.py, serving each bridge on its own: its socket and pid."""
    path = str(log_dir / f"floor-relay-{upstream}.sock")
    process = subprocess.Popen(
        [sys.executable, str(REPO / "bench" / "floor_relay.py"), path, url, "--upstream", upstream],
        stdout=subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline() == b"ready\n"
        yield path, process.pid
    finally:
        process.kill()
        process.wait()


def data_plane(editor_counts: list[int], calls: int, rounds: int, log_dir: Path) -> dict[str, Any]:
    """tools/call through mcpd, through mcp-remote, directly, and through the floor
    relay (bench/floor_relay.py), with its own lean upstream and with aiohttp's, at
    each editor count.

    The variants take turns, `rounds` times, so that the machine's drift falls
    on all alike; each editor makes `calls // editors` calls per round.
    """
    figures: dict[str, Any] = {}
    with simple_streamable_http(log_dir) as peer:
        url = peer.url.replace("127.0.0.1", "localhost")
        with (
            daemon_env(f'[servers.ts]\nurl = "{url}"\n') as (env, daemon),
            floor_relay(url, log_dir, "lean") as (relay_socket, relay_pid),
            floor_relay(url, log_dir, "aiohttp") as (aiohttp_relay_socket, aiohttp_relay_pid),
        ):
            remote_home = env.root / "mcp-remote-home"
            remote_home.mkdir()
            remote_env = {**env.vars, "HOME": str(remote_home)}
            stderr = (log_dir / "editors.log").open("ab")
            for count in editor_counts:
                variants: dict[str, list[Any]] = {
                    "direct": [DirectClient(url) for _ in range(count)],
                    "mcpd": [
                        StdioClient([str(BIN / "mcpctl"), "stdio", "ts"], env.vars, stderr)
                        for _ in range(count)
                    ],
                    "mcp-remote": [
                        StdioClient(
                            [*mcp_remote_argv(), url, "--transport", "http-only"],
                            remote_env,
                            stderr,
                        )
                        for _ in range(count)
                    ],
                }
                relays = {"relay floor": relay_socket, "relay + aiohttp": aiohttp_relay_socket}
                for name, socket_path in relays.items():
                    relay = [str(BIN / "mcpctl"), "stdio", "ts", "--socket", socket_path]
                    variants[name] = [StdioClient(relay, env.vars, stderr) for _ in range(count)]
                servers = {
                    "mcpd": [daemon.process.pid],
                    "relay floor": [relay_pid],
                    "relay + aiohttp": [aiohttp_relay_pid],
                }
                per_editor = max(1, calls // count)
                batches: dict[str, list[dict[str, Any]]] = {name: [] for name in variants}
                for editors in variants.values():  # warm up
                    run_batch(editors, max(5, per_editor // 10), [])
                for _ in range(rounds):
                    for name, editors in variants.items():
                        extra = servers.get(name, [])
                        batches[name].append(run_batch(editors, per_editor, extra))
                result: dict[str, Any] = {}
                for name, runs in batches.items():
                    samples = [x for run in runs for x in run["samples"]]
                    wall = sum(run["wall"] for run in runs)
                    cpu = sum(run["cpu"] for run in runs)
                    result[name] = {
                        **summary(samples),
                        "calls_per_s": len(samples) / wall,
                        "cpu_ms_per_call": cpu * 1000 / len(samples),
                    }
                    rss = [
                        sum(rss_kb(pid) for pid in node_tree(e.pid)) / 1024
                        for e in variants[name]
                        if e.pid
                    ]
                    if rss:
                        result[name]["rss_mb_per_process"] = statistics.median(rss)
                result["mcpd"]["daemon_rss_mb"] = rss_kb(daemon.process.pid) / 1024
                result["added_p50_ms"] = {
                    name: result[name]["median_ms"] - result["direct"]["median_ms"]
                    for name in variants
                    if name != "direct"
                }
                result["throughput_vs_mcp_remote"] = (
                    result["mcpd"]["calls_per_s"] / result["mcp-remote"]["calls_per_s"]
                )
                result["throughput_vs_direct"] = (
                    result["mcpd"]["calls_per_s"] / result["direct"]["calls_per_s"]
                )
                result["relay_throughput_vs_direct"] = (
                    result["relay floor"]["calls_per_s"] / result["direct"]["calls_per_s"]
                )
                figures[f"{count}_editors"] = result
                for editors in variants.values():
                    for editor in editors:
                        editor.close()
            stderr.close()
    figures["goals"] = (
        "1 editor: mcpd adds at most 0.5 ms at p50 over direct, and less than mcp-remote; "
        "8 and 32 editors: at least 90% of direct's calls per second and 2x mcp-remote's; "
        "CPU per call (daemon and bridge) at most 0.3 ms; each bridge at most 20 MB RSS"
    )
    return figures


# --- where the time of one call goes ---------------------------------------------------

SPANS = REPO / "bench" / "spans"
# (label, from mark, to mark) along the path through mcpd; t0 and t1 are the
# driver's: before it writes the request, after it has read the answer.
HOPS = [
    ("driver -> bridge: the pipe, the bridge waking, the line read", "t0", "bridge.in"),
    ("bridge: the line to be sent", "bridge.in", "bridge.send"),
    ("bridge -> daemon: the frame sent, the daemon waking, read", "bridge.send", "daemon.in"),
    ("daemon: the editor's message to the POST", "daemon.in", "daemon.post"),
    ("upstream: the POST to the response head", "daemon.post", "daemon.head"),
    ("upstream: the head to the response event", "daemon.head", "daemon.event"),
    ("daemon: the response to be sent to the editor", "daemon.event", "daemon.push"),
    ("daemon -> bridge: the frame sent, the bridge waking", "daemon.push", "bridge.back"),
    ("bridge: the frame read", "bridge.back", "bridge.write"),
    ("bridge -> driver: the line written, the driver waking, read", "bridge.write", "t1"),
]


def span_breakdown(calls: int, log_dir: Path) -> dict[str, Any]:
    """Medians of each hop of `calls` sequential calls from one editor, through
    mcpd (marks from bench/spans/sitecustomize.py in the daemon and the
    bridge) and directly (the lean driver's own marks), in microseconds."""
    marks_dir = log_dir / "spans"
    marks_dir.mkdir()
    driver: dict[str, list[int]] = {"t0": [], "t1": [], "head": []}

    def traced(client: Any, head: bool) -> None:
        driver["t0"].append(time.perf_counter_ns())
        client.call("tools/call", CALL)
        driver["t1"].append(time.perf_counter_ns())
        if head:
            driver["head"].append(client.head_at)

    with simple_streamable_http(log_dir) as peer:
        url = peer.url.replace("127.0.0.1", "localhost")
        direct = DirectClient(url)
        for _ in range(calls // 4):
            direct.call("tools/call", CALL)
        for _ in range(calls):
            traced(direct, True)
        direct.close()
        direct_spans = {
            "request -> response head": _median_us(driver["t0"], driver["head"]),
            "head -> response event": _median_us(driver["head"], driver["t1"]),
            "total": _median_us(driver["t0"], driver["t1"]),
        }
        for values in driver.values():
            values.clear()
        with (
            daemon_env(
                f'[servers.ts]\nurl = "{url}"\n',
                [str(SPANS)],
                MCPD_SPANS_DIR=str(marks_dir),
            ) as (env, daemon),
            (log_dir / "spans.log").open("ab") as stderr,
        ):
            editor = StdioClient([str(BIN / "mcpctl"), "stdio", "ts"], env.vars, stderr)
            for _ in range(calls // 4):
                editor.call("tools/call", CALL)
            processes = {"daemon": daemon.process.pid, "bridge": editor.pid}
            before = {name: cpu_seconds(pid) for name, pid in processes.items() if pid}
            for _ in range(calls):
                traced(editor, False)
            cpu_us = {
                name: (cpu_seconds(pid) - before[name]) * 1e6 / calls
                for name, pid in processes.items()
                if pid
            }
            editor.close()
    # The daemon has stopped: every process has written its marks.
    for dump in marks_dir.glob("*.json"):
        for name, values in json.loads(dump.read_text()).items():
            driver[name] = values[-calls:]  # the traced calls are the last ones
    through = {label: _median_us(driver[a], driver[b]) for label, a, b in HOPS}
    through["total"] = _median_us(driver["t0"], driver["t1"])
    return {"direct_us": direct_spans, "mcpd_us": through, "cpu_us": cpu_us, "calls": calls}


def _median_us(starts: list[int], ends: list[int]) -> float:
    assert len(starts) == len(ends), (len(starts), len(ends))
    return statistics.median(b - a for a, b in zip(starts, ends, strict=True)) / 1000


# --- 4. editor start-up ---------------------------------------------------------------


def started_editor(argv: list[str], env: dict[str, str], stderr: Any) -> float:
    """An editor starting its MCP server: spawn it, initialize, list the tools.
    The seconds until the list is answered; closing the process after is not timed."""
    started = time.perf_counter()
    editor = StdioClient(argv, env, stderr)
    try:
        listed = editor.call("tools/list", {})
        elapsed = time.perf_counter() - started
        assert listed["result"]["tools"], listed
    finally:
        editor.close()
    return elapsed


def editor_startup(runs: int, log_dir: Path, installed: Path) -> dict[str, Any]:
    """From spawning the stdio server an editor launches to its answer to
    `tools/list`, with the daemon warm: `mcpctl stdio NAME` (from `installed`,
    the bin directory of the product as users install it) against mcp-remote
    doing the same (Node's start, its connection, initialize), in turns."""
    with simple_streamable_http(log_dir) as peer:
        url = peer.url.replace("127.0.0.1", "localhost")
        with daemon_env(f'[servers.ts]\nurl = "{url}"\n') as (env, _daemon):
            remote_home = env.root / "mcp-remote-home"
            remote_home.mkdir()
            remote_env = {**env.vars, "HOME": str(remote_home)}
            with (log_dir / "startup.log").open("ab") as stderr:
                variants = {
                    "mcpd": lambda: started_editor(
                        [str(installed / "mcpctl"), "stdio", "ts"], env.vars, stderr
                    ),
                    "mcp-remote": lambda: started_editor(
                        [*mcp_remote_argv(), url, "--transport", "http-only"], remote_env, stderr
                    ),
                }
                for start in variants.values():  # warm up: caches, the daemon's session
                    start()
                    start()
                samples: dict[str, list[float]] = {name: [] for name in variants}
                for _ in range(runs):
                    for name, start in variants.items():
                        samples[name].append(start())
    result: dict[str, Any] = {name: summary(values) for name, values in samples.items()}
    result["ratio_to_mcp_remote"] = result["mcpd"]["median_ms"] / result["mcp-remote"]["median_ms"]
    result["goal"] = "at most 100 ms with a warm daemon"
    return result


def print_floors(figures: dict[str, Any]) -> None:
    cp, cli = figures["control_plane"], figures["cli_start"]
    print(
        f"{'against a floor':<28}{'measured p50/p99 ms':>24}{'floor p50/p99 ms':>22}{'result':>22}"
    )
    rows = [
        (
            f"status, {name}",
            cp[name]["status"],
            cp[name]["floor"],
            f"{cp[name]['ratio']:.2f}x (goal <= 3x)",
        )
        for name in placements()
    ]
    rows += [
        (
            "CLI start: mcpctl status",
            cli["mcpctl_status"],
            cli["floor"],
            f"{cli['ratio']:.2f}x (goal <= 1.5x)",
        ),
    ]
    for name, measured, floor, result in rows:
        print(
            f"{name:<28}{measured['median_ms']:>12.3f}/{measured['p99_ms']:<11.3f}"
            f"{floor['median_ms']:>10.3f}/{floor['p99_ms']:<11.3f}{result:>22}"
        )


def print_data_plane(figures: dict[str, Any]) -> None:
    print(
        f"\n{'tools/call':<28}{'p50/p99 ms':>18}{'added p50':>11}{'calls/s':>9}"
        f"{'CPU ms/call':>12}{'RSS MB/proc':>12}"
    )
    for key, result in figures.items():
        if not key.endswith("_editors"):
            continue
        for name in ("direct", "relay floor", "relay + aiohttp", "mcpd", "mcp-remote"):
            if name not in result:
                continue
            row = result[name]
            added = result["added_p50_ms"].get(name)
            print(
                f"{key.replace('_', ' ') + ', ' + name:<28}"
                f"{row['median_ms']:>9.2f}/{row['p99_ms']:<8.2f}"
                f"{'' if added is None else f'{added:+.2f}':>11}{row['calls_per_s']:>9.0f}"
                f"{row['cpu_ms_per_call']:>12.2f}{row.get('rss_mb_per_process', 0):>12.1f}"
            )
        print(
            f"{'':<28}mcpd/mcp-remote calls per second: "
            f"{result['throughput_vs_mcp_remote']:.1f}x, mcpd/direct "
            f"{result['throughput_vs_direct']:.0%}, relay floor/direct "
            f"{result['relay_throughput_vs_direct']:.0%}; "
            f"daemon RSS {result['mcpd']['daemon_rss_mb']:.1f} MB"
        )
    print(f"goals: {figures['goals']}")


def print_spans(figures: dict[str, Any]) -> None:
    print(f"\nwhere one call's time goes (medians of {figures['calls']} calls, microseconds):")
    for label, value in figures["direct_us"].items():
        print(f"  direct   {label:<62}{value:>8.0f}")
    for label, value in figures["mcpd_us"].items():
        print(f"  mcpd     {label:<62}{value:>8.0f}")
    cpu = ", ".join(f"{name} {value:.0f}" for name, value in figures["cpu_us"].items())
    print(f"  CPU per call through mcpd, microseconds: {cpu}")


def print_startup(figures: dict[str, Any]) -> None:
    mcpd, remote = figures["mcpd"], figures["mcp-remote"]
    print(
        f"\neditor start-up to tools/list: mcpctl stdio {mcpd['median_ms']:.1f}/"
        f"{mcpd['p99_ms']:.1f} ms p50/p99, mcp-remote {remote['median_ms']:.1f}/"
        f"{remote['p99_ms']:.1f} ms: {figures['ratio_to_mcp_remote']:.2f}x "
        f"(goal: {figures['goal']})"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer runs (a smoke check)")
    parser.add_argument("--json", type=Path, default=REPO / "bench" / "results" / "figures.json")
    args = parser.parse_args()
    scale = 10 if args.quick else 1
    figures: dict[str, Any] = {}
    with (
        tempfile.TemporaryDirectory(prefix="mcpd-bench-peers-") as logs,
        installed_product() as installed,
    ):
        figures["control_plane"] = control_plane(5000 // scale)
        figures["cli_start"] = cli_start(40 // min(scale, 4), installed)
        figures["data_plane"] = data_plane(
            [1, 8, 32], calls=1000 // scale, rounds=3, log_dir=Path(logs)
        )
        figures["editor_startup"] = editor_startup(30 // min(scale, 3), Path(logs), installed)
        figures["spans"] = span_breakdown(1000 // scale, Path(logs))
    figures |= scale_and_storm(args.quick)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(figures, indent=2))
    print_floors(figures)
    print_data_plane(figures["data_plane"])
    print_startup(figures["editor_startup"])
    print_spans(figures["spans"])
    print()
    print_scale_and_storm(figures)
    print(f"figures: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
