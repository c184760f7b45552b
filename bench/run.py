"""mcpd's benchmarks, each a ratio against a floor measured in the same run.

    .venv/bin/python bench/run.py [--quick] [--json FILE]

1. control plane: the `status` round trip over the daemon's real socket,
   against a raw Unix-socket echo of the same frames (another process, as the
   daemon is; the two measured in turns, pinned alike: on the client's core,
   and on another core);
2. CLI start: `mcpctl status` as a whole process, against
   `python -c "import msgspec"`;
3. data plane: `tools/call` of the TypeScript SDK example's `greet` from 1, 8
   and 32 editors at once, each its own process calling in sequence: through
   `mcpctl stdio` and the daemon, through mcp-remote (one copy per editor, as
   editors run it), and with the same driver speaking Streamable HTTP to the
   server directly;
4. scale: 500 servers and 100 editors on one daemon (bench/scale.py);
5. a refresh storm: 500 credentials expiring within a minute (bench/scale.py).

Every figure is a median over repeated runs with the 99th percentile beside
it. The real peers come from tests/peers/install.sh.
"""

from __future__ import annotations

import argparse
import http.client
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

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "bench"))

from bench_common import (  # noqa: E402
    BIN,
    INITIALIZE,
    cpu_seconds,
    daemon_env,
    rss_kb,
    summary,
    timed,
)
from harness import RawClient  # noqa: E402
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


def cli_start(runs: int) -> dict[str, Any]:
    with daemon_env() as (env, _daemon):

        def mcpctl() -> None:
            subprocess.run(
                [str(BIN / "mcpctl"), "status"], env=env.vars, capture_output=True, check=True
            )

        def floor() -> None:
            subprocess.run(
                [sys.executable, "-c", "import msgspec"], capture_output=True, check=True
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
    """The editor-like driver speaking Streamable HTTP itself (one connection)."""

    pid = None  # nothing stands between it and the server

    def __init__(self, url: str) -> None:
        parts = url.split("/", 3)
        self.host, self.path = parts[2], "/" + parts[3]
        self.conn = http.client.HTTPConnection(self.host, timeout=30)
        self.session: str | None = None
        self.next_id = 0
        self.call("initialize", INITIALIZE)
        self.notify("notifications/initialized")

    def _headers(self) -> dict[str, str]:
        headers = {
            "Content-Type": "application/json",
            "Accept": "application/json, text/event-stream",
        }
        if self.session:
            headers["Mcp-Session-Id"] = self.session
            headers["MCP-Protocol-Version"] = "2025-11-25"
        return headers

    def _post(self, body: str) -> tuple[http.client.HTTPResponse, bytes]:
        for attempt in (1, 2):
            try:
                self.conn.request("POST", self.path, body, self._headers())
                response = self.conn.getresponse()
                return response, response.read()
            except (BrokenPipeError, ConnectionResetError, http.client.RemoteDisconnected):
                # The server closes a connection left idle (while other variants
                # ran): reconnect, as any HTTP client does.
                self.conn.close()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def notify(self, method: str) -> None:
        self._post(json.dumps({"jsonrpc": "2.0", "method": method}))

    def call(self, method: str, params: dict[str, Any]) -> Any:
        self.next_id += 1
        body = json.dumps(
            {"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": params}
        )
        response, raw = self._post(body)
        self.session = response.getheader("mcp-session-id") or self.session
        data = raw.decode()
        if response.getheader("content-type", "").startswith("text/event-stream"):
            lines = [line[5:].strip() for line in data.splitlines() if line.startswith("data:")]
            return json.loads(lines[-1])
        return json.loads(data)

    def close(self) -> None:
        self.conn.close()


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


def data_plane(editor_counts: list[int], calls: int, rounds: int, log_dir: Path) -> dict[str, Any]:
    """tools/call through mcpd, through mcp-remote and directly, at each editor count.

    The three variants take turns, `rounds` times, so that the machine's drift
    falls on all alike; each editor makes `calls // editors` calls per round.
    """
    figures: dict[str, Any] = {}
    with simple_streamable_http(log_dir) as peer:
        url = peer.url.replace("127.0.0.1", "localhost")
        with daemon_env(f'[servers.ts]\nurl = "{url}"\n') as (env, daemon):
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
                per_editor = max(1, calls // count)
                batches: dict[str, list[dict[str, Any]]] = {name: [] for name in variants}
                for editors in variants.values():  # warm up
                    run_batch(editors, max(5, per_editor // 10), [])
                for _ in range(rounds):
                    for name, editors in variants.items():
                        extra = [daemon.process.pid] if name == "mcpd" else []
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
                    for name in ("mcpd", "mcp-remote")
                }
                result["throughput_vs_mcp_remote"] = (
                    result["mcpd"]["calls_per_s"] / result["mcp-remote"]["calls_per_s"]
                )
                figures[f"{count}_editors"] = result
                for editors in variants.values():
                    for editor in editors:
                        editor.close()
            stderr.close()
    figures["goals"] = (
        "1 editor: mcpd adds at most 0.5 ms at p50 over direct; 8 and 32 editors: at least "
        "2x mcp-remote's calls per second; each bridge process at most 20 MB RSS"
    )
    return figures


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
        f"\n{'tools/call':<22}{'p50/p99 ms':>18}{'added p50':>11}{'calls/s':>9}"
        f"{'CPU ms/call':>12}{'RSS MB/proc':>12}"
    )
    for key, result in figures.items():
        if not key.endswith("_editors"):
            continue
        for name in ("direct", "mcpd", "mcp-remote"):
            row = result[name]
            added = result["added_p50_ms"].get(name)
            print(
                f"{key.replace('_', ' ') + ', ' + name:<22}"
                f"{row['median_ms']:>9.2f}/{row['p99_ms']:<8.2f}"
                f"{'' if added is None else f'+{added:.2f}':>11}{row['calls_per_s']:>9.0f}"
                f"{row['cpu_ms_per_call']:>12.2f}{row.get('rss_mb_per_process', 0):>12.1f}"
            )
        print(
            f"{'':<22}mcpd/mcp-remote calls per second: "
            f"{result['throughput_vs_mcp_remote']:.1f}x; "
            f"daemon RSS {result['mcpd']['daemon_rss_mb']:.1f} MB"
        )
    print(f"goals: {figures['goals']}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer runs (a smoke check)")
    parser.add_argument("--json", type=Path, default=REPO / "bench" / "results" / "figures.json")
    args = parser.parse_args()
    scale = 10 if args.quick else 1
    figures: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="mcpd-bench-peers-") as logs:
        figures["control_plane"] = control_plane(5000 // scale)
        figures["cli_start"] = cli_start(40 // min(scale, 4))
        figures["data_plane"] = data_plane(
            [1, 8, 32], calls=1000 // scale, rounds=3, log_dir=Path(logs)
        )
    figures |= scale_and_storm(args.quick)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(figures, indent=2))
    print_floors(figures)
    print_data_plane(figures["data_plane"])
    print()
    print_scale_and_storm(figures)
    print(f"figures: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
